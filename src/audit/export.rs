//! Regulator-ready export of the trail, one JSON object per record.

use super::inbox::*;
use super::plans::*;
use crate::spi;
use pgrx::prelude::*;
use pgrx::JsonB;
use tenantguard_core::chain::{self};

/// Regulator-ready export: one JSON object per record, with its hashes.
/// `decrypt`: the values sealed under data subjects' keys opened (those of
/// erased subjects stay sealed), for members of `tenantguard_auditor`
/// only; such an export is recorded on the security trail, not as an
/// export digest (its lines are not what the hashes cover).
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn export_audit(
    tenant: Option<&str>,
    since: default!(Option<pgrx::datum::TimestampWithTimeZone>, "'-infinity'"),
    until: default!(Option<pgrx::datum::TimestampWithTimeZone>, "'infinity'"),
    decrypt: default!(Option<bool>, false),
) -> SetOfIterator<'static, JsonB> {
    let decrypt = decrypt.unwrap_or(false);
    if decrypt {
        require_auditor();
    }
    // Granted to tenantguard_admin and tenantguard_auditor, who may not
    // read the trail or its heads directly (RLS, privileges): read as the
    // extension's owner.
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
        if decrypt {
            let records = out.len();
            let out = opened(tenant, out);
            super::security_log::record(
                "audit_exported_decrypted",
                Some(tenant),
                serde_json::json!({"records": records, "since": since.map(|t| t.to_iso_string()),
                                   "until": until.map(|t| t.to_iso_string())}),
            );
            return SetOfIterator::new(out);
        }
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

/// Only superusers and members of tenantguard_auditor read the trail's
/// sealed values in the clear.
fn require_auditor() {
    // SAFETY: a plain lookup of the current user's attributes.
    let ok = unsafe { pg_sys::superuser() }
        || spi::read_one::<bool>(
            "SELECT pg_catalog.pg_has_role('tenantguard_auditor', 'USAGE')
               FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'tenantguard_auditor'",
            &[],
        )
        .ok()
        .flatten()
        .unwrap_or(false);
    if !ok {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "tenantguard: only members of tenantguard_auditor may export the trail decrypted",
        );
    }
}

/// The records with their sealed values opened: the identity columns, and
/// every string inside the recorded JSON values.
fn opened(tenant: &str, records: Vec<JsonB>) -> Vec<JsonB> {
    let Some(open) = super::capture::opener() else {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "tenantguard: no data subjects capability loaded to open sealed values",
        )
    };
    records
        .into_iter()
        .map(|JsonB(mut rec)| {
            for f in ["actor", "client_ip", "user_agent"] {
                if let Some(v) = rec.get_mut(f) {
                    open(tenant, v);
                }
            }
            for f in ["row_key", "old_values", "new_values", "payload"] {
                if let Some(serde_json::Value::String(text)) = rec.get(f) {
                    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) {
                        open(tenant, &mut v);
                        rec[f] = serde_json::Value::String(v.to_string());
                    }
                }
            }
            rec["decrypted"] = serde_json::Value::Bool(true);
            JsonB(rec)
        })
        .collect()
}
