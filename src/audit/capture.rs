//! Capture: a Rust AFTER ROW trigger (INSERT/UPDATE/DELETE) and an AFTER
//! STATEMENT trigger (TRUNCATE), created `ENABLE ALWAYS` so
//! `session_replication_role = replica` does not silence them; `append`,
//! `append_deferred` and `log_event` for records that are not row changes.
//! Immutability: UPDATE/DELETE/TRUNCATE of audit rows are refused by
//! `ENABLE ALWAYS` triggers; with preload, the ProcessUtility guard
//! (`guard_hook.rs`) also refuses DDL that would disable or remove them.

use super::chain::*;
use super::inbox::*;
use super::plans::*;
use crate::error::{raise, raise_msg};
use crate::{context, spi};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_literal;
use pgrx::{JsonB, PgRelation};
use serde::Deserialize;
use std::cell::RefCell;
use std::ffi::CStr;
use std::num::NonZeroUsize;
use std::rc::Rc;
use tenantguard_core::chain::{self};

thread_local! {
    /// Each audit trigger's configuration (its argument), by trigger OID.
    static CONFIGS: RefCell<std::collections::HashMap<pg_sys::Oid, Rc<Config>>> =
        RefCell::new(std::collections::HashMap::new());
    /// Who acted, as the authorization model sees them (see `set_roles_of`).
    static ROLES_OF: std::cell::Cell<Option<RolesOf>> = const { std::cell::Cell::new(None) };
    /// How personal values are sealed (see `set_sealer`).
    static SEALER: std::cell::Cell<Option<Sealer>> = const { std::cell::Cell::new(None) };
    /// How sealed values are opened (see `set_opener`).
    static OPENER: std::cell::Cell<Option<Opener>> = const { std::cell::Cell::new(None) };
}

/// Seal one personal value of (tenant, subject) for the trail: the data
/// subjects capability (a higher one) implements it with a per-subject key
/// and hands it in at load. Err: the subject was erased (nothing personal
/// of it may be recorded again).
pub type Sealer = fn(&str, &str, &str) -> Result<String, String>;

pub fn set_sealer(f: Sealer) {
    SEALER.with(|c| c.set(Some(f)));
}

/// Open every sealed string inside a JSON value of a tenant's record (those
/// whose subject was erased stay sealed). Implemented with the sealer.
pub type Opener = fn(&str, &mut serde_json::Value);

pub fn set_opener(f: Opener) {
    OPENER.with(|c| c.set(Some(f)));
}

pub(super) fn opener() -> Option<Opener> {
    OPENER.with(|c| c.get())
}

/// Seal one value of (tenant, subject); None if the subject was erased.
pub(super) fn try_seal(tenant: &str, subject: &str, value: &str) -> Option<String> {
    SEALER.with(|s| s.get())?(tenant, subject, value).ok()
}

/// Seal one value of (tenant, subject), or fail the statement.
fn sealed(tenant: &str, subject: &str, value: &str) -> String {
    let Some(seal) = SEALER.with(|s| s.get()) else {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "tenantguard audit: values to seal but no sealer loaded",
        )
    };
    seal(tenant, subject, value).unwrap_or_else(|why| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            why,
        )
    })
}

/// Replace the personal columns' values of one row image with sealed ones.
fn seal_row(
    row: &mut [(String, Option<String>)],
    cfg: &Config,
    tenant: Option<&str>,
    subject: Option<&str>,
) {
    let (Some(tenant), Some(subject)) = (tenant, subject) else {
        return;
    };
    for (name, v) in row.iter_mut() {
        if let Some(val) = v.as_deref() {
            if cfg.personal.iter().any(|p| p == name) {
                *v = Some(sealed(tenant, subject, val));
            }
        }
    }
}

/// The roles of (tenant, user) as a comma-separated list, or None. The
/// authorization model (a higher capability) implements it and hands it
/// in at load (`authz::init`); without it, records carry no roles.
pub type RolesOf = fn(&str, &str) -> Option<String>;

pub fn set_roles_of(f: RolesOf) {
    ROLES_OF.with(|c| c.set(Some(f)));
}

#[derive(Deserialize, Default)]
pub(super) struct Config {
    tenant: Option<String>,
    #[serde(default)]
    pk: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    redact: Vec<String>,
    /// Data subjects (`mark_subject`): the column naming the subject, and
    /// the personal columns whose values the trail stores sealed.
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    personal: Vec<String>,
}

/// What the caller knows about one event; the rest is filled in here.
pub struct Entry {
    pub tenant: Option<String>,
    pub action: String,
    pub tbl: Option<String>,
    pub row_key: Option<String>,
    pub old_values: Option<String>,
    pub new_values: Option<String>,
    pub payload: Option<String>,
}

/// Append one record to its tenant's chain and write it now (with every
/// record still pending before it). Returns the record id.
pub fn append(e: Entry) -> i64 {
    capture(e, false);
    let id = flush_pending().last().copied().unwrap_or_else(|| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "tenantguard audit: the record was not written",
        )
    });
    if COMMITTING.with(|c| c.get()) {
        flush_all_pending();
    }
    id
}

/// Capture one record for its tenant's chain; it is written by the
/// transaction's next flush (at the latest just before commit).
pub fn append_deferred(e: Entry) {
    capture(e, true);
}

/// Capture a record as pending; with `batch`, write the pending records
/// once there are `BATCH` of them.
pub(super) fn capture(e: Entry, batch: bool) {
    // Refused now, not at commit, when nothing could be recorded.
    if crate::keys::audit_keyring().primary().is_err() {
        no_audit_keys();
    }
    // Under logical replication: skip, or name the subscription as actor,
    // or refuse a local record while the publisher writes the trail.
    let replicated_actor = match super::replication::recording() {
        super::replication::Recording::Skip => return,
        super::replication::Recording::Replicated(a) => Some(a),
        super::replication::Recording::Local => None,
    };
    let claims = context::current().ok().flatten();
    let tenant = e
        .tenant
        .or_else(|| claims.as_ref().map(|c| c.tid.clone()))
        .unwrap_or_else(|| "*".into());
    // Refused now, in the writing transaction: a record the trail cannot
    // index must fail the statement that wrote the row, never a commit or
    // the background writer (where it would hold up every later record).
    if let Err(err) = chain::indexed_fits(&tenant, e.tbl.as_deref(), e.row_key.as_deref()) {
        raise(err);
    }
    let actor = replicated_actor.or_else(|| claims.as_ref().map(|c| c.sub.clone()));
    let actor_roles = claims
        .as_ref()
        .and_then(|c| ROLES_OF.with(|r| r.get()).and_then(|f| f(&c.tid, &c.sub)));
    let client_ip = claims
        .as_ref()
        .and_then(|c| c.ip.map(|i| i.to_string()))
        .or_else(spi::client_addr);
    let user_agent = claims.as_ref().and_then(|c| c.ua.clone());
    let db_role = spi::current_role_name().unwrap_or_default();
    let at_us = unix_us_now();
    // What the record stores is what gets hashed: the JSON in jsonb's
    // normal form, the transaction id as txid_current() reports it, the
    // application_name as current_setting() does.
    // SAFETY: assigns the top-level transaction id if there is none yet
    // (as txid_current() does), reads the subtransaction id and a GUC that
    // always exists.
    let (fxid, subid, application_name) = unsafe {
        let fxid = pg_sys::GetTopFullTransactionId().value;
        let subid = pg_sys::GetCurrentSubTransactionId();
        let app = with_application_name(|a| a.map(|a| a.to_string_lossy().into_owned()));
        (fxid, subid, app)
    };
    // The actor is a data subject too (tenantguard.audit_seal_actor): who
    // acted, from where and with what, sealed under the key of the subject
    // the token's `sub` names, in the record's tenant. (Not a replicated
    // record's actor, the subscription, nor a record without a tenant.)
    let (actor, client_ip, user_agent) = match (&claims, &actor) {
        (Some(c), Some(a))
            if crate::gucs::AUDIT_SEAL_ACTOR.get() && *a == c.sub && tenant != "*" =>
        {
            let seal = |v: Option<String>| v.map(|v| sealed(&tenant, &c.sub, &v));
            (seal(actor.clone()), seal(client_ip), seal(user_agent))
        }
        _ => (actor, client_ip, user_agent),
    };
    // Chained in this transaction: in jsonb's normal form now (an invalid
    // value fails the statement that wrote it). Left to the background
    // writer: as captured (the writer normalizes it as it chains it).
    // (A value near jsonb's size limits is normalized now either way, so a
    // record the writer could not store never reaches the inbox.)
    let background = super::writer::background();
    let json_of = |j: Option<String>| match j {
        Some(j) if background && j.len() < RAW_JSON_MAX => Some(Json::raw(j)),
        j => jsonb_normal(j),
    };
    let p = Pending {
        subid,
        tenant,
        at_us,
        actor,
        actor_roles,
        db_role,
        action: e.action,
        tbl: e.tbl,
        row_key: json_of(e.row_key),
        old_values: json_of(e.old_values),
        new_values: json_of(e.new_values),
        client_ip,
        user_agent,
        application_name,
        txid: fxid as i64,
        payload: json_of(e.payload),
    };
    super::tamper::note_audit_write();
    register_callbacks();
    let full = with_chains(fxid, |c| {
        c.pending.push(p);
        batch && c.pending.len() >= BATCH
    });
    if batch && COMMITTING.with(|c| c.get()) {
        flush_all_pending();
    } else if full && super::writer::background() {
        stage_pending();
    } else if full {
        flush_pending();
    }
}

/// Text of every (non-dropped) column of a tuple, with redaction.
///
/// SAFETY: `tuple` and `tupdesc` must belong together and be valid.
pub(super) unsafe fn row_values(
    tuple: *mut pg_sys::HeapTupleData,
    tupdesc: pg_sys::TupleDesc,
    cfg: &Config,
) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    // SAFETY: tupdesc is valid for the trigger's relation.
    let natts = unsafe { (*tupdesc).natts } as usize;
    for i in 0..natts {
        // SAFETY: i < natts.
        let att = unsafe { crate::compat::tuple_desc_attr(tupdesc, i) };
        if att.attisdropped {
            continue;
        }
        // SAFETY: attname is a NUL-terminated NameData.
        let name = unsafe { CStr::from_ptr(att.attname.data.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        if cfg.exclude.contains(&name) {
            continue;
        }
        // SAFETY: attno is 1-based and within natts.
        let datum = unsafe {
            pgrx::htup::heap_getattr_raw(tuple, NonZeroUsize::new(i + 1).unwrap(), tupdesc)
        };
        let text = datum.map(|d| {
            if cfg.redact.contains(&name) {
                return "[redacted]".to_string();
            }
            let mut out_fn = pg_sys::Oid::INVALID;
            let mut varlena = false;
            // SAFETY: standard type output lookup and call for this column's type.
            unsafe {
                pg_sys::getTypeOutputInfo(att.atttypid, &mut out_fn, &mut varlena);
                let p = pg_sys::OidOutputFunctionCall(out_fn, d);
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        });
        out.push((name, text));
    }
    out
}

pub(super) fn to_json(cols: &[(String, Option<String>)]) -> String {
    chain::row_json(cols)
}

/// A superuser's pg_restore session re-loads records that already exist in
/// the dump (audit rows included): capturing them again would duplicate
/// the trail and break the restored chains. Only a superuser session
/// whose application_name is pg_restore qualifies: the application role
/// cannot silence capture by naming itself pg_restore.
pub(super) fn restoring() -> bool {
    // The name first: it is a read of a variable, superuser() a lookup.
    with_application_name(|a| a.is_some_and(|a| a.to_bytes() == b"pg_restore"))
        // SAFETY: superuser() is a plain backend lookup.
        && unsafe { pg_sys::superuser() }
}

/// `f` of the session's application_name (what current_setting() shows).
fn with_application_name<R>(f: impl FnOnce(Option<&CStr>) -> R) -> R {
    // SAFETY: the GUC's variable: NULL or a NUL-terminated string the GUC
    // machinery owns until the setting changes, which nothing in `f` does.
    let name = unsafe {
        let p = pg_sys::application_name;
        (!p.is_null()).then(|| CStr::from_ptr(p))
    };
    f(name)
}

/// The capture trigger. Its one argument is the table's audit config (JSON).
#[pg_trigger]
pub(super) fn audit_capture<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::heap_tuple::PgHeapTupleError> {
    if restoring() {
        return Ok(None);
    }
    let td = trigger.trigger_data();
    // A trigger's arguments never change (a new configuration is a new
    // trigger): parsed once per trigger and backend.
    // SAFETY: tg_trigger is valid for the trigger call.
    let tgoid = unsafe { (*td.tg_trigger).tgoid };
    let cfg = CONFIGS.with(|c| {
        c.borrow_mut()
            .entry(tgoid)
            .or_insert_with(|| {
                Rc::new(
                    trigger
                        .extra_args()
                        .ok()
                        .and_then(|a| a.first().and_then(|s| serde_json::from_str(s).ok()))
                        .unwrap_or_default(),
                )
            })
            .clone()
    });
    // SAFETY: tg_relation is valid for the trigger call.
    let relid = unsafe { (*td.tg_relation).rd_id };
    let (tbl, reference_lowest) = match recorded(relid, || {
        (
            trigger.table_schema().unwrap_or_default(),
            trigger.table_name().unwrap_or_default(),
        )
    }) {
        Recorded::Here(n) => (n.to_string(), None),
        Recorded::Elsewhere => return Ok(None),
        Recorded::Reference { name, lowest } => (name.to_string(), Some(lowest)),
    };
    let event = td.tg_event;
    let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
    if op == pg_sys::TRIGGER_EVENT_TRUNCATE {
        if reference_lowest == Some(false) {
            return Ok(None);
        }
        append_deferred(Entry {
            tenant: None,
            action: "TRUNCATE".into(),
            tbl: Some(tbl),
            row_key: None,
            old_values: None,
            new_values: None,
            payload: None,
        });
        return Ok(None);
    }
    // SAFETY: row-level AFTER trigger: tg_relation and the tuples are valid.
    let tupdesc = unsafe { (*td.tg_relation).rd_att };
    let (action, old, new) = unsafe {
        match op {
            pg_sys::TRIGGER_EVENT_INSERT => (
                "INSERT",
                None,
                Some(row_values(td.tg_trigtuple, tupdesc, &cfg)),
            ),
            pg_sys::TRIGGER_EVENT_UPDATE => (
                "UPDATE",
                Some(row_values(td.tg_trigtuple, tupdesc, &cfg)),
                Some(row_values(td.tg_newtuple, tupdesc, &cfg)),
            ),
            _ => (
                "DELETE",
                Some(row_values(td.tg_trigtuple, tupdesc, &cfg)),
                None,
            ),
        }
    };
    let current = new.as_ref().or(old.as_ref()).cloned().unwrap_or_default();
    let lookup = |k: &str| {
        current
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.clone())
    };
    let tenant = cfg.tenant.as_deref().and_then(lookup);
    if let Some(lowest) = reference_lowest {
        if !reference_row_here(tenant.as_deref(), lowest) {
            return Ok(None);
        }
    }
    let (mut old, mut new) = (old, new);
    if let Some(col) = cfg.subject.as_deref() {
        // Each image is sealed under the subject it names (an UPDATE may
        // change the subject column).
        let subject_of = |row: &Vec<(String, Option<String>)>| {
            row.iter()
                .find(|(n, _)| n == col)
                .and_then(|(_, v)| v.clone())
        };
        if let Some(o) = old.as_mut() {
            let sub = subject_of(o);
            seal_row(o, &cfg, tenant.as_deref(), sub.as_deref());
        }
        if let Some(n) = new.as_mut() {
            let sub = subject_of(n);
            seal_row(n, &cfg, tenant.as_deref(), sub.as_deref());
        }
    }
    let row_key = if cfg.pk.is_empty() {
        None
    } else {
        let cols: Vec<(String, Option<String>)> =
            cfg.pk.iter().map(|k| (k.clone(), lookup(k))).collect();
        Some(to_json(&cols))
    };
    // For UPDATE only the changed columns, on both sides.
    let (old_json, new_json) = match (old, new) {
        (Some(o), Some(n)) => {
            let changed: Vec<usize> = (0..o.len()).filter(|&i| o[i].1 != n[i].1).collect();
            let pick = |v: &Vec<(String, Option<String>)>| {
                to_json(&changed.iter().map(|&i| v[i].clone()).collect::<Vec<_>>())
            };
            (Some(pick(&o)), Some(pick(&n)))
        }
        (o, n) => (o.map(|v| to_json(&v)), n.map(|v| to_json(&v))),
    };
    append_deferred(Entry {
        tenant,
        action: action.into(),
        tbl: Some(tbl),
        row_key,
        old_values: old_json,
        new_values: new_json,
        payload: None,
    });
    Ok(None)
}

/// Whose records a relation's writes are, on this node.
#[derive(Clone)]
enum Recorded {
    /// This node records them, under this name.
    Here(Rc<str>),
    /// Another node records them (a copy of a shard placed on several).
    Elsewhere,
    /// A copy of a reference-table shard (on every node): the node that
    /// holds the row's tenant records it (`reference_row_here`);
    /// `lowest`: whether this node holds the lowest group's copy, for rows
    /// without a tenant.
    Reference { name: Rc<str>, lowest: bool },
}

thread_local! {
    /// `recorded`'s answers by relation, with the generation of
    /// `RECORDED_GEN` they were found under.
    static RECORDED: RefCell<std::collections::HashMap<pg_sys::Oid, (u64, Recorded)>> =
        RefCell::new(std::collections::HashMap::new());
    /// Bumped by every schema change (a schema renamed) and a relcache
    /// reset; a relation's own invalidation (renamed, moved to another
    /// schema) removes its answer. The name a record carries is the
    /// table's name when it was written.
    static RECORDED_GEN: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
    static RECORDED_WATCHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// For reference-table rows, by tenant: whether this node holds the
    /// tenant's chain; kept for one local transaction.
    static TENANT_HERE: RefCell<(u32, std::collections::HashMap<String, bool>)> =
        RefCell::new((0, std::collections::HashMap::new()));
}

/// How a relation's writes are recorded. On Citus, the triggers fire on
/// the shards (`public.docs_102008`): their records name the logical table
/// (`public.docs`). A distributed table's shard has one placement, so its
/// node records it (a tenant's co-located shards, and so its chain, live
/// on one node); a shard placed on several nodes is recorded once.
fn recorded(relid: pg_sys::Oid, names: impl FnOnce() -> (String, String)) -> Recorded {
    watch_names();
    let gen = RECORDED_GEN.with(|g| g.get());
    if let Some(known) = RECORDED.with(|m| {
        m.borrow()
            .get(&relid)
            .filter(|(g, _)| *g == gen)
            .map(|(_, r)| r.clone())
    }) {
        return known;
    }
    let (schema, name) = names();
    let (schema, name) = (schema.as_str(), name.as_str());
    let plain = || Recorded::Here(Rc::from(format!("{schema}.{name}").as_str()));
    let shardid = name
        .rsplit_once('_')
        .and_then(|(_, d)| (!d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())).then_some(d))
        .and_then(|d| d.parse::<i64>().ok());
    let found = match shardid {
        Some(id) if spi::citus_metadata() => spi::as_owner(|| {
            Spi::connect(|c| {
                let r = c.select(
                    "SELECT pg_catalog.format('%s.%s', n.nspname, c.relname), p.partmethod::text,
                            COALESCE((SELECT pg_catalog.min(pl.groupid) FROM pg_catalog.pg_dist_placement pl WHERE pl.shardid OPERATOR(pg_catalog.=) s.shardid)
                                     OPERATOR(pg_catalog.=) (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g), true)
                       FROM pg_catalog.pg_dist_shard s
                       JOIN pg_catalog.pg_dist_partition p ON p.logicalrelid OPERATOR(pg_catalog.=) s.logicalrelid
                       JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.logicalrelid
                       JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                      WHERE s.shardid OPERATOR(pg_catalog.=) $1 AND n.nspname OPERATOR(pg_catalog.=) $2",
                    None,
                    &[id.into(), schema.into()],
                )?;
                Ok::<_, pgrx::spi::Error>(match r.first().get_three::<String, String, bool>()? {
                    (Some(logical), Some(method), Some(lowest)) => Some((logical, method, lowest)),
                    _ => None,
                })
            })
            .ok()
            .flatten()
        }),
        _ => None,
    };
    let r = match found {
        Some((logical, method, lowest)) if method == "n" => Recorded::Reference {
            name: Rc::from(logical.as_str()),
            lowest,
        },
        Some((logical, _, true)) => Recorded::Here(Rc::from(logical.as_str())),
        Some((_, _, false)) => Recorded::Elsewhere,
        None => plain(),
    };
    RECORDED.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() > 4096 {
            m.clear();
        }
        m.insert(relid, (gen, r.clone()))
    });
    r
}

/// Forget a relation's recorded name (all of them for InvalidOid).
fn names_changed(relid: pg_sys::Oid) {
    let forgot = relid != pg_sys::Oid::INVALID
        && RECORDED.with(|m| m.try_borrow_mut().map(|mut m| m.remove(&relid)).is_ok());
    if !forgot {
        RECORDED_GEN.with(|g| g.set(g.get() + 1));
    }
}

unsafe extern "C-unwind" fn schemas_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    RECORDED_GEN.with(|g| g.set(g.get() + 1));
}

fn watch_names() {
    if RECORDED_WATCHED.with(|w| w.replace(true)) {
        return;
    }
    spi::on_relcache_invalidation(names_changed);
    // SAFETY: registers a callback for the life of the backend; it only
    // bumps a thread-local counter.
    unsafe {
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
            Some(schemas_changed),
            pg_sys::Datum::from(0),
        );
    }
}

/// A reference-table row (its write runs on every node): whether this node
/// records it. The node that holds the tenant's chain does: the node of the
/// tenant's shard of the first audited table distributed by tenant (lint
/// TG025 reports audited tables that are not co-located with it). Without
/// one, the node of the lowest group.
fn reference_row_here(tenant: Option<&str>, lowest: bool) -> bool {
    let Some(t) = tenant else { return lowest };
    let lxid = crate::compat::local_transaction_id();
    if let Some(here) = TENANT_HERE.with(|m| {
        let m = m.borrow();
        (m.0 == lxid).then(|| m.1.get(t).copied()).flatten()
    }) {
        return here;
    }
    let here = spi::as_owner(|| {
        spi::read_one::<bool>(
            "WITH anchor AS (
                SELECT p.logicalrelid FROM pg_catalog.pg_dist_partition p
                 WHERE p.partkey IS NOT NULL
                   AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid OPERATOR(pg_catalog.=) p.logicalrelid
                                 AND t.tgname OPERATOR(pg_catalog.=) 'tenantguard_audit')
                 ORDER BY p.colocationid, p.logicalrelid LIMIT 1)
             SELECT pl.groupid OPERATOR(pg_catalog.=) (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g)
               FROM anchor a
               JOIN pg_catalog.pg_dist_placement pl
                 ON pl.shardid OPERATOR(pg_catalog.=) pg_catalog.get_shard_id_for_distribution_column(a.logicalrelid, $1)
              LIMIT 1",
            &[t.into()],
        )
        .ok()
        .flatten()
    })
    .unwrap_or(lowest);
    TENANT_HERE.with(|m| {
        let mut m = m.borrow_mut();
        if m.0 != lxid {
            *m = (lxid, std::collections::HashMap::new());
        }
        m.1.insert(t.to_string(), here);
    });
    here
}

pub fn is_audited(rel: pg_sys::Oid) -> bool {
    spi::read_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) $1
                          AND tgname OPERATOR(pg_catalog.=) 'tenantguard_audit')",
        &[rel.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

pub fn attach_on_protect() -> bool {
    true
}

/// Attach (or re-configure) the audit triggers of a table.
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn audit(
    tbl: PgRelation,
    exclude: default!(Vec<String>, "'{}'"),
    redact: default!(Vec<String>, "'{}'"),
) {
    let oid = tbl.oid();
    drop(tbl);
    spi::with_pinned_search_path(|| {
        let (nsp, rel) = Spi::get_two_with_args::<String, String>(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
              WHERE c.oid OPERATOR(pg_catalog.=) $1",
            &[oid.into()],
        )
        .unwrap_or((None, None));
        let qualified = format!(
            "{}.{}",
            pgrx::spi::quote_identifier(nsp.unwrap_or_default()),
            pgrx::spi::quote_identifier(rel.unwrap_or_default())
        );
        let tenant = Spi::get_one_with_args::<String>(
            "SELECT tenant_column::text FROM tenantguard.protected_table WHERE relid::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
            &[oid.into()],
        )
        .ok()
        .flatten()
        .or_else(|| {
            Spi::get_one_with_args::<String>(
                "SELECT attname::text FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) $1
                   AND attname OPERATOR(pg_catalog.=) 'tenant_id' AND NOT attisdropped",
                &[oid.into()],
            )
            .ok()
            .flatten()
        });
        let pk = Spi::get_one_with_args::<Vec<String>>(
            "SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.i)
               FROM pg_catalog.pg_index x
               CROSS JOIN LATERAL pg_catalog.unnest(x.indkey) WITH ORDINALITY AS k(attnum, i)
               JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) x.indrelid AND a.attnum OPERATOR(pg_catalog.=) k.attnum
              WHERE x.indrelid OPERATOR(pg_catalog.=) $1 AND x.indisprimary",
            &[oid.into()],
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        // Data subjects: the declaration, if the table has one.
        // (Absent until ALTER EXTENSION ... UPDATE to 0.2.0.)
        let (subject, personal) = if spi::relation_oid(c"subject_table").is_some() {
            spi::read_two::<String, Vec<String>>(
                "SELECT s.subject_column::text, s.personal_columns::text[] FROM tenantguard.subject_table s
                  WHERE s.relid::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
                &[oid.into()],
            )
            .unwrap_or((None, None))
        } else {
            (None, None)
        };
        let mut cfg =
            serde_json::json!({"tenant": tenant, "pk": pk, "exclude": exclude, "redact": redact});
        if subject.is_some() {
            cfg["subject"] = serde_json::json!(subject);
            cfg["personal"] = serde_json::json!(personal.unwrap_or_default());
        }
        let cfg = cfg.to_string();
        let cfg = quote_literal(cfg);
        let mut stmts = Vec::new();
        if is_audited(oid) {
            stmts.push(format!("DROP TRIGGER tenantguard_audit ON {qualified}"));
            stmts.push(format!(
                "DROP TRIGGER IF EXISTS tenantguard_audit_truncate ON {qualified}"
            ));
        }
        stmts.extend([
            format!("CREATE TRIGGER tenantguard_audit AFTER INSERT OR UPDATE OR DELETE ON {qualified} FOR EACH ROW EXECUTE FUNCTION tenantguard.audit_capture({cfg})"),
            format!("CREATE TRIGGER tenantguard_audit_truncate AFTER TRUNCATE ON {qualified} FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.audit_capture({cfg})"),
            format!("ALTER TABLE {qualified} ENABLE ALWAYS TRIGGER tenantguard_audit"),
            format!("ALTER TABLE {qualified} ENABLE ALWAYS TRIGGER tenantguard_audit_truncate"),
        ]);
        // On Citus the triggers go to the shards (Citus calls row triggers
        // on distributed tables unsafe in general: ours write node-local
        // tables only). Their records name the logical table
        // (`recorded_name`).
        let run = || {
            for stmt in &stmts {
                super::tamper::allow_internal(|| Spi::run(stmt)).unwrap_or_else(|e| spi_fail(e));
            }
        };
        if spi::citus_loaded() {
            spi::with_gucs(&[(c"citus.enable_unsafe_triggers", c"on")], run);
        } else {
            run();
        }
    });
}

/// Re-create a table's audit triggers with its current options (after its
/// data-subject declaration changed). Nothing if it is not audited.
pub fn reattach(oid: pg_sys::Oid) {
    if !is_audited(oid) {
        return;
    }
    let args = spi::read_one::<Vec<u8>>(
        "SELECT tgargs FROM pg_catalog.pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) $1
            AND tgname OPERATOR(pg_catalog.=) 'tenantguard_audit'",
        &[oid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    let first = args.split(|b| *b == 0).next().unwrap_or_default();
    let cfg: Config = serde_json::from_slice(first).unwrap_or_default();
    // SAFETY: the relation exists (it has a trigger); opened to hand to audit().
    let rel = unsafe { PgRelation::with_lock(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    audit(rel, cfg.exclude, cfg.redact);
}

/// Write this transaction's pending records now (they are written before
/// commit anyway), so the transaction itself can read them in `audit_log`.
/// Returns how many were written.
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn audit_flush() -> i64 {
    // Chaining the inbox locks every chain it touches until this
    // transaction ends: only for those who may hold the trail up (the
    // writer waits meanwhile); an application's committed records appear
    // once the writer has chained them.
    let n = flush_pending().len() as i64
        + if spi::is_audit_admin() {
            drain_inbox(None).0
        } else {
            0
        };
    flush_all_pending();
    n
}

/// Application-level events (login, export, approval, download). Needs a
/// context: the event belongs to its tenant and actor.
#[pg_extern(volatile, parallel_unsafe)]
pub(super) fn log_event(
    action: Option<&str>,
    entity: Option<&str>,
    entity_id: Option<&str>,
    payload: default!(Option<JsonB>, "NULL"),
) -> i64 {
    let action = action.unwrap_or_else(|| {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "action must not be NULL",
        )
    });
    spi::require_primary("log_event()");
    let claims = context::require();
    if action.trim().is_empty() {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "log_event needs an action",
        );
    }
    append(Entry {
        tenant: Some(claims.tid.clone()),
        action: format!("event:{action}"),
        tbl: entity.map(str::to_string),
        row_key: entity_id.map(|id| serde_json::json!({"id": id}).to_string()),
        old_values: None,
        new_values: None,
        payload: payload.map(|p| p.0.to_string()),
    })
}
