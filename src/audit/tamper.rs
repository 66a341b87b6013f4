//! What the ProcessUtility guard (`guard_hook.rs`, a higher module) needs
//! to know from the audit trail: whether the DDL it sees is the
//! extension's own (`allow_internal`), and whether this session has
//! written audit records (then `SET session_replication_role` is refused).
//! The guard reads these; it is never called from here.

use std::cell::Cell;

thread_local! {
    static INTERNAL: Cell<bool> = const { Cell::new(false) };
    static WROTE_AUDIT: Cell<bool> = const { Cell::new(false) };
}

/// The extension's own DDL on audit triggers (audit()) passes the guard.
pub fn allow_internal<R>(f: impl FnOnce() -> R) -> R {
    let prev = INTERNAL.with(|i| i.replace(true));
    let r = f();
    INTERNAL.with(|i| i.set(prev));
    r
}

/// Whether the statement running now is the extension's own DDL.
pub fn internal() -> bool {
    INTERNAL.with(|i| i.get())
}

pub fn note_audit_write() {
    WROTE_AUDIT.with(|w| w.set(true));
}

/// Whether this session has written audit records.
pub fn wrote_audit() -> bool {
    WROTE_AUDIT.with(|w| w.get())
}
