//! Chaining: every record joins its tenant's chain (see
//! `tenantguard_core::chain`). A transaction captures records as it writes
//! and places them in their chains in batches (before commit, every `BATCH`
//! records, when a record id is needed or the trail is read). Placing
//! records locks the tenant's chain until the transaction ends
//! (`lock_chain`): two transactions of one tenant can never claim the same
//! predecessor, and different tenants never wait for each other.
//!
//! This stage owns the transaction's audit state and its transaction
//! callbacks. The work a higher stage does before commit (staging records
//! for the background writer) and after it (waking the writer) is handed
//! in through `CommitHooks` (set by `audit::init`), so nothing here imports
//! a higher stage.

use super::plans::*;
use crate::error::raise_msg;
use crate::spi;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use tenantguard_core::chain::{self, Record};

/// Serialize the appends of one tenant's chain: a transaction-level lock
/// taken before its head is read, held until the transaction ends (or the
/// savepoint that took it is rolled back). Other tenants never wait. It
/// lives in the advisory lock space under a key of its own (the fourth
/// field, 0x7467, is one `pg_advisory_*` functions never use), on the
/// 64-bit FNV-1a hash of the tenant.
pub(super) fn lock_chain(tenant: &str) {
    let (f2, f3) = chain_lock_key(tenant);
    advisory_xact_lock(f2, f3, 0x7467, true);
}

/// Lock the tenant's chain if no other transaction holds it; never waits.
pub(super) fn try_lock_chain(tenant: &str) -> bool {
    let (f2, f3) = chain_lock_key(tenant);
    advisory_xact_lock(f2, f3, 0x7467, false)
}

pub(super) fn chain_lock_key(tenant: &str) -> (u32, u32) {
    let h = tenant.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    ((h >> 32) as u32, h as u32)
}

/// Take an exclusive transaction-level lock in this database's advisory
/// lock space. With `wait`, LockAcquire waits (and detects deadlocks) as
/// any lock does; without, it returns false at once if another
/// transaction holds the lock. The transaction's resource owner releases
/// it.
pub(super) fn advisory_xact_lock(field2: u32, field3: u32, field4: u16, wait: bool) -> bool {
    // SAFETY: a fully initialized advisory lock tag for this database.
    unsafe {
        let tag = pg_sys::LOCKTAG {
            locktag_field1: pg_sys::MyDatabaseId.to_u32(),
            locktag_field2: field2,
            locktag_field3: field3,
            locktag_field4: field4,
            locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
            locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
        };
        pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as i32, false, !wait)
            != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
    }
}

/// This transaction's chains. Appending locks the tenant's `audit_head`
/// row until the transaction ends, so no other transaction can append to
/// the chain meanwhile: later records continue from the last one appended
/// (`heads`) without reading the head again. The head row moves once per
/// flush, in the very statement that inserts the flush's records (so the
/// two can never disagree, not even after a savepoint rollback, which takes
/// back both): a transaction that appends a few records runs one statement
/// for them at commit.
///
/// A savepoint rollback removes its records and its heads' moves, so it
/// forgets `heads`; the next record of the tenant then starts from the head
/// row, which is again at the last surviving record.
///
/// Records are not written one by one: an append captures the record
/// (`pending`) and a flush writes every pending record in one INSERT,
/// locking each tenant's head as it places the tenant's records in its
/// chain. Flushes happen before commit or PREPARE (so a transaction that
/// appends a few records locks its heads only while it commits), every
/// `BATCH` records, and whenever a record id is needed or this backend
/// reads the trail. A record flushed inside a subtransaction stays known
/// (`inflight`) until that subtransaction's work belongs to the top level:
/// if it is rolled back, records appended outside it are queued again.
pub(super) struct TxnChains {
    pub(super) fxid: u64,
    pub(super) heads: Vec<(String, i64, Vec<u8>)>,
    /// Where the current version of each of those tenants' `audit_head`
    /// rows is, once this transaction read or moved it directly (see
    /// `append::Heads`): the next move updates it there without looking
    /// it up again. Forgotten with `heads`.
    pub(super) head_tids: Vec<(String, pg_sys::ItemPointerData)>,
    pub(super) pending: Vec<Pending>,
    pub(super) inflight: Vec<(pg_sys::SubTransactionId, Pending)>,
    /// Records this transaction staged in the inbox (their ordinals).
    pub(super) staged: i32,
    /// Whether this transaction leaves its records to the background
    /// writer (decided at its first record, see `writer::background`).
    pub(super) background: Option<bool>,
}

/// A captured record waiting for its flush: everything but its place in
/// the chain (id, seq, hashes), which is fixed under the head's lock.
#[derive(Clone)]
pub(super) struct Pending {
    /// The subtransaction that appended it.
    pub(super) subid: pg_sys::SubTransactionId,
    pub(super) tenant: String,
    pub(super) at_us: i64,
    pub(super) actor: Option<String>,
    pub(super) actor_roles: Option<String>,
    pub(super) db_role: String,
    pub(super) action: String,
    pub(super) tbl: Option<String>,
    pub(super) row_key: Option<Json>,
    pub(super) old_values: Option<Json>,
    pub(super) new_values: Option<Json>,
    pub(super) client_ip: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) application_name: Option<String>,
    pub(super) txid: i64,
    pub(super) payload: Option<Json>,
}

thread_local! {
    static CHAINS: RefCell<Option<TxnChains>> = const { RefCell::new(None) };
    static CALLBACKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set once this transaction's records were written before commit or
    /// PREPARE: a record captured after that (by code another extension
    /// runs at pre-commit) is written at once, not left behind.
    pub(super) static COMMITTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// This transaction staged records for the background writer: wake it
    /// once they are committed.
    pub(super) static STAGED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set only while `drain_inbox` removes the records it chains: the one
    /// DELETE the inbox's guard lets through.
    pub(super) static DRAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static HOOKS: std::cell::Cell<CommitHooks> = const { std::cell::Cell::new(CommitHooks::NONE) };
}

/// What higher stages do around commit, handed in by `audit::init` (the
/// lower stage defines the interface, the higher one implements it).
#[derive(Clone, Copy)]
pub struct CommitHooks {
    /// Before commit or PREPARE, before the heads are flushed: stage this
    /// transaction's records for the background writer, if it is on.
    pub pre_commit: Option<fn()>,
    /// After a commit that staged records (how many): wake the background
    /// writer.
    pub committed_staged: Option<fn(i64)>,
    /// After a drain of the inbox took `n` records (`more`: whether some may
    /// be left): count them off the writer's backlog.
    pub drained: Option<fn(i64, bool)>,
}

impl CommitHooks {
    const NONE: CommitHooks = CommitHooks {
        pre_commit: None,
        committed_staged: None,
        drained: None,
    };
}

/// See `CommitHooks::drained`.
pub(super) fn note_drained(n: i64, more: bool) {
    if let Some(f) = HOOKS.with(|h| h.get().drained) {
        f(n, more);
    }
}

pub fn set_commit_hooks(h: CommitHooks) {
    HOOKS.with(|c| c.set(h));
}

#[pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    my: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    CHAINS.with(|c| {
        let mut c = c.borrow_mut();
        let Some(c) = c.as_mut() else { return };
        match event {
            // Subtransaction ids only grow: what `my` or a subtransaction
            // started inside it did is tagged `>= my`.
            SUBXACT_EVENT_COMMIT_SUB => {
                for p in c.pending.iter_mut().filter(|p| p.subid >= my) {
                    p.subid = parent;
                }
                for f in c.inflight.iter_mut().filter(|f| f.0 >= my) {
                    f.0 = parent;
                }
                if parent == TOP_SUBXACT {
                    c.inflight.clear();
                }
            }
            SUBXACT_EVENT_ABORT_SUB => {
                DRAINING.with(|d| d.set(false));
                // Its rows are gone, and so are its locks on heads: the
                // next flush starts each tenant from its last surviving
                // record. Records it appended are dropped; records appended
                // outside it but written inside it are queued again, ahead
                // of the ones appended since.
                c.heads.clear();
                c.head_tids.clear();
                c.pending.retain(|p| p.subid < my);
                let mut again = Vec::new();
                c.inflight.retain(|(flushed_in, p)| {
                    if *flushed_in < my {
                        return true;
                    }
                    if p.subid < my {
                        again.push(p.clone());
                    }
                    false
                });
                again.append(&mut c.pending);
                c.pending = again;
            }
            _ => {}
        }
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PRE_PREPARE => {
            COMMITTING.with(|c| c.set(true));
            if let Some(f) = HOOKS.with(|h| h.get().pre_commit) {
                f();
            }
            flush_all_pending()
        }
        XACT_EVENT_COMMIT | XACT_EVENT_ABORT | XACT_EVENT_PREPARE => {
            COMMITTING.with(|c| c.set(false));
            DRAINING.with(|d| d.set(false));
            // Committed: the writer can take what this transaction staged.
            // (A prepared transaction's records wait for the writer's next
            // pass after COMMIT PREPARED, or for audit_flush().)
            if STAGED.with(|s| s.replace(false)) && event == XACT_EVENT_COMMIT {
                if let Some(f) = HOOKS.with(|h| h.get().committed_staged) {
                    let staged = CHAINS.with(|c| c.borrow().as_ref().map_or(0, |c| c.staged));
                    f(staged as i64);
                }
            }
            // Nothing can be written any more; a record still pending here
            // would be lost silently, so it leaves a durable trace.
            let left = CHAINS.with(|c| c.borrow_mut().take().map_or(0, |c| c.pending.len()));
            if left > 0 && event != XACT_EVENT_ABORT {
                crate::alerts::alert_json(
                    "audit_records_unwritten",
                    "after_pre_commit",
                    "audit records captured after the transaction's records were written were not written",
                    serde_json::json!({ "records": left }),
                );
            }
        }
        _ => {}
    }
}

pub(super) fn register_callbacks() {
    if !CALLBACKS.with(|c| c.replace(true)) {
        // SAFETY: registers callbacks that live as long as the library.
        unsafe {
            pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
        }
    }
}

/// This transaction's chain state (a fresh one for a new transaction).
pub(super) fn with_chains<R>(fxid: u64, f: impl FnOnce(&mut TxnChains) -> R) -> R {
    CHAINS.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|s| s.fxid != fxid) {
            *c = Some(TxnChains {
                fxid,
                heads: Vec::new(),
                head_tids: Vec::new(),
                pending: Vec::new(),
                inflight: Vec::new(),
                staged: 0,
                background: None,
            });
        }
        f(c.as_mut().expect("just set"))
    })
}

/// Run `f` under an active snapshot: before commit no statement is
/// running, so there is none to run under; take one, as any statement
/// would.
pub(super) fn with_statement_snapshot<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: pushes a snapshot of this transaction; popped below, and on
    // error the transaction's abort releases it.
    let pushed = unsafe {
        if pg_sys::ActiveSnapshotSet() {
            false
        } else {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            true
        }
    };
    let r = f();
    if pushed {
        // SAFETY: pops the snapshot pushed above.
        unsafe { pg_sys::PopActiveSnapshot() };
    }
    r
}

/// Write every record this transaction still holds (their heads move with
/// them). Runs before commit and PREPARE, and before this backend reads
/// the trail or its heads.
pub fn flush_all_pending() {
    flush_pending();
}

pub(super) fn no_audit_keys() -> ! {
    raise_msg(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "tenantguard: no audit keys configured (set tenantguard.audit_keys in postgresql.conf); audited writes are refused rather than left unrecorded",
    )
}

pub(super) fn primary_audit_key() -> tenantguard_core::keyring::Key {
    match crate::keys::audit_keyring().primary() {
        Ok(k) => k.clone(),
        Err(_) => no_audit_keys(),
    }
}

/// This tenant's chain head, its chain locked for the rest of the
/// transaction: the one this transaction last wrote, or the `audit_head`
/// row (created on the tenant's first record).
pub(super) fn locked_head(
    plans: &Plans,
    heads: Option<&super::append::Heads>,
    fxid: u64,
    tenant: &str,
) -> Result<(i64, Vec<u8>), pgrx::spi::Error> {
    let cached = with_chains(fxid, |c| {
        c.heads
            .iter()
            .find(|(t, _, _)| t == tenant)
            .map(|(_, s, h)| (*s, h.clone()))
    });
    if let Some(h) = cached {
        return Ok(h);
    }
    lock_chain(tenant);
    if let Some((seq, hash, tid)) = heads.and_then(|h| h.read(tenant)) {
        remember_head_tid(fxid, tenant, tid);
        return Ok((seq, hash));
    }
    // (Under enable_seqscan = off: see `chain_records`.)
    {
        let arg = [text_datum(Some(tenant))];
        // SAFETY: SPI is connected (the caller holds its client); the
        // arguments match the plans' parameter types.
        unsafe {
            let mut rows = run_latest(plans.head, &arg, true)?;
            if rows.is_empty() {
                run_latest(
                    plans.new_head,
                    &[arg[0], chain::GENESIS.as_slice().into_datum()],
                    false,
                )?;
                rows = run_latest(plans.head, &arg, true)?;
            }
            Ok(rows
                .into_iter()
                .next()
                .unwrap_or((0, chain::GENESIS.to_vec())))
        }
    }
}

/// Where `tenant`'s head row now is (see `TxnChains::head_tids`).
fn remember_head_tid(fxid: u64, tenant: &str, tid: pg_sys::ItemPointerData) {
    with_chains(fxid, |c| {
        match c.head_tids.iter_mut().find(|(t, _)| t == tenant) {
            Some(h) => h.1 = tid,
            None => c.head_tids.push((tenant.to_string(), tid)),
        }
    });
}

/// Take this transaction's pending records for a write. Records written
/// inside a subtransaction stay known (`inflight`) until that work belongs
/// to the top level, in case a rollback (or an error in this very write)
/// takes it away.
pub(super) fn take_pending() -> (u64, Vec<Pending>) {
    // SAFETY: reads the top-level transaction id without assigning one,
    // and the nesting level.
    let (fxid, nested) = unsafe {
        (
            pg_sys::GetTopFullTransactionIdIfAny().value,
            pg_sys::GetCurrentTransactionNestLevel() > 1,
        )
    };
    let pending: Vec<Pending> = CHAINS.with(|c| {
        c.borrow_mut()
            .as_mut()
            .filter(|s| s.fxid == fxid)
            .map(|s| std::mem::take(&mut s.pending))
            .unwrap_or_default()
    });
    if nested && !pending.is_empty() {
        // SAFETY: reads the current subtransaction id.
        let sub = unsafe { pg_sys::GetCurrentSubTransactionId() };
        with_chains(fxid, |c| {
            c.inflight.extend(pending.iter().map(|p| (sub, p.clone())));
        });
    }
    (fxid, pending)
}

/// Write every pending record of this transaction: place each in its
/// tenant's chain (locking the head) and insert them all in one statement.
/// Returns their ids, in the order they were appended.
pub(super) fn flush_pending() -> Vec<i64> {
    let (fxid, pending) = take_pending();
    chain_records(fxid, &pending)
}

/// The record a pending one becomes, given its id, place and key.
pub(super) fn record_of(p: &Pending, id: i64, seq: i64, key_id: &str) -> Record {
    Record {
        id,
        tenant: p.tenant.clone(),
        seq,
        at_us: p.at_us,
        actor: p.actor.clone(),
        actor_roles: p.actor_roles.clone(),
        db_role: p.db_role.clone(),
        action: p.action.clone(),
        tbl: p.tbl.clone(),
        row_key: p.row_key.as_ref().map(|j| j.text.clone()),
        old_values: p.old_values.as_ref().map(|j| j.text.clone()),
        new_values: p.new_values.as_ref().map(|j| j.text.clone()),
        client_ip: p.client_ip.clone(),
        user_agent: p.user_agent.clone(),
        application_name: p.application_name.clone(),
        txid: p.txid,
        payload: p.payload.as_ref().map(|j| j.text.clone()),
        key_id: key_id.to_string(),
    }
}

/// The datums of columns `at` .. `key_id` of a record (None: NULL),
/// palloc'd in the current memory context.
pub(super) fn body(rec: &Record, p: &Pending) -> [Option<pg_sys::Datum>; 15] {
    let json = |j: &Option<Json>| j.as_ref().map(Json::datum);
    [
        Some(pg_sys::Datum::from(rec.at_us - PG_EPOCH_UNIX_US)),
        text_datum(rec.actor.as_deref()),
        text_datum(rec.actor_roles.as_deref()),
        text_datum(Some(&rec.db_role)),
        text_datum(Some(&rec.action)),
        text_datum(rec.tbl.as_deref()),
        json(&p.row_key),
        json(&p.old_values),
        json(&p.new_values),
        text_datum(rec.client_ip.as_deref()),
        text_datum(rec.user_agent.as_deref()),
        text_datum(rec.application_name.as_deref()),
        Some(pg_sys::Datum::from(rec.txid)),
        json(&p.payload),
        text_datum(Some(&rec.key_id)),
    ]
}

/// Place records in their tenants' chains (locking each chain for the
/// rest of the transaction) and insert them in one statement. Returns
/// their ids, in order.
pub(super) fn chain_records(fxid: u64, pending: &[Pending]) -> Vec<i64> {
    if pending.is_empty() {
        return Vec::new();
    }
    // What is hashed is the JSON in jsonb's normal form (what verification
    // reads back); records captured for the background writer are not yet.
    // (Records captured in the transaction are normal already: used as
    // they are, not copied.)
    let normal = |j: &Option<Json>| j.as_ref().map(Json::normal);
    let is_normal = |j: &Option<Json>| j.as_ref().is_none_or(|j| !j.flat.is_empty());
    let pending: Vec<std::borrow::Cow<Pending>> = pending
        .iter()
        .map(|p| {
            if [&p.row_key, &p.old_values, &p.new_values, &p.payload]
                .into_iter()
                .all(is_normal)
            {
                std::borrow::Cow::Borrowed(p)
            } else {
                std::borrow::Cow::Owned(Pending {
                    row_key: normal(&p.row_key),
                    old_values: normal(&p.old_values),
                    new_values: normal(&p.new_values),
                    payload: normal(&p.payload),
                    ..p.clone()
                })
            }
        })
        .collect();
    let pending = pending.as_slice();
    let key = primary_audit_key();
    let log_rel = spi::relation_oid_cached(c"audit_log").unwrap_or_else(|| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            "tenantguard audit: table tenantguard.audit_log is missing",
        )
    });
    let seq_rel = spi::relation_oid_cached(c"audit_log_id_seq").unwrap_or_else(|| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            "tenantguard audit: sequence tenantguard.audit_log_id_seq is missing",
        )
    });
    // Heads are found, and moved, by their primary key: audit_head is
    // small, so the planner would pick a sequential scan, which visits
    // every tenant's head (and the dead versions the moves leave). Nor JIT:
    // a plan priced with sequential scans off can pass its threshold, and
    // then every flush would compile it. (When the heads are read and moved
    // directly, the statements left run once per new tenant, if ever: no
    // settings to change, at a cost every flush would pay.)
    // The heads read and moved directly when their table is shaped for it
    // (see `append::Heads`).
    let heads = super::append::Heads::find();
    let settings: &[(&std::ffi::CStr, &std::ffi::CStr)] = if heads.is_some() {
        &[]
    } else {
        &[
            (c"enable_seqscan", c"off"),
            (c"jit", c"off"),
            (c"plan_cache_mode", c"force_generic_plan"),
        ]
    };
    with_statement_snapshot(|| {
        spi::with_gucs(settings, || {
            spi::as_owner(|| {
                Spi::connect_mut(|client| {
                    let plans = plans(client)?;
                    let n = pending.len();
                    let mut rows: Vec<Vec<Option<pg_sys::Datum>>> = Vec::with_capacity(n);
                    let mut ids = Vec::with_capacity(n);
                    // Chains not locked yet are locked in one order (by tenant) by
                    // every transaction, so two committing transactions that both
                    // write tenants A and B do not deadlock.
                    let mut unlocked: Vec<&str> = pending
                        .iter()
                        .map(|p| p.tenant.as_str())
                        .filter(|t| !with_chains(fxid, |c| c.heads.iter().any(|(h, _, _)| h == t)))
                        .collect();
                    unlocked.sort_unstable();
                    unlocked.dedup();
                    if unlocked.len() > 1 {
                        unlocked.iter().for_each(|t| lock_chain(t));
                    }
                    for p in pending {
                        let (prev_seq, prev_hash) =
                            locked_head(&plans, heads.as_ref(), fxid, &p.tenant)?;
                        // Ids are drawn while the head is locked, so within a
                        // tenant they rise with seq.
                        extern "C-unwind" {
                            /// nextval(regclass), the fmgr entry point.
                            fn nextval_oid(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
                        }
                        // SAFETY: nextval(regclass) on the extension's sequence, as
                        // its owner (the function checks the privilege itself),
                        // called through fmgr from the guarded DirectFunctionCall.
                        let id = unsafe {
                            pg_sys::DirectFunctionCall1Coll(
                                Some(nextval_oid),
                                pg_sys::Oid::INVALID,
                                pg_sys::Datum::from(seq_rel),
                            )
                        }
                        .value() as i64;
                        let rec = record_of(p, id, prev_seq + 1, &key.kid);
                        let hash = chain::link(&key.material, &rec, &prev_hash).to_vec();
                        let row = [
                            Some(pg_sys::Datum::from(rec.id)),
                            text_datum(Some(&rec.tenant)),
                            Some(pg_sys::Datum::from(rec.seq)),
                        ]
                        .into_iter()
                        .chain(body(&rec, p))
                        .chain([
                            prev_hash.as_slice().into_datum(),
                            hash.as_slice().into_datum(),
                        ]);
                        rows.push(row.collect());
                        with_chains(fxid, |c| {
                            match c.heads.iter_mut().find(|(t, _, _)| *t == p.tenant) {
                                Some(h) => {
                                    h.1 = rec.seq;
                                    h.2 = hash;
                                }
                                None => c.heads.push((p.tenant.clone(), rec.seq, hash)),
                            }
                        });
                        ids.push(id);
                    }
                    // The heads of this batch's tenants, moved right after it.
                    let mut tenants: Vec<&str> =
                        pending.iter().map(|p| p.tenant.as_str()).collect();
                    tenants.sort_unstable();
                    tenants.dedup();
                    let moved: Vec<(String, i64, Vec<u8>)> = with_chains(fxid, |c| {
                        c.heads
                            .iter()
                            .filter(|(t, _, _)| tenants.contains(&t.as_str()))
                            .cloned()
                            .collect()
                    });
                    // Appended to the heap directly (see `append`); should the
                    // trail not be shaped for that, by an INSERT: a few records
                    // as one row of parameters each (INSERT ... VALUES, whose
                    // executor starts cheaply); more as one array per column
                    // (unnest).
                    if !super::append::append(log_rel, &rows) {
                        let (plan, args): (pg_sys::SPIPlanPtr, Vec<Option<pg_sys::Datum>>) =
                            match plans.insert_rows.get(n.wrapping_sub(1)) {
                                Some(plan) => (*plan, rows.concat()),
                                None => (
                                    plans.insert,
                                    RECORD_TYPES
                                        .iter()
                                        .enumerate()
                                        .map(|(c, elem)| {
                                            let col: Vec<Option<pg_sys::Datum>> =
                                                rows.iter().map(|r| r[c]).collect();
                                            Some(array_of(*elem, &col))
                                        })
                                        .collect(),
                                ),
                            };
                        // SAFETY: SPI is connected; the datums (arrays or values)
                        // live in SPI's memory context and match the plan's
                        // parameter types.
                        let rc = unsafe { exec_latest(plan, &args, false) };
                        if rc != pg_sys::SPI_OK_INSERT as i32 {
                            return Err(pgrx::spi::Error::from(
                                pgrx::spi::SpiErrorCodes::OpUnknown,
                            ));
                        }
                    }
                    // Under the latest snapshot (see `run_latest`): in REPEATABLE
                    // READ, a head another transaction created or moved after
                    // this one's snapshot is still moved (the chain's lock is held).
                    for (t, seq, hash) in &moved {
                        if let Some(h) = &heads {
                            let at = with_chains(fxid, |c| {
                                c.head_tids
                                    .iter()
                                    .find(|(x, _)| x == t)
                                    .map(|(_, tid)| *tid)
                            });
                            if let Some(tid) = h.advance(t, *seq, hash, at) {
                                remember_head_tid(fxid, t, tid);
                            }
                            continue;
                        }
                        // SAFETY: SPI is connected; arguments match the plan.
                        unsafe {
                            run_latest(
                                plans.move_head,
                                &[
                                    text_datum(Some(t)),
                                    Some(pg_sys::Datum::from(*seq)),
                                    hash.as_slice().into_datum(),
                                ],
                                false,
                            )?;
                        }
                    }
                    Ok::<_, pgrx::spi::Error>(ids)
                })
                .unwrap_or_else(|e| spi_fail(e))
            })
        })
    })
}
