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
    spi::in_parallel_worker() && leader_bypassing(now_us())
}

/// True while a bypass started in this transaction is live.
pub fn active() -> bool {
    if spi::in_parallel_worker() {
        return false;
    }
    match ACTIVE.with(|a| a.get()) {
        Some(a) => now_us() < a.expires_us,
        None => false,
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
