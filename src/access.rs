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

use crate::spi;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tenantguard_core::access::{evaluate, Grant, Rules};
use tenantguard_core::net::Cidr;
use tenantguard_core::token::Claims;
use tenantguard_core::DomainError;

const TABLES: [&std::ffi::CStr; 3] = [c"revocation", c"ip_allowlist", c"support_grant"];
/// Every table whose changes invalidate per-backend caches.
const WATCHED: [&std::ffi::CStr; 10] = [
    c"issuer",
    c"subject_key",
    c"tenant_key",
    c"revocation",
    c"ip_allowlist",
    c"support_grant",
    c"authz_role",
    c"authz_permission",
    c"authz_assignment",
    c"authz_principal",
];

thread_local! {
    static GENERATION: Cell<u64> = const { Cell::new(1) };
    static OIDS: RefCell<Option<Vec<pg_sys::Oid>>> = const { RefCell::new(None) };
    static RULES: RefCell<Option<(u64, i64, Rc<Rules>)>> = const { RefCell::new(None) };
    static LAST_SUPPORT_STMT: Cell<(i64, u32)> = const { Cell::new((0, 0)) };
}

pub fn generation() -> u64 {
    GENERATION.with(|g| g.get())
}

fn relcache_callback(relid: pg_sys::Oid) {
    // (Never raises: a list in use counts as a match.)
    let ours = OIDS.with(|o| match o.try_borrow().as_deref() {
        Ok(Some(oids)) => relid == pg_sys::Oid::INVALID || oids.contains(&relid),
        _ => true,
    });
    if ours {
        GENERATION.with(|g| g.set(g.get() + 1));
    }
}

pub fn init() {
    // It only bumps a counter and never raises.
    spi::on_relcache_invalidation(relcache_callback);
}

fn spi_err(e: pgrx::spi::Error) -> ! {
    crate::error::raise_msg(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("tenantguard: {e}"),
    )
}

/// Read every rule. One pass per table; revocations are aggregated to the
/// latest instant per key. Runs as the extension owner (the application
/// role has no privileges on these tables).
fn load_rules() -> Rules {
    if TABLES.iter().any(|t| spi::relation_oid(t).is_none()) {
        // Extension not installed in this database: no rules exist.
        return Rules::default();
    }
    watch_tables();
    let mut rules = Rules::default();
    spi::as_owner(|| {
        Spi::connect(|_client| {
            spi::select_latest(&format!("SELECT r.kind, r.tenant, r.user_id, r.jti,
                        pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.max(r.revoked_at)))::pg_catalog.int8
                   FROM {} r GROUP BY 1, 2, 3, 4", crate::spi::local_table("revocation")), &[], |row| {
                let kind: String = row.get(1)?.unwrap_or_default();
                let tenant: Option<String> = row.get(2)?;
                let user: Option<String> = row.get(3)?;
                let jti: Option<String> = row.get(4)?;
                let at: i64 = row.get(5)?.unwrap_or(i64::MAX);
                match (kind.as_str(), tenant, user, jti) {
                    ("tenant", Some(t), _, _) => {
                        rules.tenant_revoked.insert(t, at);
                    }
                    ("user", Some(t), Some(u), _) => {
                        rules.user_revoked.insert((t, u), at);
                    }
                    ("session", _, _, Some(j)) => {
                        rules.session_revoked.insert(j);
                    }
                    _ => {}
                }
                Ok(())
            })?;
            spi::select_latest(&format!("SELECT a.tenant, a.allow::pg_catalog.text[] FROM {} a", crate::spi::local_table("ip_allowlist")), &[], |row| {
                let tenant: String = row.get(1)?.unwrap_or_default();
                let allow: Vec<String> = row.get(2)?.unwrap_or_default();
                // A list entry we cannot parse must not widen access: keep
                // the list (possibly empty-but-present means refuse all).
                let cidrs: Vec<Cidr> = allow.iter().filter_map(|s| Cidr::parse(s).ok()).collect();
                let cidrs = if cidrs.is_empty() && !allow.is_empty() {
                    vec![Cidr { addr: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), prefix: 32 }]
                } else {
                    cidrs
                };
                rules.allowlists.insert(tenant, cidrs);
                Ok(())
            })?;
            spi::select_latest(&format!("SELECT g.tenant, g.staff_user, g.id,
                        (pg_catalog.date_part('epoch', g.valid_from) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8,
                        (pg_catalog.date_part('epoch', g.valid_until) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8,
                        g.reason
                   FROM {} g
                  WHERE g.revoked_at IS NULL AND g.valid_until OPERATOR(pg_catalog.>) pg_catalog.now()", crate::spi::local_table("support_grant")), &[], |row| {
                let key = (row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default());
                rules.grants.entry(key).or_default().push(Grant {
                    id: row.get(3)?.unwrap_or(0),
                    valid_from: row.get(4)?.unwrap_or(i64::MAX),
                    valid_until: row.get(5)?.unwrap_or(i64::MIN),
                    reason: row.get(6)?.unwrap_or_default(),
                });
                Ok(())
            })?;
            Ok::<_, pgrx::spi::Error>(())
        })
        .unwrap_or_else(|e| spi_err(e))
    });
    rules
}

/// Record the OIDs of every cache-relevant table (access rules and authz
/// policy) for the relcache callback's filter. Until known, every relcache
/// invalidation bumps the generation (safe, only slower).
fn watch_tables() {
    let oids: Vec<pg_sys::Oid> = WATCHED
        .iter()
        .filter_map(|t| spi::relation_oid(t))
        .collect();
    if oids.len() == WATCHED.len() {
        OIDS.with(|o| *o.borrow_mut() = Some(oids));
    }
}

/// Process pending invalidations, then return the cache generation.
pub fn current_generation() -> u64 {
    // SAFETY: processes pending shared invalidations, as every lock
    // acquisition does; our callback only bumps a counter.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    if OIDS.with(|o| o.borrow().is_none()) {
        watch_tables();
    }
    generation()
}

fn rules() -> Rc<Rules> {
    let gen = current_generation();
    if let Some(r) = RULES.with(|r| {
        r.borrow()
            .as_ref()
            .filter(|(g, stamp, _)| *g == gen && spi::cache_stamp_valid(*stamp))
            .map(|(_, _, r)| r.clone())
    }) {
        return r;
    }
    let r = Rc::new(load_rules());
    let stamp = spi::cache_stamp();
    RULES.with(|slot| *slot.borrow_mut() = Some((gen, stamp, r.clone())));
    r
}

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01).
const PG_EPOCH_UNIX_US: i64 = 946_684_800 * 1_000_000;

/// Check the access rules for verified claims at `now_us` (Unix µs).
///
/// - `staff` is `c.staff`, passed by a caller that has it at hand (reading
///   it from the claims is a cache miss on the hot path).
/// - `passed` is the caller's memo, kept with the token's verification: the
///   rules' generation under which these claims last passed, if any. For a
///   token without `staff` the verdict depends on nothing else
///   (revocations compare with the token's own `iat`; the client address
///   never changes), so it holds until the rules change. Staff tokens are
///   checked every time (their grants are time-bound).
/// - `gen` is the rules' generation if the caller has just read it
///   (current_generation()), so it is not read twice.
pub fn check(
    c: &Claims,
    staff: bool,
    passed: &Cell<Option<u64>>,
    now_us: i64,
    gen: Option<u64>,
) -> Result<(), DomainError> {
    debug_assert_eq!(staff, c.staff);
    // On a hot standby the rules are only as fresh as replay: refuse once it
    // is older than tenantguard.standby_max_lag (every statement, before the
    // memo below, which only spares re-reading unchanged rules).
    if spi::on_standby() {
        // SAFETY: reads the replayed commit timestamp (0 if none yet).
        let replayed = unsafe { pg_sys::GetLatestXTime() };
        let replayed_us = if replayed == 0 {
            0
        } else {
            replayed + PG_EPOCH_UNIX_US
        };
        tenantguard_core::access::check_standby_lag(
            replayed_us,
            now_us,
            i64::from(crate::gucs::STANDBY_MAX_LAG.get()) * 1_000_000,
        )?;
    }
    if !staff && spi::can_run_sql() && crate::gucs::ACCESS_CHECKS.get() {
        let gen = gen.unwrap_or_else(current_generation);
        if passed.get() == Some(gen) {
            return Ok(());
        }
        check_rules(c, now_us)?;
        passed.set(Some(gen));
        return Ok(());
    }
    check_rules(c, now_us)
}

fn check_rules(c: &Claims, now_us: i64) -> Result<(), DomainError> {
    // Outside a transaction, or at connection start-up (a startup packet
    // option, `ALTER ROLE ... SET`), SQL cannot run; the signature and times
    // were checked, and the accessors check these rules again at the
    // session's first statement.
    if !spi::can_run_sql() || !crate::gucs::ACCESS_CHECKS.get() {
        return Ok(());
    }
    let rules = rules();
    let facts = rules.facts_for(c);
    // The client address is only looked up when a list applies to it.
    let client = if facts.allowlist.is_some() && c.ip.is_none() {
        spi::client_ip()
    } else {
        None
    };
    let grant = evaluate(c, &facts, now_us, client)?;
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
    crate::alerts::alert_json(
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
    // On Citus the access tables are reference tables, and on every node
    // the trigger fires on the table's shard (`revocation_102008`): tell
    // the caches, which watch the table itself.
    if let Ok(name) = trigger.table_name() {
        if let Some(base) = shard_base(&name) {
            if let Some(oid) = std::ffi::CString::new(base)
                .ok()
                .and_then(|c| spi::relation_oid(&c))
            {
                // SAFETY: as above.
                unsafe { pg_sys::CacheInvalidateRelcacheByRelid(oid) };
            }
        }
    }
    Ok(None)
}

/// The watched table a Citus shard name (`<table>_<shard id>`) belongs to.
fn shard_base(name: &str) -> Option<&str> {
    let (base, id) = name.rsplit_once('_')?;
    (!id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && WATCHED.iter().any(|w| w.to_bytes() == base.as_bytes()))
    .then_some(base)
}

/// The relations whose changes invalidate caches (for status()).
pub fn watched() -> Vec<u32> {
    OIDS.with(|o| {
        o.borrow()
            .as_ref()
            .map(|v| v.iter().map(|x| x.to_u32()).collect())
            .unwrap_or_default()
    })
}
