//! The dedicated security trail: bypass, revocation, support access and
//! allowlist changes. Rows are written as the extension owner (the
//! application role has no privileges on the table) and are immutable.

use crate::spi;
use pgrx::prelude::*;
use pgrx::JsonB;

/// Append one event. Runs inside the caller's transaction: if it aborts, so
/// does the record; refusals therefore also go to the server log (see
/// `context::alert`).
pub fn record(event: &str, tenant: Option<&str>, detail: serde_json::Value) {
    spi::require_primary(&format!("recording {event} on the security trail"));
    let claims = crate::context::current().ok().flatten();
    let mut actor = claims.as_ref().map(|c| c.sub.clone());
    let mut client_addr = spi::client_addr();
    // Sealed as the trail's records are (tenantguard.audit_seal_actor); an
    // erased actor is recorded as nobody.
    if let (Some(c), Some(t)) = (claims.as_ref(), tenant) {
        if crate::gucs::AUDIT_SEAL_ACTOR.get() && c.tid == t {
            let seal = |v: Option<String>| v.and_then(|v| super::capture::try_seal(t, &c.sub, &v));
            actor = seal(actor);
            client_addr = seal(client_addr);
        }
    }
    let db_role = spi::current_role_name();
    let res = spi::as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO tenantguard.security_log (event, tenant, actor, db_role, client_addr, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                event.into(),
                tenant.into(),
                actor.into(),
                db_role.into(),
                client_addr.into(),
                JsonB(detail).into(),
            ],
        )
    });
    if let Err(e) = res {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("tenantguard: cannot write the security log: {e}"),
        );
    }
}

use super::capture::*;
use pgrx::heap_tuple::PgHeapTuple;

/// Every row of `security_log` (bypass, revocation, support, allowlist,
/// role and grant changes) is also appended to the tenant's chain, so the
/// dedicated trail is tamper-evident too. Without audit keys configured,
/// the plain (append-only) trail remains.
#[pg_trigger]
pub(super) fn security_chain<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::heap_tuple::PgHeapTupleError> {
    if crate::keys::audit_keyring().is_empty() || restoring() {
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
