//! Verification: every chain (or one tenant's) checked for edits,
//! deletions, insertions and reordering, and digests to check later.

use super::inbox::*;
use super::plans::*;
use crate::error::raise;
use crate::spi;
use pgrx::prelude::*;
use pgrx::JsonB;
use tenantguard_core::chain::{self, Record};
use tenantguard_core::DomainError;

// ------------------------------------------------------------ verification

pub(super) fn tenants(only: Option<&str>) -> Vec<String> {
    match only {
        Some(t) => vec![t.to_string()],
        None => spi::read_one::<Vec<String>>(
            "SELECT pg_catalog.array_agg(tenant ORDER BY tenant) FROM tenantguard.audit_head",
            &[],
        )
        .ok()
        .flatten()
        .unwrap_or_default(),
    }
}

/// Verify one tenant's chain up to `upto_id` (inclusive) if given.
pub(super) fn verify_tenant(tenant: &str, upto_id: Option<i64>) -> (chain::Verdict, bool) {
    let (start_seq, start_prev) = checkpoint(tenant);
    // The head is read before the records, so records appended while we
    // verify (a live system) are after it and must simply link on; a
    // deleted tail record leaves the chain short of the head.
    let head = if upto_id.is_some() {
        None
    } else {
        Some(
            spi::read_two::<i64, Vec<u8>>(
                "SELECT seq, hash FROM tenantguard.audit_head WHERE tenant OPERATOR(pg_catalog.=) $1",
                &[tenant.into()],
            )
            .unwrap_or((None, None)),
        )
    };
    let v = verify_segment(tenant, start_seq, &start_prev, upto_id, None);
    let head_ok = match head {
        None => true,
        Some((Some(hs), Some(hh))) => {
            v.last_seq >= hs
                && if hs == v.last_seq {
                    v.head.to_vec() == hh
                } else {
                    spi::read_one::<Vec<u8>>(
                        "SELECT hash FROM tenantguard.audit_log
                          WHERE tenant OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.=) $2 LIMIT 1",
                        &[tenant.into(), hs.into()],
                    )
                    .ok()
                    .flatten()
                        == Some(hh)
                }
        }
        Some(_) => v.records == 0 && start_seq == 0,
    };
    // A checkpoint only counts if the chain itself attests it: the keyed
    // record of the drop (security:audit_partition_dropped), or on Citus of
    // the link to the previous segment on another node
    // (security:audit_segment_linked), names its seq.
    // A checkpoint row inserted by hand has no such record.
    let attested = start_seq == 0
        || upto_id.is_some()
        || spi::read_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM tenantguard.audit_log
                             WHERE tenant OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.>) $2
                               AND action OPERATOR(pg_catalog.=) ANY (ARRAY['security:audit_partition_dropped', 'security:audit_segment_linked'])
                               AND (payload OPERATOR(pg_catalog.->>) 'checkpoint_seq')::pg_catalog.int8 OPERATOR(pg_catalog.=) $2)",
            &[tenant.into(), start_seq.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false);
    (v, head_ok && attested)
}

/// The newest checkpoint of a tenant's chain (seq and hash of the last
/// record dropped with its partition; on Citus, of the previous node's
/// head, when the tenant's first record here is the keyed link that
/// continued its chain after a shard move), or the genesis.
pub(super) fn checkpoint(tenant: &str) -> (i64, Vec<u8>) {
    match spi::read_two::<i64, Vec<u8>>(
        "SELECT c.seq, c.hash FROM (
            SELECT seq, hash FROM tenantguard.audit_checkpoint WHERE tenant OPERATOR(pg_catalog.=) $1
            UNION ALL
            SELECT (f.payload OPERATOR(pg_catalog.->>) 'checkpoint_seq')::pg_catalog.int8,
                   pg_catalog.decode(f.payload OPERATOR(pg_catalog.->>) 'hash', 'hex')
              FROM (SELECT l.action, l.payload FROM tenantguard.audit_log l
                     WHERE l.tenant OPERATOR(pg_catalog.=) $1 ORDER BY l.seq LIMIT 1) f
             WHERE f.action OPERATOR(pg_catalog.=) 'security:audit_segment_linked'
               AND f.payload OPERATOR(pg_catalog.?) 'checkpoint_seq') c
          ORDER BY c.seq DESC LIMIT 1",
        &[tenant.into()],
    ) {
        Ok((Some(seq), Some(hash))) => (seq, hash),
        Ok(_) | Err(pgrx::spi::Error::InvalidPosition) => (0, chain::GENESIS.to_vec()),
        Err(e) => spi_fail(e),
    }
}

/// Verify a tenant's records after `start_seq` (whose hash is
/// `start_prev`), up to record id `upto_id` or seq `upto_seq` if given.
pub(super) fn verify_segment(
    tenant: &str,
    start_seq: i64,
    start_prev: &[u8],
    upto_id: Option<i64>,
    upto_seq: Option<i64>,
) -> chain::Verdict {
    let ring = crate::keys::audit_keyring();
    let mut rows: Vec<(Record, Vec<u8>, Vec<u8>)> = Vec::new();
    Spi::connect(|client| {
        let t = client.select(
            "SELECT id, tenant, seq, (EXTRACT(EPOCH FROM at) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8,
                    actor, actor_roles, db_role::text, action, tbl, row_key::text, old_values::text, new_values::text,
                    client_ip, user_agent, application_name, txid, payload::text, key_id, prev_hash, hash
               FROM tenantguard.audit_log
              WHERE tenant OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.>) $3
                AND ($2::pg_catalog.int8 IS NULL OR id OPERATOR(pg_catalog.<=) $2)
                AND ($4::pg_catalog.int8 IS NULL OR seq OPERATOR(pg_catalog.<=) $4)
              ORDER BY seq, id",
            None,
            &[tenant.into(), upto_id.into(), start_seq.into(), upto_seq.into()],
        )?;
        for r in t {
            rows.push((
                Record {
                    id: r.get(1)?.unwrap_or(0),
                    tenant: r.get(2)?.unwrap_or_default(),
                    seq: r.get(3)?.unwrap_or(0),
                    at_us: r.get(4)?.unwrap_or(0),
                    actor: r.get(5)?,
                    actor_roles: r.get(6)?,
                    db_role: r.get(7)?.unwrap_or_default(),
                    action: r.get(8)?.unwrap_or_default(),
                    tbl: r.get(9)?,
                    row_key: r.get(10)?,
                    old_values: r.get(11)?,
                    new_values: r.get(12)?,
                    client_ip: r.get(13)?,
                    user_agent: r.get(14)?,
                    application_name: r.get(15)?,
                    txid: r.get(16)?.unwrap_or(0),
                    payload: r.get(17)?,
                    key_id: r.get(18)?.unwrap_or_default(),
                },
                r.get(19)?.unwrap_or_default(),
                r.get(20)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .unwrap_or_else(|e| spi_fail(e));
    let verdict = chain::verify_from(
        rows.iter().map(|(r, p, h)| (r, p.as_slice(), h.as_slice())),
        |kid| ring.select(Some(kid)).ok().map(|k| k.material.clone()),
        start_prev,
        start_seq + 1,
        false,
    );
    // The head must match the last record: catches deleted tail records.
    verdict
}

/// Check every record of one tenant (or all) for edits, deletions,
/// insertions and reordering.
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn verify_audit(
    tenant: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(tenant, String),
        name!(records, i64),
        name!(first_bad_id, Option<i64>),
        name!(ok, bool),
    ),
> {
    // Granted to tenantguard_admin, who may not read the trail or its
    // heads directly (RLS, privileges): read as the extension's owner.
    spi::as_owner(|| {
        trail_up_to_date();
        if crate::keys::audit_keyring().is_empty() {
            raise(DomainError::Policy(
                "no audit keys configured (tenantguard.audit_keys)".into(),
            ));
        }
        let mut out = Vec::new();
        for t in tenants(tenant) {
            let (v, head_ok) = verify_tenant(&t, None);
            let ok = v.first_bad_id.is_none() && head_ok;
            // The verification history is a write: a standby verifies and
            // records nothing.
            if !spi::on_standby() {
                let _ = Spi::run_with_args(
                    "INSERT INTO tenantguard.audit_verification (tenant, records, first_bad_id, ok) VALUES ($1, $2, $3, $4)",
                    &[t.clone().into(), v.records.into(), v.first_bad_id.into(), ok.into()],
                );
            }
            out.push((t, v.records, v.first_bad_id, ok));
        }
        TableIterator::new(out)
    })
}

/// Chain heads to copy out of the database and check later. (Volatile:
/// it first brings up to date the heads this transaction left behind.)
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn audit_digest() -> TableIterator<
    'static,
    (
        name!(tenant, String),
        name!(last_id, i64),
        name!(head_hash, String),
        name!(at, pgrx::datum::TimestampWithTimeZone),
    ),
> {
    // Granted to tenantguard_admin, who may not read the trail or its
    // heads directly (RLS, privileges): read as the extension's owner.
    spi::as_owner(|| {
        trail_up_to_date();
        let mut out = Vec::new();
        Spi::connect(|c| {
            for r in c.select(
                "SELECT h.tenant, (SELECT pg_catalog.max(l.id) FROM tenantguard.audit_log l WHERE l.tenant OPERATOR(pg_catalog.=) h.tenant AND l.seq OPERATOR(pg_catalog.=) h.seq),
                        pg_catalog.encode(h.hash, 'hex'), pg_catalog.now()
                   FROM tenantguard.audit_head h ORDER BY h.tenant",
                None,
                &[],
            )? {
                out.push((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<i64>(2)?.unwrap_or(0),
                    r.get::<String>(3)?.unwrap_or_default(),
                    r.get::<pgrx::datum::TimestampWithTimeZone>(4)?.unwrap(),
                ));
            }
            Ok::<_, pgrx::spi::Error>(())
        })
        .unwrap_or_else(|e| spi_fail(e));
        TableIterator::new(out)
    })
}

/// Check a digest taken earlier (`jsonb_agg(audit_digest())`): every chain
/// still verifies up to the recorded head, and that record still has the
/// recorded hash.
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn verify_audit_against(
    digest: JsonB,
) -> TableIterator<
    'static,
    (
        name!(tenant, String),
        name!(records, i64),
        name!(first_bad_id, Option<i64>),
        name!(ok, bool),
    ),
> {
    // Granted to tenantguard_admin, who may not read the trail or its
    // heads directly (RLS, privileges): read as the extension's owner.
    spi::as_owner(|| {
        trail_up_to_date();
        let items = digest.0.as_array().cloned().unwrap_or_default();
        let mut out = Vec::new();
        for it in items {
            let tenant = it["tenant"].as_str().unwrap_or("").to_string();
            let last_id = it["last_id"].as_i64();
            let want = it["head_hash"].as_str().unwrap_or("").to_string();
            let (v, _) = verify_tenant(&tenant, last_id);
            let ok = v.first_bad_id.is_none() && chain::hex(&v.head) == want;
            out.push((tenant, v.records, v.first_bad_id, ok));
        }
        TableIterator::new(out)
    })
}
