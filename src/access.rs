//! Revocation, per-tenant IP allowlists and staff support windows.
//!
//! Facts come from the tables `tenantguard.revocation`, `ip_allowlist` and
//! `support_grant`. They are cached per token and dropped when any backend
//! changes those tables: a statement trigger sends a relcache invalidation
//! for the table, which every backend receives through Postgres's shared
//! invalidation queue. Each check first calls `AcceptInvalidationMessages`,
//! so a revocation committed in another session takes effect on the next
//! statement, even inside an open transaction. This works without
//! `shared_preload_libraries`.

use crate::context;
use crate::session;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use tenantguard_core::access::{evaluate, AccessFacts, Grant};
use tenantguard_core::net::Cidr;
use tenantguard_core::token::Claims;
use tenantguard_core::DomainError;

const TABLES: [&std::ffi::CStr; 3] = [c"revocation", c"ip_allowlist", c"support_grant"];

thread_local! {
    static GENERATION: Cell<u64> = const { Cell::new(1) };
    static OIDS: RefCell<Option<Vec<pg_sys::Oid>>> = const { RefCell::new(None) };
    static FACTS: RefCell<HashMap<String, (u64, Rc<AccessFacts>)>> = RefCell::new(HashMap::new());
    static LAST_SUPPORT_STMT: Cell<(i64, u32)> = const { Cell::new((0, 0)) };
}

pub fn generation() -> u64 {
    GENERATION.with(|g| g.get())
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let ours = OIDS.with(|o| match &*o.borrow() {
        Some(oids) => relid == pg_sys::Oid::INVALID || oids.contains(&relid),
        None => true,
    });
    if ours {
        GENERATION.with(|g| g.set(g.get() + 1));
    }
}

pub fn init() {
    // SAFETY: registers a callback for the life of the backend; it only
    // bumps a counter and never raises.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0))
    };
}

fn key(c: &Claims) -> String {
    // tid, scope, sub, jti, staff: everything the facts depend on.
    serde_json::json!([c.tid, c.read_scope, c.sub, c.jti, c.staff]).to_string()
}

fn load_facts(c: &Claims) -> AccessFacts {
    let Some(oids) = TABLES
        .iter()
        .map(|t| session::relation_oid(t))
        .collect::<Option<Vec<_>>>()
    else {
        // Extension not installed in this database: no rules exist.
        return AccessFacts::default();
    };
    OIDS.with(|o| *o.borrow_mut() = Some(oids));
    let row = session::as_owner(|| {
        Spi::get_three_with_args::<i64, i64, bool>(
            "SELECT
               (SELECT pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.max(r.revoked_at)))::pg_catalog.int8
                  FROM tenantguard.revocation r
                 WHERE r.kind OPERATOR(pg_catalog.=) 'tenant' AND r.tenant OPERATOR(pg_catalog.=) ANY ($1)),
               (SELECT pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.max(r.revoked_at)))::pg_catalog.int8
                  FROM tenantguard.revocation r
                 WHERE r.kind OPERATOR(pg_catalog.=) 'user' AND r.tenant OPERATOR(pg_catalog.=) $2
                   AND r.user_id OPERATOR(pg_catalog.=) $3),
               EXISTS (SELECT 1 FROM tenantguard.revocation r
                 WHERE r.kind OPERATOR(pg_catalog.=) 'session' AND r.jti OPERATOR(pg_catalog.=) $4)",
            &[
                c.read_scope.clone().into(),
                c.tid.clone().into(),
                c.sub.clone().into(),
                c.jti.clone().into(),
            ],
        )
    });
    let (tenant_revoked_at, user_revoked_at, session_revoked) = row.unwrap_or_else(|e| {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("tenantguard: {e}"),
        )
    });
    let allow: Option<Vec<String>> = session::as_owner(|| {
        Spi::get_one_with_args::<Vec<String>>(
            "SELECT a.allow::pg_catalog.text[] FROM tenantguard.ip_allowlist a
              WHERE a.tenant OPERATOR(pg_catalog.=) $1",
            &[c.tid.clone().into()],
        )
    })
    .unwrap_or(None);
    let allowlist = allow.map(|v| v.iter().filter_map(|s| Cidr::parse(s).ok()).collect());
    let mut grants = Vec::new();
    if c.staff {
        let g: Option<pgrx::JsonB> = session::as_owner(|| {
            Spi::get_one_with_args::<pgrx::JsonB>(
                "SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(g.id,
                        (pg_catalog.date_part('epoch', g.valid_from) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8,
                        (pg_catalog.date_part('epoch', g.valid_until) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8,
                        g.reason))
                   FROM tenantguard.support_grant g
                  WHERE g.tenant OPERATOR(pg_catalog.=) $1 AND g.staff_user OPERATOR(pg_catalog.=) $2
                    AND g.revoked_at IS NULL",
                &[c.tid.clone().into(), c.sub.clone().into()],
            )
        })
        .unwrap_or(None);
        if let Some(serde_json::Value::Array(rows)) = g.map(|j| j.0) {
            for r in rows {
                grants.push(Grant {
                    id: r[0].as_i64().unwrap_or(0),
                    valid_from: r[1].as_i64().unwrap_or(i64::MAX),
                    valid_until: r[2].as_i64().unwrap_or(i64::MIN),
                    reason: r[3].as_str().unwrap_or("").to_string(),
                });
            }
        }
    }
    AccessFacts {
        tenant_revoked_at,
        user_revoked_at,
        session_revoked: session_revoked.unwrap_or(false),
        allowlist,
        grants,
    }
}

fn facts_for(c: &Claims) -> Rc<AccessFacts> {
    // SAFETY: processes pending shared invalidations, as every lock
    // acquisition does; our callback only bumps a counter.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    let gen = generation();
    let k = key(c);
    if let Some(f) = FACTS.with(|m| {
        m.borrow()
            .get(&k)
            .filter(|(g, _)| *g == gen)
            .map(|(_, f)| f.clone())
    }) {
        return f;
    }
    let f = Rc::new(load_facts(c));
    FACTS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() > 256 {
            m.clear();
        }
        m.insert(k, (gen, f.clone()));
    });
    f
}

/// Check the access rules for verified claims at `now_us` (Unix µs).
pub fn check(c: &Claims, now_us: i64) -> Result<(), DomainError> {
    // Outside a transaction (e.g. a startup packet option) there is no
    // catalog access; the accessors check again at the first statement.
    if !session::in_transaction() {
        return Ok(());
    }
    let facts = facts_for(c);
    let grant = evaluate(c, &facts, now_us, session::client_ip())?;
    if let Some(g) = grant {
        log_support_statement(c, g);
    }
    Ok(())
}

/// Staff access: every statement run under a support grant leaves one
/// durable log line naming the grant and its reason.
fn log_support_statement(c: &Claims, g: &Grant) {
    // SAFETY: reads backend-global statement identity.
    let stmt = unsafe {
        (
            pg_sys::GetCurrentStatementStartTimestamp(),
            pg_sys::GetCurrentCommandId(false),
        )
    };
    if LAST_SUPPORT_STMT.with(|l| l.get()) == stmt {
        return;
    }
    LAST_SUPPORT_STMT.with(|l| l.set(stmt));
    let query = unsafe {
        // SAFETY: debug_query_string is NULL or a NUL-terminated string.
        let p = pg_sys::debug_query_string;
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    context::alert_json(
        "support_access_used",
        "staff_statement",
        &g.reason,
        serde_json::json!({"tenant": c.tid, "staff_user": c.sub, "grant_id": g.id, "statement": query}),
    );
}

/// Statement trigger on the access tables: tell every backend to reload.
#[pg_trigger]
fn access_changed<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::heap_tuple::PgHeapTupleError> {
    if let Ok(relid) = trigger.relid() {
        // SAFETY: queues a transactional invalidation, sent at commit.
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    }
    Ok(None)
}
