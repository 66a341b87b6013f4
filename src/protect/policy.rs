//! `protect()` and friends: gather catalog facts, let the core plan the DDL,
//! run it. Identifiers are quoted by Postgres (`quote_identifier`); nothing
//! the caller passes is ever spliced into SQL unquoted.

use crate::error::{raise_msg, OrRaise};
use crate::spi;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::PgRelation;
use tenantguard_core::policy::{plan_protect, plan_unprotect, Citus, TableFacts, TenantType};

struct Rel {
    oid: pg_sys::Oid,
    qualified: String,
    kind: String,
}

fn rel_info(tbl: pg_sys::Oid) -> Rel {
    let row = Spi::get_three_with_args::<String, String, String>(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
          WHERE c.oid OPERATOR(pg_catalog.=) $1",
        &[tbl.into()],
    )
    .unwrap_or((None, None, None));
    match row {
        (Some(nsp), Some(rel), Some(kind)) => Rel {
            oid: tbl,
            qualified: format!("{}.{}", quote_identifier(&nsp), quote_identifier(&rel)),
            kind,
        },
        _ => raise_msg(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation with OID {} does not exist", tbl.to_u32()),
        ),
    }
}

fn facts(rel: &Rel, column: &str) -> Option<TableFacts> {
    let col = Spi::connect(|c| {
        let t = c.select(
            "SELECT a.attnum, pg_catalog.format_type(a.atttypid, a.atttypmod),
                    pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attgenerated OPERATOR(pg_catalog.<>) ''
               FROM pg_catalog.pg_attribute a
               LEFT JOIN pg_catalog.pg_attrdef d
                 ON d.adrelid OPERATOR(pg_catalog.=) a.attrelid AND d.adnum OPERATOR(pg_catalog.=) a.attnum
              WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attname OPERATOR(pg_catalog.=) $2::pg_catalog.name
                AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped",
            None,
            &[rel.oid.into(), column.into()],
        )?;
        let mut out = None;
        for row in t {
            out = Some((
                row.get::<i16>(1)?.unwrap_or(0),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<String>(3)?,
                row.get::<bool>(4)?.unwrap_or(false),
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or(None)?;
    let (attnum, ty, default, generated) = col;
    if generated {
        // A generated tenant column (stored, or PG 18's virtual) is computed
        // from other columns: the policy's check on it would hold whatever
        // the application writes to those, and it cannot take the context's
        // default. Refuse, and say why, rather than fail half-way.
        raise_msg(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "tenantguard: the tenant column {} of {} is a generated column; protect() needs a plain column that defaults to the context's tenant",
                quote_identifier(column),
                rel.qualified
            ),
        );
    }
    let column_type = TenantType::from_pg(&ty, column).or_raise();
    let (rls_enabled, rls_forced) = Spi::get_two_with_args::<bool, bool>(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1",
        &[rel.oid.into()],
    )
    .unwrap_or((None, None));
    let policies = Spi::get_one_with_args::<Vec<String>>(
        "SELECT pg_catalog.array_agg(polname::text) FROM pg_catalog.pg_policy WHERE polrelid OPERATOR(pg_catalog.=) $1",
        &[rel.oid.into()],
    )
    .unwrap_or(None)
    .unwrap_or_default();
    let has_tenant_index = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                         WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indkey[0] OPERATOR(pg_catalog.=) $2)",
        &[rel.oid.into(), attnum.into()],
    )
    .unwrap_or(None)
    .unwrap_or(false);
    Some(TableFacts {
        table: rel.qualified.clone(),
        column: quote_identifier(column),
        column_type,
        rls_enabled: rls_enabled.unwrap_or(false),
        rls_forced: rls_forced.unwrap_or(false),
        policies,
        column_default: default,
        has_tenant_index,
        audited: crate::audit::is_audited(rel.oid),
        citus: citus_facts(rel.oid, column),
    })
}

/// What Citus makes of the table (pg_dist_partition), if Citus is
/// installed in this database.
fn citus_facts(rel: pg_sys::Oid, column: &str) -> Citus {
    let installed = crate::spi::citus_metadata();
    if !installed {
        return Citus::Absent;
    }
    let (kind, dist) = crate::spi::read_two::<String, String>(
        "SELECT CASE WHEN p.partkey IS NOT NULL THEN 'distributed' WHEN p.repmodel OPERATOR(pg_catalog.=) 't' THEN 'reference'
                     ELSE 'local' END,
                CASE WHEN p.partkey IS NOT NULL THEN pg_catalog.column_to_column_name(p.logicalrelid, p.partkey) END
           FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1",
        &[rel.into()],
    )
    .unwrap_or((None, None));
    match kind.as_deref() {
        Some("distributed") => Citus::Distributed {
            by_tenant: dist.as_deref() == Some(column),
        },
        Some("reference") => Citus::Reference,
        _ => Citus::Local,
    }
}

/// Whether PUBLIC holds TRUNCATE on `rel`, and the other roles (not the
/// owner) that do.
fn truncate_grants(rel: pg_sys::Oid) -> (bool, Vec<String>) {
    let mut public = false;
    let mut others = Vec::new();
    let _ = Spi::connect(|c| {
        for r in c.select(
            "SELECT g.grantee OPERATOR(pg_catalog.=) 0, pg_catalog.quote_ident(coalesce(r.rolname, ''))
               FROM pg_catalog.pg_class cl CROSS JOIN LATERAL pg_catalog.aclexplode(cl.relacl) g
               LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) g.grantee
              WHERE cl.oid OPERATOR(pg_catalog.=) $1 AND g.privilege_type OPERATOR(pg_catalog.=) 'TRUNCATE'
                AND g.grantee OPERATOR(pg_catalog.<>) cl.relowner
              ORDER BY 2",
            None,
            &[rel.into()],
        )? {
            if r.get::<bool>(1)?.unwrap_or(false) {
                public = true;
            } else if let Some(name) = r.get::<String>(2)? {
                others.push(name);
            }
        }
        Ok::<_, pgrx::spi::Error>(())
    });
    (public, others)
}

fn run_all(ddl: &[String]) {
    for stmt in ddl {
        if let Err(e) = Spi::run(stmt) {
            raise_msg(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("tenantguard: {stmt}: {e}"),
            );
        }
    }
}

fn partitions(oid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    Spi::get_one_with_args::<Vec<pg_sys::Oid>>(
        "SELECT pg_catalog.array_agg(inhrelid) FROM pg_catalog.pg_inherits WHERE inhparent OPERATOR(pg_catalog.=) $1",
        &[oid.into()],
    )
    .unwrap_or(None)
    .unwrap_or_default()
}

/// Plan (and unless dry_run, apply) protection of one table and its partitions.
fn protect_one(tbl: pg_sys::Oid, column: &str, dry_run: bool, out: &mut Vec<String>) {
    let rel = rel_info(tbl);
    if rel.kind != "r" && rel.kind != "p" {
        raise_msg(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("{} is not a table", rel.qualified),
        );
    }
    if !dry_run {
        // Hold the strongest lock for the whole plan-and-apply, so facts
        // cannot change under us and concurrent inserts wait.
        // SAFETY: lock is released at transaction end.
        unsafe { pg_sys::LockRelationOid(tbl, pg_sys::AccessExclusiveLock as i32) };
    }
    let Some(f) = facts(&rel, column) else {
        raise_msg(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!("table {} has no column {} to scope by tenant; add it, or mark the table shared with tenantguard.mark_shared()", rel.qualified, quote_identifier(column)),
        );
    };
    let mut ddl = plan_protect(&f, crate::audit::attach_on_protect());
    // TRUNCATE ignores row-level security: one statement of a role that
    // holds it empties every tenant. PUBLIC loses it here (only when it has
    // it, so protect() stays idempotent); other grantees are reported
    // (lint() TG017 prints the REVOKE), since a DBA may have granted them on
    // purpose.
    let (public_truncate, others) = truncate_grants(rel.oid);
    if public_truncate {
        ddl.push(format!("REVOKE TRUNCATE ON {} FROM PUBLIC", rel.qualified));
    }
    for grantee in others {
        pgrx::warning!(
            "tenantguard: {grantee} holds TRUNCATE on {}, which ignores row-level security; revoke it unless it is a reviewed maintenance role (lint() TG017)",
            rel.qualified
        );
    }
    if !dry_run {
        run_all(&ddl);
        Spi::run_with_args(
            "INSERT INTO tenantguard.protected_table (relid, tenant_column) VALUES ($1::pg_catalog.oid::pg_catalog.regclass, $2)
             ON CONFLICT (relid) DO UPDATE SET tenant_column = EXCLUDED.tenant_column",
            &[tbl.into(), column.into()],
        )
        .unwrap_or_else(|e| raise_msg(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string()));
    }
    out.extend(ddl);
    for child in partitions(tbl) {
        protect_one(child, column, dry_run, out);
    }
}

#[pg_extern(volatile, parallel_unsafe)]
fn protect(
    tbl: PgRelation,
    tenant_column: default!(&str, "'tenant_id'"),
    dry_run: default!(bool, false),
) -> SetOfIterator<'static, String> {
    // Close our handle before running DDL on the table.
    let oid = tbl.oid();
    drop(tbl);
    let mut out = Vec::new();
    spi::with_pinned_search_path(|| protect_one(oid, tenant_column, dry_run, &mut out));
    SetOfIterator::new(out)
}

#[pg_extern(volatile, parallel_unsafe)]
fn protect_schema(
    schema: &str,
    tenant_column: default!(&str, "'tenant_id'"),
    dry_run: default!(bool, false),
) -> SetOfIterator<'static, String> {
    let mut out = Vec::new();
    spi::with_pinned_search_path(|| {
        let tables = Spi::connect(|c| {
            let t = c.select(
                "SELECT c.oid, EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                        WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid
                                          AND a.attname OPERATOR(pg_catalog.=) $2::pg_catalog.name
                                          AND NOT a.attisdropped),
                        EXISTS (SELECT 1 FROM tenantguard.shared_table s WHERE s.relid::pg_catalog.oid OPERATOR(pg_catalog.=) c.oid)
                   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                  WHERE n.nspname OPERATOR(pg_catalog.=) $1::pg_catalog.name AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                  ORDER BY c.relname",
                None,
                &[schema.into(), tenant_column.into()],
            )?;
            let mut v = Vec::new();
            for row in t {
                v.push((row.get::<pg_sys::Oid>(1)?.unwrap(), row.get::<bool>(2)?.unwrap_or(false), row.get::<bool>(3)?.unwrap_or(false)));
            }
            Ok::<_, pgrx::spi::Error>(v)
        })
        .unwrap_or_default();
        for (oid, has_col, shared) in tables {
            let name = rel_info(oid).qualified;
            if shared {
                out.push(format!("-- skipped {name}: marked shared"));
            } else if !has_col {
                out.push(format!(
                    "-- NOT PROTECTED {name}: no column {}; add it, or run tenantguard.mark_shared('{}', 'why')",
                    quote_identifier(tenant_column),
                    name.replace('\'', "''")
                ));
            } else {
                protect_one(oid, tenant_column, dry_run, &mut out);
            }
        }
    });
    SetOfIterator::new(out)
}

#[pg_extern(volatile, parallel_unsafe)]
fn unprotect(tbl: PgRelation) -> SetOfIterator<'static, String> {
    let oid = tbl.oid();
    drop(tbl);
    let tbl = oid;
    let mut out = Vec::new();
    spi::with_pinned_search_path(|| {
        let rel = rel_info(tbl);
        let column = Spi::get_one_with_args::<String>(
            "SELECT tenant_column::text FROM tenantguard.protected_table WHERE relid::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
            &[tbl.into()],
        )
        .unwrap_or(None)
        .unwrap_or_else(|| "tenant_id".into());
        if let Some(f) = facts(&rel, &column) {
            out = plan_unprotect(&f);
            run_all(&out);
        }
        Spi::run_with_args(
            "DELETE FROM tenantguard.protected_table WHERE relid::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
            &[tbl.into()],
        )
        .unwrap_or_else(|e| raise_msg(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string()));
    });
    SetOfIterator::new(out)
}

#[pg_extern(volatile, parallel_unsafe)]
fn mark_shared(tbl: PgRelation, reason: &str) {
    let oid = tbl.oid();
    drop(tbl);
    let tbl = oid;
    if reason.trim().is_empty() {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "mark_shared needs a non-empty reason",
        );
    }
    let rel = rel_info(tbl);
    Spi::run_with_args(
        "INSERT INTO tenantguard.shared_table (relid, reason) VALUES ($1::pg_catalog.oid::pg_catalog.regclass, $2)
         ON CONFLICT (relid) DO UPDATE SET reason = EXCLUDED.reason, marked_at = pg_catalog.now(), marked_by = CURRENT_USER",
        &[tbl.into(), reason.into()],
    )
    .unwrap_or_else(|e| raise_msg(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string()));
    crate::audit::security_log::record(
        "table_marked_shared",
        None,
        serde_json::json!({"table": rel.qualified, "reason": reason}),
    );
}
