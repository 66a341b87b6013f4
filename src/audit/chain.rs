//! Immutable, tamper-evident audit trail.
//!
//! * Capture: a Rust AFTER ROW trigger (INSERT/UPDATE/DELETE) and an AFTER
//!   STATEMENT trigger (TRUNCATE), created `ENABLE ALWAYS` so
//!   `session_replication_role = replica` does not silence them.
//! * Chain: every record joins its tenant's chain (see
//!   `tenantguard_core::chain`). A transaction captures records as it
//!   writes and places them in their chains in batches (before commit, every
//!   `BATCH` records, when a record id is needed or the trail is read).
//!   Placing records locks the tenant's chain until the transaction ends
//!   (`lock_chain`): two transactions of one tenant can never claim the same
//!   predecessor, and different tenants never wait for each other.
//! * Immutability: UPDATE/DELETE/TRUNCATE of audit rows are refused by
//!   `ENABLE ALWAYS` triggers; with preload, the ProcessUtility hook
//!   (`hooks.rs`) also refuses DDL that would disable or remove them.

use crate::context;
use crate::error::{raise, raise_msg};
use crate::{gucs, session};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::quote_literal;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{JsonB, PgOid, PgRelation};
use serde::Deserialize;
use std::cell::RefCell;
use std::ffi::CStr;
use std::num::NonZeroUsize;
use std::rc::Rc;
use tenantguard_core::chain::{self, Record};
use tenantguard_core::keyring::Keyring;
use tenantguard_core::DomainError;

#[derive(Deserialize, Default)]
struct Config {
    tenant: Option<String>,
    #[serde(default)]
    pk: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    redact: Vec<String>,
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

#[cfg(feature = "pg_test")]
thread_local! {
    /// `#[pg_test]` builds only: a fixed record time, so retention tests
    /// can fill partitions of years ago. Not compiled into releases.
    pub static TEST_CLOCK_US: std::cell::Cell<Option<i64>> = const { std::cell::Cell::new(None) };
}

fn unix_us_now() -> i64 {
    #[cfg(feature = "pg_test")]
    if let Some(t) = TEST_CLOCK_US.with(|c| c.get()) {
        return t;
    }
    // SAFETY: reads the clock.
    context::to_unix_us(unsafe { pg_sys::GetCurrentTimestamp() })
}

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01).
const PG_EPOCH_UNIX_US: i64 = 946_684_800 * 1_000_000;

/// `TopSubTransactionId` (xact.h): the top level's subtransaction id.
const TOP_SUBXACT: pg_sys::SubTransactionId = 1;

fn spi_fail(e: pgrx::spi::Error) -> ! {
    raise_msg(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("tenantguard audit: {e}"),
    )
}

/// This tenant's chain head, read once the chain's lock is held (see
/// `lock_chain`). No row means the tenant's first record: NEW_HEAD_SQL
/// creates it.
const HEAD_SQL: &str = "SELECT h.seq, h.hash FROM tenantguard.audit_head h
                   WHERE h.tenant OPERATOR(pg_catalog.=) $1";

const NEW_HEAD_SQL: &str =
    "INSERT INTO tenantguard.audit_head (tenant, seq, hash) VALUES ($1, 0, $2)
                             ON CONFLICT (tenant) DO NOTHING";

/// The tenant's last record (this transaction's own included).
const LAST_SQL: &str = "SELECT a.seq, a.hash FROM tenantguard.audit_log a
                   WHERE a.tenant OPERATOR(pg_catalog.=) $1 ORDER BY a.seq DESC LIMIT 1";

/// Bring a head up to a record this transaction appended and still knows.
const FLUSH_KNOWN_SQL: &str =
    "UPDATE tenantguard.audit_head SET seq = $2, hash = $3, updated_at = pg_catalog.now()
                  WHERE tenant OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.<) $2";

/// Bring a head that lags behind its records up to the last record.
const FLUSH_SQL: &str =
    "UPDATE tenantguard.audit_head h SET seq = l.seq, hash = l.hash, updated_at = pg_catalog.now()
                   FROM (SELECT a.seq, a.hash FROM tenantguard.audit_log a
                          WHERE a.tenant OPERATOR(pg_catalog.=) $1 ORDER BY a.seq DESC LIMIT 1) l
                  WHERE h.tenant OPERATOR(pg_catalog.=) $1 AND l.seq OPERATOR(pg_catalog.>) h.seq";

/// Write a batch of records: one array per column, one row per element
/// (set-returning functions in the select list run in step, one value per
/// call, without materializing).
const INSERT_BATCH_SQL: &str = "INSERT INTO tenantguard.audit_log (id, tenant, seq, at, actor, actor_roles, db_role, action, tbl,
                        row_key, old_values, new_values, client_ip, user_agent, application_name, txid, payload,
                        key_id, prev_hash, hash)
                 SELECT pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),
                        pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9), pg_catalog.unnest($10),
                        pg_catalog.unnest($11), pg_catalog.unnest($12), pg_catalog.unnest($13), pg_catalog.unnest($14), pg_catalog.unnest($15),
                        pg_catalog.unnest($16), pg_catalog.unnest($17), pg_catalog.unnest($18), pg_catalog.unnest($19), pg_catalog.unnest($20)";

/// Stage a batch of sealed records in the inbox (background chaining),
/// when the heap cannot be appended to directly (see `stage_pending`).
const STAGE_SQL: &str = "INSERT INTO tenantguard.audit_inbox
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";

/// Take up to $1 (NULL: all) committed inbox rows, as they lie in the
/// table (the inbox has no index to sort by), removing them: a TID scan,
/// planned with sequential scans off (see `drain_inbox`). Run under the
/// latest snapshot, with the inbox's lock held, so nothing is taken twice.
///
/// Only rows sealed under a key the audit keyring holds ($2): a row whose
/// key was removed stays in the inbox, intact, until the key is back (see
/// `INBOX_WAITING_SQL`), rather than being taken for a forgery. Nor rows
/// of the tenants in $3 (the writer's `BLOCKED`) or of the transactions in
/// $4 (its `QUARANTINED`).
const DRAIN_SQL: &str = "DELETE FROM tenantguard.audit_inbox i
                  WHERE i.ctid OPERATOR(pg_catalog.=) ANY (ARRAY(
                        SELECT x.ctid FROM tenantguard.audit_inbox x
                         WHERE x.key_id OPERATOR(pg_catalog.=) ANY ($2)
                           AND NOT (x.tenant OPERATOR(pg_catalog.&&) $3)
                           AND x.txid OPERATOR(pg_catalog.<>) ALL ($4) LIMIT $1))
              RETURNING i.*";

/// The other rows of the transactions `DRAIN_SQL` took rows of: a
/// transaction's records are chained together, in the order it captured
/// them.
const DRAIN_REST_SQL: &str = "DELETE FROM tenantguard.audit_inbox i
                  WHERE i.txid OPERATOR(pg_catalog.=) ANY ($1)
                    AND i.key_id OPERATOR(pg_catalog.=) ANY ($2)
                    AND NOT (i.tenant OPERATOR(pg_catalog.&&) $3)
              RETURNING i.*";

/// Inbox records sealed under keys the audit keyring ($1) no longer holds:
/// how many, and the key ids. Nothing chains them until the key is back.
const INBOX_WAITING_SQL: &str = "SELECT pg_catalog.count(*)::int8,
                    pg_catalog.array_agg(DISTINCT key_id ORDER BY key_id)::text[]
               FROM tenantguard.audit_inbox
              WHERE key_id OPERATOR(pg_catalog.<>) ALL ($1)";

/// Longest JSON text left to the background writer to normalize (jsonb
/// refuses strings of 256 MB and more).
const RAW_JSON_MAX: usize = 1 << 26;

/// Records a transaction keeps before writing them (it also writes them
/// just before commit or PREPARE, and whenever it needs a record id or
/// reads the trail itself).
const BATCH: usize = 256;

struct Plans {
    insert: OwnedPreparedStatement,
    stage: OwnedPreparedStatement,
    /// Run under the latest snapshot, like the head statements.
    drain: pg_sys::SPIPlanPtr,
    drain_rest: pg_sys::SPIPlanPtr,
    /// The head statements, run under the latest snapshot (`run_latest`).
    head: pg_sys::SPIPlanPtr,
    new_head: pg_sys::SPIPlanPtr,
    last: pg_sys::SPIPlanPtr,
    flush: pg_sys::SPIPlanPtr,
    flush_known: pg_sys::SPIPlanPtr,
}

/// Prepare and keep a statement for `run_latest`.
///
/// SAFETY: SPI must be connected.
unsafe fn keep_raw(
    sql: &str,
    types: &[pg_sys::Oid],
) -> Result<pg_sys::SPIPlanPtr, pgrx::spi::Error> {
    let q = std::ffi::CString::new(sql).expect("queries have no NUL");
    let mut types = types.to_vec();
    // SAFETY: per the function's contract; SPI_keepplan moves the plan out
    // of SPI's memory, to live as long as the backend.
    unsafe {
        let plan = pg_sys::SPI_prepare(q.as_ptr(), types.len() as i32, types.as_mut_ptr());
        if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
            return Err(pgrx::spi::Error::from(pgrx::spi::SpiErrorCodes::Argument));
        }
        Ok(plan)
    }
}

/// Execute a kept plan under the latest snapshot (see `run_latest`),
/// returning SPI's result code (rows in `SPI_tuptable`).
///
/// SAFETY: SPI must be connected; `plan` was kept by `keep_raw` with
/// parameter types matching `args`.
unsafe fn exec_latest(
    plan: pg_sys::SPIPlanPtr,
    args: &[Option<pg_sys::Datum>],
    read_only: bool,
) -> i32 {
    let mut values: Vec<pg_sys::Datum> = args
        .iter()
        .map(|a| a.unwrap_or(pg_sys::Datum::from(0usize)))
        .collect();
    let nulls: Vec<std::ffi::c_char> = args
        .iter()
        .map(|a| if a.is_some() { b' ' } else { b'n' } as std::ffi::c_char)
        .collect();
    // SAFETY: per the function's contract; SPI_execute_snapshot registers
    // the snapshot for the statement's duration.
    unsafe {
        pg_sys::SPI_execute_snapshot(
            plan,
            values.as_mut_ptr(),
            nulls.as_ptr(),
            pg_sys::GetLatestSnapshot(),
            std::ptr::null_mut(),
            read_only,
            true,
            0,
        )
    }
}

/// Run a kept head statement under the latest snapshot (with this
/// transaction's own changes), not the transaction's: in REPEATABLE READ or
/// SERIALIZABLE, the head another transaction moved after this one's
/// snapshot was taken is read and moved from where it is now, instead of
/// failing with a serialization error. Safe because the chain's lock is
/// held: no other transaction moves this head until this one ends. Returns
/// the (seq, hash) rows of a SELECT.
///
/// SAFETY: SPI must be connected; `plan` was kept by `keep_raw` with
/// parameter types matching `args`.
unsafe fn run_latest(
    plan: pg_sys::SPIPlanPtr,
    args: &[Option<pg_sys::Datum>],
    read_only: bool,
) -> Result<Vec<(i64, Vec<u8>)>, pgrx::spi::Error> {
    // SAFETY: per the function's contract; the rows are read before the
    // next SPI call.
    unsafe {
        let rc = exec_latest(plan, args, read_only);
        if rc < 0 {
            return Err(pgrx::spi::Error::from(pgrx::spi::SpiErrorCodes::OpUnknown));
        }
        let mut rows = Vec::new();
        let table = pg_sys::SPI_tuptable;
        if rc == pg_sys::SPI_OK_SELECT as i32 && !table.is_null() {
            for i in 0..pg_sys::SPI_processed as usize {
                let tuple = *(*table).vals.add(i);
                let mut null = false;
                let seq = pg_sys::SPI_getbinval(tuple, (*table).tupdesc, 1, &mut null);
                let seq = if null { 0 } else { seq.value() as i64 };
                let hash = pg_sys::SPI_getbinval(tuple, (*table).tupdesc, 2, &mut null);
                let hash = <Vec<u8> as pgrx::FromDatum>::from_datum(hash, null).unwrap_or_default();
                rows.push((seq, hash));
            }
        }
        Ok(rows)
    }
}

/// Serialize the appends of one tenant's chain: a transaction-level lock
/// taken before its head is read, held until the transaction ends (or the
/// savepoint that took it is rolled back). Other tenants never wait. It
/// lives in the advisory lock space under a key of its own (the fourth
/// field, 0x7467, is one `pg_advisory_*` functions never use), on the
/// 64-bit FNV-1a hash of the tenant.
fn lock_chain(tenant: &str) {
    let (f2, f3) = chain_lock_key(tenant);
    advisory_xact_lock(f2, f3, 0x7467, true);
}

/// Lock the tenant's chain if no other transaction holds it; never waits.
fn try_lock_chain(tenant: &str) -> bool {
    let (f2, f3) = chain_lock_key(tenant);
    advisory_xact_lock(f2, f3, 0x7467, false)
}

fn chain_lock_key(tenant: &str) -> (u32, u32) {
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
fn advisory_xact_lock(field2: u32, field3: u32, field4: u16, wait: bool) -> bool {
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
/// (`heads`) without reading the head again. The head row itself moves once
/// per transaction and tenant (`lagging`): just before commit or PREPARE
/// (`xact_callback`), or before this backend verifies or exports, to the
/// last record, by primary key, with the values this transaction knows.
/// (Moving it with each record cost an UPDATE per record, and each left a
/// row version the rest of the transaction stepped over.)
///
/// A savepoint rollback removes its records, so it forgets `heads`; the
/// next record of the tenant then starts from its last surviving record,
/// found in the trail itself, and so does the flush. `lagging` survives: it
/// only grows within a transaction.
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
struct TxnChains {
    fxid: u64,
    heads: Vec<(String, i64, Vec<u8>)>,
    lagging: Vec<String>,
    pending: Vec<Pending>,
    inflight: Vec<(pg_sys::SubTransactionId, Pending)>,
    /// Records this transaction staged in the inbox (their ordinals).
    staged: i32,
}

/// A captured record waiting for its flush: everything but its place in
/// the chain (id, seq, hashes), which is fixed under the head's lock.
#[derive(Clone)]
struct Pending {
    /// The subtransaction that appended it.
    subid: pg_sys::SubTransactionId,
    tenant: String,
    at_us: i64,
    actor: Option<String>,
    actor_roles: Option<String>,
    db_role: String,
    action: String,
    tbl: Option<String>,
    row_key: Option<Json>,
    old_values: Option<Json>,
    new_values: Option<Json>,
    client_ip: Option<String>,
    user_agent: Option<String>,
    application_name: Option<String>,
    txid: i64,
    payload: Option<Json>,
}

thread_local! {
    /// The statements of an append, planned once per backend and kept
    /// (the plan cache re-plans them after DDL on the audit tables).
    static PLANS: RefCell<Option<Rc<Plans>>> = const { RefCell::new(None) };
    static CHAINS: RefCell<Option<TxnChains>> = const { RefCell::new(None) };
    /// Each audit trigger's configuration (its argument), by trigger OID.
    static CONFIGS: RefCell<std::collections::HashMap<pg_sys::Oid, Rc<Config>>> =
        RefCell::new(std::collections::HashMap::new());
    static CALLBACKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set once this transaction's records were written before commit or
    /// PREPARE: a record captured after that (by code another extension
    /// runs at pre-commit) is written at once, not left behind.
    static COMMITTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// This transaction staged records for the background writer: wake it
    /// once they are committed.
    static STAGED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set only while `drain_inbox` removes the records it chains: the one
    /// DELETE the inbox's guard lets through.
    static DRAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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
            if crate::writer::background() {
                stage_pending();
            }
            flush_lagging_heads()
        }
        XACT_EVENT_COMMIT | XACT_EVENT_ABORT | XACT_EVENT_PREPARE => {
            COMMITTING.with(|c| c.set(false));
            DRAINING.with(|d| d.set(false));
            // Committed: the writer can take what this transaction staged.
            // (A prepared transaction's records wait for the writer's next
            // pass after COMMIT PREPARED, or for audit_flush().)
            if STAGED.with(|s| s.replace(false)) && event == XACT_EVENT_COMMIT {
                crate::writer::wake();
            }
            // Nothing can be written any more; a record still pending here
            // would be lost silently, so it leaves a durable trace.
            let left = CHAINS.with(|c| c.borrow_mut().take().map_or(0, |c| c.pending.len()));
            if left > 0 && event != XACT_EVENT_ABORT {
                crate::context::alert_json(
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

fn register_callbacks() {
    if !CALLBACKS.with(|c| c.replace(true)) {
        // SAFETY: registers callbacks that live as long as the library.
        unsafe {
            pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
        }
    }
}

/// This transaction's chain state (a fresh one for a new transaction).
fn with_chains<R>(fxid: u64, f: impl FnOnce(&mut TxnChains) -> R) -> R {
    CHAINS.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|s| s.fxid != fxid) {
            *c = Some(TxnChains {
                fxid,
                heads: Vec::new(),
                lagging: Vec::new(),
                pending: Vec::new(),
                inflight: Vec::new(),
                staged: 0,
            });
        }
        f(c.as_mut().expect("just set"))
    })
}

/// Run `f` under an active snapshot: before commit no statement is
/// running, so there is none to run under; take one, as any statement
/// would.
fn with_statement_snapshot<R>(f: impl FnOnce() -> R) -> R {
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

/// Bring every head this transaction left behind up to its last record.
/// Runs before commit and PREPARE, and before this backend reads heads.
pub fn flush_lagging_heads() {
    flush_pending();
    // SAFETY: reads the top-level transaction id without assigning one.
    let fxid = unsafe { pg_sys::GetTopFullTransactionIdIfAny().value };
    // Kept, not taken: a flush inside a savepoint that is rolled back is
    // undone with it, so the heads must be flushed again before commit.
    // Each lagging tenant with the head this transaction knows (None after
    // a savepoint rollback made it forget: then the trail itself says).
    type KnownHead = Option<(i64, Vec<u8>)>;
    let lagging: Vec<(String, KnownHead)> = CHAINS.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|s| s.fxid == fxid)
            .map(|s| {
                s.lagging
                    .iter()
                    .map(|t| {
                        let known = s
                            .heads
                            .iter()
                            .find(|(h, _, _)| h == t)
                            .map(|(_, seq, hash)| (*seq, hash.clone()));
                        (t.clone(), known)
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    if lagging.is_empty() {
        return;
    }
    with_statement_snapshot(|| {
        session::with_guc(c"enable_seqscan", c"off", || {
            session::as_owner(|| {
                Spi::connect_mut(|client| {
                    let plans = plans(client)?;
                    for (tenant, known) in &lagging {
                        // Moved under the latest snapshot (see run_latest): the
                        // chain's lock is held since this transaction appended.
                        // SAFETY: SPI is connected; arguments match the plans.
                        unsafe {
                            match known {
                                Some((seq, hash)) => run_latest(
                                    plans.flush_known,
                                    &[
                                        text_datum(Some(tenant)),
                                        Some(pg_sys::Datum::from(*seq)),
                                        hash.as_slice().into_datum(),
                                    ],
                                    false,
                                )?,
                                // Forgotten in a savepoint rollback, which
                                // also released the chain's lock if it was
                                // taken there: take it again.
                                None => {
                                    lock_chain(tenant);
                                    run_latest(plans.flush, &[text_datum(Some(tenant))], false)?
                                }
                            };
                        }
                    }
                    Ok::<(), pgrx::spi::Error>(())
                })
                .unwrap_or_else(|e| spi_fail(e))
            })
        });
    });
}

/// A JSON value as the record stores it: its text in jsonb's normal form
/// (what `::jsonb::text` gives, what is hashed and what verification reads
/// back) and the flat jsonb datum (bound to the INSERT as is, not parsed
/// again), by calling jsonb's own input and output functions.
#[derive(Clone)]
struct Json {
    text: String,
    flat: Vec<u8>,
}

impl Json {
    /// JSON text as captured, not normalized yet (no jsonb datum).
    fn raw(text: String) -> Json {
        Json {
            text,
            flat: Vec::new(),
        }
    }

    /// In jsonb's normal form (a no-op if it is already).
    fn normal(&self) -> Json {
        if self.flat.is_empty() {
            jsonb_normal(Some(self.text.clone())).expect("some in, some out")
        } else {
            self.clone()
        }
    }

    /// A palloc'd copy of the jsonb datum, in the current memory context.
    fn datum(&self) -> pg_sys::Datum {
        // SAFETY: `flat` holds a complete flat jsonb varlena; the copy is
        // palloc'd with its exact size.
        unsafe {
            let p = pg_sys::palloc(self.flat.len()) as *mut u8;
            std::ptr::copy_nonoverlapping(self.flat.as_ptr(), p, self.flat.len());
            pg_sys::Datum::from(p)
        }
    }
}

fn jsonb_normal(json: Option<String>) -> Option<Json> {
    let json = json?;
    let c = std::ffi::CString::new(json).unwrap_or_else(|_| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_UNTRANSLATABLE_CHARACTER,
            "tenantguard audit: a JSON value contains a NUL byte",
        )
    });
    // SAFETY: jsonb_in/jsonb_out (fixed built-in OIDs, no catalog lookup
    // per record), called as a cast would; they raise (as a Rust panic
    // through pgrx's guard) on invalid input. jsonb's I/O parameter is
    // its own type OID. jsonb_in returns a flat varlena with a 4-byte
    // header, which is copied whole.
    unsafe {
        let d = pg_sys::OidInputFunctionCall(
            pg_sys::Oid::from(pg_sys::F_JSONB_IN),
            c.as_ptr().cast_mut(),
            pg_sys::JSONBOID,
            -1,
        );
        let p = pg_sys::OidOutputFunctionCall(pg_sys::Oid::from(pg_sys::F_JSONB_OUT), d);
        let v = d.cast_mut_ptr::<u8>();
        let n = pgrx::varlena::varsize_any(v.cast());
        let json = Json {
            text: CStr::from_ptr(p).to_string_lossy().into_owned(),
            flat: std::slice::from_raw_parts(v, n).to_vec(),
        };
        pg_sys::pfree(p.cast());
        pg_sys::pfree(v.cast());
        Some(json)
    }
}

fn plans(client: &pgrx::spi::SpiClient<'_>) -> Result<Rc<Plans>, pgrx::spi::Error> {
    if let Some(p) = PLANS.with(|p| p.borrow().clone()) {
        return Ok(p);
    }
    let (ta, i8a, tsa, ja, ba) = (
        PgOid::from(pg_sys::TEXTARRAYOID),
        PgOid::from(pg_sys::INT8ARRAYOID),
        PgOid::from(pg_sys::TIMESTAMPTZARRAYOID),
        PgOid::from(pg_sys::JSONBARRAYOID),
        PgOid::from(pg_sys::BYTEAARRAYOID),
    );
    let batch = [
        i8a, ta, i8a, tsa, ta, ta, ta, ta, ta, ja, ja, ja, ta, ta, ta, i8a, ja, ta, ba, ba,
    ];
    let stage: Vec<PgOid> = INBOX_TYPES.iter().map(|t| PgOid::from(*t)).collect();
    let (t, i8, b) = (pg_sys::TEXTOID, pg_sys::INT8OID, pg_sys::BYTEAOID);
    // SAFETY: SPI is connected (we hold its client).
    let p = unsafe {
        Rc::new(Plans {
            insert: client.prepare_mut(INSERT_BATCH_SQL, &batch)?.keep(),
            stage: client.prepare_mut(STAGE_SQL, &stage)?.keep(),
            drain: keep_raw(
                DRAIN_SQL,
                &[
                    i8,
                    pg_sys::TEXTARRAYOID,
                    pg_sys::TEXTARRAYOID,
                    pg_sys::INT8ARRAYOID,
                ],
            )?,
            drain_rest: keep_raw(
                DRAIN_REST_SQL,
                &[
                    pg_sys::INT8ARRAYOID,
                    pg_sys::TEXTARRAYOID,
                    pg_sys::TEXTARRAYOID,
                ],
            )?,
            head: keep_raw(HEAD_SQL, &[t])?,
            new_head: keep_raw(NEW_HEAD_SQL, &[t, b])?,
            last: keep_raw(LAST_SQL, &[t])?,
            flush: keep_raw(FLUSH_SQL, &[t])?,
            flush_known: keep_raw(FLUSH_KNOWN_SQL, &[t, i8, b])?,
        })
    };
    PLANS.with(|slot| *slot.borrow_mut() = Some(p.clone()));
    Ok(p)
}

fn no_audit_keys() -> ! {
    raise_msg(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "tenantguard: no audit keys configured (set tenantguard.audit_keys in postgresql.conf); audited writes are refused rather than left unrecorded",
    )
}

fn primary_audit_key() -> tenantguard_core::keyring::Key {
    match gucs::audit_keyring().primary() {
        Ok(k) => k.clone(),
        Err(_) => no_audit_keys(),
    }
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
        flush_lagging_heads();
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
fn capture(e: Entry, batch: bool) {
    // Refused now, not at commit, when nothing could be recorded.
    if gucs::audit_keyring().primary().is_err() {
        no_audit_keys();
    }
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
    let actor = claims.as_ref().map(|c| c.sub.clone());
    let actor_roles = claims
        .as_ref()
        .and_then(|c| crate::authz::roles_of(&c.tid, &c.sub));
    let client_ip = claims
        .as_ref()
        .and_then(|c| c.ip.map(|i| i.to_string()))
        .or_else(session::client_addr);
    let user_agent = claims.as_ref().and_then(|c| c.ua.clone());
    let db_role = session::current_role_name().unwrap_or_default();
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
        let app = pg_sys::GetConfigOption(c"application_name".as_ptr(), false, false);
        let app = (!app.is_null()).then(|| CStr::from_ptr(app).to_string_lossy().into_owned());
        (fxid, subid, app)
    };
    // Chained in this transaction: in jsonb's normal form now (an invalid
    // value fails the statement that wrote it). Left to the background
    // writer: as captured (the writer normalizes it as it chains it).
    // (A value near jsonb's size limits is normalized now either way, so a
    // record the writer could not store never reaches the inbox.)
    let background = crate::writer::background();
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
    crate::hooks::note_audit_write();
    register_callbacks();
    let full = with_chains(fxid, |c| {
        c.pending.push(p);
        batch && c.pending.len() >= BATCH
    });
    if batch && COMMITTING.with(|c| c.get()) {
        flush_lagging_heads();
    } else if full && crate::writer::background() {
        stage_pending();
    } else if full {
        flush_pending();
    }
}

/// This tenant's chain head, its chain locked for the rest of the
/// transaction: the one this transaction last wrote, or the `audit_head`
/// row (created on the tenant's first record).
fn locked_head(plans: &Plans, fxid: u64, tenant: &str) -> Result<(i64, Vec<u8>), pgrx::spi::Error> {
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
    // The chain head is found by its primary key: audit_head is small, so
    // the planner would pick a sequential scan, which visits every tenant's
    // head (and the dead versions the updates leave). Only these lookups
    // need the setting.
    session::with_guc(c"enable_seqscan", c"off", || {
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
            let mut head = rows
                .into_iter()
                .next()
                .unwrap_or((0, chain::GENESIS.to_vec()));
            // A head this transaction left behind (then lost track of in a
            // savepoint rollback): the last record rules.
            if with_chains(fxid, |c| c.lagging.iter().any(|t| t == tenant)) {
                if let Some(last) = run_latest(plans.last, &arg, true)?.into_iter().next() {
                    if last.0 > head.0 {
                        head = last;
                    }
                }
            }
            Ok(head)
        }
    })
}

/// A one-dimensional array of `elem` from datums (None: NULL), palloc'd in
/// the current memory context.
fn array_of(elem: pg_sys::Oid, items: &[Option<pg_sys::Datum>]) -> pg_sys::Datum {
    let mut datums: Vec<pg_sys::Datum> = items
        .iter()
        .map(|d| d.unwrap_or(pg_sys::Datum::from(0usize)))
        .collect();
    let mut nulls: Vec<bool> = items.iter().map(Option::is_none).collect();
    let mut dims = [items.len() as i32];
    let mut lbs = [1i32];
    // SAFETY: `datums`/`nulls` have `dims[0]` entries of type `elem`
    // (NULL entries ignored); construct_md_array copies them into a new
    // array, with the type's storage parameters looked up in the syscache.
    unsafe {
        let mut len: i16 = 0;
        let mut byval = false;
        let mut align: std::ffi::c_char = 0;
        pg_sys::get_typlenbyvalalign(elem, &mut len, &mut byval, &mut align);
        pg_sys::Datum::from(pg_sys::construct_md_array(
            datums.as_mut_ptr(),
            nulls.as_mut_ptr(),
            1,
            dims.as_mut_ptr(),
            lbs.as_mut_ptr(),
            elem,
            len.into(),
            byval,
            align,
        ))
    }
}

fn text_datum(s: Option<&str>) -> Option<pg_sys::Datum> {
    s.and_then(|s| s.into_datum())
}

/// Take this transaction's pending records for a write. Records written
/// inside a subtransaction stay known (`inflight`) until that work belongs
/// to the top level, in case a rollback (or an error in this very write)
/// takes it away.
fn take_pending() -> (u64, Vec<Pending>) {
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
fn flush_pending() -> Vec<i64> {
    let (fxid, pending) = take_pending();
    chain_records(fxid, &pending)
}

/// The record a pending one becomes, given its id, place and key.
fn record_of(p: &Pending, id: i64, seq: i64, key_id: &str) -> Record {
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

/// Element types of the trail's columns `at` .. `key_id` (see `body`).
const BODY_TYPES: [pg_sys::Oid; 15] = [
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::JSONBOID,
    pg_sys::JSONBOID,
    pg_sys::JSONBOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::INT8OID,
    pg_sys::JSONBOID,
    pg_sys::TEXTOID,
];

/// The datums of columns `at` .. `key_id` of a record (None: NULL),
/// palloc'd in the current memory context.
fn body(rec: &Record, p: &Pending) -> [Option<pg_sys::Datum>; 15] {
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

/// One array argument per column, for an unnest INSERT.
fn array_args(
    cols: &[Vec<Option<pg_sys::Datum>>],
    types: &[pg_sys::Oid],
) -> Vec<DatumWithOid<'static>> {
    cols.iter()
        .zip(types)
        .map(|(col, elem)| {
            // SAFETY: an array of `elem` palloc'd in SPI's memory context,
            // alive until the INSERT ran.
            unsafe { DatumWithOid::new(array_of(*elem, col), pg_sys::get_array_type(*elem)) }
        })
        .collect()
}

/// Place records in their tenants' chains (locking each chain for the
/// rest of the transaction) and insert them in one statement. Returns
/// their ids, in order.
fn chain_records(fxid: u64, pending: &[Pending]) -> Vec<i64> {
    if pending.is_empty() {
        return Vec::new();
    }
    // What is hashed is the JSON in jsonb's normal form (what verification
    // reads back); records captured for the background writer are not yet.
    let normal = |j: &Option<Json>| j.as_ref().map(Json::normal);
    let pending: Vec<Pending> = pending
        .iter()
        .map(|p| Pending {
            row_key: normal(&p.row_key),
            old_values: normal(&p.old_values),
            new_values: normal(&p.new_values),
            payload: normal(&p.payload),
            ..p.clone()
        })
        .collect();
    let pending = pending.as_slice();
    let key = primary_audit_key();
    let seq_rel = session::relation_oid(c"audit_log_id_seq").unwrap_or_else(|| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            "tenantguard audit: sequence tenantguard.audit_log_id_seq is missing",
        )
    });
    with_statement_snapshot(|| {
        session::as_owner(|| {
            Spi::connect_mut(|client| {
                let plans = plans(client)?;
                let n = pending.len();
                let mut cols: Vec<Vec<Option<pg_sys::Datum>>> =
                    (0..20).map(|_| Vec::with_capacity(n)).collect();
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
                    let (prev_seq, prev_hash) = locked_head(&plans, fxid, &p.tenant)?;
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
                    for (col, d) in cols.iter_mut().zip(row) {
                        col.push(d);
                    }
                    with_chains(fxid, |c| {
                        match c.heads.iter_mut().find(|(t, _, _)| *t == p.tenant) {
                            Some(h) => {
                                h.1 = rec.seq;
                                h.2 = hash;
                            }
                            None => c.heads.push((p.tenant.clone(), rec.seq, hash)),
                        }
                        if !c.lagging.contains(&p.tenant) {
                            c.lagging.push(p.tenant.clone());
                        }
                    });
                    ids.push(id);
                }
                let types: Vec<pg_sys::Oid> = [pg_sys::INT8OID, pg_sys::TEXTOID, pg_sys::INT8OID]
                    .into_iter()
                    .chain(BODY_TYPES)
                    .chain([pg_sys::BYTEAOID, pg_sys::BYTEAOID])
                    .collect();
                client.update(&plans.insert, None, &array_args(&cols, &types))?;
                Ok::<_, pgrx::spi::Error>(ids)
            })
            .unwrap_or_else(|e| spi_fail(e))
        })
    })
}

/// Column types of `audit_inbox`, in order.
const INBOX_TYPES: [pg_sys::Oid; 18] = [
    pg_sys::INT8OID,
    pg_sys::INT4OID,
    pg_sys::TEXTOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TIMESTAMPTZARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::BYTEAARRAYOID,
];

/// Element types of the inbox's array columns (`tenant` .. `seal`).
const INBOX_ELEMS: [pg_sys::Oid; 15] = [
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::BYTEAOID,
];

/// The array elements of one record (see `INBOX_ELEMS`): the record as
/// sealed (its JSON as captured) and its seal; palloc'd in the current
/// memory context.
fn inbox_elems(rec: &Record, seal: &[u8]) -> [Option<pg_sys::Datum>; 15] {
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
fn stage_pending() {
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
fn insert_inbox_row(row: Vec<pg_sys::Datum>) {
    let inbox = session::relation_oid(c"audit_inbox").unwrap_or_else(|| {
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
        let shaped = (*desc).natts as usize == INBOX_TYPES.len()
            && INBOX_TYPES.iter().enumerate().all(|(i, t)| {
                let att = &*(*desc).attrs.as_ptr().add(i);
                !att.attisdropped && att.atttypid == *t
            });
        let direct = shaped && !(*(*rel).rd_rel).relhasindex;
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
            session::as_owner(|| {
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
fn lock_inbox() {
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
}

/// Run `f` in a subtransaction. On an ERROR (or a panic) roll the
/// subtransaction back and return the error's message; the caller's
/// transaction goes on, as after a PL/pgSQL exception block.
fn in_subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, String> {
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
struct Draining;
impl Draining {
    fn start() -> Draining {
        DRAINING.with(|d| d.set(true));
        Draining
    }
}
impl Drop for Draining {
    fn drop(&mut self) {
        DRAINING.with(|d| d.set(false));
    }
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
    let ring = gucs::audit_keyring();
    if ring.is_empty() {
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
        session::with_guc(c"enable_seqscan", c"off", || {
            session::with_guc(c"jit", c"off", || {
                session::as_owner(|| {
                    Spi::connect_mut(|client| {
                        let plans = plans(client)?;
                        let _draining = Draining::start();
                        let arg = limit.map(pg_sys::Datum::from);
                        let kids = kids_array(&ring);
                        // SAFETY: SPI is connected; the plan takes one int8
                        // (NULL: no limit) and a text[]; the rows are read
                        // before the next SPI call.
                        let (mut rows, taken) = unsafe {
                            take_inbox_rows(
                                plans.drain,
                                &[arg, Some(kids), Some(blocked), Some(quarantined)],
                                subid,
                            )
                        }?;
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
            crate::context::alert_json(
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
                    crate::context::alert_json(
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
    (taken, full)
}

/// The ids of the keys of `ring`, as a text[] datum.
fn kids_array(ring: &Keyring) -> pg_sys::Datum {
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
    let ring = gucs::audit_keyring();
    with_statement_snapshot(|| {
        session::as_owner(|| {
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
type InboxRecord = (i64, i32, Record, Pending, Vec<u8>);

/// An inbox record as it would be staged again: (txid, ordinal, the record
/// as sealed, its seal).
type Staged = (i64, i32, Record, Vec<u8>);

/// Run an inbox DELETE .. RETURNING under the latest snapshot and read the
/// records of its rows, and how many rows it took. A row whose arrays do
/// not line up (not written by `stage_pending`) leaves an alert.
///
/// SAFETY: SPI must be connected; `args` match `plan`: `Plans::drain`
/// (int8 or NULL, text[], text[], int8[]) or `Plans::drain_rest` (int8[],
/// text[], text[]).
unsafe fn take_inbox_rows(
    plan: pg_sys::SPIPlanPtr,
    args: &[Option<pg_sys::Datum>],
    subid: pg_sys::SubTransactionId,
) -> Result<(Vec<InboxRecord>, i64), pgrx::spi::Error> {
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
        for r in 0..taken as usize {
            let tuple = *(*table).vals.add(r);
            let desc = (*table).tupdesc;
            let get = |col: i32| {
                let mut null = false;
                let d = pg_sys::SPI_getbinval(tuple, desc, col, &mut null);
                (!null).then_some(d)
            };
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
                crate::context::alert_json(
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
        Ok((out, taken))
    }
}

/// The inbox's guard (`BEFORE UPDATE OR DELETE OR TRUNCATE`, per
/// statement, `ENABLE ALWAYS`): only `drain_inbox` removes records, as it
/// chains them; everything else is refused, superusers included.
#[pg_trigger]
fn audit_inbox_guard<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::heap_tuple::PgHeapTupleError> {
    let op = trigger.trigger_data().tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
    if op == pg_sys::TRIGGER_EVENT_DELETE && DRAINING.with(|d| d.get()) {
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

/// Text of every (non-dropped) column of a tuple, with redaction.
///
/// SAFETY: `tuple` and `tupdesc` must belong together and be valid.
unsafe fn row_values(
    tuple: *mut pg_sys::HeapTupleData,
    tupdesc: pg_sys::TupleDesc,
    cfg: &Config,
) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    // SAFETY: tupdesc is valid for the trigger's relation.
    let natts = unsafe { (*tupdesc).natts } as usize;
    for i in 0..natts {
        // SAFETY: i < natts.
        let att = unsafe { &*(*tupdesc).attrs.as_ptr().add(i) };
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

fn to_json(cols: &[(String, Option<String>)]) -> String {
    chain::row_json(cols)
}

/// A superuser's pg_restore session re-loads records that already exist in
/// the dump (audit rows included): capturing them again would duplicate
/// the trail and break the restored chains. Only a superuser session
/// whose application_name is pg_restore qualifies: the application role
/// cannot silence capture by naming itself pg_restore.
fn restoring() -> bool {
    // SAFETY: superuser() and GetConfigOption are plain backend lookups.
    unsafe {
        if !pg_sys::superuser() {
            return false;
        }
        let p = pg_sys::GetConfigOption(c"application_name".as_ptr(), true, false);
        !p.is_null() && CStr::from_ptr(p).to_bytes() == b"pg_restore"
    }
}

/// The capture trigger. Its one argument is the table's audit config (JSON).
#[pg_trigger]
fn audit_capture<'a>(
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
    let tbl = format!(
        "{}.{}",
        trigger.table_schema().unwrap_or_default(),
        trigger.table_name().unwrap_or_default()
    );
    let event = td.tg_event;
    let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
    if op == pg_sys::TRIGGER_EVENT_TRUNCATE {
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

pub fn is_audited(rel: pg_sys::Oid) -> bool {
    Spi::get_one_with_args::<bool>(
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
fn audit(
    tbl: PgRelation,
    exclude: default!(Vec<String>, "'{}'"),
    redact: default!(Vec<String>, "'{}'"),
) {
    let oid = tbl.oid();
    drop(tbl);
    session::with_pinned_search_path(|| {
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
        let cfg =
            serde_json::json!({"tenant": tenant, "pk": pk, "exclude": exclude, "redact": redact})
                .to_string();
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
        for stmt in stmts {
            crate::hooks::allow_internal(|| Spi::run(&stmt)).unwrap_or_else(|e| spi_fail(e));
        }
    });
}

/// Write this transaction's pending records now (they are written before
/// commit anyway), so the transaction itself can read them in `audit_log`.
/// Returns how many were written.
#[pg_extern(volatile, parallel_unsafe)]
fn audit_flush() -> i64 {
    // Chaining the inbox locks every chain it touches until this
    // transaction ends: only for those who may hold the trail up (the
    // writer waits meanwhile); an application's committed records appear
    // once the writer has chained them.
    let n = flush_pending().len() as i64
        + if session::is_audit_admin() {
            drain_inbox(None).0
        } else {
            0
        };
    flush_lagging_heads();
    n
}

/// Application-level events (login, export, approval, download). Needs a
/// context: the event belongs to its tenant and actor.
#[pg_extern(volatile, parallel_unsafe)]
fn log_event(
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

/// Every row of `security_log` (bypass, revocation, support, allowlist,
/// role and grant changes) is also appended to the tenant's chain, so the
/// dedicated trail is tamper-evident too. Without audit keys configured,
/// the plain (append-only) trail remains.
#[pg_trigger]
fn security_chain<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::heap_tuple::PgHeapTupleError> {
    if gucs::audit_keyring().is_empty() || restoring() {
        return Ok(None);
    }
    let Some(new) = trigger.new() else {
        return Ok(None);
    };
    let event: Option<String> = new.get_by_name("event").ok().flatten();
    let tenant: Option<String> = new.get_by_name("tenant").ok().flatten();
    let id: Option<i64> = new.get_by_name("id").ok().flatten();
    let detail: Option<JsonB> = new.get_by_name("detail").ok().flatten();
    append_deferred(Entry {
        tenant,
        action: format!("security:{}", event.unwrap_or_default()),
        tbl: Some("tenantguard.security_log".into()),
        row_key: id.map(|i| serde_json::json!({"id": i.to_string()}).to_string()),
        old_values: None,
        new_values: None,
        payload: detail.map(|d| d.0.to_string()),
    });
    Ok(None)
}

// ------------------------------------------------------------ verification

fn tenants(only: Option<&str>) -> Vec<String> {
    match only {
        Some(t) => vec![t.to_string()],
        None => Spi::get_one::<Vec<String>>(
            "SELECT pg_catalog.array_agg(tenant ORDER BY tenant) FROM tenantguard.audit_head",
        )
        .ok()
        .flatten()
        .unwrap_or_default(),
    }
}

/// Verify one tenant's chain up to `upto_id` (inclusive) if given.
fn verify_tenant(tenant: &str, upto_id: Option<i64>) -> (chain::Verdict, bool) {
    let (start_seq, start_prev) = checkpoint(tenant);
    // The head is read before the records, so records appended while we
    // verify (a live system) are after it and must simply link on; a
    // deleted tail record leaves the chain short of the head.
    let head = if upto_id.is_some() {
        None
    } else {
        Some(
            Spi::get_two_with_args::<i64, Vec<u8>>(
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
                    Spi::get_one_with_args::<Vec<u8>>(
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
    // record of the drop (security:audit_partition_dropped) names its seq.
    // A checkpoint row inserted by hand has no such record.
    let attested = start_seq == 0
        || upto_id.is_some()
        || Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM tenantguard.audit_log
                             WHERE tenant OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.>) $2
                               AND action OPERATOR(pg_catalog.=) 'security:audit_partition_dropped'
                               AND (payload OPERATOR(pg_catalog.->>) 'checkpoint_seq')::pg_catalog.int8 OPERATOR(pg_catalog.=) $2)",
            &[tenant.into(), start_seq.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false);
    (v, head_ok && attested)
}

/// The newest checkpoint of a tenant's chain (seq and hash of the last
/// record dropped with its partition), or the genesis.
fn checkpoint(tenant: &str) -> (i64, Vec<u8>) {
    match Spi::get_two_with_args::<i64, Vec<u8>>(
        "SELECT seq, hash FROM tenantguard.audit_checkpoint WHERE tenant OPERATOR(pg_catalog.=) $1
          ORDER BY seq DESC LIMIT 1",
        &[tenant.into()],
    ) {
        Ok((Some(seq), Some(hash))) => (seq, hash),
        Ok(_) | Err(pgrx::spi::Error::InvalidPosition) => (0, chain::GENESIS.to_vec()),
        Err(e) => spi_fail(e),
    }
}

/// Verify a tenant's records after `start_seq` (whose hash is
/// `start_prev`), up to record id `upto_id` or seq `upto_seq` if given.
fn verify_segment(
    tenant: &str,
    start_seq: i64,
    start_prev: &[u8],
    upto_id: Option<i64>,
    upto_seq: Option<i64>,
) -> chain::Verdict {
    let ring = gucs::audit_keyring();
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
fn verify_audit(
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
    session::as_owner(|| {
        drain_inbox(None);
        flush_lagging_heads();
        if gucs::audit_keyring().is_empty() {
            raise(DomainError::Policy(
                "no audit keys configured (tenantguard.audit_keys)".into(),
            ));
        }
        let mut out = Vec::new();
        for t in tenants(tenant) {
            let (v, head_ok) = verify_tenant(&t, None);
            let ok = v.first_bad_id.is_none() && head_ok;
            let _ = Spi::run_with_args(
                "INSERT INTO tenantguard.audit_verification (tenant, records, first_bad_id, ok) VALUES ($1, $2, $3, $4)",
                &[t.clone().into(), v.records.into(), v.first_bad_id.into(), ok.into()],
            );
            out.push((t, v.records, v.first_bad_id, ok));
        }
        TableIterator::new(out)
    })
}

/// Chain heads to copy out of the database and check later. (Volatile:
/// it first brings up to date the heads this transaction left behind.)
#[pg_extern(volatile, parallel_unsafe)]
fn audit_digest() -> TableIterator<
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
    session::as_owner(|| {
        drain_inbox(None);
        flush_lagging_heads();
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
fn verify_audit_against(
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
    session::as_owner(|| {
        drain_inbox(None);
        flush_lagging_heads();
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

/// Regulator-ready export: one JSON object per record, with its hashes.
#[pg_extern(volatile, parallel_unsafe)]
fn export_audit(
    tenant: Option<&str>,
    since: default!(Option<pgrx::datum::TimestampWithTimeZone>, "'-infinity'"),
    until: default!(Option<pgrx::datum::TimestampWithTimeZone>, "'infinity'"),
) -> SetOfIterator<'static, JsonB> {
    // Granted to tenantguard_admin, who may not read the trail or its
    // heads directly (RLS, privileges): read as the extension's owner.
    session::as_owner(|| {
        drain_inbox(None);
        flush_lagging_heads();
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
        session::as_owner(|| {
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
        SetOfIterator::new(out)
    })
}

// ---------------------------------------------------------------- retention

fn refuse_drop(msg: String) -> ! {
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
fn drop_audit_partition(
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
    flush_lagging_heads();
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
    if gucs::audit_keyring().is_empty() {
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

    session::as_owner(|| {
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
        crate::seclog::record(
            "audit_partition_dropped",
            Some(tenant),
            serde_json::json!({"partition": name, "records": n, "checkpoint_seq": seq,
                               "export_id": export_id, "export_digest": digest}),
        );
    }
    if checkpoints.is_empty() {
        crate::seclog::record(
            "audit_partition_dropped",
            None,
            serde_json::json!({"partition": name, "records": 0}),
        );
    }
    crate::hooks::allow_internal(|| {
        session::as_owner(|| {
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
