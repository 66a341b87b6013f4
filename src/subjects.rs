//! Data subjects: where each end user's personal data lives
//! (`mark_subject`), their export (`export_subject`, GDPR Art. 15/20) and
//! erasure (`erase_subject`, Art. 17), and the per-subject keys that seal
//! their personal values inside the audit trail.
//!
//! A subject is named by a value of a declared column (a user id, an
//! email), always within one tenant. It is stored only as a keyed hash, its
//! `subject_id`: HMAC-SHA256 under the master key of (tenant, subject),
//! 16 bytes in hex. Its key: HKDF-SHA256 of the master key with a random
//! salt per (tenant, subject_id). A sealed value in the trail is
//! `tgs1.<subject_id>.<base64 AES-256-GCM ciphertext>`; the chain's hashes
//! cover that text. Erasure sets the salt to NULL: every record and hash
//! stays, `verify_audit()` still passes, and the values can never be read
//! again, not even with the master key.

use crate::error::raise_msg;
use crate::spi;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;
use sha2::Sha256;
use tenantguard_core::crypto;

const PREFIX: &str = "tgs1.";

pub fn init() {
    crate::audit::set_sealer(seal);
    crate::audit::set_opener(open_all);
}

use crate::crypto::master;

/// HMAC-SHA256 under the master key of (label, tenant, subject).
fn keyed(label: &[u8], tenant: &str, subject: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&master()).expect("any key length");
    m.update(label);
    m.update(tenant.as_bytes());
    m.update(b"\0");
    m.update(subject.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The keyed hash that stands for (tenant, subject) everywhere.
fn subject_id(tenant: &str, subject: &str) -> String {
    hex(&keyed(b"tenantguard:subject-id:v1\0", tenant, subject)[..16])
}

/// A stable keyed pseudonym of (tenant, subject), for `pseudonymize`.
fn pseudonym(tenant: &str, subject: &str) -> String {
    format!(
        "pseudonym-{}",
        hex(&keyed(b"tenantguard:pseudonym:v1\0", tenant, subject)[..10])
    )
}

fn spi_err(e: pgrx::spi::Error) -> ! {
    raise_msg(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("tenantguard: {e}"),
    )
}

fn key_label(tenant: &str, sid: &str) -> String {
    format!("{tenant}\u{0}subject\u{0}{sid}")
}

/// The advisory lock of (tenant, subject): the same tag as
/// `pg_advisory_xact_lock(bigint)` of the subject id's first 8 bytes.
fn lock_key(sid: &str) -> i64 {
    i64::from_str_radix(&sid[..16], 16).unwrap_or(0)
}

/// Take the subject's advisory lock for this transaction: shared by the
/// transactions that seal its values, exclusive for its erasure. (The lock
/// manager's memory only: no write, unlike a row lock.)
fn lock_subject(sid: &str, exclusive: bool) {
    let k = lock_key(sid) as u64;
    let tag = pg_sys::LOCKTAG {
        // SAFETY: a plain read of this backend's database.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: (k >> 32) as u32,
        locktag_field3: (k & 0xffff_ffff) as u32,
        locktag_field4: 1,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    };
    let mode = if exclusive {
        pg_sys::ExclusiveLock
    } else {
        pg_sys::ShareLock
    };
    // SAFETY: a transaction-scoped advisory lock with a valid tag; waits
    // like any lock (deadlocks are detected), released at the end of the
    // transaction.
    unsafe { pg_sys::LockAcquire(&tag, mode as pg_sys::LOCKMODE, false, false) };
}

thread_local! {
    /// Derived subject keys, with the access-rules generation they were
    /// read under (a change of tenantguard.subject_key bumps it, in every
    /// backend, at its next statement or lock).
    static KEYS: std::cell::RefCell<DerivedSubjectKeys> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The subject's key. `create`: make its salt if it has none yet. Err:
/// erased. The caller holds the subject's advisory lock when it matters.
fn key(tenant: &str, sid: &str, create: bool) -> Result<Option<[u8; 32]>, String> {
    let gen = crate::access::current_generation();
    if let Some(k) = KEYS.with(|c| {
        c.borrow()
            .get(&(tenant.to_string(), sid.to_string()))
            .filter(|(g, _)| *g == gen)
            .map(|(_, k)| *k)
    }) {
        return Ok(Some(k));
    }
    // (salt, erased) of the row; (None, None) without one.
    let read = || {
        spi::as_owner(|| {
            Spi::connect(|c| {
                let mut out = (None, None);
                for r in c.select(
                    "SELECT salt, erased_at IS NOT NULL FROM tenantguard.subject_key
                      WHERE tenant OPERATOR(pg_catalog.=) $1 AND subject_id OPERATOR(pg_catalog.=) $2",
                    Some(1),
                    &[tenant.into(), sid.into()],
                )? {
                    out = (r.get::<Vec<u8>>(1)?, r.get::<bool>(2)?);
                }
                Ok::<_, pgrx::spi::Error>(out)
            })
        })
        .unwrap_or_else(|e| spi_err(e))
    };
    let mut row = read();
    if row.1.is_none() && create {
        let mut salt = [0u8; 32];
        getrandom::getrandom(&mut salt).unwrap_or_else(|e| {
            raise_msg(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("tenantguard: no randomness: {e}"),
            )
        });
        spi::as_owner(|| {
            Spi::run_with_args(
                "INSERT INTO tenantguard.subject_key (tenant, subject_id, salt) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[tenant.into(), sid.into(), salt.to_vec().into()],
            )
        })
        .unwrap_or_else(|e| spi_err(e));
        row = read();
    }
    match row {
        (_, None) => Ok(None),
        (_, Some(true)) | (None, _) => Err(format!(
            "tenantguard: data subject {sid} of tenant \"{tenant}\" was erased: no personal data of it is recorded again"
        )),
        (Some(salt), Some(false)) => {
            let k = crypto::derive_key(&master(), &salt, &key_label(tenant, sid), 1);
            KEYS.with(|c| c.borrow_mut().insert((tenant.to_string(), sid.to_string()), (gen, k)));
            Ok(Some(k))
        }
    }
}

/// (tenant, subject) -> (subject_id, key).
type SubjectKeys = std::collections::HashMap<(String, String), (String, [u8; 32])>;
/// (tenant, subject_id) -> (access generation, key).
type DerivedSubjectKeys = std::collections::HashMap<(String, String), (u64, [u8; 32])>;

thread_local! {
    /// Subjects this transaction has locked (shared, until it ends), with
    /// their ids and keys: the transaction's id, and the map.
    static TX_KEYS: std::cell::RefCell<(u32, SubjectKeys)> =
        std::cell::RefCell::new((0, std::collections::HashMap::new()));
}

/// The audit sealer (see `audit::set_sealer`). A transaction looks up (and
/// locks) each subject's key once.
fn seal(tenant: &str, subject: &str, value: &str) -> Result<String, String> {
    // SAFETY: reads this transaction's id (assigned: a row was just written).
    let xid = unsafe { pg_sys::GetTopTransactionIdIfAny() }.into_inner();
    let cached = TX_KEYS.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != xid {
            *c = (xid, std::collections::HashMap::new());
        }
        c.1.get(&(tenant.to_string(), subject.to_string())).cloned()
    });
    let (sid, k) = match cached {
        Some(x) => x,
        None => {
            let sid = subject_id(tenant, subject);
            lock_subject(&sid, false);
            let k = key(tenant, &sid, true)?.expect("created");
            if xid != 0 {
                TX_KEYS.with(|c| {
                    c.borrow_mut()
                        .1
                        .insert((tenant.to_string(), subject.to_string()), (sid.clone(), k))
                });
            }
            (sid, k)
        }
    };
    let mut nonce = [0u8; crypto::NONCE_LEN];
    getrandom::getrandom(&mut nonce).map_err(|e| e.to_string())?;
    let ct = crypto::encrypt(
        &k,
        &key_label(tenant, &sid),
        1,
        &nonce,
        value.as_bytes(),
        Some(&sid),
    )
    .map_err(|e| e.to_string())?;
    Ok(format!("{PREFIX}{sid}.{}", B64.encode(ct)))
}

/// A sealed value's plaintext, if its subject's key still exists.
fn open(tenant: &str, sealed: &str) -> Option<String> {
    let (sid, b64) = sealed.strip_prefix(PREFIX)?.split_once('.')?;
    let k = key(tenant, sid, false).ok()??;
    let ct = B64.decode(b64).ok()?;
    let pt = crypto::decrypt(&ct, &key_label(tenant, sid), Some(sid), |_| Some(k)).ok()?;
    String::from_utf8(pt).ok()
}

/// Every sealed string inside a JSON value, opened (those that cannot be
/// stay sealed).
fn open_all(tenant: &str, v: &mut Value) {
    match v {
        Value::String(s) if s.starts_with(PREFIX) => {
            if let Some(p) = open(tenant, s) {
                *s = p;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| open_all(tenant, x)),
        Value::Object(o) => o.values_mut().for_each(|x| open_all(tenant, x)),
        _ => {}
    }
}

/// Declare where a table's data subjects are: the column naming the subject
/// and the personal columns. Their values enter the audit trail sealed
/// under the subject's key from now on. Recorded on the security trail.
#[pg_extern(volatile, parallel_unsafe)]
fn mark_subject(tbl: pgrx::PgRelation, subject_column: &str, personal_columns: Vec<String>) {
    let tbl = {
        let oid = tbl.oid();
        drop(tbl);
        oid
    };
    let cols = spi::read_one::<Vec<String>>(
        "SELECT pg_catalog.array_agg(attname::text) FROM pg_catalog.pg_attribute
          WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
        &[tbl.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    for c in std::iter::once(subject_column).chain(personal_columns.iter().map(String::as_str)) {
        if !cols.iter().any(|x| x == c) {
            raise_msg(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!("tenantguard: column \"{c}\" does not exist in that table"),
            );
        }
    }
    spi::as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO tenantguard.subject_table AS s (relid, subject_column, personal_columns)
             VALUES ($1::pg_catalog.oid::pg_catalog.regclass, $2, $3)
             ON CONFLICT (relid) DO UPDATE SET subject_column = EXCLUDED.subject_column,
                 personal_columns = EXCLUDED.personal_columns, marked_at = EXCLUDED.marked_at,
                 marked_by = EXCLUDED.marked_by",
            &[
                tbl.into(),
                subject_column.into(),
                personal_columns.clone().into(),
            ],
        )
    })
    .unwrap_or_else(|e| spi_err(e));
    // The audit triggers carry the declaration: re-created (their DDL as
    // the extension's owner; mark_subject is for tenantguard_admin only).
    spi::as_owner(|| crate::audit::reattach(tbl));
    crate::audit::security_log::record(
        "subject_marked",
        None,
        serde_json::json!({"table": tbl.to_u32(), "subject_column": subject_column, "personal_columns": personal_columns}),
    );
}

/// The declared tables: (table as text, subject column, personal columns,
/// text-typed personal columns).
fn declared() -> Vec<(String, String, Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    Spi::connect(|c| {
        for r in c.select(
            "SELECT s.relid::text, s.subject_column::text, s.personal_columns::text[],
                    ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                           WHERE a.attrelid OPERATOR(pg_catalog.=) s.relid AND a.attname OPERATOR(pg_catalog.=) ANY (s.personal_columns)
                             AND a.atttypid OPERATOR(pg_catalog.=) ANY (ARRAY['text', 'varchar', 'bpchar', 'name']::pg_catalog.regtype[]::pg_catalog.oid[]))
               FROM tenantguard.subject_table s ORDER BY 1",
            None,
            &[],
        )? {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<Vec<String>>(3)?.unwrap_or_default(),
                r.get::<Vec<String>>(4)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .unwrap_or_else(|e| spi_err(e));
    out
}

/// The caller's tenant, after the permission check: `action` through
/// authorize() (the caller's roles in the tenant's model).
fn permitted(action: &str) -> String {
    let claims = crate::context::require();
    let ok = spi::read_one::<bool>("SELECT tenantguard.authorize_action($1)", &[action.into()])
        .ok()
        .flatten()
        .unwrap_or(false);
    if !ok {
        crate::alerts::alert_json(
            "subject_request_denied",
            "not_authorized",
            &format!("not authorized: {action}"),
            serde_json::json!({"tenant": claims.tid, "user": claims.sub}),
        );
        raise_msg(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("not authorized: {action}"),
        );
    }
    claims.tid.clone()
}

/// Everything of one data subject in the caller's tenant: the rows of every
/// declared table, and the subject's audit records with their personal
/// values opened (Art. 15 and 20). Needs a context and `subject:export`
/// (authorize()). Recorded on the security trail, without the data.
#[pg_extern(volatile, parallel_unsafe)]
fn export_subject(subject: &str) -> JsonB {
    let tenant = permitted("subject:export");
    let sid = subject_id(&tenant, subject);
    let mut tables = serde_json::Map::new();
    let mut rows = 0usize;
    for (tbl, col, _, _) in declared() {
        let q = format!(
            "SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(t)), '[]') FROM {tbl} t WHERE t.{}::pg_catalog.text OPERATOR(pg_catalog.=) $1",
            pgrx::spi::quote_identifier(&col)
        );
        let v = spi::read_one::<JsonB>(&q, &[subject.into()])
            .unwrap_or_else(|e| spi_err(e))
            .map(|j| j.0)
            .unwrap_or(Value::Array(vec![]));
        rows += v.as_array().map_or(0, Vec::len);
        tables.insert(tbl, v);
    }
    // The records that hold the subject's sealed values (found by its id):
    // its personal values, or the subject as the actor
    // (tenantguard.audit_seal_actor).
    let pattern = format!("%{PREFIX}{sid}.%");
    let mut records = spi::read_one::<JsonB>(
        "SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('seq', l.seq, 'at', l.at, 'action', l.action,
                    'table', l.tbl, 'row_key', l.row_key, 'old_values', l.old_values, 'new_values', l.new_values,
                    'actor', l.actor, 'client_ip', l.client_ip, 'user_agent', l.user_agent) ORDER BY l.seq), '[]')
           FROM tenantguard.audit_log l
          WHERE l.tenant OPERATOR(pg_catalog.=) $1
            AND (l.old_values::pg_catalog.text OPERATOR(pg_catalog.~~) $2 OR l.new_values::pg_catalog.text OPERATOR(pg_catalog.~~) $2
                 OR l.actor OPERATOR(pg_catalog.~~) $3)",
        &[tenant.as_str().into(), pattern.as_str().into(), pattern[1..].into()],
    )
    .unwrap_or_else(|e| spi_err(e))
    .map(|j| j.0)
    .unwrap_or(Value::Array(vec![]));
    open_all(&tenant, &mut records);
    let n_records = records.as_array().map_or(0, Vec::len);
    crate::audit::security_log::record(
        "subject_exported",
        Some(&tenant),
        serde_json::json!({"subject_id": sid, "rows": rows, "records": n_records}),
    );
    JsonB(serde_json::json!({
        "tenant": tenant, "subject": subject, "subject_id": sid,
        "tables": tables, "audit_records": records,
    }))
}

/// Erase one data subject in the caller's tenant: `delete` its rows in
/// every declared table, or `pseudonymize` their personal columns (text
/// columns get the subject's stable keyed pseudonym, others NULL); then
/// destroy the subject's key, so its sealed values in the trail can never
/// be read again while every record and hash stays. Needs a context and
/// `subject:erase`. Locks the subject's key first: a concurrent write for
/// the subject either committed before (and is erased here) or waits and
/// is refused after. Recorded on the security trail, without the data.
#[pg_extern(volatile, parallel_unsafe)]
fn erase_subject(subject: &str, mode: default!(&str, "'delete'")) -> JsonB {
    let tenant = permitted("subject:erase");
    if mode != "delete" && mode != "pseudonymize" {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "tenantguard: mode must be 'delete' or 'pseudonymize'",
        );
    }
    let sid = subject_id(&tenant, subject);
    // Exclusive until commit: writers of this subject (which hold it
    // shared while they seal) finish first, later ones wait and then find
    // the subject erased. The key row exists afterwards either way.
    lock_subject(&sid, true);
    let _ = key(&tenant, &sid, true);
    let pseud = pseudonym(&tenant, subject);
    let mut affected = serde_json::Map::new();
    for (tbl, col, personal, text_cols) in declared() {
        let qcol = pgrx::spi::quote_identifier(&col);
        let q = if mode == "delete" {
            format!("WITH d AS (DELETE FROM {tbl} t WHERE t.{qcol}::pg_catalog.text OPERATOR(pg_catalog.=) $1 RETURNING 1) SELECT pg_catalog.count(*) FROM d")
        } else {
            let sets: Vec<String> = personal
                .iter()
                .map(|p| {
                    let q = pgrx::spi::quote_identifier(p);
                    if text_cols.contains(p) {
                        format!("{q} = $2")
                    } else {
                        format!("{q} = NULL")
                    }
                })
                .collect();
            format!(
                "WITH u AS (UPDATE {tbl} t SET {} WHERE t.{qcol}::pg_catalog.text OPERATOR(pg_catalog.=) $1 RETURNING 1) SELECT pg_catalog.count(*) FROM u",
                sets.join(", ")
            )
        };
        let n = Spi::connect_mut(|c| {
            c.update(&q, Some(1), &[subject.into(), pseud.as_str().into()])?
                .first()
                .get_one::<i64>()
        })
        .unwrap_or_else(|e| spi_err(e))
        .unwrap_or(0);
        affected.insert(tbl, serde_json::json!(n));
    }
    spi::as_owner(|| {
        Spi::run_with_args(
            "UPDATE tenantguard.subject_key SET salt = NULL, erased_at = pg_catalog.now()
              WHERE tenant OPERATOR(pg_catalog.=) $1 AND subject_id OPERATOR(pg_catalog.=) $2",
            &[tenant.as_str().into(), sid.as_str().into()],
        )
    })
    .unwrap_or_else(|e| spi_err(e));
    // Nothing later in this transaction seals with the destroyed key.
    TX_KEYS.with(|c| c.borrow_mut().1.retain(|_, (s, _)| *s != sid));
    KEYS.with(|c| c.borrow_mut().retain(|(_, s), _| *s != sid));
    crate::audit::security_log::record(
        "subject_erased",
        Some(&tenant),
        serde_json::json!({"subject_id": sid, "mode": mode, "rows": affected}),
    );
    JsonB(
        serde_json::json!({"subject_id": sid, "mode": mode, "rows": affected,
        "pseudonym": if mode == "pseudonymize" { Some(pseud) } else { None }}),
    )
}
