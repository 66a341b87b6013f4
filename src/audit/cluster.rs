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
    // Each link between segments must name a record its node still holds.
    let broken = broken_links(&segments());
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
            let row = out.last_mut().expect("just pushed");
            for (_, _, id) in broken.iter().filter(|(n, t, _)| *n == row.0 && *t == row.1) {
                row.3 = Some(row.3.map_or(*id, |b| b.min(*id)));
                row.4 = false;
            }
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
    tenant: Option<&str>,
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
    let tenant = tenant.unwrap_or_else(|| {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "tenant must not be NULL",
        )
    });
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

// ------------------------------------------------------------ segments
//
// A tenant's chain lives on the node of its shards. When the rebalancer
// moves them, its next writes are chained on the new node: a new segment.
// `citus_link_audit_segments()` appends to the new segment a keyed record
// (`security:audit_segment_linked`) naming the previous segment's node and
// head (seq, hash); `citus_verify_audit()` then checks every such link
// against the node it names, so a segment removed from a node, head
// included, or cut back, is found from the others.

const LINKED: &str = "security:audit_segment_linked";

/// This node's segments (internal; run by the coordinator on every node):
/// its Citus group and, per tenant, the head and the links its chain holds.
#[pg_extern(volatile, parallel_unsafe)]
fn citus_audit_segments() -> JsonB {
    spi::as_owner(|| {
        super::inbox::trail_up_to_date();
        let v = spi::read_one::<JsonB>(
            "SELECT pg_catalog.jsonb_build_object(
                'group', (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g),
                'segments', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                    'tenant', h.tenant, 'seq', h.seq, 'hash', pg_catalog.encode(h.hash, 'hex'), 'at', h.updated_at,
                    'links', COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('id', l.id, 'previous', l.payload::pg_catalog.jsonb) ORDER BY l.seq)
                                         FROM tenantguard.audit_log l
                                        WHERE l.tenant OPERATOR(pg_catalog.=) h.tenant AND l.action OPERATOR(pg_catalog.=) $1), '[]'::pg_catalog.jsonb)))
                   FROM tenantguard.audit_head h), '[]'::pg_catalog.jsonb))",
            &[LINKED.into()],
        )
        .unwrap_or_else(|e| spi_fail(e));
        v.unwrap_or(JsonB(serde_json::json!({})))
    })
}

fn local_group() -> Option<i64> {
    spi::read_one::<i32>(
        "SELECT g.groupid FROM pg_catalog.pg_dist_local_group g",
        &[],
    )
    .ok()
    .flatten()
    .map(i64::from)
}

/// Append the links meant for this node (internal): `{"<group>": [{"tenant":
/// …, "previous": {…}}]}`. Returns how many it appended.
#[pg_extern(volatile, parallel_unsafe)]
fn citus_audit_link(links: JsonB) -> i64 {
    spi::require_primary("citus_audit_link()");
    let Some(group) = local_group() else { return 0 };
    let mine = links
        .0
        .get(group.to_string())
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let mut n = 0;
    for l in mine {
        let (Some(tenant), Some(previous)) =
            (l.get("tenant").and_then(|t| t.as_str()), l.get("previous"))
        else {
            continue;
        };
        // No chain of the tenant here yet (linked before its first write
        // on this node): the chain continues here, from the previous
        // segment's head (the head is set to its seq and hash, and the
        // keyed link record, the first here, names it as `checkpoint_seq`:
        // verification starts from it, as after a partition drop).
        // Otherwise a new segment was started already, and the link only
        // names the previous one.
        let mut previous = previous.clone();
        let (pseq, phash) = (
            previous.get("seq").and_then(|x| x.as_i64()).unwrap_or(0),
            previous
                .get("hash")
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string(),
        );
        let continued = pseq > 0
            && spi::as_owner(|| {
                Spi::connect_mut(|c| {
                    c.update(
                        "WITH h AS (INSERT INTO tenantguard.audit_head (tenant, seq, hash)
                                VALUES ($1, $2, pg_catalog.decode($3, 'hex'))
                                ON CONFLICT (tenant) DO NOTHING RETURNING 1)
                     SELECT EXISTS (SELECT 1 FROM h)",
                        None,
                        &[tenant.into(), pseq.into(), phash.as_str().into()],
                    )?
                    .first()
                    .get_one::<bool>()
                })
                .unwrap_or_else(|e| spi_fail(e))
                .unwrap_or(false)
            });
        if continued {
            previous["checkpoint_seq"] = serde_json::json!(pseq);
        }
        super::capture::append(super::capture::Entry {
            tenant: Some(tenant.to_string()),
            action: LINKED.to_string(),
            tbl: Some("tenantguard.audit_log".to_string()),
            row_key: None,
            old_values: None,
            new_values: None,
            payload: Some(previous.to_string()),
        });
        n += 1;
    }
    n
}

/// Of the records named (`[{"group", "tenant", "seq", "hash"}]`), those of
/// this node's group that it does not hold with that hash (internal).
#[pg_extern(volatile, parallel_unsafe)]
fn citus_audit_missing(wanted: JsonB) -> JsonB {
    let group = local_group();
    let mut missing = Vec::new();
    spi::as_owner(|| {
        for w in wanted.0.as_array().into_iter().flatten() {
            if w.get("group").and_then(|g| g.as_i64()) != group {
                continue;
            }
            let tenant = w.get("tenant").and_then(|t| t.as_str()).unwrap_or_default();
            let seq = w.get("seq").and_then(|s| s.as_i64()).unwrap_or(-1);
            let hash = w.get("hash").and_then(|h| h.as_str()).unwrap_or_default();
            let held = spi::read_one::<bool>(
                "SELECT EXISTS (SELECT 1 FROM tenantguard.audit_log WHERE tenant OPERATOR(pg_catalog.=) $1
                                  AND seq OPERATOR(pg_catalog.=) $2 AND pg_catalog.encode(hash, 'hex') OPERATOR(pg_catalog.=) $3)",
                &[tenant.into(), seq.into(), hash.into()],
            )
            .ok()
            .flatten()
            .unwrap_or(false);
            if !held {
                missing.push(w.clone());
            }
        }
    });
    JsonB(serde_json::Value::Array(missing))
}

struct Segment {
    node: String,
    group: i64,
    tenant: String,
    seq: i64,
    hash: String,
    at: String,
    /// (link record id, the previous segment it names)
    links: Vec<(i64, serde_json::Value)>,
}

fn segments() -> Vec<Segment> {
    let mut out = Vec::new();
    for (node, v) in on_every_node("SELECT tenantguard.citus_audit_segments()", &[]) {
        let group = v.get("group").and_then(|g| g.as_i64()).unwrap_or(-1);
        for s in v
            .get("segments")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            let str_of = |k: &str| {
                s.get(k)
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            out.push(Segment {
                node: node.clone(),
                group,
                tenant: str_of("tenant"),
                seq: s.get("seq").and_then(|x| x.as_i64()).unwrap_or(0),
                hash: str_of("hash"),
                at: str_of("at"),
                links: s
                    .get("links")
                    .and_then(|l| l.as_array())
                    .into_iter()
                    .flatten()
                    .map(|l| {
                        (
                            l.get("id").and_then(|x| x.as_i64()).unwrap_or(0),
                            l.get("previous").cloned().unwrap_or_default(),
                        )
                    })
                    .collect(),
            });
        }
    }
    out
}

/// Links that do not hold: (node, tenant, link record id).
fn broken_links(segs: &[Segment]) -> Vec<(String, String, i64)> {
    let mut wanted = Vec::new();
    let mut by_key = Vec::new();
    for s in segs {
        for (id, p) in &s.links {
            wanted.push(serde_json::json!({
                "group": p.get("group"), "tenant": s.tenant, "seq": p.get("seq"), "hash": p.get("hash"),
            }));
            by_key.push((s.node.clone(), s.tenant.clone(), *id, p.clone()));
        }
    }
    if wanted.is_empty() {
        return Vec::new();
    }
    let wanted_text = serde_json::Value::Array(wanted).to_string();
    let mut missing = Vec::new();
    for (_, v) in on_every_node(
        "SELECT tenantguard.citus_audit_missing(%L)",
        &[Some(wanted_text)],
    ) {
        missing.extend(v.as_array().cloned().unwrap_or_default());
    }
    // A link naming a group that no node has any more is broken too.
    let groups: std::collections::HashSet<i64> = segs.iter().map(|s| s.group).collect();
    by_key
        .into_iter()
        .filter(|(_, tenant, _, p)| {
            let g = p.get("group").and_then(|g| g.as_i64()).unwrap_or(-1);
            !groups.contains(&g)
                || missing.iter().any(|m| {
                    m.get("tenant").and_then(|t| t.as_str()) == Some(tenant.as_str())
                        && m.get("group").and_then(|x| x.as_i64()) == Some(g)
                        && m.get("seq") == p.get("seq")
                })
        })
        .map(|(node, tenant, id, _)| (node, tenant, id))
        .collect()
}

/// After the rebalancer moved tenants' shards: link each tenant's segment
/// on the node of its shards to its previous segment on another node.
/// Idempotent; returns the links it made.
#[pg_extern(volatile, parallel_unsafe)]
fn citus_link_audit_segments() -> TableIterator<
    'static,
    (
        name!(tenant, String),
        name!(node, String),
        name!(previous_node, String),
        name!(previous_seq, i64),
    ),
> {
    spi::require_primary("citus_link_audit_segments()");
    let segs = segments();
    let mut tenants: Vec<&str> = segs.iter().map(|s| s.tenant.as_str()).collect();
    tenants.sort();
    tenants.dedup();
    let mut links = serde_json::Map::new();
    let mut made = Vec::new();
    let node_of_group: std::collections::HashMap<i64, String> =
        segs.iter().map(|s| (s.group, s.node.clone())).collect();
    // The nodes that hold (and so may have held) shards: the others (a
    // coordinator without shards) chain a tenant's security events, which
    // are not a segment of its data chain.
    let data_groups: Vec<i64> = spi::as_owner(|| {
        spi::read_one::<Vec<i32>>(
            "SELECT pg_catalog.array_agg(DISTINCT n.groupid) FROM pg_catalog.pg_dist_node n
              WHERE n.shouldhaveshards AND n.noderole OPERATOR(pg_catalog.=) 'primary'",
            &[],
        )
        .ok()
        .flatten()
        .unwrap_or_default()
    })
    .into_iter()
    .map(i64::from)
    .collect();
    for t in tenants {
        let mine: Vec<&Segment> = segs
            .iter()
            .filter(|s| s.tenant == t && data_groups.contains(&s.group))
            .collect();
        // Nothing to link: no data chain, or one on a single node that
        // is (below) the node of its shards.
        if mine.is_empty() {
            continue;
        }
        // The node that holds the tenant's shards now.
        let Some(live) = spi::as_owner(|| {
            spi::read_one::<i32>(
                "SELECT pl.groupid FROM pg_catalog.pg_dist_placement pl
                  WHERE pl.shardid OPERATOR(pg_catalog.=) pg_catalog.get_shard_id_for_distribution_column(
                        (SELECT p.logicalrelid FROM pg_catalog.pg_dist_partition p
                          WHERE p.partkey IS NOT NULL
                            AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid OPERATOR(pg_catalog.=) p.logicalrelid
                                          AND tg.tgname OPERATOR(pg_catalog.=) 'tenantguard_audit')
                          ORDER BY p.colocationid, p.logicalrelid LIMIT 1), $1)
                  LIMIT 1",
                &[t.into()],
            )
            .ok()
            .flatten()
            .map(i64::from)
        }) else {
            continue;
        };
        // The previous segment: the latest written elsewhere.
        let Some(prev) = mine
            .iter()
            .filter(|s| s.group != live)
            .max_by(|a, b| a.at.cmp(&b.at))
        else {
            continue;
        };
        let here = mine.iter().find(|s| s.group == live);
        let linked = here.is_some_and(|h| {
            h.links.iter().any(|(_, p)| {
                p.get("group").and_then(|g| g.as_i64()) == Some(prev.group)
                    && p.get("seq").and_then(|x| x.as_i64()) == Some(prev.seq)
            })
        });
        if linked {
            continue;
        }
        links
            .entry(live.to_string())
            .or_insert_with(|| serde_json::Value::Array(vec![]))
            .as_array_mut()
            .expect("an array")
            .push(serde_json::json!({
                "tenant": t,
                "previous": {"group": prev.group, "node": prev.node, "seq": prev.seq, "hash": prev.hash},
            }));
        made.push((
            t.to_string(),
            node_of_group
                .get(&live)
                .cloned()
                .unwrap_or_else(|| format!("group {live}")),
            prev.node.clone(),
            prev.seq,
        ));
    }
    if !made.is_empty() {
        let arg = serde_json::Value::Object(links).to_string();
        on_every_node("SELECT tenantguard.citus_audit_link(%L)", &[Some(arg)]);
    }
    TableIterator::new(made)
}
