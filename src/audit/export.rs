//! Regulator-ready export of the trail, one JSON object per record.

use super::inbox::*;
use super::plans::*;
use crate::spi;
use pgrx::prelude::*;
use pgrx::JsonB;
use tenantguard_core::chain::{self};

/// Regulator-ready export: one JSON object per record, with its hashes.
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn export_audit(
    tenant: Option<&str>,
    since: default!(Option<pgrx::datum::TimestampWithTimeZone>, "'-infinity'"),
    until: default!(Option<pgrx::datum::TimestampWithTimeZone>, "'infinity'"),
) -> SetOfIterator<'static, JsonB> {
    // Granted to tenantguard_admin, who may not read the trail or its
    // heads directly (RLS, privileges): read as the extension's owner.
    spi::as_owner(|| {
        trail_up_to_date();
        let tenant = tenant.unwrap_or_else(|| {
            crate::error::raise_msg(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "tenant must not be NULL",
            )
        });
        let mut out = Vec::new();
        let mut lines: Vec<String> = Vec::new();
        let (mut first_seq, mut last_seq): (Option<i64>, Option<i64>) = (None, None);
        Spi::connect(|c| {
            for r in c.select(
                "SELECT x.e, x.e::pg_catalog.text, x.seq FROM (SELECT seq, pg_catalog.jsonb_build_object(
                          'id', id, 'tenant', tenant, 'seq', seq, 'at', at,
                          'at_us', (EXTRACT(EPOCH FROM at) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8,
                          'actor', actor, 'actor_roles', actor_roles, 'db_role', db_role, 'action', action, 'tbl', tbl,
                          'row_key', row_key::text, 'old_values', old_values::text, 'new_values', new_values::text,
                          'client_ip', client_ip, 'user_agent', user_agent, 'application_name', application_name,
                          'txid', txid, 'payload', payload::text, 'key_id', key_id,
                          'prev_hash', pg_catalog.encode(prev_hash, 'hex'), 'hash', pg_catalog.encode(hash, 'hex'))
                   FROM tenantguard.audit_log
                  WHERE tenant OPERATOR(pg_catalog.=) $1 AND at OPERATOR(pg_catalog.>=) $2 AND at OPERATOR(pg_catalog.<) $3) AS x(seq, e)
                  ORDER BY x.seq",
                None,
                &[tenant.into(), since.into(), until.into()],
            )? {
                out.push(r.get::<JsonB>(1)?.unwrap());
                lines.push(r.get::<String>(2)?.unwrap_or_default());
                let seq = r.get::<i64>(3)?;
                first_seq = first_seq.or(seq);
                last_seq = seq;
            }
            Ok::<_, pgrx::spi::Error>(())
        })
        .unwrap_or_else(|e| spi_fail(e));
        let head = out
            .last()
            .map(|j| j.0["hash"].as_str().unwrap_or("").to_string());
        let digest = chain::lines_digest(lines.iter().map(String::as_str));
        if spi::on_standby() {
            pgrx::notice!("tenantguard: this server is a hot standby: the export's digest was not recorded in tenantguard.audit_export (export on the primary to record it)");
        } else {
            spi::as_owner(|| {
            Spi::run_with_args(
                "INSERT INTO tenantguard.audit_export (tenant, since, until, records, first_seq, last_seq, head_hash, digest)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    tenant.into(),
                    since.into(),
                    until.into(),
                    (out.len() as i64).into(),
                    first_seq.into(),
                    last_seq.into(),
                    head.into(),
                    digest.into(),
                ],
            )
        })
        .unwrap_or_else(|e| spi_fail(e));
        }
        SetOfIterator::new(out)
    })
}
