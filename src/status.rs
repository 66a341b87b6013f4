//! `tenantguard.status()`: what is active in this backend.

use crate::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::JsonB;
use std::sync::atomic::{AtomicBool, Ordering};

static PRELOADED: AtomicBool = AtomicBool::new(false);

pub fn note_load() {
    // SAFETY: plain read of a postmaster-global flag.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    PRELOADED.store(preloading, Ordering::Relaxed);
}

pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// For operators (EXECUTE: superusers and `tenantguard_admin`); it reads
/// the extension's tables as the extension's owner, so an operator who may
/// not read them directly still gets the whole report.
#[pg_extern(volatile, parallel_unsafe)]
fn status() -> JsonB {
    crate::spi::as_owner(report)
}

fn report() -> JsonB {
    let (_, ring) = crate::keys::keyring();
    let protected = crate::spi::read_one::<i64>(
        "SELECT pg_catalog.count(*) FROM tenantguard.protected_table",
        &[],
    )
    .unwrap_or(None)
    .unwrap_or(0);
    let shared = crate::spi::read_one::<i64>(
        "SELECT pg_catalog.count(*) FROM tenantguard.shared_table",
        &[],
    )
    .unwrap_or(None)
    .unwrap_or(0);
    let lint = crate::spi::read_one::<JsonB>(
        "SELECT COALESCE(pg_catalog.jsonb_object_agg(severity, n), '{}') FROM
           (SELECT severity, pg_catalog.count(*) AS n FROM tenantguard.lint() GROUP BY 1) s",
        &[],
    )
    .ok()
    .flatten()
    .map(|j| j.0)
    .unwrap_or(serde_json::Value::Null);
    let last_verification = crate::spi::read_one::<JsonB>("SELECT pg_catalog.jsonb_build_object('at', max(at), 'tenants', pg_catalog.count(*), 'all_ok', pg_catalog.bool_and(ok))
           FROM tenantguard.audit_verification
          WHERE at OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(at) FROM tenantguard.audit_verification)", &[])
    .ok()
    .flatten()
    .map(|j| j.0)
    .unwrap_or(serde_json::Value::Null);
    let guarded = crate::spi::read_one::<i64>(
        "SELECT pg_catalog.count(*) FROM tenantguard.guarded_schema",
        &[],
    )
    .unwrap_or(None)
    .unwrap_or(0);
    let mut audit_background = crate::audit::writer_report();
    if let serde_json::Value::Object(m) = &mut audit_background {
        // Committed records not chained yet (read as the extension's owner:
        // nobody else may read the inbox).
        let waiting = crate::spi::as_owner(|| {
            crate::spi::read_one::<i64>(
                "SELECT pg_catalog.count(*) FROM tenantguard.audit_inbox",
                &[],
            )
        });
        m.insert(
            "inbox_records".into(),
            serde_json::json!(waiting.ok().flatten()),
        );
        // Of those, the ones sealed under a key the keyring no longer holds.
        m.insert(
            "inbox_waiting_for_keys".into(),
            serde_json::json!(crate::audit::inbox_waiting().0),
        );
    }
    // The library and the extension's SQL objects come from two steps (a
    // package install, then ALTER EXTENSION ... UPDATE): say when they differ.
    let sql_version = crate::spi::read_one::<String>("SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'pg_tenantguard'", &[])
    .ok()
    .flatten();
    let library_version = env!("CARGO_PKG_VERSION");
    let mut warnings = Vec::new();
    if sql_version.as_deref() != Some(library_version) {
        warnings.push(format!(
            "the library is {library_version} but the extension's SQL is {}: run ALTER EXTENSION pg_tenantguard UPDATE",
            sql_version.as_deref().unwrap_or("unknown")
        ));
    }
    JsonB(serde_json::json!({
        "warnings": warnings,
        "sql_version": sql_version,
        "lint_findings": lint,
        "last_audit_verification": last_verification,
        "guarded_schemas": guarded,
        "master_key": crate::keys::master_keyring().kids(),
        "version": library_version,
        "preloaded": preloaded(),
        "hooks_active": crate::guard_hook::active(),
        "alert_worker": crate::alerts::counters().map(|(pushed, recorded, dropped)| serde_json::json!({
            "database": crate::gucs::alert_database(),
            "queued": pushed, "recorded": recorded, "dropped": dropped,
        })),
        "audit_guard": crate::gucs::AUDIT_HOOK.get(),
        "audit_keys": crate::keys::audit_keyring().kids(),
        "shared_memory": preloaded(),
        "audit_background": audit_background,
        // The trail's optional (tenant, tbl, row_key) index (audit_row_index()).
        "audit_row_index": crate::spi::relation_oid(c"audit_log_row_key_idx").is_some(),
        "signing_keys": ring.kids(),
        "revocation_mode": if crate::gucs::ACCESS_CHECKS.get() {
            "shared invalidation (relcache callback, checked every statement; works without preload)"
        } else {
            "OFF (tenantguard.access_checks = off): revocations, allowlists and staff grants are not enforced"
        },
        "bypass_max_ttl_seconds": gucs::BYPASS_MAX_TTL.get(),
        "cache_generation": crate::access::current_generation(),
        "watched_relations": crate::access::watched(),
        "protected_tables": protected,
        "shared_tables": shared,
        // Data subjects and retention (docs/operations.md, Data-subject requests).
        // (Not before ALTER EXTENSION ... UPDATE has created their tables.)
        "data_subjects": (crate::spi::relation_oid(c"subject_key").is_some() && crate::spi::relation_oid(c"retention").is_some()).then(|| crate::spi::as_owner(|| crate::spi::read_one::<JsonB>(
            "SELECT pg_catalog.jsonb_build_object(
                 'declared_tables', (SELECT pg_catalog.count(*) FROM tenantguard.subject_table),
                 'erased_subjects', (SELECT pg_catalog.count(*) FROM tenantguard.subject_key WHERE erased_at IS NOT NULL),
                 'seal_actor', pg_catalog.current_setting('tenantguard.audit_seal_actor')::pg_catalog.bool,
                 'retention', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('table', r.relid::text, 'keep', r.keep,
                     'last_run_at', r.last_run_at, 'last_run_deleted', r.last_run_deleted, 'total_deleted', r.total_deleted,
                     'running_since', r.running_since) ORDER BY r.relid::text), '[]') FROM tenantguard.retention r))",
            &[],
        )).ok().flatten().map(|j| j.0)).flatten(),
        // Subscriptions that copy the trail here: while there is one, the
        // publisher writes it (docs/operations.md, Logical replication).
        "trail_replicated_from": crate::audit::replication::trail_sources()
            .into_iter()
            .map(|(_, n)| n)
            .collect::<Vec<_>>(),
    }))
}
