//! The standby heartbeat. A standby can only tell how stale its copy of
//! the access rules is from the timestamp of the last commit it replayed
//! (`tenantguard.standby_max_lag`, checked in access.rs). While the primary
//! is idle that timestamp ages although nothing is missing, so with
//! `tenantguard.standby_heartbeat = on` (the default, with preload) a
//! background worker on the primary commits an empty transaction every
//! second: one XID and one small commit record. It starts only once
//! recovery has ended, so it runs on a primary (and on a standby from the
//! moment it is promoted), never on a standby.

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
    if !gucs::STANDBY_HEARTBEAT.get() || unsafe { pg_sys::IsBinaryUpgrade } {
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
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
        BackgroundWorker::transaction(|| {
            // SAFETY: assigns this transaction an XID, so its commit writes
            // a commit record (with its timestamp) that standbys replay.
            unsafe { pg_sys::GetCurrentTransactionId() };
        });
    }
}
