//! `tenantguard.status()`: what is active in this backend.

use crate::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::JsonB;
use std::sync::atomic::{AtomicBool, Ordering};

static PRELOADED: AtomicBool = AtomicBool::new(false);

pub fn note_load() {
    // SAFETY: plain read of a postmaster-global flag.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    PRELOADED.store(preloading, Ordering::Relaxed);
}

pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

#[pg_extern(stable, parallel_safe)]
fn status() -> JsonB {
    let (_, ring) = gucs::keyring();
    let protected =
        Spi::get_one::<i64>("SELECT pg_catalog.count(*) FROM tenantguard.protected_table")
            .unwrap_or(None)
            .unwrap_or(0);
    let shared = Spi::get_one::<i64>("SELECT pg_catalog.count(*) FROM tenantguard.shared_table")
        .unwrap_or(None)
        .unwrap_or(0);
    JsonB(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "preloaded": preloaded(),
        "hooks_active": crate::hooks::active(),
        "audit_guard": crate::gucs::AUDIT_HOOK.get(),
        "audit_keys": crate::gucs::audit_keyring().kids(),
        "shared_memory": false,
        "signing_keys": ring.kids(),
        "revocation_mode": if crate::gucs::ACCESS_CHECKS.get() {
            "shared invalidation (relcache callback, checked every statement; works without preload)"
        } else {
            "OFF (tenantguard.access_checks = off): revocations, allowlists and staff grants are not enforced"
        },
        "bypass_max_ttl_seconds": gucs::BYPASS_MAX_TTL.get(),
        "cache_generation": crate::access::current_generation(),
        "watched_relations": crate::access::watched(),
        "protected_tables": protected,
        "shared_tables": shared,
    }))
}
