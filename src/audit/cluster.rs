//! The trail of a Citus cluster, read from the coordinator.
//!
//! On Citus the audit triggers fire on the shards, so each node chains the
//! writes to the shards it holds (a tenant's co-located shards, so its
//! chain, live on one node) in its own trail. These functions run
//! `verify_audit()`, `audit_digest()` and `export_audit()` on every node
//! (`run_command_on_all_nodes`, as the extension's owner) and return the
//! union, each row naming its node. A node that cannot be reached is an
//! error, never a silent gap.

use super::plans::spi_fail;
use crate::spi;
use pgrx::prelude::*;
use pgrx::JsonB;

/// `template` (a `format()` string whose `%L`s take `args`) run on every
/// node, its single jsonb result per node, labelled `host:port`.
fn on_every_node(template: &str, args: &[Option<String>]) -> Vec<(String, serde_json::Value)> {
    if !(spi::citus_loaded() && spi::citus_metadata()) {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "tenantguard: this function reads the trail of a Citus cluster; Citus is not installed in this database (use verify_audit(), audit_digest(), export_audit())",
        );
    }
    let mut params: Vec<pgrx::datum::DatumWithOid> = vec![template.into()];
    let mut placeholders = String::new();
    for (i, a) in args.iter().enumerate() {
        params.push(a.clone().into());
        placeholders.push_str(&format!(", ${}", i + 2));
    }
    // The command is built by format() with %L (quoted literals), never by
    // concatenating values.
    let sql = format!(
        "SELECT pg_catalog.format('%s:%s', n.nodename, n.nodeport), r.success, r.result
           FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format($1{placeholders})) r
           JOIN pg_catalog.pg_dist_node n ON n.nodeid OPERATOR(pg_catalog.=) r.nodeid
          ORDER BY n.groupid, n.nodeid"
    );
    let mut out = Vec::new();
    spi::as_owner(|| {
        Spi::connect(|c| {
            for r in c.select(&sql, None, &params)? {
                let node = r.get::<String>(1)?.unwrap_or_default();
                let ok = r.get::<bool>(2)?.unwrap_or(false);
                let result = r.get::<String>(3)?.unwrap_or_default();
                if !ok {
                    crate::error::raise_msg(
                        PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
                        format!("tenantguard: the audit trail of node {node} could not be read: {result}"),
                    );
                }
                let v = if result.is_empty() {
                    serde_json::Value::Array(vec![])
                } else {
                    serde_json::from_str(&result).unwrap_or_else(|e| {
                        crate::error::raise_msg(
                            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                            format!("tenantguard: node {node} answered what is not JSON: {e}"),
                        )
                    })
                };
                out.push((node, v));
            }
            Ok::<_, pgrx::spi::Error>(())
        })
        .unwrap_or_else(|e| spi_fail(e));
    });
    if out.is_empty() {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "tenantguard: Citus lists no nodes (citus_set_coordinator_host(), citus_add_node())",
        );
    }
    out
}

fn rows(
    v: &serde_json::Value,
) -> impl Iterator<Item = &serde_json::Map<String, serde_json::Value>> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_object())
}

/// `verify_audit()` on every node of the Citus cluster.
#[pg_extern(volatile, parallel_unsafe)]
fn citus_verify_audit(
    tenant: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(node, String),
        name!(tenant, String),
        name!(records, i64),
        name!(first_bad_id, Option<i64>),
        name!(ok, bool),
    ),
> {
    let per_node = on_every_node(
        "SELECT pg_catalog.jsonb_agg(v) FROM tenantguard.verify_audit(%L) v",
        &[tenant.map(str::to_string)],
    );
    let mut out = Vec::new();
    for (node, v) in &per_node {
        // A node without a chain of the tenant asked for says so with a
        // row of 0 records: left out.
        for r in rows(v)
            .filter(|r| tenant.is_none() || r.get("records").and_then(|x| x.as_i64()) != Some(0))
        {
            out.push((
                node.clone(),
                r.get("tenant")
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_string(),
                r.get("records").and_then(|x| x.as_i64()).unwrap_or(0),
                r.get("first_bad_id").and_then(|x| x.as_i64()),
                r.get("ok").and_then(|x| x.as_bool()).unwrap_or(false),
            ));
        }
    }
    TableIterator::new(out)
}

/// `audit_digest()` on every node of the Citus cluster.
#[pg_extern(volatile, parallel_unsafe)]
fn citus_audit_digest() -> TableIterator<
    'static,
    (
        name!(node, String),
        name!(tenant, String),
        name!(last_id, i64),
        name!(head_hash, String),
    ),
> {
    let per_node = on_every_node(
        "SELECT pg_catalog.jsonb_agg(d) FROM tenantguard.audit_digest() d",
        &[],
    );
    let mut out = Vec::new();
    for (node, v) in &per_node {
        for r in rows(v) {
            out.push((
                node.clone(),
                r.get("tenant")
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_string(),
                r.get("last_id").and_then(|x| x.as_i64()).unwrap_or(0),
                r.get("head_hash")
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
    }
    TableIterator::new(out)
}

/// `export_audit()` of one tenant on every node of the Citus cluster: its
/// records, each with the node whose chain holds it (`node`), by node and
/// chain order.
#[pg_extern(volatile, parallel_unsafe)]
fn citus_export_audit(
    tenant: &str,
    since: default!(Option<pgrx::datum::TimestampWithTimeZone>, "'-infinity'"),
    until: default!(Option<pgrx::datum::TimestampWithTimeZone>, "'infinity'"),
) -> SetOfIterator<'static, JsonB> {
    let text = |t: Option<pgrx::datum::TimestampWithTimeZone>, unbounded: &str| {
        Some(match t {
            Some(t) if t.is_infinity() => "infinity".to_string(),
            Some(t) if t.is_neg_infinity() => "-infinity".to_string(),
            Some(t) => t.to_iso_string(),
            None => unbounded.to_string(),
        })
    };
    let per_node = on_every_node(
        "SELECT pg_catalog.jsonb_agg(e) FROM tenantguard.export_audit(%L, %L, %L) e",
        &[
            Some(tenant.to_string()),
            text(since, "-infinity"),
            text(until, "infinity"),
        ],
    );
    let mut out = Vec::new();
    for (node, v) in per_node {
        for r in rows(&v) {
            let mut r = r.clone();
            r.insert("node".into(), serde_json::Value::String(node.clone()));
            out.push(JsonB(serde_json::Value::Object(r)));
        }
    }
    SetOfIterator::new(out)
}
