//! The live state of a bypass, which the context consults on every
//! statement: whether this backend is bypassing, and in a parallel worker
//! whether its leader is (`tenantguard.leader_bypass_until`, whose check
//! hook lives here). `bypass.rs` (a capability above the context) starts
//! and ends a bypass through `start`/`clear` once it has checked the
//! secret; nothing here can start one.

use crate::{gucs, spi};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr};

pub fn hooks() -> gucs::StringHooks {
    gucs::StringHooks {
        check: Some(check_leader_bypass),
        assign: None,
        show: None,
    }
}

#[derive(Clone, Copy)]
struct Active {
    expires_us: i64,
    nest_level: i32,
}

thread_local! {
    static ACTIVE: Cell<Option<Active>> = const { Cell::new(None) };
}

pub fn now_us() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// In a parallel worker: whether its leader is bypassing (see
/// `gucs::LEADER_BYPASS`). Decides only between an empty scope and the
/// `no tenant context` error; it never admits rows.
pub fn leader_active() -> bool {
    if !spi::in_parallel_worker() {
        return false;
    }
    let now = now_us();
    // On a Citus worker, the leader holds a grant (restored here, verified
    // by the leader): the same empty scope while it is live.
    leader_bypassing(now) || GRANT.with(|g| g.get()).is_some_and(|g| now < g.expires_us)
}

/// True while a bypass started in this transaction is live.
pub fn active() -> bool {
    if spi::in_parallel_worker() {
        return false;
    }
    // The clock is read only when something could be live: this runs for
    // every row of a Citus bypass policy and every tenant accessor.
    match ACTIVE.with(|a| a.get()) {
        Some(a) => now_us() < a.expires_us,
        None => grant_active(),
    }
}

pub fn clear() {
    ACTIVE.with(|a| a.set(None));
}

#[pg_guard]
unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PREPARE
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PARALLEL_ABORT
    ) {
        clear();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // SAFETY: reads the nesting level of the subtransaction being aborted.
        let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
        if ACTIVE
            .with(|a| a.get())
            .is_some_and(|a| level <= a.nest_level)
        {
            clear();
        }
    }
}

pub fn init_callbacks() {
    // SAFETY: callbacks live for the backend's lifetime and never raise.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}

/// Start a bypass that ends at `expires_us` or with the (sub)transaction
/// at `nest_level`. Called by `bypass.rs` only, after it checked the secret.
pub fn start(expires_us: i64, nest_level: i32) {
    ACTIVE.with(|a| {
        a.set(Some(Active {
            expires_us,
            nest_level,
        }))
    });
}

/// Whether a bypass was started in this transaction (live or expired).
pub fn started() -> bool {
    ACTIVE.with(|a| a.get()).is_some()
}

thread_local! {
    static SETTING_LEADER_BYPASS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn check_leader_bypass(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: plain read of a backend-global flag; newval points at the
    // proposed value (NULL or a NUL-terminated string).
    let (restoring, empty) = unsafe {
        let p = *newval;
        (pg_sys::InitializingParallelWorker, p.is_null() || *p == 0)
    };
    // Empty (the default, and what end_bypass sets) says "not bypassing".
    if empty || restoring || SETTING_LEADER_BYPASS.with(|f| f.get()) {
        return true;
    }
    // SAFETY: inside a check hook.
    unsafe {
        pg_sys::GUC_check_errcode(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32);
        pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(
            c"tenantguard.leader_bypass_until is set by begin_bypass() only".as_ptr(),
        );
    }
    false
}

/// Set `tenantguard.leader_bypass_until` for this transaction (or savepoint).
pub fn set_leader_bypass(value: &CStr) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SETTING_LEADER_BYPASS.with(|f| f.set(false));
        }
    }
    SETTING_LEADER_BYPASS.with(|f| f.set(true));
    let _reset = Reset;
    // SAFETY: set_config_option with a static name; the check hook admits
    // it while the flag is up; it raises (through pgrx's guard) on failure.
    unsafe {
        pg_sys::set_config_option(
            c"tenantguard.leader_bypass_until".as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
}

/// In a parallel worker: whether the leader was bypassing (and still is,
/// by the clock).
pub fn leader_bypassing(now_us: i64) -> bool {
    gucs::LEADER_BYPASS
        .get()
        .and_then(|v| v.to_str().ok().and_then(|s| s.parse::<i64>().ok()))
        .is_some_and(|until| now_us < until)
}

// ------------------------------------------------------ Citus bypass grants
//
// On a Citus cluster the per-backend secret cannot reach the workers. The
// coordinator's begin_bypass() (bypass.rs), having checked the secret,
// mints a grant (tenantguard_core::bypass_grant) bound to the distributed
// transaction, the role and the ttl, and sends it with `SET LOCAL
// tenantguard.bypass_grant`, which Citus forwards to every worker
// connection of the transaction. A worker backend takes it up when the SET
// runs (check hook): the MAC must verify under the master key, the role must
// be this backend's, the ttl must not have passed, and no other backend of
// this node may have taken up the same grant (shared memory, below). It
// bypasses only while the distributed transaction that Citus assigned to it
// is the one the grant names (`active`).

/// Grants taken up on this node, by nonce, until they expire.
const CLAIM_SLOTS: usize = 128;

#[derive(Copy, Clone, Default)]
struct Claim {
    nonce: [u8; 16],
    pid: i32,
    expires_us: i64,
}

#[derive(Copy, Clone)]
struct Claims {
    slots: [Claim; CLAIM_SLOTS],
}

impl Default for Claims {
    fn default() -> Self {
        Claims {
            slots: [Claim::default(); CLAIM_SLOTS],
        }
    }
}

// SAFETY: plain old data.
unsafe impl pgrx::shmem::PGRXSharedMemory for Claims {}

// SAFETY: the name is unique to this extension.
static CLAIMS: pgrx::lwlock::PgLwLock<Claims> =
    unsafe { pgrx::lwlock::PgLwLock::new(c"tenantguard_bypass_grants") };
static CLAIMS_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called from `_PG_init` while preloading.
pub fn init_shmem() {
    pgrx::pg_shmem_init!(CLAIMS);
    CLAIMS_READY.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Take up the grant `nonce` for this backend: Ok if no other live backend
/// of this node took it up first.
fn claim(nonce: [u8; 16], expires_us: i64, now: i64) -> Result<(), &'static str> {
    if !CLAIMS_READY.load(std::sync::atomic::Ordering::Relaxed) {
        return Err("pg_tenantguard is not in shared_preload_libraries on this node");
    }
    // SAFETY: reads this backend's pid.
    let pid = unsafe { pg_sys::MyProcPid };
    let mut c = CLAIMS.exclusive();
    let mut free = None;
    for (i, s) in c.slots.iter().enumerate() {
        if s.expires_us > now && s.nonce == nonce {
            return if s.pid == pid {
                Ok(())
            } else {
                Err("this bypass grant was already taken up by another session on this node (a grant serves one connection per node: a replay, or citus.max_adaptive_executor_pool_size raised after begin_bypass())")
            };
        }
        if s.expires_us <= now && free.is_none() {
            free = Some(i);
        }
    }
    match free {
        Some(i) => {
            c.slots[i] = Claim {
                nonce,
                pid,
                expires_us,
            };
            Ok(())
        }
        None => Err("too many live bypass grants on this node"),
    }
}

#[derive(Clone, Copy)]
struct HeldGrant {
    binding: (i32, u64, i64),
    expires_us: i64,
}

thread_local! {
    /// The grant this backend holds (the value of the GUC, once verified).
    static GRANT: Cell<Option<HeldGrant>> = const { Cell::new(None) };
    /// Whether the grant's transaction is this one, by local transaction.
    static GRANT_MATCH: Cell<Option<(u32, bool)>> = const { Cell::new(None) };
    /// Up while begin_bypass()/end_bypass() set the GUC themselves.
    static SETTING_GRANT: Cell<bool> = const { Cell::new(false) };
}

pub fn grant_hooks() -> gucs::StringHooks {
    gucs::StringHooks {
        check: Some(check_grant),
        assign: Some(assign_grant),
        show: Some(show_grant),
    }
}

fn grant_key() -> Option<[u8; 32]> {
    crate::keys::master_keyring()
        .primary()
        .ok()
        .map(|k| tenantguard_core::bypass_grant::derive_key(&k.material))
}

/// The bytes of a query that `pg_stat_activity` shows on this node.
pub fn visible_query_bytes() -> usize {
    // SAFETY: a GUC lookup of a core setting.
    unsafe {
        let p = pg_sys::GetConfigOption(c"track_activity_query_size".as_ptr(), true, false);
        if p.is_null() {
            return 1024;
        }
        CStr::from_ptr(p)
            .to_str()
            .ok()
            .and_then(|s| s.trim_end_matches("B").trim().parse::<usize>().ok())
            .unwrap_or(1024)
    }
}

fn verify_grant(
    value: &str,
    take_up: bool,
) -> Result<tenantguard_core::bypass_grant::Grant, &'static str> {
    use tenantguard_core::bypass_grant::{verify, GrantError};
    let key = grant_key()
        .ok_or("no master key on this node (tenantguard.master_key signs bypass grants)")?;
    let now = now_us();
    let (g, mac_at) = verify(&key, value, now).map_err(|e| match e {
        GrantError::Malformed => "not a bypass grant",
        GrantError::BadSignature => "the bypass grant's signature does not verify",
        GrantError::Expired => "the bypass grant has expired",
    })?;
    if !take_up {
        return Ok(g);
    }
    if mac_at < visible_query_bytes() {
        return Err("the bypass grant would be visible in pg_stat_activity on this node (track_activity_query_size is larger than on the coordinator)");
    }
    if spi::current_role_name().as_deref() != Some(g.role.as_str()) {
        return Err("the bypass grant is for another role");
    }
    claim(g.nonce, g.expires_us, now)?;
    Ok(g)
}

#[pg_guard]
unsafe extern "C-unwind" fn check_grant(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: newval points at the proposed value (NULL or a NUL-terminated
    // string); InitializingParallelWorker is a plain backend global.
    let (value, restoring) = unsafe {
        let p = *newval;
        let v = if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        };
        (v, pg_sys::InitializingParallelWorker)
    };
    // A parallel worker restores its leader's value (checked there); it
    // only decides between an empty scope and `no tenant context`.
    if value.is_empty() || restoring {
        return true;
    }
    // begin_bypass() minted it in this backend: nothing to take up.
    let take_up = !SETTING_GRANT.with(|f| f.get());
    match verify_grant(&value, take_up) {
        Ok(_) => true,
        Err(why) => {
            crate::alerts::alert_json(
                "bypass_grant_refused",
                "bypass_refused",
                why,
                serde_json::json!({"why": why}),
            );
            // SAFETY: inside a check hook.
            unsafe { gucs::check_failed(&tenantguard_core::DomainError::BypassRefused(why)) };
            false
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn assign_grant(newval: *const c_char, _extra: *mut c_void) {
    // SAFETY: newval is the value being installed (checked when it was set).
    let value = unsafe {
        if newval.is_null() {
            String::new()
        } else {
            CStr::from_ptr(newval).to_string_lossy().into_owned()
        }
    };
    GRANT_MATCH.with(|m| m.set(None));
    let held = (!value.is_empty())
        .then(|| verify_grant(&value, false).ok())
        .flatten()
        .map(|g| HeldGrant {
            binding: (g.binding.node, g.binding.txn, g.binding.stamp_us),
            expires_us: g.expires_us,
        });
    GRANT.with(|h| h.set(held));
}

#[pg_guard]
unsafe extern "C-unwind" fn show_grant() -> *const c_char {
    if GRANT.with(|g| g.get()).is_some() {
        c"(a bypass grant)".as_ptr()
    } else {
        c"".as_ptr()
    }
}

/// Whether this backend holds a live grant for the distributed transaction
/// it is running (Citus assigns it after the SET, so this is checked when
/// used, once per local transaction).
fn grant_active() -> bool {
    let Some(g) = GRANT.with(|h| h.get()) else {
        return false;
    };
    if now_us() >= g.expires_us {
        return false;
    }
    let lxid = crate::compat::local_transaction_id();
    if let Some((x, ok)) = GRANT_MATCH.with(|m| m.get()) {
        if x == lxid {
            return ok;
        }
    }
    match spi::citus_transaction() {
        Some(t) => {
            let ok = t == g.binding;
            GRANT_MATCH.with(|m| m.set(Some((lxid, ok))));
            ok
        }
        // Not assigned yet: no answer to keep.
        None => false,
    }
}

/// Set `tenantguard.bypass_grant` for this transaction (begin_bypass() and
/// end_bypass() only), through `run`, which issues the SET LOCAL statement
/// that Citus forwards.
pub fn with_own_grant<R>(run: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SETTING_GRANT.with(|f| f.set(false));
        }
    }
    SETTING_GRANT.with(|f| f.set(true));
    let _reset = Reset;
    run()
}
