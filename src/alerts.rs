//! Alerts that outlive the refused transaction: `NOTIFY tenantguard_alert`
//! and a row in `tenantguard.security_log` for every denied or forged
//! attempt (the `tenantguard-alert:` log lines).
//!
//! A refused attempt aborts its transaction, and a NOTIFY or INSERT made in
//! it would be rolled back with it. So the refusing backend only copies the
//! alert into a small shared-memory ring and wakes a background worker,
//! which records and notifies in a transaction of its own. Opt-in with
//! `tenantguard.alert_notify = on` (needs `shared_preload_libraries`); the
//! worker connects to `tenantguard.alert_database`. When the ring is full,
//! alerts are counted as dropped (`status()`), never blocking the backend;
//! the server-log line is written either way.

use crate::gucs;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tenantguard_core::DomainError;

const SLOTS: usize = 32;
const SLOT_BYTES: usize = 1024;

#[derive(Copy, Clone)]
#[repr(C)]
pub struct Slot {
    dboid: u32,
    len: u32,
    data: [u8; SLOT_BYTES],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            dboid: 0,
            len: 0,
            data: [0; SLOT_BYTES],
        }
    }
}

#[derive(Copy, Clone, Default)]
#[repr(C)]
pub struct Ring {
    pushed: u64,
    taken: u64,
    dropped: u64,
    recorded: u64,
    /// The worker's PGPROC (shared memory, same address in every process),
    /// so a backend can set its latch; 0 until the worker runs.
    worker_proc: usize,
    slots: [Slot; SLOTS],
}

// SAFETY: plain old data (integers and byte arrays), no pointers that a
// process dereferences except worker_proc, which points into shared memory.
unsafe impl PGRXSharedMemory for Ring {}

// SAFETY: the name is unique to this extension.
static RING: PgLwLock<Ring> = unsafe { PgLwLock::new(c"tenantguard_alerts") };
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init` while preloading: reserve the ring and register
/// the worker when `tenantguard.alert_notify` is on.
pub fn init() {
    if !gucs::ALERT_NOTIFY.get() {
        return;
    }
    pgrx::pg_shmem_init!(RING);
    BackgroundWorkerBuilder::new("tenantguard alerts")
        .set_function("tenantguard_alert_worker")
        .set_library("pg_tenantguard")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
    ACTIVE.store(true, Ordering::Relaxed);
}

pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// (pushed, recorded, dropped) since the server started.
pub fn counters() -> Option<(u64, u64, u64)> {
    if !active() {
        return None;
    }
    let r = RING.share();
    Some((r.pushed, r.recorded, r.dropped))
}

/// Queue one alert line (JSON) for the worker. Never blocks on the worker
/// and never raises.
pub fn push(line: &str) {
    if !active() {
        return;
    }
    let mut bytes = line.as_bytes();
    if bytes.len() > SLOT_BYTES {
        let mut end = SLOT_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        bytes = &bytes[..end];
    }
    let proc_ptr = {
        let mut r = RING.exclusive();
        if r.pushed - r.taken >= SLOTS as u64 {
            r.dropped += 1;
            return;
        }
        let i = (r.pushed % SLOTS as u64) as usize;
        // SAFETY: plain read of this backend's database OID.
        r.slots[i].dboid = unsafe { pg_sys::MyDatabaseId }.to_u32();
        r.slots[i].len = bytes.len() as u32;
        r.slots[i].data[..bytes.len()].copy_from_slice(bytes);
        r.pushed += 1;
        r.worker_proc
    };
    if proc_ptr != 0 {
        // SAFETY: worker_proc is the worker's PGPROC in shared memory; at
        // worst it now belongs to another process, which gets a spurious
        // wake-up.
        unsafe { pg_sys::SetLatch(&raw mut (*(proc_ptr as *mut pg_sys::PGPROC)).procLatch) };
    }
}

fn take() -> Vec<(u32, String)> {
    let mut r = RING.exclusive();
    let mut out = Vec::new();
    while r.taken < r.pushed {
        let s = r.slots[(r.taken % SLOTS as u64) as usize];
        out.push((
            s.dboid,
            String::from_utf8_lossy(&s.data[..s.len as usize]).into_owned(),
        ));
        r.taken += 1;
    }
    out
}

/// Record one alert and notify listeners, in the worker's own transaction.
fn record(dboid: u32, line: &str) -> Result<(), pgrx::spi::Error> {
    let mut detail: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|_| serde_json::json!({"truncated": line}));
    let db = Spi::get_one_with_args::<String>(
        "SELECT datname::text FROM pg_catalog.pg_database WHERE oid OPERATOR(pg_catalog.=) $1",
        &[pg_sys::Oid::from(dboid).into()],
    )?;
    if let serde_json::Value::Object(m) = &mut detail {
        m.insert("database".into(), serde_json::json!(db));
    }
    let event = format!("alert:{}", detail["event"].as_str().unwrap_or("unknown"));
    Spi::run_with_args(
        "SELECT pg_catalog.pg_notify('tenantguard_alert', $1)",
        &[detail.to_string().into()],
    )?;
    let installed = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'pg_tenantguard')",
    )?
    .unwrap_or(false);
    if installed {
        Spi::run_with_args(
            // No tenant column: the row goes to the '*' chain, so these
            // asynchronous appends never interleave with a tenant's export.
            "INSERT INTO tenantguard.security_log (event, tenant, actor, db_role, client_addr, detail)
             VALUES ($1, NULL, NULL, $2, $3, $4)",
            &[
                event.into(),
                detail["db_role"].as_str().map(str::to_string).into(),
                detail["client_addr"].as_str().map(str::to_string).into(),
                pgrx::JsonB(detail.clone()).into(),
            ],
        )?;
    }
    Ok(())
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn tenantguard_alert_worker(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = gucs::alert_database();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    {
        let mut r = RING.exclusive();
        // SAFETY: MyProc is this process's PGPROC, in shared memory.
        r.worker_proc = unsafe { pg_sys::MyProc } as usize;
    }
    log!("tenantguard alerts: recording denied and forged attempts in database {db}");
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
        let batch = take();
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        crate::spi::worker_transaction(|| {
            for (dboid, line) in &batch {
                if let Err(e) = record(*dboid, line) {
                    warning!("tenantguard alerts: could not record an alert: {e}");
                }
            }
        });
        RING.exclusive().recorded += n;
    }
    RING.exclusive().worker_proc = 0;
}

/// A durable trace of a refused attempt: one server-log line with a fixed,
/// parseable prefix, written even though the transaction aborts.
/// `tenantguard-alert: {"event":...,"reason":...,...}`
pub fn alert(event: &str, e: &DomainError) {
    alert_json(event, e.reason(), &e.to_string(), serde_json::Value::Null);
}

pub fn alert_json(event: &str, reason: &str, message: &str, extra: serde_json::Value) {
    let line = serde_json::json!({
        "event": event,
        "reason": reason,
        "message": message,
        "db_role": crate::spi::current_role_name(),
        "session_role": crate::spi::session_role_name(),
        "client_addr": crate::spi::client_addr(),
        "pid": std::process::id(),
        "extra": extra,
    });
    pgrx::log!("tenantguard-alert: {}", line);
    push(&line.to_string());
}
