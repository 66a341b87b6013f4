//! The authorization model: each tenant's policy (with the `*` templates)
//! and each principal's role assignments, loaded from the `authz_*` tables
//! and kept per backend until the tables change (the access rules'
//! generation). `roles_of` is what the audit trail records as a record's
//! actor roles; `authz::init` hands it to the audit trail.

use crate::context::{self};
use crate::error::raise_msg;
use crate::spi;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use tenantguard_core::authz::{effective_roles, Assignment, Effect, Perm, Policy};
use tenantguard_core::cond::{self};

pub(super) type Principal = (Vec<Assignment>, Value);

thread_local! {
    pub(super) static POLICIES: RefCell<HashMap<String, Stamped<Policy>>> = RefCell::new(HashMap::new());
    pub(super) static PRINCIPALS: RefCell<HashMap<(String, String), Stamped<Principal>>> = RefCell::new(HashMap::new());
}

pub(super) fn spi_fail(e: pgrx::spi::Error) -> ! {
    raise_msg(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("tenantguard authz: {e}"),
    )
}

pub(super) fn load_policy(tenant: &str) -> Policy {
    let mut roles: HashMap<String, (bool, Vec<String>)> = HashMap::new();
    let mut perms: Vec<(bool, Perm)> = Vec::new();
    spi::as_owner(|| {
        Spi::connect(|_c| {
            spi::select_latest(
                &format!(
                    "SELECT tenant OPERATOR(pg_catalog.<>) '*', role, inherits FROM {}
                  WHERE tenant OPERATOR(pg_catalog.=) ANY (ARRAY['*', $1])",
                    crate::spi::local_table("authz_role")
                ),
                &[tenant],
                |r| {
                    let own: bool = r.get(1)?.unwrap_or(false);
                    let role: String = r.get(2)?.unwrap_or_default();
                    let inh: Vec<String> = r.get(3)?.unwrap_or_default();
                    // A tenant's own definition overrides the global template.
                    if own || !roles.get(&role).is_some_and(|(o, _)| *o) {
                        roles.insert(role, (own, inh));
                    }
                    Ok(())
                },
            )?;
            spi::select_latest(
                &format!(
                    "SELECT tenant OPERATOR(pg_catalog.<>) '*', id, role, action, condition, effect
                   FROM {} WHERE tenant OPERATOR(pg_catalog.=) ANY (ARRAY['*', $1]) ORDER BY id",
                    crate::spi::local_table("authz_permission")
                ),
                &[tenant],
                |r| {
                    let src: Option<String> = r.get(5)?;
                    let parsed = src.as_ref().map(|s| (s.clone(), cond::parse(s)));
                    let condition = match parsed {
                        None => None,
                        Some((s, Ok(e))) => Some((s, e)),
                        // Stored conditions were checked at grant time; one that
                        // no longer parses can never be satisfied.
                        Some((s, Err(_))) => {
                            Some((s, cond::parse("false").expect("literal false parses")))
                        }
                    };
                    perms.push((
                        r.get(1)?.unwrap_or(false),
                        Perm {
                            id: r.get(2)?.unwrap_or(0),
                            role: r.get(3)?.unwrap_or_default(),
                            action: r.get(4)?.unwrap_or_default(),
                            condition,
                            effect: if r.get::<String>(6)?.as_deref() == Some("forbid") {
                                Effect::Forbid
                            } else {
                                Effect::Permit
                            },
                        },
                    ));
                    Ok(())
                },
            )?;
            Ok::<_, pgrx::spi::Error>(())
        })
        .unwrap_or_else(|e| spi_fail(e))
    });
    let mut p = Policy::default();
    for (role, (_, inh)) in &roles {
        p.inherits.insert(role.clone(), inh.clone());
    }
    for (own, perm) in perms {
        // Global permissions of a role the tenant redefined do not apply.
        let tenant_defines = roles.get(&perm.role).is_some_and(|(o, _)| *o);
        if !own && tenant_defines {
            continue;
        }
        p.perms.entry(perm.role.clone()).or_default().push(perm);
    }
    p
}

pub(super) fn load_principal(tenant: &str, user: &str) -> Principal {
    spi::as_owner(|| {
        Spi::connect(|_c| {
            let mut a = Vec::new();
            spi::select_latest(&format!("SELECT role, (EXTRACT(EPOCH FROM valid_from) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8,
                        (EXTRACT(EPOCH FROM valid_until) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8
                   FROM {}
                  WHERE tenant OPERATOR(pg_catalog.=) $1 AND user_id OPERATOR(pg_catalog.=) $2", crate::spi::local_table("authz_assignment")), &[tenant, user], |r| {
                a.push(Assignment {
                    role: r.get(1)?.unwrap_or_default(),
                    valid_from_us: r.get(2)?.unwrap_or(i64::MAX),
                    valid_until_us: r.get(3)?,
                });
                Ok(())
            })?;
            let mut attrs = Value::Null;
            spi::select_latest(&format!("SELECT attrs FROM {} WHERE tenant OPERATOR(pg_catalog.=) $1 AND user_id OPERATOR(pg_catalog.=) $2", crate::spi::local_table("authz_principal")), &[tenant, user], |r| {
                attrs = r.get::<JsonB>(1)?.map(|j| j.0).unwrap_or(Value::Null);
                Ok(())
            })?;
            Ok::<_, pgrx::spi::Error>((a, attrs))
        })
        .unwrap_or_else(|e| spi_fail(e))
    })
}

/// A cached value with the cache generation and `spi::cache_stamp()`
/// it was loaded under.
pub(super) type Stamped<V> = (u64, i64, Rc<V>);

pub(super) fn cached<K: std::hash::Hash + Eq + Clone, V>(
    map: &'static std::thread::LocalKey<RefCell<HashMap<K, Stamped<V>>>>,
    key: K,
    load: impl FnOnce() -> V,
) -> Rc<V> {
    let gen = crate::access::current_generation();
    if let Some(v) = map.with(|m| {
        m.borrow()
            .get(&key)
            .filter(|(g, stamp, _)| *g == gen && spi::cache_stamp_valid(*stamp))
            .map(|(_, _, v)| v.clone())
    }) {
        return v;
    }
    let v = Rc::new(load());
    let stamp = spi::cache_stamp();
    map.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() > 4096 {
            m.clear();
        }
        m.insert(key, (gen, stamp, v.clone()));
    });
    v
}

pub(super) fn now_us() -> i64 {
    // SAFETY: reads a backend-global timestamp (stable within a statement).
    context::to_unix_us(unsafe { pg_sys::GetCurrentStatementStartTimestamp() })
}

/// The last answer of [`roles_of`], and what it holds under: the cache
/// generation and stamp, the (tenant, user), and the interval of time over
/// which the user's active assignments stay the same. Every audit record
/// asks, usually for the same actor as the one before.
struct LastRoles {
    gen: u64,
    stamp: i64,
    tenant: String,
    user: String,
    window: (i64, i64),
    roles: Option<String>,
}

thread_local! {
    static LAST_ROLES: RefCell<Option<LastRoles>> = const { RefCell::new(None) };
}

/// Effective roles of a user, for the audit record (None without policy).
pub fn roles_of(tenant: &str, user: &str) -> Option<String> {
    if !spi::in_transaction() {
        return None;
    }
    let gen = crate::access::current_generation();
    let now = now_us();
    let last = LAST_ROLES.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|l| {
                l.gen == gen
                    && spi::cache_stamp_valid(l.stamp)
                    && l.tenant == tenant
                    && l.user == user
                    && l.window.0 <= now
                    && now < l.window.1
            })
            .map(|l| l.roles.clone())
    });
    if let Some(roles) = last {
        return roles;
    }
    spi::relation_oid_cached(c"authz_assignment")?;
    let policy = cached(&POLICIES, tenant.to_string(), || load_policy(tenant));
    let pr = cached(&PRINCIPALS, (tenant.to_string(), user.to_string()), || {
        load_principal(tenant, user)
    });
    let r = effective_roles(&policy, &pr.0, now);
    let roles = (!r.is_empty()).then(|| r.join(","));
    LAST_ROLES.with(|l| {
        *l.borrow_mut() = Some(LastRoles {
            gen,
            stamp: spi::cache_stamp(),
            tenant: tenant.to_string(),
            user: user.to_string(),
            window: tenantguard_core::authz::roles_window(&pr.0, now),
            roles: roles.clone(),
        })
    });
    roles
}
