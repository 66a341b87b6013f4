//! Retention: monthly partitions of the trail, dropped only past
//! `tenantguard.audit_retention_months`, leaving a checkpoint so the
//! chains still verify.

use super::chain::*;
use super::inbox::*;
use super::plans::*;
use super::verify::*;
use crate::error::{raise, raise_msg};
use crate::{gucs, spi};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgRelation;
use tenantguard_core::DomainError;

// ---------------------------------------------------------------- retention

pub(super) fn refuse_drop(msg: String) -> ! {
    raise_msg(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        msg,
    )
}

/// Drop one monthly partition of the audit trail once it is past retention
/// and every tenant's records in it were exported. Per tenant, it checks
/// that the partition holds the oldest remaining part of the chain, that
/// this part still verifies with the key, and that an `export_audit()` run
/// covered it (its recorded head hash is still in the chain). It then
/// leaves a checkpoint (seq and hash of the last dropped record) from
/// which `verify_audit()` resumes, records the drop in the security trail
/// and drops the partition. Superuser only.
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn drop_audit_partition(
    partition: PgRelation,
) -> TableIterator<
    'static,
    (
        name!(tenant, String),
        name!(records, i64),
        name!(checkpoint_seq, i64),
        name!(export_id, i64),
    ),
> {
    drain_inbox(None);
    flush_all_pending();
    let oid = partition.oid();
    // Close it (the lock stays until the end of the transaction), or DROP
    // sees the relation in use.
    drop(partition);
    let partition = oid;
    // SAFETY: plain catalog check of the current user.
    if !unsafe { pg_sys::superuser() } {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "tenantguard: only a superuser may drop audit partitions",
        );
    }
    if crate::keys::audit_keyring().is_empty() {
        raise(DomainError::Policy(
            "no audit keys configured (tenantguard.audit_keys)".into(),
        ));
    }
    let months = gucs::AUDIT_RETENTION_MONTHS.get();
    // The partition, its bounds and whether it ended before the retention.
    let (name, bounds) = Spi::connect(|c| {
        let t = c.select(
            "SELECT c.oid::pg_catalog.regclass::pg_catalog.text,
                    b[1]::pg_catalog.timestamptz, b[2]::pg_catalog.timestamptz,
                    b[2]::pg_catalog.timestamptz OPERATOR(pg_catalog.<=)
                        (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(months => $2))
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_inherits i ON i.inhrelid OPERATOR(pg_catalog.=) c.oid
               LEFT JOIN LATERAL pg_catalog.regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                        'FROM [(]''([^'']*)''[)] TO [(]''([^'']*)''[)]') AS b ON true
              WHERE c.oid OPERATOR(pg_catalog.=) $1
                AND i.inhparent OPERATOR(pg_catalog.=) 'tenantguard.audit_log'::pg_catalog.regclass",
            None,
            &[partition.into(), months.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        let name: String = r.get(1)?.unwrap_or_default();
        let from: Option<pgrx::datum::TimestampWithTimeZone> = r.get(2)?;
        let to: Option<pgrx::datum::TimestampWithTimeZone> = r.get(3)?;
        let old: Option<bool> = r.get(4)?;
        Ok::<_, pgrx::spi::Error>(Some((name, from.zip(to).map(|(f, t)| (f, t, old == Some(true))))))
    })
    .unwrap_or_else(|e| spi_fail(e))
    .unwrap_or_else(|| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "tenantguard: not a partition of tenantguard.audit_log",
        )
    });
    let Some((from, to, old_enough)) = bounds else {
        refuse_drop(format!(
            "tenantguard: {name} is the default audit partition, which is never dropped"
        ))
    };
    if !old_enough {
        refuse_drop(format!(
            "tenantguard: audit partition {name} ends at {to}, within the retention of {months} months (tenantguard.audit_retention_months)"
        ));
    }

    // Per tenant: records, first and last seq in the partition.
    let mut per_tenant: Vec<(String, i64, i64, i64)> = Vec::new();
    Spi::connect(|c| {
        for r in c.select(
            "SELECT tenant, pg_catalog.count(*), pg_catalog.min(seq), pg_catalog.max(seq)
               FROM tenantguard.audit_log
              WHERE at OPERATOR(pg_catalog.>=) $1 AND at OPERATOR(pg_catalog.<) $2
              GROUP BY tenant ORDER BY tenant",
            None,
            &[from.into(), to.into()],
        )? {
            per_tenant.push((
                r.get(1)?.unwrap_or_default(),
                r.get(2)?.unwrap_or(0),
                r.get(3)?.unwrap_or(0),
                r.get(4)?.unwrap_or(0),
            ));
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .unwrap_or_else(|e| spi_fail(e));

    let mut out = Vec::new();
    let mut checkpoints = Vec::new();
    for (tenant, n, min_seq, max_seq) in per_tenant {
        let (cp_seq, cp_hash) = checkpoint(&tenant);
        if min_seq != cp_seq + 1 {
            refuse_drop(format!(
                "tenantguard: tenant {tenant}'s chain does not start in {name} (its records from seq {} are elsewhere); drop older audit partitions first",
                cp_seq + 1
            ));
        }
        let elsewhere = Spi::get_one_with_args::<i64>(
            "SELECT pg_catalog.count(*) FROM tenantguard.audit_log
              WHERE tenant OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.<=) $2
                AND NOT (at OPERATOR(pg_catalog.>=) $3 AND at OPERATOR(pg_catalog.<) $4)",
            &[
                tenant.clone().into(),
                max_seq.into(),
                from.into(),
                to.into(),
            ],
        )
        .unwrap_or_else(|e| spi_fail(e))
        .unwrap_or(0);
        if elsewhere > 0 {
            refuse_drop(format!(
                "tenantguard: {elsewhere} records of tenant {tenant} up to seq {max_seq} lie outside {name}; dropping it would cut the chain"
            ));
        }
        // The newest export that covered these records and whose last
        // record is still in the chain with the hash the export recorded.
        let export = Spi::connect(|c| {
            let t = c.select(
                "SELECT e.id, e.digest, e.last_seq FROM tenantguard.audit_export e
                  WHERE e.tenant OPERATOR(pg_catalog.=) $1 AND e.digest IS NOT NULL
                    AND e.first_seq OPERATOR(pg_catalog.<=) $2 AND e.last_seq OPERATOR(pg_catalog.>=) $3
                    AND e.head_hash OPERATOR(pg_catalog.=) (
                        SELECT pg_catalog.encode(l.hash, 'hex') FROM tenantguard.audit_log l
                         WHERE l.tenant OPERATOR(pg_catalog.=) $1 AND l.seq OPERATOR(pg_catalog.=) e.last_seq LIMIT 1)
                  ORDER BY e.id DESC LIMIT 1",
                None,
                &[tenant.clone().into(), min_seq.into(), max_seq.into()],
            )?;
            if t.is_empty() {
                return Ok(None);
            }
            let r = t.first();
            Ok::<_, pgrx::spi::Error>(Some((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<i64>(3)?.unwrap_or(0),
            )))
        })
        .unwrap_or_else(|e| spi_fail(e));
        let Some((export_id, digest, export_last)) = export else {
            refuse_drop(format!(
                "tenantguard: tenant {tenant}'s records seq {min_seq}..{max_seq} in {name} were not exported; run export_audit() for them, keep the file, then drop"
            ))
        };
        // The chain from the checkpoint through the export's last record
        // must verify, so the export holds exactly what is dropped.
        let v = verify_segment(&tenant, cp_seq, &cp_hash, None, Some(export_last));
        if let Some(bad) = v.first_bad_id {
            refuse_drop(format!(
                "tenantguard: tenant {tenant}'s chain does not verify at record {bad}; investigate before dropping {name}"
            ));
        }
        let (last_id, last_hash) = Spi::get_two_with_args::<i64, Vec<u8>>(
            "SELECT id, hash FROM tenantguard.audit_log WHERE tenant OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.=) $2 LIMIT 1",
            &[tenant.clone().into(), max_seq.into()],
        )
        .unwrap_or_else(|e| spi_fail(e));
        checkpoints.push((
            tenant.clone(),
            max_seq,
            last_id.unwrap_or(0),
            last_hash.unwrap_or_default(),
            n,
            export_id,
            digest,
        ));
        out.push((tenant, n, max_seq, export_id));
    }

    spi::as_owner(|| {
        for (tenant, seq, last_id, hash, n, export_id, digest) in &checkpoints {
            Spi::run_with_args(
                "INSERT INTO tenantguard.audit_checkpoint
                        (tenant, seq, last_id, hash, partition, range_from, range_to, records, export_id, export_digest)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    tenant.clone().into(),
                    (*seq).into(),
                    (*last_id).into(),
                    hash.clone().into(),
                    name.clone().into(),
                    from.into(),
                    to.into(),
                    (*n).into(),
                    (*export_id).into(),
                    digest.clone().into(),
                ],
            )?;
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .unwrap_or_else(|e| spi_fail(e));
    for (tenant, seq, _, _, n, export_id, digest) in &checkpoints {
        super::security_log::record(
            "audit_partition_dropped",
            Some(tenant),
            serde_json::json!({"partition": name, "records": n, "checkpoint_seq": seq,
                               "export_id": export_id, "export_digest": digest}),
        );
    }
    if checkpoints.is_empty() {
        super::security_log::record(
            "audit_partition_dropped",
            None,
            serde_json::json!({"partition": name, "records": 0}),
        );
    }
    super::tamper::allow_internal(|| {
        spi::as_owner(|| {
            let ddl = Spi::get_one_with_args::<String>(
                "SELECT pg_catalog.format('DROP TABLE %s', $1::pg_catalog.regclass)",
                &[partition.into()],
            )?
            .unwrap_or_default();
            Spi::run(&ddl)
        })
    })
    .unwrap_or_else(|e| spi_fail(e));
    TableIterator::new(out)
}

/// The trail's index on `(tenant, tbl, row_key)`, for looking up the
/// history of one row: on (`enabled`) or off. Off by default since 0.2.0:
/// every audited row paid about 5.5 µs to maintain it (benches/README.md),
/// and nothing in the extension reads through it. Building it takes a
/// SHARE lock on the trail (audited writes wait) for as long as the build.
/// Superuser only; returns whether the index exists afterwards.
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn audit_row_index(enabled: default!(bool, true)) -> bool {
    // SAFETY: plain catalog check of the current user.
    if !unsafe { pg_sys::superuser() } {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "tenantguard: only a superuser may change the audit trail's indexes",
        );
    }
    spi::require_primary("audit_row_index()");
    let stmt = if enabled {
        "CREATE INDEX IF NOT EXISTS audit_log_row_key_idx ON tenantguard.audit_log (tenant, tbl, row_key)"
    } else {
        "DROP INDEX IF EXISTS tenantguard.audit_log_row_key_idx"
    };
    super::tamper::allow_internal(|| Spi::run(stmt)).unwrap_or_else(|e| spi_fail(e));
    spi::relation_oid(c"audit_log_row_key_idx").is_some()
}
