//! The inbox of the background writer: with `tenantguard.audit_background
//! = on`, a transaction seals its records into `tenantguard.audit_inbox`
//! before it commits (`stage_pending`); the writer (or any reader of the
//! trail) chains them later (`drain_inbox`).

use super::chain::*;
use super::plans::*;
use crate::error::raise_msg;
use crate::spi;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use tenantguard_core::chain::{self, Record};
use tenantguard_core::keyring::Keyring;

/// The array elements of one record (see `INBOX_ELEMS`): the record as
/// sealed (its JSON as captured) and its seal; palloc'd in the current
/// memory context.
pub(super) fn inbox_elems(rec: &Record, seal: &[u8]) -> [Option<pg_sys::Datum>; 15] {
    [
        text_datum(Some(&rec.tenant)),
        Some(pg_sys::Datum::from(rec.at_us - PG_EPOCH_UNIX_US)),
        text_datum(rec.actor.as_deref()),
        text_datum(rec.actor_roles.as_deref()),
        text_datum(Some(&rec.db_role)),
        text_datum(Some(&rec.action)),
        text_datum(rec.tbl.as_deref()),
        text_datum(rec.row_key.as_deref()),
        text_datum(rec.old_values.as_deref()),
        text_datum(rec.new_values.as_deref()),
        text_datum(rec.client_ip.as_deref()),
        text_datum(rec.user_agent.as_deref()),
        text_datum(rec.application_name.as_deref()),
        text_datum(rec.payload.as_deref()),
        seal.into_datum(),
    ]
}

/// Background chaining: write this transaction's pending records to the
/// inbox, each sealed with the audit key, as one row (column arrays),
/// without touching any chain. The row is committed (or rolled back) with
/// the transaction; the writer chains its records after commit. It is
/// appended to the heap directly (the inbox has no index and no INSERT
/// trigger, and nobody but the extension writes it), or, should someone
/// have added an index, by a plain INSERT.
pub(super) fn stage_pending() {
    let (fxid, pending) = take_pending();
    let Some(txid) = pending.first().map(|p| p.txid) else {
        return;
    };
    let key = primary_audit_key();
    let first = with_chains(fxid, |c| {
        let first = c.staged;
        c.staged += pending.len() as i32;
        first
    });
    let mut cols: Vec<Vec<Option<pg_sys::Datum>>> = (0..INBOX_ELEMS.len())
        .map(|_| Vec::with_capacity(pending.len()))
        .collect();
    for (i, p) in pending.iter().enumerate() {
        let rec = record_of(p, i64::from(first + i as i32), 0, &key.kid);
        let seal = chain::seal(&key.material, &rec);
        for (col, d) in cols.iter_mut().zip(inbox_elems(&rec, &seal)) {
            col.push(d);
        }
    }
    let row: Vec<pg_sys::Datum> = [
        pg_sys::Datum::from(txid),
        pg_sys::Datum::from(first),
        text_datum(Some(&key.kid)).expect("text"),
    ]
    .into_iter()
    .chain(
        cols.iter()
            .zip(INBOX_ELEMS)
            .map(|(col, elem)| array_of(elem, col)),
    )
    .collect();
    insert_inbox_row(row);
    STAGED.with(|s| s.set(true));
}

/// Append one row (datums of `INBOX_TYPES`, in column order) to the inbox.
pub(super) fn insert_inbox_row(row: Vec<pg_sys::Datum>) {
    let inbox = spi::relation_oid(c"audit_inbox").unwrap_or_else(|| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            "tenantguard audit: table tenantguard.audit_inbox is missing",
        )
    });
    // SAFETY: the relation is opened with the lock an INSERT takes and
    // closed keeping it; the tuple is formed from datums of the inbox's
    // column types, in its column order (INBOX_TYPES, checked against the
    // relation's descriptor first), and heap_insert toasts and WAL-logs it
    // as an INSERT would.
    let direct = unsafe {
        let rel = pg_sys::table_open(inbox, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let desc = (*rel).rd_att;
        let direct =
            super::append::columns_are(desc, &INBOX_TYPES) && !(*(*rel).rd_rel).relhasindex;
        if direct {
            let mut values = row.clone();
            let mut nulls = vec![false; values.len()];
            let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            pg_sys::heap_insert(
                rel,
                tuple,
                pg_sys::GetCurrentCommandId(true),
                0,
                std::ptr::null_mut(),
            );
            pg_sys::heap_freetuple(tuple);
        }
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        direct
    };
    if !direct {
        with_statement_snapshot(|| {
            spi::as_owner(|| {
                Spi::connect_mut(|client| {
                    let plans = plans(client)?;
                    let args: Vec<DatumWithOid<'static>> = row
                        .iter()
                        .zip(INBOX_TYPES)
                        // SAFETY: datums of these types, alive until the
                        // INSERT ran.
                        .map(|(d, t)| unsafe { DatumWithOid::new(*d, t) })
                        .collect();
                    client.update(&plans.stage, None, &args)?;
                    Ok::<_, pgrx::spi::Error>(())
                })
                .unwrap_or_else(|e| spi_fail(e))
            })
        });
    }
}

/// Serialize the inbox's drains (the writer's, and those of functions that
/// read the trail): another key of the advisory space, held until the
/// transaction ends, so no record is taken twice.
pub(super) fn lock_inbox() {
    advisory_xact_lock(0, 0, 0x7469, true);
}

thread_local! {
    /// In the audit writer: tenants whose chain another transaction held
    /// locked at an earlier pass; their inbox rows are not taken until
    /// their chain is free (see `drain_inbox`).
    static BLOCKED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// In the audit writer: transactions whose records the trail refused;
    /// their inbox rows are left alone for the rest of this writer's life.
    static QUARANTINED: RefCell<Vec<i64>> = const { RefCell::new(Vec::new()) };
    /// The inbox block this backend's last drain stopped at: the next one
    /// reads from there to the end, and from the start up to there only
    /// when it must (see `drain_inbox`: rows land in earlier pages once
    /// VACUUM has freed them).
    static DRAIN_FROM: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// When this backend's drain last read the inbox from its start.
    static WRAPPED_AT: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// After the writer vacuumed the inbox: rows now land in the pages VACUUM
/// freed, anywhere in it, so the next drain reads it from its start.
pub fn drain_from_start() {
    DRAIN_FROM.with(|f| f.set(0));
}

/// How often, at most, a writer's drain reads the inbox from its start
/// while rows keep arriving past where it stopped (µs).
const WRAP_EVERY_US: i64 = 1_000_000;

/// Run `f` in a subtransaction. On an ERROR (or a panic) roll the
/// subtransaction back and return the error's message; the caller's
/// transaction goes on, as after a PL/pgSQL exception block.
pub(super) fn in_subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    // SAFETY: PL/pgSQL's exception-block protocol: remember the memory
    // context and resource owner, start an internal subtransaction, and
    // after it is released or rolled back return to both. pgrx copied and
    // flushed the error before the catch handler runs.
    let (cx, owner) = unsafe {
        let saved = (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner);
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(saved.0);
        saved
    };
    let r = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| Ok(f())))
        .catch_others(|e| {
            Err(match e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r)
                | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
                    r.message().to_string()
                }
            })
        })
        .execute();
    // SAFETY: see above; the subtransaction started here is the current one.
    unsafe {
        if r.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(cx);
        pg_sys::CurrentResourceOwner = owner;
    }
    r
}

/// Lets the inbox's guard pass this backend's DELETE while it lives.
pub(super) struct Draining;
impl Draining {
    pub(super) fn start() -> Draining {
        DRAINING.with(|d| d.set(true));
        Draining
    }
}
impl Drop for Draining {
    fn drop(&mut self) {
        DRAINING.with(|d| d.set(false));
    }
}

/// For readers of the trail (verify, export, digest): chain what waits in
/// the inbox first, as `drain_inbox(None)`, but when nothing waits (read as
/// the owner, under a snapshot taken now, without a transaction id) do
/// nothing at all, so a read assigns no XID. (`audit_flush()` and the
/// writer call `drain_inbox`, which also serializes with other drains.)
pub fn drain_inbox_for_read() {
    // SAFETY: plain reads of transaction and recovery state.
    if unsafe { pg_sys::RecoveryInProgress() || pg_sys::XactReadOnly } {
        return;
    }
    let mut waiting = false;
    spi::as_owner(|| {
        Spi::connect(|_c| {
            spi::select_latest("SELECT 1 FROM tenantguard.audit_inbox LIMIT 1", &[], |_| {
                waiting = true;
                Ok(())
            })
        })
    })
    .unwrap_or_else(|e| spi_fail(e));
    if waiting {
        drain_inbox(None);
    }
}

/// Before a reader of the trail (verify, digest, export) looks at it: chain
/// what waits in the inbox, then bring this transaction's heads up to date.
pub fn trail_up_to_date() {
    drain_inbox_for_read();
    flush_all_pending();
}

/// Chain the records of up to `limit` inbox rows (None: all) that committed
/// transactions left, in this transaction: check each record's seal, place
/// it in its tenant's chain, remove the rows from the inbox. A record whose
/// seal does not check out (edited or forged in the inbox) is not chained:
/// it leaves a `tenantguard-alert` line with its content instead. Returns
/// how many records were taken, and whether the limit was reached (more
/// may be waiting). Does nothing in a read-only transaction or on a
/// standby.
pub fn drain_inbox(limit: Option<i64>) -> (i64, bool) {
    // SAFETY: plain reads of transaction and recovery state.
    if unsafe { pg_sys::RecoveryInProgress() || pg_sys::XactReadOnly } {
        return (0, false);
    }
    let ring = crate::keys::audit_keyring();
    if ring.is_empty() {
        return (0, false);
    }
    // The publisher chains what its inbox holds; its deletes arrive here.
    if !super::replication::trail_sources().is_empty() {
        return (0, false);
    }
    register_callbacks();
    // SAFETY: assigns the top-level transaction id (the chain state is
    // kept under it) and reads the subtransaction id.
    let (fxid, subid) = unsafe {
        (
            pg_sys::GetTopFullTransactionId().value,
            pg_sys::GetCurrentSubTransactionId(),
        )
    };
    lock_inbox();
    // The writer never waits for a chain's lock (another transaction may
    // hold it until it ends: one that chained a record itself, such as a
    // log_event() call): the rows of a tenant whose chain is locked are
    // left for a later pass, so one open transaction cannot hold up the
    // chaining of every tenant. A tenant found locked before is tried
    // again first. (Admins' drains wait, as any transaction does.)
    let writer = limit.is_some();
    if writer {
        BLOCKED.with(|b| b.borrow_mut().retain(|t| !try_lock_chain(t)));
    }
    let blocked: Vec<Option<pg_sys::Datum>> =
        BLOCKED.with(|b| b.borrow().iter().map(|t| text_datum(Some(t))).collect());
    let blocked = array_of(pg_sys::TEXTOID, &blocked);
    let quarantined: Vec<Option<pg_sys::Datum>> = QUARANTINED.with(|q| {
        q.borrow()
            .iter()
            .map(|t| Some(pg_sys::Datum::from(*t)))
            .collect()
    });
    let quarantined = array_of(pg_sys::INT8OID, &quarantined);
    let (mut rows, full) = with_statement_snapshot(|| {
        // The inbox has no statistics worth planning by (it is mostly
        // empty): without this the DELETE would be planned, and kept, as a
        // sequential scan that reads the whole inbox for every pass.
        // (Nor is JIT: sequential scans off price the plan above its
        // threshold.)
        spi::with_guc(c"enable_seqscan", c"off", || {
            spi::with_guc(c"jit", c"off", || {
                spi::as_owner(|| {
                    Spi::connect_mut(|client| {
                        let plans = plans(client)?;
                        let _draining = Draining::start();
                        let arg = limit.map(pg_sys::Datum::from);
                        let kids = kids_array(&ring);
                        // From where the last drain stopped to the end; then, if
                        // that did not fill the limit, from the start to there.
                        // (0xFFFFFFFE: MaxBlockNumber.)
                        let from = DRAIN_FROM.with(|f| f.get());
                        let end = tid_datum(0xFFFF_FFFE, u16::MAX);
                        // SAFETY: SPI is connected; the plan takes an int8
                        // (NULL: no limit), a text[] twice, an int8[] and two
                        // tids; the rows are read before the next SPI call.
                        let (mut rows, mut taken, last) = unsafe {
                            take_inbox_rows(
                                plans.drain,
                                &[
                                    arg,
                                    Some(kids),
                                    Some(blocked),
                                    Some(quarantined),
                                    Some(tid_datum(from, 0)),
                                    Some(end),
                                ],
                                subid,
                            )
                        }?;
                        let mut stop = last;
                        // The start of the inbox, up to there, is read again
                        // when this pass found nothing new past it (new rows went
                        // to pages VACUUM freed), at least once a second (rows of
                        // a transaction that committed after later ones), and for
                        // a drain of everything (readers, audit_flush()). Reading
                        // it at every pass would read every page the last passes
                        // emptied, until VACUUM frees them.
                        // SAFETY: reads the clock.
                        let now = unsafe { pg_sys::GetCurrentTimestamp() };
                        let wrap = limit.is_none()
                            || taken == 0
                            || now - WRAPPED_AT.with(|w| w.get()) >= WRAP_EVERY_US;
                        if from > 0 && wrap && limit.is_none_or(|l| taken < l) {
                            WRAPPED_AT.with(|w| w.set(now));
                            let rest = limit.map(|l| pg_sys::Datum::from(l - taken));
                            // SAFETY: as above.
                            let (more, n, last2) = unsafe {
                                take_inbox_rows(
                                    plans.drain,
                                    &[
                                        rest,
                                        Some(kids),
                                        Some(blocked),
                                        Some(quarantined),
                                        Some(tid_datum(0, 0)),
                                        Some(tid_datum(from, 0)),
                                    ],
                                    subid,
                                )
                            }?;
                            rows.extend(more);
                            taken += n;
                            if stop.is_none() {
                                stop = last2;
                            }
                        }
                        if let Some(b) = stop {
                            DRAIN_FROM.with(|f| f.set(b));
                        }
                        let full = limit.is_some_and(|l| taken >= l);
                        if full {
                            // The limit may have split a transaction's rows.
                            let mut txids: Vec<i64> = rows.iter().map(|r| r.0).collect();
                            txids.sort_unstable();
                            txids.dedup();
                            let txids: Vec<Option<pg_sys::Datum>> = txids
                                .into_iter()
                                .map(|t| Some(pg_sys::Datum::from(t)))
                                .collect();
                            let arr = array_of(pg_sys::INT8OID, &txids);
                            // SAFETY: as above; the plan takes an int8[]
                            // and a text[].
                            rows.extend(
                                unsafe {
                                    take_inbox_rows(
                                        plans.drain_rest,
                                        &[Some(arr), Some(kids), Some(blocked)],
                                        subid,
                                    )
                                }?
                                .0,
                            );
                        }
                        Ok((rows, full))
                    })
                    .unwrap_or_else(|e| spi_fail(e))
                })
            })
        })
    });
    let taken = rows.len() as i64;
    rows.sort_by_key(|r| (r.0, r.1));
    // The records whose seal checks out, in (transaction, ordinal) order:
    // what the chains receive (`pend`) and, alongside, what would put each
    // back into the inbox unchanged (`meta`).
    let mut meta: Vec<Staged> = Vec::with_capacity(rows.len());
    let mut pend: Vec<Pending> = Vec::with_capacity(rows.len());
    for (txid, n, rec, p, seal) in rows {
        let ok = ring
            .select(Some(&rec.key_id))
            .is_ok_and(|k| chain::seal_ok(&k.material, &rec, &seal));
        if ok {
            meta.push((txid, n, rec, seal));
            pend.push(p);
        } else {
            crate::alerts::alert_json(
                "audit_inbox_seal_broken",
                "inbox_record_not_chained",
                "an audit record in tenantguard.audit_inbox does not carry a valid seal (edited or forged); it was not chained",
                serde_json::to_value(&rec).unwrap_or_default(),
            );
        }
    }
    let mut deferred: Vec<Staged> = Vec::new();
    if writer {
        let mut tenants: Vec<&str> = pend.iter().map(|p| p.tenant.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let locked: Vec<String> = tenants
            .into_iter()
            .filter(|t| !try_lock_chain(t))
            .map(str::to_string)
            .collect();
        if !locked.is_empty() {
            let (mut m2, mut p2) = (Vec::new(), Vec::new());
            for (m, p) in meta.into_iter().zip(pend) {
                if locked.contains(&p.tenant) {
                    deferred.push(m);
                } else {
                    m2.push(m);
                    p2.push(p);
                }
            }
            (meta, pend) = (m2, p2);
            BLOCKED.with(|b| b.borrow_mut().extend(locked));
        }
        // A record the trail refuses must not stop the chaining of every
        // other: the pass is chained in a subtransaction, and if that
        // fails, transaction by transaction (each one's records are
        // contiguous); a transaction whose records still fail keeps them in
        // the inbox (not retried by this writer) and leaves an alert with
        // the error.
        if in_subtransaction(|| chain_records(fxid, &pend)).is_err() {
            let mut start = 0;
            while start < pend.len() {
                let txid = meta[start].0;
                let end = start + meta[start..].iter().take_while(|m| m.0 == txid).count();
                if let Err(error) = in_subtransaction(|| chain_records(fxid, &pend[start..end])) {
                    crate::alerts::alert_json(
                        "audit_inbox_transaction_failed",
                        "inbox_transaction_not_chained",
                        "the audit records of a committed transaction could not be chained; they are kept in tenantguard.audit_inbox and tried again when an audit writer next starts",
                        serde_json::json!({ "txid": txid, "records": end - start, "error": error }),
                    );
                    QUARANTINED.with(|q| q.borrow_mut().push(txid));
                    deferred.extend_from_slice(&meta[start..end]);
                }
                start = end;
            }
        }
    } else {
        chain_records(fxid, &pend);
    }
    // Back into the inbox as they were (same transaction id, ordinal, key
    // id and seal), one row each.
    for (txid, n, rec, seal) in &deferred {
        let row: Vec<pg_sys::Datum> = [
            pg_sys::Datum::from(*txid),
            pg_sys::Datum::from(*n),
            text_datum(Some(&rec.key_id)).expect("text"),
        ]
        .into_iter()
        .chain(
            inbox_elems(rec, seal)
                .into_iter()
                .zip(INBOX_ELEMS)
                .map(|(d, elem)| array_of(elem, &[d])),
        )
        .collect();
        insert_inbox_row(row);
    }
    let taken = taken - deferred.len() as i64;
    if limit.is_none() {
        // Verification, export and the like: say what the chains cannot
        // show yet.
        let (waiting, kids) = inbox_waiting();
        if waiting > 0 {
            warning!(
                "tenantguard: {waiting} committed audit record(s) in tenantguard.audit_inbox are sealed under audit key(s) {} that tenantguard.audit_keys no longer holds; they are kept, not chained, until the key is back",
                kids.join(", ")
            );
        }
    }
    note_drained(taken, full);
    (taken, full)
}

/// The ids of the keys of `ring`, as a text[] datum.
pub(super) fn kids_array(ring: &Keyring) -> pg_sys::Datum {
    let kids: Vec<Option<pg_sys::Datum>> = ring
        .kids()
        .into_iter()
        .map(|k| text_datum(Some(k)))
        .collect();
    array_of(pg_sys::TEXTOID, &kids)
}

/// Inbox records that wait for an audit key the keyring no longer holds
/// (removed while they waited): how many, and the key ids. They stay in
/// the inbox, intact, and are chained once the key is back. Read as the
/// extension's owner (nobody else may read the inbox), under a snapshot of
/// its own when no statement runs (the audit writer).
pub fn inbox_waiting() -> (i64, Vec<String>) {
    let ring = crate::keys::audit_keyring();
    with_statement_snapshot(|| {
        spi::as_owner(|| {
            Spi::connect(|client| {
                let kids: Vec<String> = ring.kids().into_iter().map(str::to_string).collect();
                let row = client
                    .select(INBOX_WAITING_SQL, Some(1), &[kids.into()])?
                    .first();
                Ok::<_, pgrx::spi::Error>((
                    row.get::<i64>(1)?.unwrap_or(0),
                    row.get::<Vec<String>>(2)?.unwrap_or_default(),
                ))
            })
            .unwrap_or_else(|e| spi_fail(e))
        })
    })
}

/// One inbox record: (txid, ordinal, the record as sealed, the pending
/// record, its seal).
pub(super) type InboxRecord = (i64, i32, Record, Pending, Vec<u8>);

/// An inbox record as it would be staged again: (txid, ordinal, the record
/// as sealed, its seal).
pub(super) type Staged = (i64, i32, Record, Vec<u8>);

/// Run an inbox DELETE .. RETURNING under the latest snapshot and read the
/// records of its rows, and how many rows it took. A row whose arrays do
/// not line up (not written by `stage_pending`) leaves an alert.
///
/// SAFETY: SPI must be connected; `args` match `plan`: `Plans::drain`
/// (int8 or NULL, text[], text[], int8[]) or `Plans::drain_rest` (int8[],
/// text[], text[]).
pub(super) unsafe fn take_inbox_rows(
    plan: pg_sys::SPIPlanPtr,
    args: &[Option<pg_sys::Datum>],
    subid: pg_sys::SubTransactionId,
) -> Result<(Vec<InboxRecord>, i64, Option<u32>), pgrx::spi::Error> {
    // SAFETY: per the function's contract. Array columns are detoasted and
    // deconstructed with their element types' storage parameters; the
    // element datums live in SPI's memory context while they are read.
    unsafe {
        let rc = exec_latest(plan, args, false);
        if rc != pg_sys::SPI_OK_DELETE_RETURNING as i32 {
            return Err(pgrx::spi::Error::from(pgrx::spi::SpiErrorCodes::OpUnknown));
        }
        let table = pg_sys::SPI_tuptable;
        let taken = pg_sys::SPI_processed as i64;
        let mut out = Vec::new();
        let mut last_block: Option<u32> = None;
        for r in 0..taken as usize {
            let tuple = *(*table).vals.add(r);
            let desc = (*table).tupdesc;
            let get = |col: i32| {
                let mut null = false;
                let d = pg_sys::SPI_getbinval(tuple, desc, col, &mut null);
                (!null).then_some(d)
            };
            // DRAIN_SQL returns each row's ctid after its columns.
            if (*desc).natts as usize > 3 + INBOX_ELEMS.len() {
                if let Some(d) = get((*desc).natts) {
                    let block = tid_block(d);
                    last_block = Some(last_block.map_or(block, |b| b.max(block)));
                }
            }
            let txid = get(1).map_or(0, |d| d.value() as i64);
            let first = get(2).map_or(0, |d| d.value() as i32);
            let key_id = get(3)
                .and_then(|d| String::from_datum(d, false))
                .unwrap_or_default();
            // Columns 4.. are arrays of INBOX_ELEMS.
            let mut cols: Vec<Vec<Option<pg_sys::Datum>>> = Vec::new();
            for (k, elem) in INBOX_ELEMS.iter().enumerate() {
                let Some(d) = get(4 + k as i32) else {
                    cols.push(Vec::new());
                    continue;
                };
                let arr = pg_sys::pg_detoast_datum(d.cast_mut_ptr()) as *mut pg_sys::ArrayType;
                let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
                pg_sys::get_typlenbyvalalign(*elem, &mut len, &mut byval, &mut align);
                let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
                let mut isnull: *mut bool = std::ptr::null_mut();
                let mut n = 0i32;
                if (*arr).elemtype != *elem {
                    cols.push(Vec::new());
                    continue;
                }
                pg_sys::deconstruct_array(
                    arr,
                    *elem,
                    len.into(),
                    byval,
                    align,
                    &mut elems,
                    &mut isnull,
                    &mut n,
                );
                cols.push(
                    (0..n as usize)
                        .map(|i| (!*isnull.add(i)).then(|| *elems.add(i)))
                        .collect(),
                );
            }
            let count = cols[0].len();
            if count == 0 || cols.iter().any(|c| c.len() != count) {
                crate::alerts::alert_json(
                    "audit_inbox_seal_broken",
                    "inbox_row_malformed",
                    "a row in tenantguard.audit_inbox was not written by tenantguard (its arrays do not line up); it was not chained",
                    serde_json::json!({ "txid": txid, "first": first, "key_id": key_id }),
                );
                continue;
            }
            // `i` indexes every column of `cols`, not one slice.
            #[allow(clippy::needless_range_loop)]
            for i in 0..count {
                let text = |k: usize| cols[k][i].and_then(|d| String::from_datum(d, false));
                // As captured (what was sealed); normalized as it is chained.
                let json = |k: usize| text(k).map(Json::raw);
                let n = first.wrapping_add(i as i32);
                let p = Pending {
                    subid,
                    tenant: text(0).unwrap_or_default(),
                    at_us: cols[1][i].map_or(0, |d| d.value() as i64) + PG_EPOCH_UNIX_US,
                    actor: text(2),
                    actor_roles: text(3),
                    db_role: text(4).unwrap_or_default(),
                    action: text(5).unwrap_or_default(),
                    tbl: text(6),
                    row_key: json(7),
                    old_values: json(8),
                    new_values: json(9),
                    client_ip: text(10),
                    user_agent: text(11),
                    application_name: text(12),
                    txid,
                    payload: json(13),
                };
                let seal = cols[14][i]
                    .and_then(|d| Vec::<u8>::from_datum(d, false))
                    .unwrap_or_default();
                let rec = record_of(&p, i64::from(n), 0, &key_id);
                out.push((txid, n, rec, p, seal));
            }
        }
        Ok((out, taken, last_block))
    }
}

/// The block number of a `tid` datum.
///
/// SAFETY: `d` points to an ItemPointerData.
unsafe fn tid_block(d: pg_sys::Datum) -> u32 {
    // SAFETY: per the function's contract.
    unsafe {
        let p = d.cast_mut_ptr::<pg_sys::ItemPointerData>();
        (u32::from((*p).ip_blkid.bi_hi) << 16) | u32::from((*p).ip_blkid.bi_lo)
    }
}

/// A `tid` datum (block, offset), palloc'd.
fn tid_datum(block: u32, offset: u16) -> pg_sys::Datum {
    // SAFETY: a zeroed ItemPointerData filled field by field, in the
    // current memory context, which outlives the statement it is bound to.
    unsafe {
        let p = pg_sys::palloc0(std::mem::size_of::<pg_sys::ItemPointerData>())
            as *mut pg_sys::ItemPointerData;
        (*p).ip_blkid.bi_hi = (block >> 16) as u16;
        (*p).ip_blkid.bi_lo = (block & 0xffff) as u16;
        (*p).ip_posid = offset;
        pg_sys::Datum::from(p)
    }
}

/// The inbox's guard (`BEFORE UPDATE OR DELETE OR TRUNCATE`, per
/// statement, `ENABLE ALWAYS`): only `drain_inbox` removes records, as it
/// chains them; everything else is refused, superusers included.
#[pg_trigger]
pub(super) fn audit_inbox_guard<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::heap_tuple::PgHeapTupleError> {
    let op = trigger.trigger_data().tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
    if op == pg_sys::TRIGGER_EVENT_DELETE && DRAINING.with(|d| d.get()) {
        return Ok(None);
    }
    // A subscription's worker replays the publisher's writer, whose
    // deletes this trigger allowed there.
    if op == pg_sys::TRIGGER_EVENT_DELETE && super::replication::applying_subscription().is_some() {
        return Ok(None);
    }
    let what = match op {
        pg_sys::TRIGGER_EVENT_UPDATE => "UPDATE",
        pg_sys::TRIGGER_EVENT_DELETE => "DELETE",
        _ => "TRUNCATE",
    };
    raise_msg(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!(
            "tenantguard: {what} on tenantguard.audit_inbox is not allowed: records leave the inbox only as the audit writer chains them"
        ),
    )
}
