//! Small facts about the current backend, and running internal SQL as the
//! extension's owner.
//!
//! Convention for every internal query: schema-qualified names only and
//! `OPERATOR(pg_catalog.=)`, so a hostile `search_path` set by the caller
//! cannot redirect anything while it runs with elevated rights.

use pgrx::pg_sys;
use std::ffi::CStr;
use std::net::IpAddr;

fn role_name(oid: pg_sys::Oid) -> Option<String> {
    // SAFETY: GetUserNameFromId with noerr=true returns NULL for unknown roles.
    unsafe {
        let p = pg_sys::GetUserNameFromId(oid, true);
        if p.is_null() {
            None
        } else {
            Some(CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    }
}

pub fn current_role_name() -> Option<String> {
    // SAFETY: GetUserId is always valid inside a backend.
    role_name(unsafe { pg_sys::GetUserId() })
}

pub fn session_role_name() -> Option<String> {
    // SAFETY: as above.
    role_name(unsafe { pg_sys::GetSessionUserId() })
}

thread_local! {
    static CLIENT: std::cell::OnceCell<Option<String>> = const { std::cell::OnceCell::new() };
}

/// The client's address as `host(inet_client_addr())` reports it: None for
/// a Unix socket and in parallel and background workers. It never changes
/// during a backend's life, so it is looked up once. Called directly, not
/// through SQL: a refused token at connection start-up (where no SQL can
/// run) still leaves an alert naming the address.
pub fn client_addr() -> Option<String> {
    if let Some(v) = CLIENT.with(|c| c.get().cloned()) {
        return v;
    }
    extern "C-unwind" {
        fn inet_client_addr(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
        fn network_host(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    }
    // SAFETY: inet_client_addr() takes no arguments and reads only
    // MyProcPort (NULL-checked) and its own call frame's isnull, so a zeroed
    // frame is a valid call; it runs inside pgrx's error boundary. Its
    // result is an inet datum, which host() (network_host) turns into text.
    let v = unsafe {
        let mut fcinfo: pg_sys::FunctionCallInfoBaseData = std::mem::zeroed();
        let inet = pg_sys::ffi::pg_guard_ffi_boundary(|| inet_client_addr(&mut fcinfo));
        if fcinfo.isnull {
            None
        } else {
            let t = pg_sys::DirectFunctionCall1Coll(Some(network_host), pg_sys::Oid::INVALID, inet);
            let p = pg_sys::text_to_cstring(t.cast_mut_ptr());
            Some(std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    };
    CLIENT.with(|c| {
        let _ = c.set(v.clone());
    });
    v
}

pub fn client_ip() -> Option<IpAddr> {
    client_addr().and_then(|s| s.parse().ok())
}

pub fn in_parallel_worker() -> bool {
    // SAFETY: plain read of a backend-global.
    unsafe { pg_sys::ParallelWorkerNumber >= 0 }
}

/// Run `f` as the bootstrap superuser, like a SECURITY DEFINER function does
/// internally. The previous user is restored afterwards; if `f` raises, the
/// (sub)transaction abort restores it.
pub fn as_owner<R>(f: impl FnOnce() -> R) -> R {
    let mut uid = pg_sys::Oid::INVALID;
    let mut sec: i32 = 0;
    // SAFETY: plain getters/setters of backend-global state.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut uid, &mut sec);
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            sec | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let r = f();
    // SAFETY: restores what we saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(uid, sec) };
    r
}

/// Whether the extension's schema exists in this database (the library can
/// be preloaded into databases that never ran CREATE EXTENSION).
pub fn relation_oid(name: &CStr) -> Option<pg_sys::Oid> {
    // SAFETY: catalog lookups with missing_ok semantics.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"tenantguard".as_ptr(), true);
        if nsp == pg_sys::Oid::INVALID {
            return None;
        }
        let rel = pg_sys::get_relname_relid(name.as_ptr(), nsp);
        (rel != pg_sys::Oid::INVALID).then_some(rel)
    }
}

pub fn in_transaction() -> bool {
    // SAFETY: plain read of transaction state.
    unsafe { pg_sys::IsTransactionState() }
}

/// Whether SQL (SPI) can run here: inside a transaction, and either under a
/// snapshot or a portal SPI can take one for. Connection start-up applies
/// the startup packet's options and `ALTER ROLE/DATABASE ... SET` inside a
/// transaction but with neither, and SPI would fail there with FATAL.
pub fn can_run_sql() -> bool {
    // SAFETY: plain reads of backend-global transaction and portal state.
    unsafe {
        pg_sys::IsTransactionState()
            && (pg_sys::ActiveSnapshotSet() || !pg_sys::ActivePortal.is_null())
    }
}

/// Run `f` with `search_path` pinned to `pg_catalog, pg_temp` (what a
/// SECURITY DEFINER function's SET clause does), so catalog deparsing and
/// the DDL we run are independent of the caller's search_path. Not for
/// parallel mode, where GUCs cannot change.
pub fn with_pinned_search_path<R>(f: impl FnOnce() -> R) -> R {
    with_guc(c"search_path", c"pg_catalog, pg_temp", f)
}

/// Run `f` with one GUC set for its duration (restored afterwards, and by
/// the (sub)transaction abort on error). Not for parallel mode.
pub fn with_guc<R>(name: &std::ffi::CStr, value: &std::ffi::CStr, f: impl FnOnce() -> R) -> R {
    // SAFETY: the same sequence fmgr_security_definer uses; on error the
    // (sub)transaction abort pops the GUC nest level.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        let r = f();
        pg_sys::AtEOXact_GUC(true, level);
        r
    }
}
