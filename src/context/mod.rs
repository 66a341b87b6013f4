//! The signed tenant context.
//!
//! The GUC `tenantguard.context` is the single source of truth: the GUC
//! machinery already gives it transaction scope (SET LOCAL), savepoint
//! rollback, function SET clauses and propagation to parallel workers. This
//! module never keeps a "current tenant" of its own. Every accessor reads the
//! GUC, finds the verified claims for exactly that string in a small cache
//! (verifying on a miss), and re-checks time validity and revocation at the
//! statement's start time. A value that somehow bypassed the check hook is
//! therefore still verified before it is trusted.

use crate::error::{raise, OrRaise};
use crate::{access, gucs};

pub mod accessors;
pub mod bypass_state;
pub mod guc;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::JsonB;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use tenantguard_core::token::{self, Claims};
use tenantguard_core::DomainError;

/// Seconds between the Unix epoch and the Postgres epoch (2000-01-01).
const PG_EPOCH_UNIX: i64 = 946_684_800;
/// Verified tokens kept per backend. A pooled backend serves many users, and
/// a connection pool hands each transaction to any backend, so the same few
/// hundred tokens come back again and again: a hit skips the HMAC, base64 and
/// JSON work (the expiry and access rules are still checked every time).
/// Bounded: at most this many entries (about 1 KiB each with the token
/// and its claims), oldest evicted.
const CACHE_SIZE: usize = 1024;

/// Hashes a token by its last bytes: the HMAC signature, uniformly random
/// for the verified tokens the cache holds. (A forged token with a copied
/// signature only lands in the same bucket; keys compare in full.)
#[derive(Default)]
struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = &bytes[bytes.len().saturating_sub(16)..];
        for chunk in tail.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(b))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

/// One verified token: its claims, and the policy accessors' answers for
/// it (built on first use, then copied out by every later transaction that
/// sets the same token: a pooled backend does not rebuild the read-scope
/// array per transaction).
///
/// A transaction that sets a token reads only this entry and its token's
/// bytes (allocated one after the other): with 1,000 users' tokens in turn,
/// each transaction meets its entry cold in the CPU caches, so what it
/// reads is kept small and in one place (the times and the access-rule
/// memo are copied here rather than read from the claims). `repr(C)`
/// keeps the fields every transaction reads first, in one or two lines.
#[repr(C)]
struct Verified {
    /// The keyring generation it was verified under.
    gen: u64,
    /// `exp`, `nbf` and `staff` of the claims.
    exp: i64,
    nbf: Option<i64>,
    staff: bool,
    /// The access rules' generation under which these claims last passed
    /// them (see access::check).
    passed: std::cell::Cell<Option<u64>>,
    token: Box<[u8]>,
    claims: Rc<Claims>,
    built: RefCell<[Option<Answer>; ACCESSORS]>,
}

impl Verified {
    /// The token's time window at `now` (Unix seconds), as Claims::check_time.
    fn check_time(&self, now: i64) -> Result<(), DomainError> {
        if now >= self.exp || self.nbf.is_some_and(|nbf| now < nbf) {
            return self.claims.check_time(now);
        }
        Ok(())
    }

    /// The access rules (see access::check; `gen`: the rules' generation
    /// if the caller has just read it).
    fn check_access(&self, now_us: i64, gen: Option<u64>) -> Result<(), DomainError> {
        access::check(&self.claims, self.staff, &self.passed, now_us, gen)
    }
}

/// Hashes a token hash (already mixed by TokenHasher) as itself.
#[derive(Default)]
struct SelfHasher(u64);

impl std::hash::Hasher for SelfHasher {
    fn write(&mut self, _bytes: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct VerifiedCache {
    /// The token's hash (TokenHasher) -> its verification. A lookup is a hit
    /// only if the entry's token equals the token in full; two tokens with
    /// one hash take turns in the slot.
    map: HashMap<u64, Rc<Verified>, std::hash::BuildHasherDefault<SelfHasher>>,
    /// Insertion order, for eviction.
    order: VecDeque<u64>,
}

fn token_hash(raw: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = TokenHasher::default();
    h.write(raw);
    h.finish()
}

thread_local! {
    static VERIFIED: RefCell<Option<VerifiedCache>> = const { RefCell::new(None) };
}

/// Drop every cached verification (the keyring changed).
pub fn forget_verified() {
    VERIFIED.with(|v| *v.borrow_mut() = None);
}

pub fn to_unix(ts: pg_sys::TimestampTz) -> i64 {
    ts.div_euclid(1_000_000) + PG_EPOCH_UNIX
}

pub fn to_unix_us(ts: pg_sys::TimestampTz) -> i64 {
    ts + PG_EPOCH_UNIX * 1_000_000
}

/// What a verification depends on: the HS256 keyring and the trusted
/// issuers. Both counters only grow, so their sum changes with either.
pub fn trust_generation() -> u64 {
    crate::keys::keyring_generation().wrapping_add(crate::issuers::generation())
}

/// Wall-clock now, Unix seconds.
fn unix_now() -> i64 {
    extern "C" {
        fn GetCurrentTimestamp() -> pg_sys::TimestampTz;
    }
    // SAFETY: reads the clock; cannot raise.
    to_unix(unsafe { GetCurrentTimestamp() })
}

fn lookup_or_verify(raw: &[u8]) -> Result<Rc<Verified>, DomainError> {
    let gen = trust_generation();
    let h = token_hash(raw);
    let hit = VERIFIED.with(|v| {
        v.borrow()
            .as_ref()
            .and_then(|c| c.map.get(&h))
            .filter(|e| e.gen == gen && *e.token == *raw)
            .cloned()
    });
    if let Some(e) = hit {
        return Ok(e);
    }
    let (_, ring) = crate::keys::keyring();
    let s = std::str::from_utf8(raw).map_err(|_| DomainError::Malformed("not UTF-8"))?;
    let claims = token::verify_with(
        s,
        &ring,
        &mut crate::issuers::current,
        unix_now(),
        &mut tenantguard_core::idp::Trace::default(),
    )?;
    let entry = Rc::new(Verified {
        gen,
        exp: claims.exp,
        nbf: claims.nbf,
        staff: claims.staff,
        passed: std::cell::Cell::new(None),
        token: raw.into(),
        claims: Rc::new(claims),
        built: RefCell::new([const { None }; ACCESSORS]),
    });
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        let cache = v.get_or_insert_with(VerifiedCache::default);
        if cache.map.insert(h, entry.clone()).is_none() {
            cache.order.push_back(h);
        }
        while cache.order.len() > CACHE_SIZE {
            if let Some(old) = cache.order.pop_front() {
                cache.map.remove(&old);
            }
        }
    });
    Ok(entry)
}

/// Called by the GUC check hook: verify signature, claims, time and the
/// access rules (revocation, allowlist, staff grant) against wall-clock now.
pub fn verify_for_set(raw: &[u8]) -> Result<(), DomainError> {
    forget_pending();
    let entry = match lookup_or_verify(raw) {
        // An issuer's token set where no SQL can run (a startup option):
        // verified at its first use instead, as every use verifies anyway.
        Err(DomainError::IssuerNeedsTransaction) => return Ok(()),
        r => r?,
    };
    extern "C" {
        fn GetCurrentTimestamp() -> pg_sys::TimestampTz;
    }
    // SAFETY: reads the clock (gettimeofday); cannot raise, so it is called
    // without pgrx's error-boundary wrapper.
    let now = unsafe { GetCurrentTimestamp() };
    entry.check_time(to_unix(now))?;
    entry.check_access(to_unix_us(now), None)?;
    PENDING.with(|p| *p.borrow_mut() = Some(entry));
    Ok(())
}

thread_local! {
    /// The verification the check hook just did, for the assign hook that
    /// follows it: the first statement under the new value then finds its
    /// token's verification without looking the token up again.
    static PENDING: RefCell<Option<Rc<Verified>>> = const { RefCell::new(None) };
}

/// The check hook refused a value or saw none: nothing to hand over.
pub fn forget_pending() {
    let _ = PENDING.try_with(|p| p.try_borrow_mut().map(|mut p| *p = None));
}

/// Assign hook: the GUC now holds `raw` under context generation `gen`. If
/// the check hook just verified these very bytes, remember that
/// verification for this generation. (Values restored at transaction or
/// savepoint end were not checked now: they are looked up on first use.)
pub fn adopt_pending(raw: Option<&[u8]>, gen: u64) {
    let Some(entry) = PENDING
        .try_with(|p| p.try_borrow_mut().ok()?.take())
        .ok()
        .flatten()
    else {
        return;
    };
    if raw == Some(&entry.token[..]) {
        let _ = GEN_CLAIMS.try_with(|g| {
            if let Ok(mut g) = g.try_borrow_mut() {
                *g = Some((gen, entry.gen, entry));
            }
        });
    }
}

/// Identity of "this statement": its start time, its command id and the
/// cache generation (any revocation/policy change starts a new one).
pub type StatementId = (i64, u32, u64);

/// This statement's [`StatementId`].
pub fn statement_key() -> StatementId {
    statement_key_at(access::current_generation())
}

/// This statement's [`StatementId`], for a caller that has just read the
/// access rules' generation.
fn statement_key_at(access_gen: u64) -> StatementId {
    // Declared here without pgrx's error-boundary wrapper: these two are
    // plain getters of backend-global state that cannot raise, and they run
    // on every row-level call.
    extern "C" {
        fn GetCurrentStatementStartTimestamp() -> pg_sys::TimestampTz;
        fn GetCurrentCommandId(used: bool) -> pg_sys::CommandId;
    }
    // SAFETY: see above; both only read static variables of xact.c.
    let (ts, cid) = unsafe {
        (
            GetCurrentStatementStartTimestamp(),
            GetCurrentCommandId(false),
        )
    };
    (ts, cid, access_gen)
}

thread_local! {
    /// The last successful check, valid for the rest of the same statement
    /// with the same token: policies and row-level authorize() calls do not
    /// re-run the checks for every row.
    /// Keyed by the statement and the context's generation (gucs::context_generation).
    static CHECKED: RefCell<Option<(StatementId, u64, Rc<Verified>)>> = const { RefCell::new(None) };
}

/// The verified, unexpired, unrevoked context of this statement, if any.
pub fn current() -> Result<Option<Rc<Claims>>, DomainError> {
    current_keyed(statement_key())
}

/// As [`current`], for a caller that already has this statement's key.
fn current_keyed(key: StatementId) -> Result<Option<Rc<Claims>>, DomainError> {
    Ok(checked_keyed(key)?.map(|v| v.claims.clone()))
}

/// As [`current_keyed`], the token's cache entry rather than its claims.
fn checked_keyed(key: StatementId) -> Result<Option<Rc<Verified>>, DomainError> {
    if !gucs::context_present() {
        return Ok(None);
    }
    let gen = gucs::context_generation();
    if let Some(c) = CHECKED.with(|m| {
        m.borrow()
            .as_ref()
            .filter(|(k, g, _)| *k == key && *g == gen)
            .map(|(_, _, c)| c.clone())
    }) {
        return Ok(Some(c));
    }
    let Some(raw) = gucs::context_raw() else {
        return Ok(None);
    };
    let checked = check_current(raw, key.2)?;
    CHECKED.with(|m| *m.borrow_mut() = Some((key, gen, checked.clone())));
    Ok(Some(checked))
}

thread_local! {
    /// The claims of the token in the GUC now, by the GUC's generation and
    /// the keyring's: the same generation is the same token, so a new
    /// statement re-checks its times and rules without hashing the token
    /// again to find its verification.
    static GEN_CLAIMS: RefCell<Option<(u64, u64, Rc<Verified>)>> = const { RefCell::new(None) };
}

/// The statement's checks of the token `raw` now in the GUC, under the
/// access rules' generation `access_gen` (the statement key's).
fn check_current(raw: &[u8], access_gen: u64) -> Result<Rc<Verified>, DomainError> {
    let gen = gucs::context_generation();
    let kgen = trust_generation();
    let known = GEN_CLAIMS.with(|g| {
        g.borrow()
            .as_ref()
            .filter(|(cg, kg, _)| *cg == gen && *kg == kgen)
            .map(|(_, _, v)| v.clone())
    });
    let v = match known {
        Some(v) => v,
        None => {
            let v = lookup_or_verify(raw)?;
            GEN_CLAIMS.with(|g| *g.borrow_mut() = Some((gen, kgen, v.clone())));
            v
        }
    };
    let stmt = statement_start();
    v.check_time(to_unix(stmt))
        .map_err(|_| DomainError::ContextExpired)?;
    v.check_access(to_unix_us(stmt), Some(access_gen))?;
    // The access check took in other sessions' invalidations: an issuer's
    // token is verified again if its issuer or keys changed meanwhile.
    if v.claims.iss.is_some() && trust_generation() != kgen {
        return check_current(raw, access_gen);
    }
    Ok(v)
}

/// The context, or the fail-closed error `no tenant context` (42501).
pub fn require() -> Rc<Claims> {
    require_keyed(statement_key())
}

/// As [`require`], for a caller that already has this statement's key
/// (authorize() memoises its subject under the same key).
pub fn require_keyed(key: StatementId) -> Rc<Claims> {
    require_verified(key).claims.clone()
}

/// As [`require_keyed`], the token's cache entry rather than its claims.
fn require_verified(key: StatementId) -> Rc<Verified> {
    match checked_keyed(key) {
        Ok(Some(v)) => v,
        Ok(None) => raise(DomainError::NoContext),
        Err(e) => {
            crate::alerts::alert("context_denied", &e);
            raise(e)
        }
    }
}

// ------------------------------------------- what the cache entry keeps
// (the accessors, accessors.rs, fill it)

/// Which accessor a cached answer belongs to.
#[derive(Clone, Copy)]
pub(super) enum Accessor {
    Id = 0,
    Ids,
    IdUuid,
    IdsUuid,
    IdBigint,
    IdsBigint,
    IdInt,
    IdsInt,
}
pub(super) const ACCESSORS: usize = 8;

impl Accessor {
    /// The read scope (`tenant_ids*`: empty under a bypass without a
    /// context) rather than the active tenant (which needs a context).
    fn is_scope(self) -> bool {
        (self as usize) % 2 == 1
    }
}

/// Answers up to this size are kept inside the token's cache entry (a
/// one-tenant text[] of a short id is about 32 bytes): reading one is then
/// no extra cache miss.
pub(super) const INLINE_ANSWER: usize = 48;

#[derive(Clone)]
pub(super) enum Answer {
    /// A small pass-by-reference datum, flattened: `len` bytes of `buf`.
    Inline { len: u8, buf: [u8; INLINE_ANSWER] },
    /// A pass-by-reference datum (text, uuid, an array), flattened.
    Bytes(Rc<[u8]>),
    /// A pass-by-value datum (bigint, integer).
    Value(pg_sys::Datum),
}

pub(super) fn statement_start() -> pg_sys::TimestampTz {
    extern "C" {
        fn GetCurrentStatementStartTimestamp() -> pg_sys::TimestampTz;
    }
    // SAFETY: reads a static variable of xact.c; cannot raise.
    unsafe { GetCurrentStatementStartTimestamp() }
}

// ---------------------------------------------------------------- SQL surface

/// Set the context for this transaction (default) or, explicitly, the session.
#[pg_extern(volatile, parallel_unsafe)]
fn set_context(token: &str, is_local: default!(bool, true)) {
    let value = std::ffi::CString::new(token).unwrap_or_else(|_| {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "tenant context token contains a NUL byte",
        )
    });
    if is_local && crate::spi::citus_loaded() {
        // On Citus the context must reach the workers, which verify the
        // token again in the same check hook.
        crate::spi::citus_set_local("tenantguard.context", token);
        return;
    }
    let action = if is_local {
        pg_sys::GucAction::GUC_ACTION_LOCAL
    } else {
        pg_sys::GucAction::GUC_ACTION_SET
    };
    // SAFETY: set_config_option runs the check hook and raises on refusal;
    // pgrx converts that into a Rust panic that unwinds to the SQL boundary.
    unsafe {
        pg_sys::set_config_option(
            c"tenantguard.context".as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            0,
            false,
        );
    }
}

/// Remove the context (session and transaction value).
#[pg_extern(volatile, parallel_unsafe)]
fn clear_context() {
    // SAFETY: as in set_context; the empty value always passes the check.
    unsafe {
        pg_sys::set_config_option(
            c"tenantguard.context".as_ptr(),
            c"".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SET,
            true,
            0,
            false,
        );
    }
}

/// True when a verified, unexpired, unrevoked context is set. Never raises.
#[pg_extern(stable, parallel_safe)]
fn has_context() -> bool {
    matches!(current(), Ok(Some(_)))
}

/// The active tenant: the only tenant writes may go to.
pub fn active_tenant() -> String {
    require().tid.clone()
}

/// The read scope: the active tenant plus the token's extra `tids`.
/// While a bypass is active and no context is set, this is empty (the
/// bypass policy admits the rows instead).
pub fn read_scope() -> Vec<String> {
    match scope_or_bypass() {
        Some(c) => c.read_scope.clone(),
        None => Vec::new(),
    }
}

fn scope_or_bypass() -> Option<Rc<Claims>> {
    if bypass_state::active() {
        if let Ok(Some(c)) = current() {
            return Some(c);
        }
        return None;
    }
    // A parallel worker of a bypassing leader, without a context, reads an
    // empty scope: the tenant policy admits nothing there, and the bypass
    // policy (evaluated by the leader) admits the rows.
    if bypass_state::leader_active() && matches!(current(), Ok(None)) {
        return None;
    }
    Some(require())
}

/// The user the transaction acts for (`sub`).
#[pg_extern(stable, parallel_safe)]
fn user_id() -> String {
    require().sub.clone()
}

/// The verified claims.
#[pg_extern(stable, parallel_safe)]
fn claims() -> JsonB {
    JsonB(require().payload())
}

/// Mint a token with the configured keys. For DBA tooling, the demo and
/// tests: EXECUTE is revoked from PUBLIC.
#[pg_extern(volatile, parallel_unsafe)]
fn sign_context(claims: Option<JsonB>, kid: default!(Option<&str>, "NULL")) -> String {
    let claims = claims.unwrap_or_else(|| {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "claims must not be NULL",
        )
    });
    let (_, ring) = crate::keys::keyring();
    token::sign(&claims.0, &ring, kid).or_raise()
}

/// Why a token would be accepted or refused now, step by step, for an
/// operator: trust root, algorithm, kid, issuer, key found, signature,
/// audience, lifetime, the mapped claims, time validity and the access
/// rules. Never any key material.
#[pg_extern(stable, parallel_restricted)]
fn explain_context(token: &str) -> JsonB {
    use serde_json::json;
    let (_, ring) = crate::keys::keyring();
    let mut trace = tenantguard_core::idp::Trace::default();
    let now = unix_now();
    let r = token::verify_with(
        token.trim(),
        &ring,
        &mut crate::issuers::current,
        now,
        &mut trace,
    );
    let issuer_root = trace.iss.is_some() || trace.alg.as_deref().is_some_and(|a| a != "HS256");
    let mut out = serde_json::to_value(&trace).unwrap_or_else(|_| json!({}));
    out["trust_root"] = json!(if issuer_root {
        "issuer (tenantguard.issuer)"
    } else {
        "signing_keys (HS256)"
    });
    let fail = |out: &mut serde_json::Value, step: &str, e: &DomainError| {
        out["accepted"] = json!(false);
        out["refused_at"] = json!(step);
        out["error"] = json!(e.to_string());
        out["reason"] = json!(e.reason());
        out["sqlstate"] = json!(e.sqlstate().code());
    };
    match r {
        Err(e) => fail(&mut out, "verification", &e),
        Ok(c) => {
            out["signature_valid"] = json!(true);
            out["claims"] = json!({
                "tid": c.tid, "tids": c.read_scope, "sub": c.sub, "staff": c.staff,
                "attrs": c.attrs, "exp": c.exp, "jti": c.jti,
            });
            if let Err(e) = c.check_time(now) {
                fail(&mut out, "time", &e);
            } else if let Err(e) = access::check(
                &c,
                c.staff,
                &std::cell::Cell::new(None),
                now.saturating_mul(1_000_000),
                None,
            ) {
                fail(&mut out, "access rules", &e);
            } else {
                out["accepted"] = json!(true);
            }
        }
    }
    JsonB(out)
}
