//! The startup worker: it starts with the server (on a primary) or at
//! promotion (on a standby), since it waits for the end of recovery.
//!
//! 1. **Inbox sweep.** Transactions that committed with background
//!    chaining may have left records in a database's inbox when the server
//!    stopped, crashed or was promoted. For every database that accepts
//!    connections, it starts that database's audit writer, which chains
//!    them and leaves (`audit::sweep_inbox`): no record waits for the next
//!    audited commit or an admin's call.
//! 2. **Standby heartbeat.** A standby can only tell how stale its copy of
//!    the access rules is from the timestamp of the last commit it replayed
//!    (`tenantguard.standby_max_lag`, checked in access.rs). While the
//!    primary is idle that timestamp ages although nothing is missing, so
//!    with `tenantguard.standby_heartbeat = on` (the default) it then
//!    commits an empty transaction every second: one XID and one small
//!    commit record. With it off, the worker ends after the sweep.

use crate::gucs;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::time::Duration;

/// Register the worker (while preloading only).
pub fn init() {
    // Not under pg_upgrade (binary-upgrade mode): it manages transaction ids
    // itself, and nothing replicates from that server.
    // SAFETY: a plain read of a postmaster-global flag.
    if unsafe { pg_sys::IsBinaryUpgrade } {
        return;
    }
    BackgroundWorkerBuilder::new("tenantguard standby heartbeat")
        .set_function("tenantguard_heartbeat_worker")
        .set_library("pg_tenantguard")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn tenantguard_heartbeat_worker(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(&gucs::alert_database()), None);
    let databases: Vec<u32> = crate::spi::worker_transaction(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT oid::int8 FROM pg_catalog.pg_database WHERE datallowconn ORDER BY oid",
                None,
                &[],
            )?
            .map(|r| r.get::<i64>(1).map(|o| o.unwrap_or(0) as u32))
            .collect::<Result<Vec<u32>, _>>()
        })
        .unwrap_or_default()
    });
    for db in databases {
        if BackgroundWorker::sigterm_received() {
            return;
        }
        crate::audit::sweep_inbox(db);
    }
    if !gucs::STANDBY_HEARTBEAT.get() {
        return;
    }
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
        crate::spi::worker_transaction(|| {
            // SAFETY: assigns this transaction an XID, so its commit writes
            // a commit record (with its timestamp) that standbys replay.
            unsafe { pg_sys::GetCurrentTransactionId() };
        });
    }
}
