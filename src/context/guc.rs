//! The hooks of `tenantguard.context`: the check hook verifies every value
//! (SET, SET LOCAL, set_config(), ALTER ROLE/DATABASE SET, a function's SET
//! clause); the assign hook adopts what the check verified and bumps the
//! context's generation. `lib.rs` hands them to `gucs::init`.

use crate::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{c_char, c_void, CStr};

pub fn hooks() -> gucs::StringHooks {
    gucs::StringHooks {
        check: Some(check_context),
        assign: Some(assign_context),
        show: None,
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_context(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // A parallel worker restores the leader's GUCs before its own keyring
    // (GUCs are restored in name order). Accept here: every accessor verifies
    // the token again before use, so nothing unverified is ever trusted.
    // SAFETY: plain read of a backend-global flag.
    if unsafe { pg_sys::InitializingParallelWorker } {
        super::forget_pending();
        return true;
    }
    // SAFETY: newval points at the proposed value (possibly NULL).
    let token = unsafe {
        let p = *newval;
        if p.is_null() {
            super::forget_pending();
            return true;
        }
        CStr::from_ptr(p).to_bytes()
    };
    if token.is_empty() {
        super::forget_pending();
        return true;
    }
    match super::verify_for_set(token) {
        Ok(()) => true,
        Err(e) => {
            crate::alerts::alert("context_refused", &e);
            // SAFETY: we are inside a check hook.
            unsafe { gucs::check_failed(&e) };
            false
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn assign_context(newval: *const c_char, _extra: *mut c_void) {
    let gen = gucs::bump_context_generation();
    // SAFETY: newval is NULL or the NUL-terminated value being assigned.
    let raw = (!newval.is_null()).then(|| unsafe { CStr::from_ptr(newval) }.to_bytes());
    super::adopt_pending(raw, gen);
    super::accessors::context_changed();
}
