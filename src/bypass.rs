//! Cross-tenant maintenance access, guarded by a per-backend secret.
//!
//! * The secret is 256 bits from the OS RNG, generated on first use, kept in
//!   this backend's memory only: never in a GUC, never logged, gone when the
//!   backend exits. Only members of `tenantguard_bypass` can fetch it.
//! * `begin_bypass` needs this backend's secret and a reason; bypass lasts
//!   until the transaction ends (commit, abort, or rollback of the savepoint
//!   it was started in) or the ttl runs out, whichever is first.
//! * Parallel workers: `bypassing()` is PARALLEL RESTRICTED, so the planner
//!   evaluates it in the leader only (as the bypass policy's InitPlan, whose
//!   value is passed to the workers). A worker that called it directly would
//!   see `false`: bypass can only fail closed there. The workers evaluate
//!   the tenant policy themselves; without a context they raise `no tenant
//!   context`, unless `tenantguard.leader_bypass_until` (set here as SET
//!   LOCAL, restored in the workers, settable by nobody else) says their
//!   leader is bypassing: then their scope is empty and the leader's bypass
//!   policy admits the rows.

use crate::alerts::alert_json;
use crate::audit::security_log as seclog;
use crate::context::bypass_state;
use crate::error::raise;
use crate::{gucs, spi};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use tenantguard_core::DomainError;

thread_local! {
    static SECRET: RefCell<Option<[u8; 32]>> = const { RefCell::new(None) };
}

fn secret_hex() -> String {
    SECRET.with(|s| {
        let mut s = s.borrow_mut();
        let bytes = s.get_or_insert_with(|| {
            let mut b = [0u8; 32];
            getrandom::getrandom(&mut b).unwrap_or_else(|e| {
                crate::error::raise_msg(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("tenantguard: OS random number generator failed: {e}"),
                )
            });
            b
        });
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refuse(why: &'static str, reason: &str) -> ! {
    let e = DomainError::BypassRefused(why);
    alert_json(
        "bypass_refused",
        e.reason(),
        &e.to_string(),
        serde_json::json!({"why": why, "given_reason": reason}),
    );
    raise(e)
}

/// This backend's bypass secret. EXECUTE only for `tenantguard_bypass`;
/// every call is recorded (the secret itself never is).
#[pg_extern(volatile, parallel_unsafe)]
fn bypass_secret() -> String {
    let s = secret_hex();
    seclog::record(
        "bypass_secret_issued",
        None,
        serde_json::json!({"pid": std::process::id()}),
    );
    s
}

/// Turn bypass on for the current transaction, at most for `ttl`.
#[pg_extern(volatile, parallel_unsafe)]
fn begin_bypass(
    secret: Option<&str>,
    reason: Option<&str>,
    ttl: default!(Option<pgrx::datum::Interval>, "'15 minutes'"),
) {
    let reason_s = reason.unwrap_or("").trim();
    let have = SECRET.with(|s| s.borrow().is_some());
    let ok = have
        && secret.is_some_and(|given| constant_time_eq(given.as_bytes(), secret_hex().as_bytes()));
    if !ok {
        refuse("the secret is not this backend's bypass secret", reason_s);
    }
    if reason_s.is_empty() {
        refuse("a non-empty reason is required", reason_s);
    }
    let ttl_us = match ttl {
        Some(i) => i.as_micros(),
        None => refuse("a ttl is required", reason_s),
    };
    let max_us = gucs::BYPASS_MAX_TTL.get() as i128 * 1_000_000;
    if ttl_us <= 0 || ttl_us > max_us {
        refuse(
            "ttl must be positive and at most tenantguard.bypass_max_ttl",
            reason_s,
        );
    }
    let expires_us = bypass_state::now_us() + ttl_us as i64;
    let citus = (crate::spi::citus_loaded() && crate::spi::citus_metadata())
        .then(|| citus_grant(expires_us));
    // SAFETY: reads the current transaction nesting level.
    let nest_level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    bypass_state::start(expires_us, nest_level);
    let until = std::ffi::CString::new(expires_us.to_string()).expect("digits");
    bypass_state::set_leader_bypass(&until);
    let mut detail = serde_json::json!({
        "reason": reason_s,
        "ttl_seconds": (ttl_us / 1_000_000) as i64,
        "session_role": spi::session_role_name(),
    });
    if let Some((grant, (node, txn, _))) = citus {
        // The workers honour it for this distributed transaction only, in
        // one connection per node (a second connection presenting it would
        // be refused there as a replay): the transaction keeps to one.
        spi::citus_set_local("citus.max_adaptive_executor_pool_size", "1");
        bypass_state::with_own_grant(|| spi::citus_set_local("tenantguard.bypass_grant", &grant));
        detail["citus_transaction"] = serde_json::json!({"initiator_node": node, "number": txn});
    }
    alert_json("bypass_begin", "bypass", reason_s, detail.clone());
    seclog::record("bypass_begin", None, detail);
}

/// On a Citus coordinator: the grant that carries this transaction's
/// bypass to the workers (`tenantguard_core::bypass_grant`), and the
/// distributed transaction it is bound to.
fn citus_grant(expires_us: i64) -> (String, (i32, u64, i64)) {
    use tenantguard_core::bypass_grant::{derive_key, mint, Binding, Grant};
    // SAFETY: reads the transaction state.
    if !unsafe { pg_sys::IsTransactionBlock() } {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_NO_ACTIVE_SQL_TRANSACTION,
            "tenantguard: on a Citus cluster, begin_bypass() must run inside a transaction block (BEGIN): the workers honour a bypass for its distributed transaction only",
        );
    }
    let key = match crate::keys::master_keyring().primary() {
        Ok(k) => derive_key(&k.material),
        Err(_) => crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "tenantguard: bypass on a Citus cluster needs tenantguard.master_key (the same on every node): it signs the grant the workers verify",
        ),
    };
    let Some(binding) = spi::citus_begin_distributed() else {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "tenantguard: Citus gave this transaction no distributed transaction id",
        )
    };
    let mut nonce = [0u8; 16];
    getrandom::getrandom(&mut nonce).unwrap_or_else(|e| {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("tenantguard: OS random number generator failed: {e}"),
        )
    });
    let g = Grant {
        binding: Binding {
            node: binding.0,
            txn: binding.1,
            stamp_us: binding.2,
        },
        expires_us,
        nonce,
        role: spi::current_role_name().unwrap_or_default(),
    };
    (mint(&key, &g, bypass_state::visible_query_bytes()), binding)
}

/// End bypass now.
#[pg_extern(volatile, parallel_unsafe)]
fn end_bypass() {
    if bypass_state::started() {
        bypass_state::clear();
        bypass_state::set_leader_bypass(c"");
        if crate::spi::citus_loaded() && crate::spi::citus_metadata() {
            bypass_state::with_own_grant(|| spi::citus_set_local("tenantguard.bypass_grant", ""));
        }
        seclog::record("bypass_end", None, serde_json::json!({}));
    }
}

/// Whether bypass is live. Used by the generated bypass policy.
#[pg_extern(stable, parallel_restricted)]
fn bypassing() -> bool {
    bypass_state::active()
}
