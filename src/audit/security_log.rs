//! The dedicated security trail: bypass, revocation, support access and
//! allowlist changes. Rows are written as the extension owner (the
//! application role has no privileges on the table) and are immutable.

use crate::session;
use pgrx::prelude::*;
use pgrx::JsonB;

/// Append one event. Runs inside the caller's transaction: if it aborts, so
/// does the record; refusals therefore also go to the server log (see
/// `context::alert`).
pub fn record(event: &str, tenant: Option<&str>, detail: serde_json::Value) {
    let actor = crate::context::current()
        .ok()
        .flatten()
        .map(|c| c.sub.clone());
    let db_role = session::current_role_name();
    let res = session::as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO tenantguard.security_log (event, tenant, actor, db_role, client_addr, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                event.into(),
                tenant.into(),
                actor.into(),
                db_role.into(),
                session::client_addr().into(),
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
