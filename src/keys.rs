//! The three key GUCs (`tenantguard.signing_keys`, `audit_keys`,
//! `master_key`): their check, assign and show hooks, and the parsed
//! keyrings the rest of the extension reads. A foundation: it imports no
//! capability. The modules that cache what a key derived (verified
//! contexts, tenant data keys) hand in `Listeners` to hear of a change.

use crate::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::rc::Rc;
use tenantguard_core::keyring::Keyring;

thread_local! {
    static AUDIT_KEYRING: RefCell<Rc<Keyring>> = RefCell::new(Rc::new(Keyring::default()));
    static MASTER_KEYRING: RefCell<Rc<Keyring>> = RefCell::new(Rc::new(Keyring::default()));
    /// The parsed keyring and a generation counter bumped on every change,
    /// so cached verified contexts are dropped when a key is removed.
    static KEYRING: RefCell<(u64, Rc<Keyring>)> = RefCell::new((0, Rc::new(Keyring::default())));
}

/// The keyring's generation alone (no clone of the keyring: the policy
/// accessors read it on every call).
pub fn keyring_generation() -> u64 {
    KEYRING.with(|k| k.borrow().0)
}

pub fn keyring() -> (u64, Rc<Keyring>) {
    KEYRING.with(|k| {
        let k = k.borrow();
        (k.0, k.1.clone())
    })
}

/// Who hears of a key change (set once at load by `lib.rs`).
#[derive(Clone, Copy, Default)]
pub struct Listeners {
    /// The signing keys changed: drop every verified context.
    pub signing_changed: Option<fn()>,
    /// The master key changed: drop every derived tenant key.
    pub master_changed: Option<fn()>,
}

thread_local! {
    static LISTENERS: std::cell::Cell<Listeners> = const {
        std::cell::Cell::new(Listeners { signing_changed: None, master_changed: None })
    };
}

pub fn set_listeners(l: Listeners) {
    LISTENERS.with(|c| c.set(l));
}

/// The hooks `gucs::init` registers for the key GUCs.
pub fn hooks() -> (gucs::StringHooks, gucs::StringHooks, gucs::StringHooks) {
    (
        gucs::StringHooks {
            check: Some(check_signing_keys),
            assign: Some(assign_signing_keys),
            show: Some(show_signing_keys),
        },
        gucs::StringHooks {
            check: Some(check_audit_keys),
            assign: Some(assign_audit_keys),
            show: Some(show_audit_keys),
        },
        gucs::StringHooks {
            check: Some(check_master_key),
            assign: Some(assign_master_key),
            show: Some(show_master_key),
        },
    )
}

/// What the three key GUCs hold as their value once checked. The key
/// material lives only in the hook's `extra`; the value itself never changes,
/// so Postgres has nothing to print: on a reload it logs `parameter "…"
/// changed to "<the file's text>"` only when the value changed, and
/// pg_settings' reset_val and GetConfigOption() show this text. SHOW and
/// current_setting() go through the show hooks (key ids only).
pub const KEYS_HIDDEN: &CStr = c"(tenantguard: key material hidden; SHOW prints the key ids)";

/// Which key GUC a hook serves.
#[derive(Clone, Copy)]
enum KeyGuc {
    Signing = 0,
    Audit = 1,
    Master = 2,
}

thread_local! {
    /// The last key spec this process read from the configuration, per key
    /// GUC. A parallel worker receives the leader's value, which is the
    /// hidden text, and takes the keys from here: the worker is forked from
    /// the postmaster (which read the same file) or loaded the library and
    /// read the file itself.
    static KEY_SPECS: RefCell<[Option<String>; 3]> = const { RefCell::new([None, None, None]) };
}

/// The shared check hook of the key GUCs: parse (refusing weak or malformed
/// keys), keep the spec in `extra`, and replace the value by KEYS_HIDDEN.
unsafe fn check_keys(
    which: KeyGuc,
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: newval points at the proposed value (possibly NULL).
    let raw = unsafe { gucs::guc_str(*newval) };
    let spec = if raw.as_bytes() == KEYS_HIDDEN.to_bytes() {
        KEY_SPECS
            .with(|k| k.borrow()[which as usize].clone())
            .unwrap_or_default()
    } else {
        raw
    };
    if let Err(e) = Keyring::parse(&spec) {
        // SAFETY: we are inside a check hook.
        unsafe { gucs::check_failed(&e) };
        return false;
    }
    if source != pg_sys::GucSource::PGC_S_DEFAULT {
        KEY_SPECS.with(|k| k.borrow_mut()[which as usize] = Some(spec.clone()));
    }
    // SAFETY: both are allocated as the GUC machinery expects; it frees the
    // value we replace and later frees ours and the extra.
    unsafe {
        let hidden = gucs::guc_copy(KEYS_HIDDEN.to_bytes());
        let copy = gucs::guc_copy(spec.as_bytes());
        if hidden.is_null() || copy.is_null() {
            return false;
        }
        if !(*newval).is_null() {
            crate::compat::guc_release(*newval as *mut c_void);
        }
        *newval = hidden;
        *extra = copy as *mut c_void;
    }
    true
}

/// The key spec a check hook left in `extra`.
unsafe fn extra_spec(extra: *mut c_void) -> String {
    // SAFETY: extra is NULL or the NUL-terminated copy made by check_keys.
    unsafe { gucs::guc_str(extra as *const c_char) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_signing_keys(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: forwarded from the GUC machinery.
    unsafe { check_keys(KeyGuc::Signing, newval, extra, source) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_audit_keys(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: forwarded from the GUC machinery.
    unsafe { check_keys(KeyGuc::Audit, newval, extra, source) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_master_key(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: forwarded from the GUC machinery.
    unsafe { check_keys(KeyGuc::Master, newval, extra, source) }
}

#[pg_guard]
unsafe extern "C-unwind" fn assign_signing_keys(_newval: *const c_char, extra: *mut c_void) {
    // SAFETY: extra is what the check hook produced for this value.
    let spec = unsafe { extra_spec(extra) };
    // The check hook accepted it, so this parse succeeds; fail closed anyway.
    let ring = Keyring::parse(&spec).unwrap_or_default();
    KEYRING.with(|k| {
        let mut k = k.borrow_mut();
        k.0 += 1;
        k.1 = Rc::new(ring);
    });
    if let Some(f) = LISTENERS.with(|l| l.get().signing_changed) {
        f();
    }
}

pub fn master_keyring() -> Rc<Keyring> {
    MASTER_KEYRING.with(|k| k.borrow().clone())
}

#[pg_guard]
unsafe extern "C-unwind" fn assign_master_key(_newval: *const c_char, extra: *mut c_void) {
    // SAFETY: extra is what the check hook produced for this value.
    let spec = unsafe { extra_spec(extra) };
    let ring = Keyring::parse(&spec).unwrap_or_default();
    MASTER_KEYRING.with(|k| *k.borrow_mut() = Rc::new(ring));
    if let Some(f) = LISTENERS.with(|l| l.get().master_changed) {
        f();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn show_master_key() -> *const c_char {
    show_kids(&master_keyring())
}

pub fn audit_keyring() -> Rc<Keyring> {
    AUDIT_KEYRING.with(|k| k.borrow().clone())
}

#[pg_guard]
unsafe extern "C-unwind" fn assign_audit_keys(_newval: *const c_char, extra: *mut c_void) {
    // SAFETY: extra is what the check hook produced for this value.
    let spec = unsafe { extra_spec(extra) };
    let ring = Keyring::parse(&spec).unwrap_or_default();
    AUDIT_KEYRING.with(|k| *k.borrow_mut() = Rc::new(ring));
}

#[pg_guard]
unsafe extern "C-unwind" fn show_audit_keys() -> *const c_char {
    show_kids(&audit_keyring())
}

#[pg_guard]
unsafe extern "C-unwind" fn show_signing_keys() -> *const c_char {
    show_kids(&keyring().1)
}

/// What SHOW prints for a keyring GUC: the kids, never the material.
fn show_kids(ring: &Keyring) -> *const c_char {
    let c = CString::new(ring.describe()).unwrap_or_default();
    // SAFETY: the GUC code copies the returned string before our memory
    // context is reset.
    unsafe { pg_sys::pstrdup(c.as_ptr()) }
}
