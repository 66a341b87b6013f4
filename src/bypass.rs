//! Cross-tenant maintenance access, guarded by a per-backend secret.
//!
//! * The secret is 256 bits from the OS RNG, generated on first use, kept in
//!   this backend's memory only: never in a GUC, never logged, gone when the
//!   backend exits. Only members of `tenantguard_bypass` can fetch it.
//! * `begin_bypass` needs this backend's secret and a reason; bypass lasts
//!   until the transaction ends (commit, abort, or rollback of the savepoint
//!   it was started in) or the ttl runs out, whichever is first.
//! * Parallel workers: `bypassing()` is PARALLEL RESTRICTED, so the planner
//!   evaluates it in the leader only (as the bypass policy's InitPlan, whose
//!   value is passed to the workers). A worker that called it directly would
//!   see `false`: bypass can only fail closed there. The workers evaluate
//!   the tenant policy themselves; without a context they raise `no tenant
//!   context`, unless `tenantguard.leader_bypass_until` (set here as SET
//!   LOCAL, restored in the workers, settable by nobody else) says their
//!   leader is bypassing: then their scope is empty and the leader's bypass
//!   policy admits the rows.

use crate::context::alert_json;
use crate::error::raise;
use crate::{gucs, seclog, session};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use tenantguard_core::DomainError;

#[derive(Clone, Copy)]
struct Active {
    expires_us: i64,
    nest_level: i32,
}

thread_local! {
    static SECRET: RefCell<Option<[u8; 32]>> = const { RefCell::new(None) };
    static ACTIVE: Cell<Option<Active>> = const { Cell::new(None) };
}

fn secret_hex() -> String {
    SECRET.with(|s| {
        let mut s = s.borrow_mut();
        let bytes = s.get_or_insert_with(|| {
            let mut b = [0u8; 32];
            getrandom::getrandom(&mut b).unwrap_or_else(|e| {
                crate::error::raise_msg(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("tenantguard: OS random number generator failed: {e}"),
                )
            });
            b
        });
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_us() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// In a parallel worker: whether its leader is bypassing (see
/// `gucs::LEADER_BYPASS`). Decides only between an empty scope and the
/// `no tenant context` error; it never admits rows.
pub fn leader_active() -> bool {
    session::in_parallel_worker() && gucs::leader_bypassing(now_us())
}

/// True while a bypass started in this transaction is live.
pub fn active() -> bool {
    if session::in_parallel_worker() {
        return false;
    }
    match ACTIVE.with(|a| a.get()) {
        Some(a) => now_us() < a.expires_us,
        None => false,
    }
}

fn clear() {
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

pub fn init() {
    // SAFETY: callbacks live for the backend's lifetime and never raise.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}

fn refuse(why: &'static str, reason: &str) -> ! {
    let e = DomainError::BypassRefused(why);
    alert_json(
        "bypass_refused",
        e.reason(),
        &e.to_string(),
        serde_json::json!({"why": why, "given_reason": reason}),
    );
    raise(e)
}

/// This backend's bypass secret. EXECUTE only for `tenantguard_bypass`;
/// every call is recorded (the secret itself never is).
#[pg_extern(volatile, parallel_unsafe)]
fn bypass_secret() -> String {
    let s = secret_hex();
    seclog::record(
        "bypass_secret_issued",
        None,
        serde_json::json!({"pid": std::process::id()}),
    );
    s
}

/// Turn bypass on for the current transaction, at most for `ttl`.
#[pg_extern(volatile, parallel_unsafe)]
fn begin_bypass(
    secret: Option<&str>,
    reason: Option<&str>,
    ttl: default!(Option<pgrx::datum::Interval>, "'15 minutes'"),
) {
    let reason_s = reason.unwrap_or("").trim();
    let have = SECRET.with(|s| s.borrow().is_some());
    let ok = have
        && secret.is_some_and(|given| constant_time_eq(given.as_bytes(), secret_hex().as_bytes()));
    if !ok {
        refuse("the secret is not this backend's bypass secret", reason_s);
    }
    if reason_s.is_empty() {
        refuse("a non-empty reason is required", reason_s);
    }
    let ttl_us = match ttl {
        Some(i) => i.as_micros(),
        None => refuse("a ttl is required", reason_s),
    };
    let max_us = gucs::BYPASS_MAX_TTL.get() as i128 * 1_000_000;
    if ttl_us <= 0 || ttl_us > max_us {
        refuse(
            "ttl must be positive and at most tenantguard.bypass_max_ttl",
            reason_s,
        );
    }
    let expires_us = now_us() + ttl_us as i64;
    // SAFETY: reads the current transaction nesting level.
    let nest_level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    ACTIVE.with(|a| {
        a.set(Some(Active {
            expires_us,
            nest_level,
        }))
    });
    let until = std::ffi::CString::new(expires_us.to_string()).expect("digits");
    gucs::set_leader_bypass(&until);
    let detail = serde_json::json!({
        "reason": reason_s,
        "ttl_seconds": (ttl_us / 1_000_000) as i64,
        "session_role": session::session_role_name(),
    });
    alert_json("bypass_begin", "bypass", reason_s, detail.clone());
    seclog::record("bypass_begin", None, detail);
}

/// End bypass now.
#[pg_extern(volatile, parallel_unsafe)]
fn end_bypass() {
    if ACTIVE.with(|a| a.get()).is_some() {
        clear();
        gucs::set_leader_bypass(c"");
        seclog::record("bypass_end", None, serde_json::json!({}));
    }
}

/// Whether bypass is live. Used by the generated bypass policy.
#[pg_extern(stable, parallel_restricted)]
fn bypassing() -> bool {
    active()
}
