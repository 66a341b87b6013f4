//! The ProcessUtility hook (only with `shared_preload_libraries`). It
//! refuses, even for superusers, DDL that would silence or remove the
//! audit trail: disabling or re-targeting the audit triggers, dropping or
//! renaming the audit tables or triggers, TRUNCATE of the audit tables,
//! dropping the extension, and `SET session_replication_role` in a session
//! that has written audit records. `tenantguard.audit_guard = off` in
//! postgresql.conf (SIGHUP) turns it off for maintenance.
//!
//! It also guards protected tables in guarded schemas against their
//! non-superuser owners, before the statement runs: dropping a generated
//! policy, altering or renaming any policy, moving the table out of the
//! schema (the event triggers of `sql/guard.sql` refuse the rest, and the
//! same without preload). Always chains to the previous hook, as pgaudit does.

use crate::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;
static ACTIVE: AtomicBool = AtomicBool::new(false);

pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

fn refuse(what: &str) -> ! {
    crate::alerts::alert_json("audit_tamper_refused", "ddl", what, serde_json::Value::Null);
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("tenantguard: {what} is refused: it would silence or remove the audit trail"),
        "Set tenantguard.audit_guard = off in postgresql.conf and reload for supervised maintenance."
    );
}

/// SAFETY: `list` is NULL or a valid pointer List.
unsafe fn list_ptrs(list: *mut pg_sys::List) -> Vec<*mut c_void> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: PG13+ lists are arrays of ListCell.
    unsafe {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).ptr_value)
            .collect()
    }
}

/// SAFETY: `node` is a String (PG15+) / Value (PG13-14) node.
unsafe fn str_node(node: *mut c_void) -> Option<String> {
    if node.is_null() {
        return None;
    }
    #[cfg(not(any(feature = "pg13", feature = "pg14")))]
    // SAFETY: checked by the caller's context (name lists hold String nodes).
    unsafe {
        let s = (*(node as *mut pg_sys::String)).sval;
        (!s.is_null()).then(|| CStr::from_ptr(s).to_string_lossy().into_owned())
    }
    #[cfg(any(feature = "pg13", feature = "pg14"))]
    // SAFETY: as above, for the older Value node.
    unsafe {
        let s = (*(node as *mut pg_sys::Value)).val.str_;
        (!s.is_null()).then(|| CStr::from_ptr(s).to_string_lossy().into_owned())
    }
}

fn cstr(p: *const c_char) -> Option<String> {
    // SAFETY: NULL or a NUL-terminated string owned by the parse tree.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// SAFETY: `rv` is NULL or a valid RangeVar.
unsafe fn relid(rv: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    if rv.is_null() {
        return pg_sys::Oid::INVALID;
    }
    // SAFETY: missing_ok lookup without locking.
    unsafe {
        pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as i32,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    }
}

/// An audit relation: the extension's trail tables and audit_log partitions.
fn is_audit_relation(oid: pg_sys::Oid) -> bool {
    if oid == pg_sys::Oid::INVALID {
        return false;
    }
    // SAFETY: syscache lookups that return NULL/InvalidOid when missing.
    unsafe {
        let nsp = pg_sys::get_rel_namespace(oid);
        let tg = pg_sys::get_namespace_oid(c"tenantguard".as_ptr(), true);
        if nsp == pg_sys::Oid::INVALID || nsp != tg {
            return false;
        }
        let name = cstr(pg_sys::get_rel_name(oid)).unwrap_or_default();
        name.starts_with("audit_log")
            || matches!(
                name.as_str(),
                "audit_head"
                    | "audit_inbox"
                    | "security_log"
                    | "revocation"
                    | "audit_checkpoint"
                    | "audit_export"
            )
    }
}

/// Whether a trigger's function name resolves to tenantguard.refuse_change().
///
/// SAFETY: `funcname` is the name list of a CreateTrigStmt.
unsafe fn is_refuse_change(funcname: *mut pg_sys::List) -> bool {
    // SAFETY: catalog lookups; a missing function gives InvalidOid.
    unsafe {
        let oid = pg_sys::LookupFuncName(funcname, 0, std::ptr::null(), true);
        if oid == pg_sys::Oid::INVALID {
            return false;
        }
        let tg = pg_sys::get_namespace_oid(c"tenantguard".as_ptr(), true);
        pg_sys::get_func_namespace(oid) == tg
            && cstr(pg_sys::get_func_name(oid)).as_deref() == Some("refuse_change")
    }
}

fn is_audit_trigger(name: &str) -> bool {
    name.starts_with("tenantguard_audit") || name == "refuse_change" || name == "refuse_truncate"
}

/// SAFETY: `stmt` is the utility statement of the PlannedStmt being run.
#[allow(non_upper_case_globals)]
unsafe fn check(stmt: *mut pg_sys::Node) {
    if stmt.is_null() {
        return;
    }
    // SAFETY: every cast below follows the node tag.
    unsafe {
        match (*stmt).type_ {
            pg_sys::NodeTag::T_AlterTableStmt => {
                let s = stmt as *mut pg_sys::AlterTableStmt;
                let rel = relid((*s).relation);
                let audit_rel = is_audit_relation(rel);
                for c in list_ptrs((*s).cmds) {
                    let cmd = c as *mut pg_sys::AlterTableCmd;
                    use pg_sys::AlterTableType::*;
                    let trig = cstr((*cmd).name).unwrap_or_default();
                    // Making a trigger fire ALWAYS only strengthens the trail;
                    // a column's statistics target only steers ANALYZE.
                    if audit_rel
                        && !matches!((*cmd).subtype, AT_EnableAlwaysTrig | AT_SetStatistics)
                    {
                        refuse("ALTER TABLE on an audit table");
                    }
                    match (*cmd).subtype {
                        AT_DisableTrigAll | AT_DisableTrigUser if crate::audit::is_audited(rel) => {
                            refuse("ALTER TABLE ... DISABLE TRIGGER ALL/USER on an audited table");
                        }
                        AT_DisableTrig | AT_EnableTrig | AT_EnableReplicaTrig
                            if is_audit_trigger(&trig) =>
                        {
                            refuse("changing when an audit trigger fires");
                        }
                        _ => {}
                    }
                }
            }
            pg_sys::NodeTag::T_DropStmt => {
                let s = stmt as *mut pg_sys::DropStmt;
                for o in list_ptrs((*s).objects) {
                    match (*s).removeType {
                        pg_sys::ObjectType::OBJECT_TABLE => {
                            let rv = pg_sys::makeRangeVarFromNameList(o as *mut pg_sys::List);
                            if is_audit_relation(relid(rv)) {
                                refuse("DROP TABLE of an audit table");
                            }
                        }
                        pg_sys::ObjectType::OBJECT_TRIGGER => {
                            let names = list_ptrs(o as *mut pg_sys::List);
                            if let Some(t) = names.last().and_then(|n| str_node(*n)) {
                                if is_audit_trigger(&t) {
                                    refuse("DROP TRIGGER of an audit trigger");
                                }
                            }
                        }
                        pg_sys::ObjectType::OBJECT_EXTENSION
                        | pg_sys::ObjectType::OBJECT_SCHEMA => {
                            let name = str_node(o);
                            if matches!(
                                name.as_deref(),
                                Some("pg_tenantguard") | Some("tenantguard")
                            ) {
                                refuse("dropping the extension or its schema");
                            }
                        }
                        _ => {}
                    }
                }
            }
            pg_sys::NodeTag::T_CreateTrigStmt => {
                // A trigger on the trail could drop or rewrite records as they
                // are written. Only the extension's own refusal trigger may be
                // added (audit_add_partitions, a restored dump), resolved to
                // its function, not to a name alike earlier on search_path.
                let s = stmt as *mut pg_sys::CreateTrigStmt;
                if is_audit_relation(relid((*s).relation)) && !is_refuse_change((*s).funcname) {
                    refuse("CREATE TRIGGER on an audit table");
                }
            }
            pg_sys::NodeTag::T_RuleStmt => {
                let s = stmt as *mut pg_sys::RuleStmt;
                if is_audit_relation(relid((*s).relation)) {
                    refuse("CREATE RULE on an audit table");
                }
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let s = stmt as *mut pg_sys::RenameStmt;
                if is_audit_relation(relid((*s).relation)) {
                    refuse("renaming an audit table or its triggers");
                }
                if (*s).renameType == pg_sys::ObjectType::OBJECT_TRIGGER
                    && is_audit_trigger(&cstr((*s).subname).unwrap_or_default())
                {
                    refuse("renaming an audit trigger");
                }
            }
            pg_sys::NodeTag::T_TruncateStmt => {
                let s = stmt as *mut pg_sys::TruncateStmt;
                for r in list_ptrs((*s).relations) {
                    if is_audit_relation(relid(r as *mut pg_sys::RangeVar)) {
                        refuse("TRUNCATE of an audit table");
                    }
                }
            }
            pg_sys::NodeTag::T_VariableSetStmt => {
                let s = stmt as *mut pg_sys::VariableSetStmt;
                if cstr((*s).name).as_deref() == Some("session_replication_role")
                    && crate::audit::tamper::wrote_audit()
                {
                    refuse("SET session_replication_role in a session that wrote audit records");
                }
            }
            _ => {}
        }
    }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    #[cfg(not(feature = "pg13"))] read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // The extension's own install/upgrade scripts are not tampering, and
    // neither is pg_upgrade's schema restore (binary-upgrade mode, which
    // only pg_upgrade can start: it drops and re-creates the extension).
    // SAFETY: plain reads of backend-global flags.
    let creating = unsafe { pg_sys::creating_extension || pg_sys::IsBinaryUpgrade };
    if gucs::AUDIT_HOOK.get() && !crate::audit::tamper::internal() && !creating {
        // SAFETY: pstmt is the statement Postgres is about to run.
        unsafe { check((*pstmt).utilityStmt) };
    }
    if !creating {
        // SAFETY: as above.
        unsafe { check_guarded((*pstmt).utilityStmt) };
    }
    // SAFETY: chain to the previous hook, or the standard implementation.
    unsafe {
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(
                pstmt,
                query_string,
                #[cfg(not(feature = "pg13"))]
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query_string,
                #[cfg(not(feature = "pg13"))]
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    }
}

// ------------------------------------------------------ guarded schemas
// The event triggers of sql/guard.sql refuse a non-superuser's weakening of
// a protected table in a guarded schema after the fact; with preload, the
// same is refused here before it runs, on every version, whatever the
// event-trigger data of a release leaves out (16.2 gives no schema_name for
// a dropped policy). Moving a protected table out of its guarded schema is
// refused here only: an event trigger cannot see where a table came from.

/// Whether `rel` is protected and sits in a guarded schema (the extension
/// installed in this database, at 0.2.0 or later).
fn guarded_protected(rel: pg_sys::Oid) -> bool {
    if rel == pg_sys::Oid::INVALID || crate::spi::relation_oid(c"guarded_schema").is_none() {
        return false;
    }
    crate::spi::read_one::<bool>("SELECT tenantguard.guarded_protected($1)", &[rel.into()])
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// `schema.table` of a relation, quoted as object identities are.
fn qualified(rel: pg_sys::Oid) -> String {
    // SAFETY: syscache lookups of an existing relation.
    unsafe {
        let nsp =
            cstr(pg_sys::get_namespace_name(pg_sys::get_rel_namespace(rel))).unwrap_or_default();
        let name = cstr(pg_sys::get_rel_name(rel)).unwrap_or_default();
        format!(
            "{}.{}",
            pgrx::spi::quote_identifier(nsp),
            pgrx::spi::quote_identifier(name)
        )
    }
}

fn refuse_guarded(msg: String) -> ! {
    crate::alerts::alert_json("guard_refused", "ddl", &msg, serde_json::Value::Null);
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        msg,
        "A superuser can run tenantguard.unprotect() for a reviewed change."
    );
}

/// ALTER POLICY (a RENAME included) of any policy on a guarded protected table.
fn refuse_policy_change(rel: pg_sys::Oid, policy: *const c_char) {
    if guarded_protected(rel) {
        refuse_guarded(format!(
            "tenantguard: altering policy {} on {} is refused: the table is protected",
            pgrx::spi::quote_identifier(cstr(policy).unwrap_or_default()),
            qualified(rel)
        ));
    }
}

/// SAFETY: `stmt` is the utility statement of the PlannedStmt being run.
unsafe fn check_guarded(stmt: *mut pg_sys::Node) {
    // SAFETY: a plain read of the current user's attribute.
    if stmt.is_null() || unsafe { pg_sys::superuser() } {
        return;
    }
    // SAFETY: every cast below follows the node tag.
    unsafe {
        match (*stmt).type_ {
            pg_sys::NodeTag::T_DropStmt => {
                let s = stmt as *mut pg_sys::DropStmt;
                if (*s).removeType != pg_sys::ObjectType::OBJECT_POLICY {
                    return;
                }
                for o in list_ptrs((*s).objects) {
                    let names = o as *mut pg_sys::List;
                    let n = list_ptrs(names).len();
                    if n < 2 {
                        continue;
                    }
                    let policy = list_ptrs(names)
                        .last()
                        .and_then(|p| str_node(*p))
                        .unwrap_or_default();
                    if !policy.starts_with("tenantguard_") {
                        continue;
                    }
                    let table = pg_sys::list_truncate(pg_sys::list_copy(names), (n - 1) as i32);
                    let rel = relid(pg_sys::makeRangeVarFromNameList(table));
                    if guarded_protected(rel) {
                        refuse_guarded(format!(
                            "tenantguard: dropping policy {} on {} is refused: the table is protected",
                            pgrx::spi::quote_identifier(policy),
                            qualified(rel)
                        ));
                    }
                }
            }
            pg_sys::NodeTag::T_AlterPolicyStmt => {
                let s = stmt as *mut pg_sys::AlterPolicyStmt;
                let rel = relid((*s).table);
                refuse_policy_change(rel, (*s).policy_name);
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let s = stmt as *mut pg_sys::RenameStmt;
                if (*s).renameType == pg_sys::ObjectType::OBJECT_POLICY {
                    let rel = relid((*s).relation);
                    refuse_policy_change(rel, (*s).subname);
                }
            }
            pg_sys::NodeTag::T_AlterObjectSchemaStmt => {
                let s = stmt as *mut pg_sys::AlterObjectSchemaStmt;
                if (*s).objectType == pg_sys::ObjectType::OBJECT_TABLE {
                    let rel = relid((*s).relation);
                    if guarded_protected(rel) {
                        refuse_guarded(format!(
                            "tenantguard: moving {} out of its guarded schema is refused: the table is protected",
                            qualified(rel)
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Install the hook. Only called while shared_preload_libraries loads.
pub fn init() {
    // SAFETY: single-threaded postmaster startup; save and replace the hook.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
    ACTIVE.store(true, Ordering::Relaxed);
}
