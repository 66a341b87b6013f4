//! The trail under logical replication. A database's trail has one writer
//! at a time, or its chains fork:
//!
//! - **The trail is replicated here** (a subscription, enabled, copies
//!   `tenantguard.audit_log` or `audit_head` into this database, as a
//!   `FOR ALL TABLES` publication does): the publisher writes it. Rows
//!   that the subscription's workers apply to audited tables are not
//!   audited again (their records arrive with the trail); the inbox is left
//!   to the publisher's writer (its deletes arrive too); and any other
//!   transaction that would add a record is refused (55000) until the
//!   subscription is disabled or dropped at cutover.
//! - **The trail is not replicated here** (a publication of some tables
//!   only): this server writes its own trail. Applied rows are recorded
//!   with the actor `replicated from subscription <name>`.
//!
//! Both answers are cached per backend and dropped whenever a subscription
//! or its table list changes (a syscache callback).

use crate::error::raise_msg;
use crate::spi;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use tenantguard_core::replication as model;

thread_local! {
    /// The enabled subscriptions that copy the trail here: (oid, name).
    static SOURCES: RefCell<Option<Vec<(u32, String)>>> = const { RefCell::new(None) };
    /// This worker's subscription name, once looked up.
    static MY_SUBSCRIPTION: RefCell<Option<String>> = const { RefCell::new(None) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    SOURCES.with(|s| *s.borrow_mut() = None);
}

fn register() {
    if REGISTERED.with(|r| r.replace(true)) {
        return;
    }
    // SAFETY: registers a callback for the life of the backend; it only
    // clears a thread-local cache.
    unsafe {
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::SUBSCRIPTIONOID as i32,
            Some(forget),
            pg_sys::Datum::from(0),
        );
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::SUBSCRIPTIONRELMAP as i32,
            Some(forget),
            pg_sys::Datum::from(0),
        );
    }
}

/// The subscription whose apply or table-sync worker this process is.
pub fn applying_subscription() -> Option<u32> {
    // SAFETY: MyBgworkerEntry is NULL outside background workers, else this
    // worker's registration, valid for the life of the process; its names
    // are NUL-terminated fixed arrays.
    unsafe {
        let e = pg_sys::MyBgworkerEntry;
        if e.is_null() {
            return None;
        }
        let lib = CStr::from_ptr((*e).bgw_library_name.as_ptr()).to_string_lossy();
        let fun = CStr::from_ptr((*e).bgw_function_name.as_ptr()).to_string_lossy();
        if !model::is_apply_function(&lib, &fun) {
            return None;
        }
        model::subscription_of_worker(&CStr::from_ptr((*e).bgw_name.as_ptr()).to_string_lossy())
    }
}

/// The enabled subscriptions that copy this database's trail into it.
pub fn trail_sources() -> Vec<(u32, String)> {
    register();
    if let Some(v) = SOURCES.with(|s| s.borrow().clone()) {
        return v;
    }
    let mut v = Vec::new();
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT s.oid::int8, s.subname::text FROM pg_catalog.pg_subscription s
              WHERE s.subenabled
                AND s.subdbid OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                                       WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel r
                             WHERE r.srsubid OPERATOR(pg_catalog.=) s.oid
                               AND (r.srrelid OPERATOR(pg_catalog.=) ANY (ARRAY['tenantguard.audit_log'::pg_catalog.regclass,
                                                                               'tenantguard.audit_head'::pg_catalog.regclass]::pg_catalog.oid[])
                                    OR r.srrelid IN (SELECT i.inhrelid FROM pg_catalog.pg_inherits i
                                                      WHERE i.inhparent OPERATOR(pg_catalog.=) 'tenantguard.audit_log'::pg_catalog.regclass)))
              ORDER BY 2",
            None,
            &[],
        )?;
        for r in rows {
            if let (Some(o), Some(n)) = (r.get::<i64>(1)?, r.get::<String>(2)?) {
                v.push((o as u32, n));
            }
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .unwrap_or_else(|e| super::plans::spi_fail(e));
    SOURCES.with(|s| *s.borrow_mut() = Some(v.clone()));
    v
}

/// What a new record for this transaction should do.
pub enum Recording {
    /// Record it as usual.
    Local,
    /// A subscription's worker applied the row, and the trail is not
    /// replicated: record it, with this actor.
    Replicated(String),
    /// A subscription's worker applied the row, and the trail comes with
    /// it: record nothing.
    Skip,
}

/// Decide for a record about to be captured; refuses (55000) a local
/// record while the trail is replicated into this database.
pub fn recording() -> Recording {
    let sub = applying_subscription();
    let sources = trail_sources();
    match sub {
        Some(s) if sources.iter().any(|(o, _)| *o == s) => Recording::Skip,
        Some(s) if sources.is_empty() => Recording::Replicated(model::replicated_actor(
            &subscription_name(s).unwrap_or_else(|| s.to_string()),
        )),
        _ if sources.is_empty() => Recording::Local,
        _ => raise_msg(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "tenantguard: the audit trail of this database is replicated from a publisher (subscription \"{}\"): audited writes go to the publisher until cutover (disable or drop the subscription, then call tenantguard.complete_cutover())",
                sources[0].1
            ),
        ),
    }
}

fn subscription_name(oid: u32) -> Option<String> {
    if let Some(n) = MY_SUBSCRIPTION.with(|m| m.borrow().clone()) {
        return Some(n);
    }
    let n = spi::read_one::<String>(
        "SELECT subname::text FROM pg_catalog.pg_subscription WHERE oid OPERATOR(pg_catalog.=) $1",
        &[(pg_sys::Oid::from(oid)).into()],
    )
    .ok()
    .flatten()?;
    MY_SUBSCRIPTION.with(|m| *m.borrow_mut() = Some(n.clone()));
    Some(n)
}
