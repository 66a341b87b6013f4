//! The audit writer. With `tenantguard.audit_background = on` (and the
//! library preloaded), an audited transaction does not place its records
//! in their chains itself: it writes them, each sealed with the audit key,
//! to `tenantguard.audit_inbox` before it commits, and after it commits it
//! wakes its database's writer, a background worker that chains them
//! (`inbox::drain_inbox`). Writers are started on demand, one per
//! database, and leave after a short idle spell, so they never hold a
//! database that is about to be dropped for long.
//!
//! Shared memory holds one slot per running (or starting) writer.

use super::inbox;
use crate::gucs;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Databases with a writer at once.
const SLOTS: usize = 32;
/// Inbox rows (a transaction's batch of up to 256 records each) a writer
/// takes per pass (a transaction).
const PASS: i64 = 512;
/// Idle passes (of `WAIT`) before a writer leaves.
const IDLE_PASSES: u32 = 20;
const WAIT: Duration = Duration::from_millis(100);
/// After a pass that found records, the pause before the next (µs).
const GATHER_US: std::ffi::c_long = 100_000;
/// Records a writer chains (and so inbox rows it deletes) before it vacuums
/// the inbox itself, at most once per `VACUUM_EVERY`: autovacuum visits a
/// database once a minute (autovacuum_naptime), and at thousands of
/// commits a second the inbox would fill with tens of thousands of pages
/// of dead rows by then, which every drain that reads the whole inbox (the
/// rest of a transaction split by a pass's limit, the periodic read from
/// its start) goes through: the writer fell behind more the longer a load
/// lasted (benches/README.md).
const VACUUM_AFTER_RECORDS: i64 = 10_000;
const VACUUM_EVERY: Duration = Duration::from_secs(1);
/// Without waiting for a lock: a VACUUM already running (autovacuum's) does
/// the same work. Without truncating the file: truncation takes the
/// inbox's exclusive lock, which every committing transaction's insert
/// would wait for; the pages VACUUM frees are reused instead.
const VACUUM_INBOX: &std::ffi::CStr =
    c"VACUUM (SKIP_LOCKED, TRUNCATE false) tenantguard.audit_inbox";
/// A writer that has not reported for duty this long after its start was
/// asked for is presumed failed; the next commit asks again.
const START_TIMEOUT_US: i64 = 10_000_000;
/// After a writer failed (an error ended it), no new one is started for
/// this long: a failure that repeats (a record it cannot store) costs one
/// attempt per interval, not one per commit. The records wait, intact.
const RETRY_AFTER_US: i64 = 10_000_000;

#[derive(Copy, Clone, Default)]
struct Slot {
    dboid: u32,
    /// The writer's PGPROC, 0 while it starts.
    proc_ptr: usize,
    pid: i32,
    /// When the start was asked for (µs since the Unix epoch).
    since_us: i64,
    /// After a failure: no start before this time (µs since the Unix epoch).
    retry_after_us: i64,
}

#[derive(Copy, Clone)]
struct Writers {
    slots: [Slot; SLOTS],
    /// Per database: records committed to the inbox and not chained yet,
    /// as counted since the server started (kept apart from `slots`, which
    /// a writer gives up when it exits).
    backlog: [(u32, i64); SLOTS],
    /// Records chained by writers since the server started.
    chained: u64,
    /// Writer starts asked for, and refused (no free worker slot).
    started: u64,
    refused: u64,
    /// Writers ended by an error.
    failed: u64,
}

impl Default for Writers {
    fn default() -> Self {
        Writers {
            slots: [Slot::default(); SLOTS],
            backlog: [(0, 0); SLOTS],
            chained: 0,
            started: 0,
            refused: 0,
            failed: 0,
        }
    }
}

// SAFETY: plain old data; proc_ptr points into shared memory (a PGPROC),
// the same address in every process of the cluster.
unsafe impl PGRXSharedMemory for Writers {}

// SAFETY: the name is unique to this extension.
static WRITERS: PgLwLock<Writers> = unsafe { PgLwLock::new(c"tenantguard_audit_writers") };
static READY: AtomicBool = AtomicBool::new(false);
/// In a writer: whether it took its database's slot.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init` while preloading.
pub fn init() {
    pgrx::pg_shmem_init!(WRITERS);
    READY.store(true, Ordering::Relaxed);
}

/// Whether audited transactions leave their records to the writer. Decided
/// once per transaction: with the writer behind by more than
/// `tenantguard.audit_background_max_backlog` records, a transaction chains
/// its own records at commit instead (so the inbox stays bounded and
/// committing transactions carry the cost the writer cannot).
pub fn background() -> bool {
    if !(READY.load(Ordering::Relaxed) && gucs::AUDIT_BACKGROUND.get()) {
        return false;
    }
    // SAFETY: reads the top-level transaction id without assigning one.
    let fxid = unsafe { pg_sys::GetTopFullTransactionIdIfAny().value };
    if fxid == 0 {
        return !over_backlog();
    }
    super::chain::with_chains(fxid, |c| {
        *c.background.get_or_insert_with(|| !over_backlog())
    })
}

/// Whether this database's writer is behind by more than the bound.
fn over_backlog() -> bool {
    let max = gucs::AUDIT_BACKGROUND_MAX_BACKLOG.get() as i64;
    max > 0 && backlog_of(my_db()) > max
}

/// Records of `db` committed to the inbox and not chained yet.
fn backlog_of(db: u32) -> i64 {
    let w = WRITERS.share();
    w.backlog
        .iter()
        .find(|(d, _)| *d == db)
        .map_or(0, |(_, n)| *n)
}

/// After any drain of this database's inbox (the writer's, audit_flush(),
/// the startup sweep): `n` records fewer wait; none if it found the inbox
/// empty (counting afresh then also forgets what a crash or an aborted drain
/// left in the count).
pub fn drained(n: i64, more: bool) {
    if READY.load(Ordering::Relaxed) {
        add_backlog(my_db(), if more { -n } else { i64::MIN / 2 });
    }
}

/// Count `n` records more (or, negative, fewer) waiting in `db`'s inbox.
fn add_backlog(db: u32, n: i64) {
    let mut w = WRITERS.exclusive();
    let i = match w.backlog.iter().position(|(d, _)| *d == db) {
        Some(i) => i,
        None => match w.backlog.iter().position(|(d, _)| *d == 0) {
            Some(i) => i,
            None => return,
        },
    };
    let v = (w.backlog[i].1 + n).max(0);
    w.backlog[i] = (db, v);
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn my_db() -> u32 {
    // SAFETY: plain read of this backend's database OID.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// Whether the process in a running slot is still that writer.
fn alive(s: &Slot) -> bool {
    // SAFETY: proc_ptr is a PGPROC in shared memory; its pid is 0 or
    // another process's once the writer has exited.
    s.proc_ptr != 0 && unsafe { (*(s.proc_ptr as *const pg_sys::PGPROC)).pid } == s.pid
}

fn set_latch(proc_ptr: usize) {
    // SAFETY: a PGPROC in shared memory; at worst it now belongs to another
    // process, which gets a spurious wake-up.
    unsafe { pg_sys::SetLatch(&raw mut (*(proc_ptr as *mut pg_sys::PGPROC)).procLatch) };
}

/// After a commit that staged `staged` records: count them, wake this
/// database's writer, or start one. Never raises (it runs after the commit).
pub fn wake(staged: i64) {
    if !READY.load(Ordering::Relaxed) {
        return;
    }
    let db = my_db();
    add_backlog(db, staged);
    let now = now_us();
    let busy = |s: &Slot| {
        alive(s)
            || (s.proc_ptr == 0 && now - s.since_us < START_TIMEOUT_US)
            || now < s.retry_after_us
    };
    {
        let w = WRITERS.share();
        if let Some(s) = w.slots.iter().find(|s| s.dboid == db) {
            if alive(s) {
                let p = s.proc_ptr;
                drop(w);
                set_latch(p);
                return;
            }
            if busy(s) {
                return;
            }
        }
    }
    {
        let mut w = WRITERS.exclusive();
        let i = match w.slots.iter().position(|s| s.dboid == db) {
            Some(i) if busy(&w.slots[i]) => return,
            Some(i) => i,
            None => match w.slots.iter().position(|s| s.dboid == 0) {
                Some(i) => i,
                None => {
                    w.refused += 1;
                    return;
                }
            },
        };
        w.slots[i] = Slot {
            dboid: db,
            since_us: now,
            ..Slot::default()
        };
        w.started += 1;
    }
    let started = BackgroundWorkerBuilder::new("tenantguard audit writer")
        .set_type("tenantguard audit writer")
        .set_function("tenantguard_audit_writer")
        .set_library("pg_tenantguard")
        .set_argument(Some(pg_sys::Datum::from(db as usize)))
        .enable_spi_access()
        .set_restart_time(None)
        .load_dynamic();
    if started.is_err() {
        let mut w = WRITERS.exclusive();
        w.refused += 1;
        if let Some(s) = w
            .slots
            .iter_mut()
            .find(|s| s.dboid == db && s.proc_ptr == 0)
        {
            *s = Slot::default();
        }
        drop(w);
        warning!(
            "tenantguard: could not start the audit writer (no free background worker slot, see max_worker_processes); committed records wait in tenantguard.audit_inbox until a later commit starts it or audit_flush() chains them"
        );
    }
}

/// At server start and at promotion (from the startup worker): chain what
/// committed transactions left in `db`'s inbox, without waiting for the next
/// audited commit. Starts a writer that leaves as soon as the inbox is
/// empty (at once in a database without the extension) and waits for it.
pub fn sweep(db: u32) {
    if !READY.load(Ordering::Relaxed) {
        return;
    }
    {
        let w = WRITERS.share();
        if w.slots.iter().any(|s| s.dboid == db && alive(s)) {
            return;
        }
    }
    let started = BackgroundWorkerBuilder::new("tenantguard audit writer")
        .set_type("tenantguard audit writer")
        .set_function("tenantguard_audit_writer")
        .set_library("pg_tenantguard")
        .set_argument(Some(pg_sys::Datum::from(db as usize | SWEEP)))
        // SAFETY: a plain read of this process's pid.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .enable_spi_access()
        .set_restart_time(None)
        .load_dynamic();
    match started {
        Ok(h) => {
            WRITERS.exclusive().started += 1;
            let _ = h.wait_for_shutdown();
        }
        Err(_) => WRITERS.exclusive().refused += 1,
    }
}

/// The argument bit of a writer started by `sweep`.
const SWEEP: usize = 1 << 40;

/// Take this database's slot. False if another writer holds it.
fn enter(db: u32) -> bool {
    let mut w = WRITERS.exclusive();
    // SAFETY: MyProc is this process's PGPROC, in shared memory.
    let (me, pid) = unsafe { (pg_sys::MyProc as usize, pg_sys::MyProcPid) };
    let i = match w.slots.iter().position(|s| s.dboid == db) {
        Some(i) if alive(&w.slots[i]) && w.slots[i].pid != pid => return false,
        Some(i) => i,
        None => match w.slots.iter().position(|s| s.dboid == 0) {
            Some(i) => i,
            None => return false,
        },
    };
    w.slots[i] = Slot {
        dboid: db,
        proc_ptr: me,
        pid,
        since_us: now_us(),
        retry_after_us: 0,
    };
    ENTERED.store(true, Ordering::Relaxed);
    true
}

/// Give up this writer's slot (if it still holds it), or, for a writer
/// that never took it (it failed to connect), the slot marked as starting
/// for its database. After a clean exit the next commit starts another at
/// once; after a failure (`failed`), not before `RETRY_AFTER_US`.
fn leave(db: u32, failed: bool) {
    // SAFETY: plain read of this process's pid.
    let pid = unsafe { pg_sys::MyProcPid };
    let mut w = WRITERS.exclusive();
    let entered = ENTERED.load(Ordering::Relaxed);
    if failed {
        w.failed += 1;
    }
    if let Some(s) = w.slots.iter_mut().find(|s| {
        (s.pid == pid && s.proc_ptr != 0) || (!entered && s.dboid == db && s.proc_ptr == 0)
    }) {
        *s = if failed {
            Slot {
                dboid: db,
                retry_after_us: now_us() + RETRY_AFTER_US,
                ..Slot::default()
            }
        } else {
            Slot::default()
        };
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_exit(code: i32, arg: pg_sys::Datum) {
    leave(arg.value() as u32, code != 0);
}

/// What `status()` reports: whether this database has a writer, and the
/// server-wide counters.
pub fn report() -> serde_json::Value {
    if !READY.load(Ordering::Relaxed) {
        return serde_json::json!({ "active": false, "reason": "needs shared_preload_libraries" });
    }
    let db = my_db();
    let w = WRITERS.share();
    let running = w.slots.iter().any(|s| s.dboid == db && alive(s));
    serde_json::json!({
        "active": gucs::AUDIT_BACKGROUND.get(),
        "writer_running": running,
        "records_chained": w.chained,
        "backlog": w.backlog.iter().find(|(d, _)| *d == db).map_or(0, |(_, n)| *n),
        "max_backlog": gucs::AUDIT_BACKGROUND_MAX_BACKLOG.get(),
        "writers_started": w.started,
        "writer_starts_refused": w.refused,
        "writer_failures": w.failed,
    })
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn tenantguard_audit_writer(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = arg.value() as u32;
    let sweeping = arg.value() & SWEEP != 0;
    // SAFETY: registers a callback that gives up the slot however the
    // writer exits (an error included).
    unsafe { pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(db as usize)) };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    if sweeping {
        // A database without the extension (or without anything waiting,
        // or whose trail a subscription replicates) needs no writer.
        let waiting = crate::spi::worker_transaction(|| {
            crate::spi::read_one::<bool>(
                "SELECT pg_catalog.to_regclass('tenantguard.audit_inbox') IS NOT NULL
                    AND EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'pg_tenantguard')",
                &[],
            )
            .ok()
            .flatten()
            .unwrap_or(false)
                && crate::spi::read_one::<bool>(
                    "SELECT EXISTS (SELECT FROM tenantguard.audit_inbox)",
                    &[],
                )
                .ok()
                .flatten()
                .unwrap_or(false)
        });
        if !waiting {
            return;
        }
    }
    if !enter(db) {
        return;
    }
    // At start and after each reload of the configuration (a key may have
    // been removed): say if records wait for a key the keyring lacks.
    let recheck_keys = std::cell::Cell::new(true);
    let pass = |limit: Option<i64>| {
        if BackgroundWorker::sighup_received() {
            // SAFETY: re-reads postgresql.conf (the audit keys), as any
            // backend does between statements.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            recheck_keys.set(true);
        }
        let (n, more) = crate::spi::worker_transaction(|| inbox::drain_inbox(limit));
        WRITERS.exclusive().chained += n as u64;
        if recheck_keys.replace(false) {
            // In a transaction: the alert reads catalogs (role names).
            crate::spi::worker_transaction(|| {
                let (waiting, kids) = inbox::inbox_waiting();
                if waiting > 0 {
                    crate::alerts::alert_json(
                        "audit_inbox_key_missing",
                        "inbox_key_missing",
                        "committed audit records in tenantguard.audit_inbox are sealed under audit keys that tenantguard.audit_keys no longer holds; they are kept, not chained, until the keys are back",
                        serde_json::json!({ "records": waiting, "key_ids": kids }),
                    );
                }
            });
        }
        (n, more)
    };
    let mut idle = 0;
    let mut since_vacuum = 0i64;
    let mut vacuumed_at = std::time::Instant::now();
    loop {
        let (n, more) = pass(Some(PASS));
        since_vacuum += n;
        if since_vacuum >= VACUUM_AFTER_RECORDS && vacuumed_at.elapsed() >= VACUUM_EVERY {
            crate::spi::worker_vacuum(VACUUM_INBOX);
            inbox::drain_from_start();
            since_vacuum = 0;
            vacuumed_at = std::time::Instant::now();
        }
        if more {
            idle = 0;
            if BackgroundWorker::sigterm_received() {
                break;
            }
            continue;
        }
        if n > 0 {
            // Let records gather: one pass (a transaction, a statement per
            // step) per batch, not per commit.
            idle = 0;
            // SAFETY: a plain sleep; signals still set their flags.
            unsafe { pg_sys::pg_usleep(GATHER_US) };
            if BackgroundWorker::sigterm_received() {
                break;
            }
            continue;
        }
        idle += 1;
        if sweeping || idle >= IDLE_PASSES || !BackgroundWorker::wait_latch(Some(WAIT)) {
            break;
        }
    }
    // A transaction that committed before the slot was given up may have
    // woken only this writer: chain what is there now, then go. One that
    // commits later starts a new writer.
    leave(db, false);
    if !BackgroundWorker::sigterm_received() {
        while pass(Some(PASS)).1 {}
    }
}
