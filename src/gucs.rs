//! Every GUC of the extension, with the narrowest context that works.
//!
//! * `tenantguard.context` (USERSET): the signed token. Its check hook
//!   verifies it, so every path that sets a GUC (SET, SET LOCAL,
//!   set_config(), ALTER ROLE/DATABASE SET, a function's SET clause) is
//!   verified. A refused value leaves the previous one in place.
//! * `tenantguard.signing_keys` (SIGHUP, superuser-only, not in SHOW ALL):
//!   `kid:key,...`. Only postgresql.conf / ALTER SYSTEM can set it. Its show
//!   hook prints the kids, never the material, even to superusers.
//!
//! The `tenantguard` prefix is reserved, so a typo such as
//! `SET tenantguard.contxt` errors instead of creating a placeholder.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use std::ffi::{c_char, CStr, CString};
use tenantguard_core::DomainError;

pub static CONTEXT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
pub static SIGNING_KEYS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
pub static AUDIT_KEYS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
pub static MASTER_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

// ------------------------------------------------------------ hook helpers
// Shared by the check hooks that live with what they check (keys.rs,
// context/guc.rs, context/bypass_state.rs).

/// A NUL-terminated copy in GUC memory (NULL if out of memory).
pub unsafe fn guc_copy(b: &[u8]) -> *mut c_char {
    // SAFETY: n + 1 bytes are allocated, then filled.
    unsafe {
        let p = crate::compat::guc_alloc(b.len() + 1) as *mut u8;
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(b.as_ptr(), p, b.len());
            *p.add(b.len()) = 0;
        }
        p as *mut c_char
    }
}

/// A GUC string value (NULL reads as empty).
///
/// SAFETY: `p` is NULL or a NUL-terminated string owned by the GUC code.
pub unsafe fn guc_str(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: see the function's contract.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// The raw token currently in `tenantguard.context`, without copying.
/// The returned slice is valid until the GUC changes; callers compare or
/// copy it immediately.
pub fn context_raw<'a>() -> Option<&'a [u8]> {
    // SAFETY: the GUC machinery owns the string; the pointer is either NULL
    // or a NUL-terminated string that stays valid until the next assignment,
    // which cannot happen while we hold the slice (single-threaded backend,
    // no GUC changes inside our accessors).
    unsafe {
        let p = *CONTEXT.as_ptr();
        if p.is_null() {
            return None;
        }
        let b = CStr::from_ptr(p).to_bytes();
        if b.is_empty() {
            None
        } else {
            Some(b)
        }
    }
}

/// Bumped by the assign hook of `tenantguard.context`, which Postgres calls
/// for every change of the value (SET, set_config, RESET, a function's SET
/// clause, the restore at transaction/savepoint end, a parallel worker's
/// restore). Equal counts mean the same token, so per-statement caches
/// compare this number instead of the token's bytes.
static CONTEXT_GEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub fn context_generation() -> u64 {
    CONTEXT_GEN.load(std::sync::atomic::Ordering::Relaxed)
}

/// Called by the assign hook only (context/guc.rs): the new generation.
pub fn bump_context_generation() -> u64 {
    CONTEXT_GEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

/// Whether `tenantguard.context` holds a token (without measuring it).
pub fn context_present() -> bool {
    // SAFETY: as in context_raw(): NULL or a NUL-terminated string owned by
    // the GUC machinery; only its first byte is read.
    unsafe {
        let p = *CONTEXT.as_ptr();
        !p.is_null() && *p != 0
    }
}

/// Tell the GUC machinery why a value was refused.
///
/// SAFETY: must only be called from inside a GUC check hook, where these
/// globals are read right after the hook returns false.
pub unsafe fn check_failed(e: &DomainError) {
    let msg = CString::new(e.to_string()).unwrap_or_else(|_| c"invalid value".to_owned());
    // SAFETY: pstrdup copies into the current memory context; the GUC code
    // reads the pointer before that context is reset.
    unsafe {
        pg_sys::GUC_check_errcode(crate::error::errcode(e.sqlstate()) as i32);
        pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(msg.as_ptr());
    }
}

/// The hooks of the string GUCs, from the modules that own what they
/// check: `keys` (the key GUCs), `context::guc` (the token) and
/// `context::bypass_state` (the leader's bypass, for parallel workers).
/// `lib.rs` passes them in; this module imports none of them.
pub struct Hooks {
    pub signing_keys: StringHooks,
    pub audit_keys: StringHooks,
    pub master_key: StringHooks,
    pub leader_bypass: StringHooks,
    pub bypass_grant: StringHooks,
    pub context: StringHooks,
}

#[derive(Clone, Copy)]
pub struct StringHooks {
    pub check: pg_sys::GucStringCheckHook,
    pub assign: pg_sys::GucStringAssignHook,
    pub show: pg_sys::GucShowHook,
}

pub fn init(h: Hooks) {
    // SAFETY: hooks are #[pg_guard]ed and never raise on their own.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"tenantguard.signing_keys",
            c"HS256 keys that sign tenant context tokens, as kid:key,kid:key.",
            c"Superuser-only; set in postgresql.conf. Keys shorter than 32 bytes are refused. SHOW prints kids only.",
            &SIGNING_KEYS,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
            h.signing_keys.check,
            h.signing_keys.assign,
            h.signing_keys.show,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"tenantguard.audit_keys",
            c"HMAC keys of the audit hash chain, as kid:key,kid:key (first one signs).",
            c"Superuser-only; set in postgresql.conf; separate from the signing keys. SHOW prints kids only.",
            &AUDIT_KEYS,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
            h.audit_keys.check,
            h.audit_keys.assign,
            h.audit_keys.show,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"tenantguard.master_key",
            c"Master key for tenant data keys (encrypt/decrypt), as kid:key.",
            c"Superuser-only; set in postgresql.conf. Tenant keys are derived from it with HKDF-SHA256. SHOW prints the kid only.",
            &MASTER_KEY,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
            h.master_key.check,
            h.master_key.assign,
            h.master_key.show,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"tenantguard.leader_bypass_until",
            c"Internal: when this backend's bypass ends, for its parallel workers.",
            c"Set by begin_bypass()/end_bypass() only; grants nothing.",
            &LEADER_BYPASS,
            GucContext::Suset,
            GucFlags::NO_SHOW_ALL | GucFlags::NO_RESET_ALL,
            h.leader_bypass.check,
            h.leader_bypass.assign,
            h.leader_bypass.show,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"tenantguard.bypass_grant",
            c"Internal, on Citus: the signed grant of the coordinator's bypass, for this distributed transaction.",
            c"Set by begin_bypass() on the coordinator, forwarded by Citus; a worker verifies it, binds it to the distributed transaction and lets one connection use it.",
            &BYPASS_GRANT,
            GucContext::Userset,
            GucFlags::NO_SHOW_ALL | GucFlags::NO_RESET_ALL | GucFlags::NOT_WHILE_SEC_REST,
            h.bypass_grant.check,
            h.bypass_grant.assign,
            h.bypass_grant.show,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"tenantguard.context",
            c"The signed tenant context token of this transaction.",
            c"Set through tenantguard.set_context(); every value is verified when set.",
            &CONTEXT,
            GucContext::Userset,
            GucFlags::NO_SHOW_ALL | GucFlags::NOT_WHILE_SEC_REST,
            h.context.check,
            h.context.assign,
            h.context.show,
        );
    }
}

/// When this backend's bypass ends (Postgres µs, as text; empty: none).
/// Set only by begin_bypass()/end_bypass(), as SET LOCAL, so it ends with
/// the bypass's transaction or savepoint, and restored by Postgres in the
/// backend's parallel workers. A worker finding no context reads an empty
/// scope when its leader is bypassing (the bypass policy, evaluated by the
/// leader, admits the rows) and fails with `no tenant context` otherwise.
/// It grants nothing: the secret stays in the leader.
pub static LEADER_BYPASS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));

/// On Citus: the coordinator's bypass grant for this distributed
/// transaction (`context::bypass_state`). USERSET because Citus forwards it
/// as the application's own `SET LOCAL`; the check hook refuses any value
/// that is not a live grant minted for this role, and lets one connection
/// per node take each one up.
pub static BYPASS_GRANT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));

pub fn reserve_prefix() {
    // SAFETY: plain call into guc.c with a static string.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"tenantguard".as_ptr()) };
}

/// Reason recorded when a guarded schema gets a table without the tenant
/// column: `SET LOCAL tenantguard.shared_reason = '...'; CREATE TABLE ...`.
pub static SHARED_REASON: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));

/// Audit capture trigger and maintenance hook switch.
pub static AUDIT_HOOK: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Write audit records sealed to `audit_inbox` at commit and let a
/// background writer place them in their chains (needs preload).
pub static AUDIT_BACKGROUND: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Background chaining: beyond this many records waiting for the writer, a
/// committing transaction chains its own records (0: no bound).
pub static AUDIT_BACKGROUND_MAX_BACKLOG: GucSetting<i32> = GucSetting::<i32>::new(10_000);

/// Seal each record's actor, client_ip and user_agent under the key of the
/// data subject the actor is (issue 27): erasing that subject makes them
/// unreadable, as its personal values are.
pub static AUDIT_SEAL_ACTOR: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Revocation / allowlist / staff-grant checks. Only postgresql.conf can
/// turn them off (benchmarking, emergencies); status() reports it.
pub static ACCESS_CHECKS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Audit partitions younger than this (in months, by their upper bound)
/// are never dropped. Default 84 (7 years).
pub static AUDIT_RETENTION_MONTHS: GucSetting<i32> = GucSetting::<i32>::new(84);

/// Share of denied authorize() decisions written to the audit trail
/// (0 = none, 1 = all; at most one per statement and action).
pub static AUTHZ_DENY_SAMPLE: GucSetting<f64> = GucSetting::<f64>::new(0.0);

/// Record denied and forged attempts through a background worker
/// (`security_log` row + NOTIFY tenantguard_alert). Needs preload.
pub static ALERT_NOTIFY: GucSetting<bool> = GucSetting::<bool>::new(false);
/// The database the alert worker connects to.
pub static ALERT_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

pub fn alert_database() -> String {
    ALERT_DATABASE
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres".into())
}

/// Longest bypass a caller may ask for, in seconds.
pub static BYPASS_MAX_TTL: GucSetting<i32> = GucSetting::<i32>::new(3600);

/// On a hot standby: refuse contexts once replay is older than this many
/// seconds (0: no bound). Checked at every statement (access.rs).
pub static STANDBY_MAX_LAG: GucSetting<i32> = GucSetting::<i32>::new(5);
/// On a primary (with preload): commit a heartbeat every second, so a
/// standby's replay timestamp stays fresh while the primary is idle.
pub static STANDBY_HEARTBEAT: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn init_limits(preloaded: bool) {
    GucRegistry::define_bool_guc(
        c"tenantguard.access_checks",
        c"Check revocations, IP allowlists and staff grants at every statement.",
        c"Sighup. Turning it off fails open for revocation (never for signatures); for benchmarking only.",
        &ACCESS_CHECKS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"tenantguard.shared_reason",
        c"Marks the next table created in a guarded schema as shared, with this reason.",
        c"Set it with SET LOCAL in the migration that creates a reference table.",
        &SHARED_REASON,
        GucContext::Userset,
        GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_bool_guc(
        c"tenantguard.audit_guard",
        c"Refuse DDL that would disable, drop or rename the audit trail (needs shared_preload_libraries).",
        c"Sighup: set to off in postgresql.conf for maintenance only.",
        &AUDIT_HOOK,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"tenantguard.audit_background",
        c"Chain audit records in a background writer instead of in the committing transaction (needs shared_preload_libraries).",
        c"Superuser-only (ALTER ROLE/DATABASE ... SET works). Records are written, sealed, with the transaction and appear in audit_log once the writer has chained them.",
        &AUDIT_BACKGROUND,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenantguard.audit_background_max_backlog",
        c"With background chaining, the records that may wait for the writer; beyond them a committing transaction chains its own records (0 = no bound).",
        c"Sighup. Keeps the inbox, and the time until records appear in audit_log, bounded when the writer cannot keep up.",
        &AUDIT_BACKGROUND_MAX_BACKLOG,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"tenantguard.audit_seal_actor",
        c"Seal each audit record's actor, client_ip and user_agent under the per-subject key of the actor (the token's sub).",
        c"Superuser-only (ALTER DATABASE ... SET works). erase_subject(sub) then makes them unreadable; export_audit(..., decrypt => true) opens them for tenantguard_auditor.",
        &AUDIT_SEAL_ACTOR,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"tenantguard.authz_deny_sample",
        c"Share of denied authorize() decisions recorded (0 = none, 1 = all).",
        c"Superuser-only (ALTER ROLE/DATABASE ... SET works). At most one record per statement and action.",
        &AUTHZ_DENY_SAMPLE,
        0.0,
        1.0,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenantguard.audit_retention_months",
        c"drop_audit_partition() refuses partitions that end less than this many months ago.",
        c"Sighup: set in postgresql.conf. Default 84 (7 years).",
        &AUDIT_RETENTION_MONTHS,
        1,
        1200,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenantguard.bypass_max_ttl",
        c"Longest ttl begin_bypass() accepts, in seconds.",
        c"Superuser-only.",
        &BYPASS_MAX_TTL,
        1,
        86400,
        GucContext::Suset,
        GucFlags::default(),
    );

    GucRegistry::define_int_guc(
        c"tenantguard.standby_max_lag",
        c"On a hot standby, refuse tenant contexts once replay is this many seconds behind (0: no bound).",
        c"SIGHUP. Revocations reach a standby by replay: a lagging standby could accept a revoked token. Needs the primary's heartbeat (tenantguard.standby_heartbeat) while it is idle.",
        &STANDBY_MAX_LAG,
        0,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );

    // Postmaster-context GUCs can only be defined while preloading; loaded
    // later, the library runs without the alert worker.
    if preloaded {
        GucRegistry::define_bool_guc(
            c"tenantguard.standby_heartbeat",
            c"Commit a heartbeat every second from a background worker, so standbys can tell lag from idleness.",
            c"Postmaster. One empty transaction (an XID and a commit record) per second, on a primary only.",
            &STANDBY_HEARTBEAT,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_bool_guc(
            c"tenantguard.alert_notify",
            c"Record denied and forged attempts in security_log and NOTIFY tenantguard_alert, from a background worker.",
            c"Postmaster: set in postgresql.conf with shared_preload_libraries; the refused transaction cannot do it itself.",
            &ALERT_NOTIFY,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_string_guc(
            c"tenantguard.alert_database",
            c"Database the alert worker connects to (NOTIFY is delivered there).",
            c"Postmaster. Alerts from every database are recorded there, with the database name.",
            &ALERT_DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
}
