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
/// Bounded: at most this many entries (about 0.5 KiB each), oldest evicted.
const CACHE_SIZE: usize = 1024;

#[derive(Default)]
struct VerifiedCache {
    /// Token bytes -> (keyring generation it was verified under, claims).
    map: HashMap<Vec<u8>, (u64, Rc<Claims>)>,
    /// Insertion order, for eviction.
    order: VecDeque<Vec<u8>>,
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

fn lookup_or_verify(raw: &[u8]) -> Result<Rc<Claims>, DomainError> {
    let (gen, ring) = gucs::keyring();
    let hit = VERIFIED.with(|v| {
        v.borrow()
            .as_ref()
            .and_then(|c| c.map.get(raw))
            .filter(|(g, _)| *g == gen)
            .map(|(_, c)| c.clone())
    });
    if let Some(c) = hit {
        return Ok(c);
    }
    let s = std::str::from_utf8(raw).map_err(|_| DomainError::Malformed("not UTF-8"))?;
    let claims = Rc::new(token::verify(s, &ring)?);
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        let cache = v.get_or_insert_with(VerifiedCache::default);
        if cache
            .map
            .insert(raw.to_vec(), (gen, claims.clone()))
            .is_none()
        {
            cache.order.push_back(raw.to_vec());
        }
        while cache.order.len() > CACHE_SIZE {
            if let Some(old) = cache.order.pop_front() {
                cache.map.remove(&old);
            }
        }
    });
    Ok(claims)
}

/// Called by the GUC check hook: verify signature, claims, time and the
/// access rules (revocation, allowlist, staff grant) against wall-clock now.
pub fn verify_for_set(raw: &[u8]) -> Result<(), DomainError> {
    let claims = lookup_or_verify(raw)?;
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    claims.check_time(to_unix(now))?;
    access::check(&claims, to_unix_us(now))
}

/// Identity of "this statement": its start time, its command id and the
/// cache generation (any revocation/policy change starts a new one).
pub fn statement_key() -> (i64, u32, u64) {
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
    (ts, cid, access::current_generation())
}

thread_local! {
    /// The last successful check, valid for the rest of the same statement
    /// with the same token: policies and row-level authorize() calls do not
    /// re-run the checks for every row.
    /// Keyed by the statement and the context's generation (gucs::context_generation).
    static CHECKED: RefCell<Option<((i64, u32, u64), u64, Rc<Claims>)>> = const { RefCell::new(None) };
}

/// The verified, unexpired, unrevoked context of this statement, if any.
pub fn current() -> Result<Option<Rc<Claims>>, DomainError> {
    current_keyed(statement_key())
}

/// As [`current`], for a caller that already has this statement's key.
fn current_keyed(key: (i64, u32, u64)) -> Result<Option<Rc<Claims>>, DomainError> {
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
    let checked = check_current(raw)?;
    CHECKED.with(|m| *m.borrow_mut() = Some((key, gen, checked.clone())));
    Ok(Some(checked))
}

fn check_current(raw: &[u8]) -> Result<Rc<Claims>, DomainError> {
    let claims = lookup_or_verify(raw)?;
    // SAFETY: reads a backend-global timestamp (propagated to workers).
    let stmt = unsafe { pg_sys::GetCurrentStatementStartTimestamp() };
    claims
        .check_time(to_unix(stmt))
        .map_err(|_| DomainError::ContextExpired)?;
    access::check(&claims, to_unix_us(stmt))?;
    Ok(claims)
}

/// The context, or the fail-closed error `no tenant context` (42501).
pub fn require() -> Rc<Claims> {
    require_keyed(statement_key())
}

/// As [`require`], for a caller that already has this statement's key
/// (authorize() memoises its subject under the same key).
pub fn require_keyed(key: (i64, u32, u64)) -> Rc<Claims> {
    match current_keyed(key) {
        Ok(Some(c)) => c,
        Ok(None) => raise(DomainError::NoContext),
        Err(e) => {
            alert("context_denied", &e);
            raise(e)
        }
    }
}

/// A durable trace of a refused attempt: one server-log line with a fixed,
/// parseable prefix, written even though the transaction aborts.
/// `tenantguard-alert: {"event":...,"reason":...,...}`
pub fn alert(event: &str, e: &DomainError) {
    alert_json(event, e.reason(), &e.to_string(), serde_json::Value::Null);
}

pub fn alert_json(event: &str, reason: &str, message: &str, extra: serde_json::Value) {
    let line = serde_json::json!({
        "event": event,
        "reason": reason,
        "message": message,
        "db_role": crate::session::current_role_name(),
        "session_role": crate::session::session_role_name(),
        "client_addr": crate::session::client_addr(),
        "pid": std::process::id(),
        "extra": extra,
    });
    pgrx::log!("tenantguard-alert: {}", line);
    crate::alerts::push(&line.to_string());
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
#[pg_extern(stable, parallel_safe)]
pub fn tenant_id() -> String {
    require().tid.clone()
}

/// The read scope: the active tenant plus the token's extra `tids`.
/// While a bypass is active and no context is set, this is empty (the
/// bypass policy admits the rows instead).
#[pg_extern(stable, parallel_safe)]
pub fn tenant_ids() -> Vec<String> {
    match scope_or_bypass() {
        Some(c) => c.read_scope.clone(),
        None => Vec::new(),
    }
}

fn scope_or_bypass() -> Option<Rc<Claims>> {
    if crate::bypass::active() {
        if let Ok(Some(c)) = current() {
            return Some(c);
        }
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
    JsonB(require().payload.clone())
}

fn parse_ids<T>(ids: &[String], ty: &'static str, f: impl Fn(&str) -> Option<T>) -> Vec<T> {
    ids.iter()
        .map(|s| {
            f(s).ok_or_else(|| DomainError::TenantIdType {
                value: s.clone(),
                ty,
            })
            .or_raise()
        })
        .collect()
}

fn parse_uuid(s: &str) -> Option<pgrx::Uuid> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(pgrx::Uuid::from_bytes(b))
}

/// Typed accessors, so a policy on a uuid/bigint/int tenant column compares
/// equal types and keeps its index.
#[pg_extern(stable, parallel_safe)]
fn tenant_id_uuid() -> pgrx::Uuid {
    parse_ids(&[tenant_id()], "uuid", parse_uuid).remove(0)
}

#[pg_extern(stable, parallel_safe)]
fn tenant_ids_uuid() -> Vec<pgrx::Uuid> {
    parse_ids(&tenant_ids(), "uuid", parse_uuid)
}

#[pg_extern(stable, parallel_safe)]
fn tenant_id_bigint() -> i64 {
    parse_ids(&[tenant_id()], "bigint", |s| s.parse().ok()).remove(0)
}

#[pg_extern(stable, parallel_safe)]
fn tenant_ids_bigint() -> Vec<i64> {
    parse_ids(&tenant_ids(), "bigint", |s| s.parse().ok())
}

#[pg_extern(stable, parallel_safe)]
fn tenant_id_int() -> i32 {
    parse_ids(&[tenant_id()], "integer", |s| s.parse().ok()).remove(0)
}

#[pg_extern(stable, parallel_safe)]
fn tenant_ids_int() -> Vec<i32> {
    parse_ids(&tenant_ids(), "integer", |s| s.parse().ok())
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
    let (_, ring) = gucs::keyring();
    token::sign(&claims.0, &ring, kid).or_raise()
}
