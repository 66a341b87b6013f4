//! `authorize()`: RBAC + ABAC inside the engine.
//!
//! Policies live in the `authz_*` tables, per tenant, with global templates
//! under tenant `*` that a tenant may override. Each backend compiles a
//! tenant's policy once and keeps it until any backend changes the tables
//! (the same shared-invalidation path as revocation, see `access.rs`), so a
//! role change applies from the next call in every session. Roles in a
//! token are never consulted: the tables are authoritative.

use crate::context::{self, StatementId};
use crate::error::raise_msg;
use crate::session;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use tenantguard_core::authz::{decide_among, effective_roles, Assignment, Effect, Perm, Policy};
use tenantguard_core::compile::{spec_id, spec_string, summary, ColKind, Column, Plan};
use tenantguard_core::cond::{self, Env};

/// One slot value list of a statement: (action, spec, values).
type SlotValues = (String, String, Rc<Vec<Option<String>>>);

type Principal = (Vec<Assignment>, Value);

thread_local! {
    static POLICIES: RefCell<HashMap<String, Stamped<Policy>>> = RefCell::new(HashMap::new());
    static PRINCIPALS: RefCell<HashMap<(String, String), Stamped<Principal>>> = RefCell::new(HashMap::new());
}

fn spi_fail(e: pgrx::spi::Error) -> ! {
    raise_msg(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("tenantguard authz: {e}"),
    )
}

fn load_policy(tenant: &str) -> Policy {
    let mut roles: HashMap<String, (bool, Vec<String>)> = HashMap::new();
    let mut perms: Vec<(bool, Perm)> = Vec::new();
    session::as_owner(|| {
        Spi::connect(|_c| {
            session::select_latest("SELECT tenant OPERATOR(pg_catalog.<>) '*', role, inherits FROM tenantguard.authz_role
                  WHERE tenant OPERATOR(pg_catalog.=) ANY (ARRAY['*', $1])", &[tenant], |r| {
                let own: bool = r.get(1)?.unwrap_or(false);
                let role: String = r.get(2)?.unwrap_or_default();
                let inh: Vec<String> = r.get(3)?.unwrap_or_default();
                // A tenant's own definition overrides the global template.
                if own || !roles.get(&role).is_some_and(|(o, _)| *o) {
                    roles.insert(role, (own, inh));
                }
                Ok(())
            })?;
            session::select_latest("SELECT tenant OPERATOR(pg_catalog.<>) '*', id, role, action, condition, effect
                   FROM tenantguard.authz_permission WHERE tenant OPERATOR(pg_catalog.=) ANY (ARRAY['*', $1]) ORDER BY id", &[tenant], |r| {
                let src: Option<String> = r.get(5)?;
                let parsed = src.as_ref().map(|s| (s.clone(), cond::parse(s)));
                let condition = match parsed {
                    None => None,
                    Some((s, Ok(e))) => Some((s, e)),
                    // Stored conditions were checked at grant time; one that
                    // no longer parses can never be satisfied.
                    Some((s, Err(_))) => Some((s, cond::parse("false").expect("literal false parses"))),
                };
                perms.push((
                    r.get(1)?.unwrap_or(false),
                    Perm {
                        id: r.get(2)?.unwrap_or(0),
                        role: r.get(3)?.unwrap_or_default(),
                        action: r.get(4)?.unwrap_or_default(),
                        condition,
                        effect: if r.get::<String>(6)?.as_deref() == Some("forbid") { Effect::Forbid } else { Effect::Permit },
                    },
                ));
                Ok(())
            })?;
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

fn load_principal(tenant: &str, user: &str) -> Principal {
    session::as_owner(|| {
        Spi::connect(|_c| {
            let mut a = Vec::new();
            session::select_latest("SELECT role, (EXTRACT(EPOCH FROM valid_from) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8,
                        (EXTRACT(EPOCH FROM valid_until) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8
                   FROM tenantguard.authz_assignment
                  WHERE tenant OPERATOR(pg_catalog.=) $1 AND user_id OPERATOR(pg_catalog.=) $2", &[tenant, user], |r| {
                a.push(Assignment {
                    role: r.get(1)?.unwrap_or_default(),
                    valid_from_us: r.get(2)?.unwrap_or(i64::MAX),
                    valid_until_us: r.get(3)?,
                });
                Ok(())
            })?;
            let mut attrs = Value::Null;
            session::select_latest("SELECT attrs FROM tenantguard.authz_principal WHERE tenant OPERATOR(pg_catalog.=) $1 AND user_id OPERATOR(pg_catalog.=) $2", &[tenant, user], |r| {
                attrs = r.get::<JsonB>(1)?.map(|j| j.0).unwrap_or(Value::Null);
                Ok(())
            })?;
            Ok::<_, pgrx::spi::Error>((a, attrs))
        })
        .unwrap_or_else(|e| spi_fail(e))
    })
}

/// A cached value with the cache generation and `session::cache_stamp()`
/// it was loaded under.
type Stamped<V> = (u64, i64, Rc<V>);

fn cached<K: std::hash::Hash + Eq + Clone, V>(
    map: &'static std::thread::LocalKey<RefCell<HashMap<K, Stamped<V>>>>,
    key: K,
    load: impl FnOnce() -> V,
) -> Rc<V> {
    let gen = crate::access::current_generation();
    if let Some(v) = map.with(|m| {
        m.borrow()
            .get(&key)
            .filter(|(g, stamp, _)| *g == gen && session::cache_stamp_valid(*stamp))
            .map(|(_, _, v)| v.clone())
    }) {
        return v;
    }
    let v = Rc::new(load());
    let stamp = session::cache_stamp();
    map.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() > 4096 {
            m.clear();
        }
        m.insert(key, (gen, stamp, v.clone()));
    });
    v
}

fn now_us() -> i64 {
    // SAFETY: reads a backend-global timestamp (stable within a statement).
    context::to_unix_us(unsafe { pg_sys::GetCurrentStatementStartTimestamp() })
}

struct Subject {
    policy: Rc<Policy>,
    roles: Vec<String>,
    principal: Value,
    /// The statement's start time (Unix µs): `now` in conditions.
    now_us: i64,
    /// Per action: the permissions that apply to these roles (pattern
    /// matching done once per statement, not once per row), as granted and
    /// with this statement's principal and instant folded into their
    /// conditions (cond::bind_principal).
    by_action: RefCell<Vec<(String, Applicable)>>,
}

type Perms = Rc<Vec<(String, Perm)>>;

#[derive(Clone)]
struct Applicable {
    granted: Perms,
    bound: Perms,
}

impl Subject {
    fn applicable(&self, action: &str) -> Applicable {
        // A statement asks about a handful of actions: a short list beats
        // hashing the action string on every row.
        if let Some((_, a)) = self.by_action.borrow().iter().find(|(k, _)| k == action) {
            return a.clone();
        }
        let granted = tenantguard_core::authz::applicable(&self.policy, &self.roles, action);
        let bound = granted
            .iter()
            .map(|(role, p)| {
                let mut p = p.clone();
                if let Some((_, e)) = p.condition.as_mut() {
                    *e = cond::bind_principal(e, &self.principal, self.now_us);
                }
                (role.clone(), p)
            })
            .collect();
        let a = Applicable {
            granted: Rc::new(granted),
            bound: Rc::new(bound),
        };
        let mut m = self.by_action.borrow_mut();
        if m.len() >= 64 {
            m.clear();
        }
        m.push((action.to_string(), a.clone()));
        a
    }
}

thread_local! {
    /// The compiled subject of the current statement (see context::statement_key).
    /// Keyed by the statement and the exact token: a hit means this token
    /// already passed the context checks in this statement.
    /// (The token is identified by gucs::context_generation.)
    static SUBJECT: RefCell<Option<(StatementId, u64, Rc<Subject>)>> = const { RefCell::new(None) };
}

fn subject() -> Rc<Subject> {
    let key = context::statement_key();
    let gen = crate::gucs::context_generation();
    if crate::gucs::context_present() {
        if let Some(s) = SUBJECT.with(|m| {
            m.borrow()
                .as_ref()
                .filter(|(k, g, _)| *k == key && *g == gen)
                .map(|(_, _, s)| s.clone())
        }) {
            return s;
        }
    }
    // Verifies and checks the context (or raises, failing closed).
    let c = context::require_keyed(key);
    let s = Rc::new(build_subject(&c));
    SUBJECT.with(|m| *m.borrow_mut() = Some((key, gen, s.clone())));
    s
}

fn build_subject(c: &tenantguard_core::token::Claims) -> Subject {
    let policy = cached(&POLICIES, c.tid.clone(), || load_policy(&c.tid));
    let pr = cached(&PRINCIPALS, (c.tid.clone(), c.sub.clone()), || {
        load_principal(&c.tid, &c.sub)
    });
    let now = now_us();
    let roles = effective_roles(&policy, &pr.0, now);
    // principal = token attrs, overridden by the table's attrs, plus id/tenant/roles.
    let mut p = serde_json::Map::new();
    for (k, v) in &c.attrs {
        p.insert(k.clone(), v.clone());
    }
    if let Value::Object(m) = &pr.1 {
        for (k, v) in m {
            p.insert(k.clone(), v.clone());
        }
    }
    p.insert("id".into(), json!(c.sub));
    p.insert("tenant".into(), json!(c.tid));
    p.insert("roles".into(), json!(roles));
    Subject {
        policy,
        roles,
        principal: Value::Object(p),
        now_us: now,
        by_action: RefCell::new(Vec::new()),
    }
}

/// Effective roles of a user, for the audit record (None without policy).
pub fn roles_of(tenant: &str, user: &str) -> Option<String> {
    if session::relation_oid(c"authz_assignment").is_none() || !session::in_transaction() {
        return None;
    }
    let policy = cached(&POLICIES, tenant.to_string(), || load_policy(tenant));
    let pr = cached(&PRINCIPALS, (tenant.to_string(), user.to_string()), || {
        load_principal(tenant, user)
    });
    let r = effective_roles(&policy, &pr.0, now_us());
    (!r.is_empty()).then(|| r.join(","))
}

fn run(
    action: &str,
    resource: &Value,
    context_v: &Value,
    explain: bool,
) -> tenantguard_core::authz::Decision {
    run_with(action, resource, &[], context_v, explain)
}

fn run_with(
    action: &str,
    resource: &Value,
    resource_pairs: &[(&str, Option<&str>)],
    context_v: &Value,
    explain: bool,
) -> tenantguard_core::authz::Decision {
    let s = subject();
    let env = Env {
        principal: &s.principal,
        resource,
        resource_pairs,
        context: context_v,
        now_us: s.now_us,
    };
    let a = s.applicable(action);
    // explain() traces the conditions as granted (attribute names, not
    // their folded values); a decision reads the bound ones.
    let perms = if explain { &a.granted } else { &a.bound };
    decide_among(perms, &s.roles, &env, explain)
}

thread_local! {
    /// Actions whose denial was already considered for sampling in this
    /// statement: an RLS scan denying many rows yields one record.
    static DENIALS_SEEN: RefCell<Option<(StatementId, Vec<String>)>> = const { RefCell::new(None) };
    /// xorshift64* state for the sampling draw, seeded from the OS once.
    static DRAW: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn draw() -> f64 {
    DRAW.with(|d| {
        let mut x = d.get();
        if x == 0 {
            let mut b = [0u8; 8];
            let _ = getrandom::getrandom(&mut b);
            x = u64::from_le_bytes(b) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        d.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Sample a denied decision into the audit trail
/// (`tenantguard.authz_deny_sample`). The server-log line is always
/// written for a sampled denial, so it survives when the transaction
/// aborts (require()); the chained audit record `authz:deny` is added when
/// the transaction can write (not in a parallel worker, not read-only) and
/// will not abort because of this denial.
fn sample_denial(
    action: &str,
    resource: &Value,
    d: &tenantguard_core::authz::Decision,
    raising: bool,
) {
    let rate = crate::gucs::AUTHZ_DENY_SAMPLE.get();
    if d.allowed || rate <= 0.0 {
        return;
    }
    // The top-level statement, not the command id: our own audit insert
    // advances the command counter in the middle of a scan.
    let (stmt, _, gen) = context::statement_key();
    let key = (stmt, 0, gen);
    let first = DENIALS_SEEN.with(|m| {
        let mut m = m.borrow_mut();
        match m.as_mut() {
            Some((k, seen)) if *k == key => {
                if seen.iter().any(|a| a == action) {
                    false
                } else {
                    seen.push(action.to_string());
                    true
                }
            }
            _ => {
                *m = Some((key, vec![action.to_string()]));
                true
            }
        }
    });
    if !first || (rate < 1.0 && draw() >= rate) {
        return;
    }
    let Ok(Some(c)) = context::current() else {
        return;
    };
    let detail = json!({
        "action": action,
        "user": c.sub,
        "roles": d.roles,
        "forbidden_by": d.forbidden_by,
        "resource": resource,
        "sample_rate": rate,
    });
    context::alert_json("authz_denied", "sampled", action, detail.clone());
    // SAFETY: plain reads of backend-global transaction state.
    let writable = unsafe {
        !pg_sys::IsInParallelMode() && !pg_sys::XactReadOnly && !pg_sys::RecoveryInProgress()
    };
    if !raising && writable && !crate::gucs::audit_keyring().is_empty() {
        crate::audit::append_deferred(crate::audit::Entry {
            tenant: Some(c.tid.clone()),
            action: "authz:deny".into(),
            tbl: None,
            row_key: None,
            old_values: None,
            new_values: None,
            payload: Some(detail.to_string()),
        });
    }
}

/// May the current principal do `action` on `resource`? Default deny.
#[pg_extern(stable, parallel_safe)]
fn authorize(
    action: &str,
    resource: default!(JsonB, "'{}'"),
    context: default!(JsonB, "'{}'"),
) -> bool {
    let d = run(action, &resource.0, &context.0, false);
    sample_denial(action, &resource.0, &d, false);
    d.allowed
}

/// RBAC-only form for RLS policies: no jsonb is built per row.
#[pg_extern(stable, parallel_safe)]
fn authorize_action(action: &str) -> bool {
    let d = run(action, &Value::Null, &Value::Null, false);
    sample_denial(action, &Value::Null, &d, false);
    d.allowed
}

/// Row-level form for RLS policies: attributes as parallel arrays.
///
/// Called once per row, so the arguments are read straight from the call
/// frame: the two text[] arrays are walked in place with text's known
/// layout (pgrx's generic Array looks the element type up in the syscache
/// on every call), and every string is borrowed, not copied.
#[pg_extern(
    stable,
    parallel_safe,
    sql = "CREATE FUNCTION \"authorize_attrs\"(\"action\" TEXT, \"keys\" TEXT[], \"vals\" TEXT[]) RETURNS bool
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'authorize_attrs_wrapper';"
)]
fn authorize_attrs(fcinfo: pg_sys::FunctionCallInfo) -> bool {
    // SAFETY: fmgr calls this STRICT function with its three declared
    // arguments, none NULL: a text and two text[], alive for the call.
    let (action, keys, vals) = unsafe {
        (
            arg_text(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0)),
            TextArray::new(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 1)),
            TextArray::new(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 2)),
        )
    };
    let mut pairs: Vec<(&str, Option<&str>)> = Vec::with_capacity(keys.len());
    for (k, v) in keys.zip(vals) {
        let Some(k) = k else { continue };
        pairs.push((k, v));
    }
    let d = run_with(action, &Value::Null, &pairs, &Value::Null, false);
    if !d.allowed && crate::gucs::AUTHZ_DENY_SAMPLE.get() > 0.0 {
        let resource: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| {
                let j = match cond::text_value(*v) {
                    cond::Val::Num(n) => json!(n),
                    cond::Val::Str(t) => Value::String(t),
                    _ => Value::Null,
                };
                (k.to_string(), j)
            })
            .collect();
        sample_denial(action, &Value::Object(resource), &d, false);
    }
    d.allowed
}

thread_local! {
    /// Whether the database encoding is UTF-8 (fixed for a backend's life).
    static UTF8_DB: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Text of the call as &str: in a UTF-8 database Postgres has already
/// validated it; in any other, it is checked here.
fn utf8(b: &[u8]) -> &str {
    let utf8_db = UTF8_DB.with(|c| match c.get() {
        Some(known) => known,
        None => {
            // SAFETY: reads the database encoding, set at connection.
            let known = unsafe { pg_sys::GetDatabaseEncoding() == pg_sys::pg_enc::PG_UTF8 as i32 };
            c.set(Some(known));
            known
        }
    });
    if utf8_db {
        // SAFETY: text in a UTF-8 database is valid UTF-8 (verified on input).
        return unsafe { std::str::from_utf8_unchecked(b) };
    }
    std::str::from_utf8(b).unwrap_or_else(|_| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            "tenantguard: authorize_attrs() needs UTF-8 text",
        )
    })
}

/// A text argument, borrowed (detoasted first only if it has to be).
///
/// SAFETY: `d` must be a non-null text datum that lives for the call.
unsafe fn arg_text<'a>(d: pg_sys::Datum) -> &'a str {
    let p = d.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: p is a valid varlena; plain and short-header values are read
    // in place, anything compressed or external is detoasted.
    let v = unsafe {
        if pgrx::varlena::varatt_is_4b_u(p)
            || (pgrx::varlena::varatt_is_1b(p) && !pgrx::varlena::varatt_is_1b_e(p))
        {
            p
        } else {
            pg_sys::pg_detoast_datum_packed(p)
        }
    };
    // SAFETY: v is a valid, untoasted varlena.
    utf8(unsafe { pgrx::varlena::varlena_to_byte_slice(v) })
}

/// The elements of a text[] argument, walked in place (NULL elements as
/// None): what deconstruct_array() does, without its allocations.
struct TextArray<'a> {
    data: *const u8,
    bitmap: *const u8,
    next: usize,
    n: usize,
    _call: std::marker::PhantomData<&'a ()>,
}

impl TextArray<'_> {
    /// SAFETY: `d` must be a non-null text[] datum that lives for the call.
    unsafe fn new(d: pg_sys::Datum) -> Self {
        let p = d.cast_mut_ptr::<pg_sys::varlena>();
        // SAFETY: per the contract; a plain 4-byte-header array is used in
        // place, anything else (compressed, external, short) detoasted.
        let arr = unsafe {
            if pgrx::varlena::varatt_is_4b_u(p) {
                p
            } else {
                pg_sys::pg_detoast_datum(p)
            }
        } as *const pg_sys::ArrayType;
        // SAFETY: arr is an untoasted array: a header, ndim dimensions and
        // lower bounds, the null bitmap when dataoffset != 0, then the data
        // (array.h: ARR_DIMS, ARR_NULLBITMAP, ARR_DATA_OFFSET).
        unsafe {
            if (*arr).elemtype != pg_sys::TEXTOID {
                raise_msg(
                    PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                    "tenantguard: authorize_attrs() takes text[] attributes",
                );
            }
            let ndim = (*arr).ndim.max(0) as usize;
            let base = arr as *const u8;
            let header = std::mem::size_of::<pg_sys::ArrayType>() + 2 * 4 * ndim;
            let dims = base.add(std::mem::size_of::<pg_sys::ArrayType>()) as *const i32;
            let n = if ndim == 0 {
                0
            } else {
                (0..ndim).fold(1usize, |acc, i| {
                    acc.saturating_mul((*dims.add(i)).max(0) as usize)
                })
            };
            let (bitmap, offset) = if (*arr).dataoffset != 0 {
                (base.add(header), (*arr).dataoffset as usize)
            } else {
                (std::ptr::null(), (header + 7) & !7)
            };
            TextArray {
                data: base.add(offset),
                bitmap,
                next: 0,
                n,
                _call: std::marker::PhantomData,
            }
        }
    }

    fn len(&self) -> usize {
        self.n
    }
}

impl<'a> Iterator for TextArray<'a> {
    type Item = Option<&'a str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.n {
            return None;
        }
        let i = self.next;
        self.next += 1;
        // SAFETY: i < n, the number of elements; the bitmap has a bit per
        // element; each non-null element is an untoasted text whose size
        // moves the cursor, then aligned to 4 bytes (text's typalign 'i'),
        // as array_iter_next() does.
        unsafe {
            if !self.bitmap.is_null() && *self.bitmap.add(i / 8) & (1 << (i % 8)) == 0 {
                return Some(None);
            }
            let v = self.data as *const pg_sys::varlena;
            let size = pgrx::varlena::varsize_any(v);
            let end = self.data.add(size);
            self.data = end.add((4 - (end as usize & 3)) & 3);
            Some(Some(utf8(pgrx::varlena::varlena_to_byte_slice(v))))
        }
    }
}

/// As authorize(), but raises 42501 naming the action when the answer is no.
#[pg_extern(stable, parallel_safe)]
fn require(action: &str, resource: default!(JsonB, "'{}'"), context: default!(JsonB, "'{}'")) {
    let d = run(action, &resource.0, &context.0, false);
    if !d.allowed {
        sample_denial(action, &resource.0, &d, true);
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("not authorized: {action}"),
            "tenantguard.explain_authorize() shows the roles, permissions and conditions considered."
        );
    }
}

/// The decision with its reasons: roles considered, permissions matched,
/// the forbid that won, conditions that failed and their operand values.
#[pg_extern(stable, parallel_safe)]
fn explain_authorize(
    action: &str,
    resource: default!(JsonB, "'{}'"),
    context: default!(JsonB, "'{}'"),
) -> JsonB {
    let d = run(action, &resource.0, &context.0, true);
    JsonB(json!({
        "action": action,
        "decision": if d.allowed { "allow" } else { "deny" },
        "roles": d.roles,
        "forbidden_by": d.forbidden_by,
        "matched": d.matched,
        "default_deny": d.matched.iter().all(|m| !m.satisfied),
    }))
}

/// Parse and type-check a condition; raises 22023 with the position.
#[pg_extern(immutable, strict, parallel_safe)]
fn check_condition(condition: &str) -> bool {
    match cond::parse(condition) {
        Ok(_) => true,
        Err(e) => raise_msg(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid condition {e}"),
        ),
    }
}

// ------------------------------------------------ compiled policy form

thread_local! {
    /// Plans rebuilt from the spec strings carried in policies.
    static PLANS: RefCell<HashMap<(String, String), Rc<Plan>>> = RefCell::new(HashMap::new());
    /// This statement's slot values, per (action, spec).
    static SLOTS: RefCell<Option<(StatementId, u64, Vec<SlotValues>)>> =
        const { RefCell::new(None) };
}

fn plan_for(action: &str, id: &str) -> Rc<Plan> {
    let key = (action.to_string(), id.to_string());
    if let Some(p) = PLANS.with(|m| m.borrow().get(&key).cloned()) {
        return p;
    }
    let spec = session::as_owner(|| {
        Spi::get_one_with_args::<String>(
            "SELECT spec FROM tenantguard.authz_compiled WHERE spec_id OPERATOR(pg_catalog.=) $1 AND action OPERATOR(pg_catalog.=) $2",
            &[id.into(), action.into()],
        )
    })
    .unwrap_or_else(|e| spi_fail(e));
    let bad = |why: &str| -> ! {
        raise_msg(
            if why.contains("missing") {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            } else {
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED
            },
            format!("tenantguard: compiled authorize policy for {action}: {why}; regenerate it with tenantguard.authorize_policy()"),
        )
    };
    let Some(spec) = spec else {
        bad("its spec is missing")
    };
    if spec_id(&spec) != id {
        bad("its spec was altered");
    }
    let p = Rc::new(Plan::from_spec(action, &spec).unwrap_or_else(|e| bad(&e)));
    PLANS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= 256 {
            m.clear();
        }
        m.insert(key, p.clone());
    });
    p
}

/// One per-statement value of a policy generated by authorize_policy():
/// which rules apply to the current principal for the action, and the
/// values of the condition parts that do not read the row. Called from
/// scalar sub-selects (InitPlans), so once per statement, not per row.
/// Without a context it raises "no tenant context", like every accessor.
#[pg_extern(stable, strict, parallel_safe)]
fn authz_slot(action: &str, spec_id: &str, slot: i32) -> Option<String> {
    let key = context::statement_key();
    let raw = crate::gucs::context_generation();
    let hit = SLOTS.with(|m| {
        m.borrow().as_ref().and_then(|(k, t, entries)| {
            (*k == key && *t == raw)
                .then(|| {
                    entries
                        .iter()
                        .find(|(a, s, _)| a == action && s == spec_id)
                        .map(|e| e.2.clone())
                })
                .flatten()
        })
    });
    let values = match hit {
        Some(v) => v,
        None => {
            let plan = plan_for(action, spec_id);
            let s = subject();
            let env = Env {
                principal: &s.principal,
                resource: &Value::Null,
                resource_pairs: &[],
                context: &Value::Null,
                now_us: s.now_us,
            };
            let v = Rc::new(plan.slots(&s.applicable(action).granted, &env));
            if v.first().and_then(|f| f.as_deref()) == Some("true") {
                pgrx::debug1!(
                    "tenantguard: compiled policy for {action}: this statement is answered by the interpreter (a rule of this principal is not in the policy, or an attribute is null, missing or of another type)"
                );
            }
            SLOTS.with(|m| {
                let mut m = m.borrow_mut();
                match m.as_mut() {
                    Some((k, t, entries)) if *k == key && *t == raw => {
                        entries.push((action.to_string(), spec_id.to_string(), v.clone()))
                    }
                    _ => {
                        *m = Some((
                            key,
                            raw,
                            vec![(action.to_string(), spec_id.to_string(), v.clone())],
                        ))
                    }
                }
            });
            v
        }
    };
    usize::try_from(slot)
        .ok()
        .and_then(|i| values.get(i).cloned())
        .flatten()
}

fn policy_name_for(action: &str) -> String {
    let mut s: String = action
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(50);
    format!("tg_authz_{s}")
}

/// Generate (and unless dry_run, create) an RLS policy on `tbl` that admits
/// a row when authorize(action, <the row's columns>) would, with the
/// conditions translated to SQL: no function call per row. `columns` maps
/// `resource.<name>` to the column of the same name. Re-run it after
/// granting a new condition for the action: until then statements whose
/// principal holds that condition are answered by the interpreter (still
/// correct, slower). Returns the DDL.
#[pg_extern(volatile, parallel_unsafe)]
fn authorize_policy(
    tbl: Option<pgrx::PgRelation>,
    action: Option<&str>,
    columns: Option<Vec<Option<String>>>,
    policy_name: default!(Option<&str>, "NULL"),
    restrictive: default!(Option<bool>, true),
    command: default!(Option<&str>, "'SELECT'"),
    dry_run: default!(Option<bool>, false),
) -> String {
    let null = |what: &str| -> ! {
        raise_msg(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("authorize_policy: {what} must not be NULL"),
        )
    };
    let Some(tbl) = tbl else { null("tbl") };
    let Some(action) = action else { null("action") };
    let columns: Vec<String> = columns
        .unwrap_or_else(|| null("columns"))
        .into_iter()
        .map(|c| c.unwrap_or_else(|| null("a column name")))
        .collect();
    let restrictive = restrictive.unwrap_or_else(|| null("restrictive"));
    let command = command.unwrap_or_else(|| null("command"));
    let dry_run = dry_run.unwrap_or_else(|| null("dry_run"));
    if !tenantguard_core::authz::valid_action(action) {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "invalid action {:?}: expected resource:verb, with * wildcards",
                action.chars().take(64).collect::<String>()
            ),
        );
    }
    if let Some(n) = policy_name {
        if n.is_empty() || n.len() > 63 {
            raise_msg(
                PgSqlErrorCode::ERRCODE_INVALID_NAME,
                "policy_name must be 1 to 63 bytes",
            );
        }
    }
    let oid = tbl.oid();
    drop(tbl);
    let cmd = command.to_ascii_uppercase();
    if !["SELECT", "UPDATE", "DELETE", "ALL"].contains(&cmd.as_str()) {
        raise_msg(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("command must be SELECT, UPDATE, DELETE or ALL, not {command:?}"),
        );
    }
    session::with_pinned_search_path(|| {
        let table = Spi::get_one_with_args::<String>(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
              WHERE c.oid OPERATOR(pg_catalog.=) $1",
            &[oid.into()],
        )
        .unwrap_or_else(|e| spi_fail(e))
        .unwrap_or_default();
        let mut cols = Vec::new();
        for name in &columns {
            let row = Spi::get_two_with_args::<String, bool>(
                "SELECT pg_catalog.format_type(atttypid, atttypmod), attnotnull FROM pg_catalog.pg_attribute
                  WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attname OPERATOR(pg_catalog.=) $2::pg_catalog.name
                    AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
                &[oid.into(), name.as_str().into()],
            )
            .unwrap_or((None, None));
            let (Some(ty), not_null) = row else {
                raise_msg(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                    format!("column {name:?} of {table} does not exist"),
                )
            };
            let Some(kind) = ColKind::from_pg(&ty) else {
                raise_msg(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!("column {name:?} has type {ty}; the compiled form supports text, varchar, smallint, integer, bigint, numeric and boolean (use tenantguard.authorize_attrs() for other types)"),
                )
            };
            cols.push(Column {
                attr: name.clone(),
                sql: pgrx::spi::quote_identifier(name),
                kind,
                not_null: not_null.unwrap_or(false),
            });
        }
        // Every condition, in every tenant, of a permission whose pattern
        // matches the action (the policy serves all tenants).
        let conds: Vec<String> = session::as_owner(|| {
            Spi::connect(|c| {
                let mut out = Vec::new();
                for r in c.select(
                    "SELECT DISTINCT action, condition FROM tenantguard.authz_permission WHERE condition IS NOT NULL",
                    None,
                    &[],
                )? {
                    let (Some(a), Some(cnd)) = (r.get::<String>(1)?, r.get::<String>(2)?) else { continue };
                    if tenantguard_core::authz::action_matches(&a, action) {
                        out.push(cnd);
                    }
                }
                Ok::<_, pgrx::spi::Error>(out)
            })
            .unwrap_or_else(|e| spi_fail(e))
        });
        let plan = Plan::new(action, cols.clone(), conds.clone());
        let mut sorted = conds;
        sorted.sort();
        sorted.dedup();
        let spec = spec_string(action, &cols, &sorted);
        let id = spec_id(&spec);
        let lit_action = pgrx::spi::quote_literal(action);
        let lit_spec = pgrx::spi::quote_literal(&id);
        let slot = |n: usize, cast: &str| {
            format!("(SELECT tenantguard.authz_slot({lit_action}, {lit_spec}, {n})::{cast})")
        };
        let mut obj = Vec::new();
        for c in &cols {
            obj.push(pgrx::spi::quote_literal(&c.attr));
            obj.push(c.sql.clone());
        }
        let fallback = format!(
            "tenantguard.authorize({lit_action}, pg_catalog.jsonb_build_object({}))",
            obj.join(", ")
        );
        let expr = plan.expression(&slot, &fallback);
        let name = pgrx::spi::quote_identifier(
            policy_name
                .map(str::to_string)
                .unwrap_or_else(|| policy_name_for(action)),
        );
        let kind = if restrictive {
            "RESTRICTIVE"
        } else {
            "PERMISSIVE"
        };
        let exists = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid OPERATOR(pg_catalog.=) $1 AND polname OPERATOR(pg_catalog.=) $2::pg_catalog.name)",
            &[oid.into(), policy_name.map(str::to_string).unwrap_or_else(|| policy_name_for(action)).into()],
        )
        .unwrap_or_else(|e| spi_fail(e))
        .unwrap_or(false);
        let mut ddl = Vec::new();
        if exists {
            ddl.push(format!("DROP POLICY {name} ON {table}"));
        }
        ddl.push(format!(
            "CREATE POLICY {name} ON {table} AS {kind} FOR {cmd} TO PUBLIC USING ({expr})"
        ));
        if !dry_run {
            session::as_owner(|| {
                Spi::run_with_args(
                    "INSERT INTO tenantguard.authz_compiled (spec_id, action, spec) VALUES ($1, $2, $3) ON CONFLICT (spec_id) DO NOTHING",
                    &[id.as_str().into(), action.into(), spec.as_str().into()],
                )
            })
            .unwrap_or_else(|e| spi_fail(e));
            for stmt in &ddl {
                Spi::run(stmt).unwrap_or_else(|e| {
                    raise_msg(
                        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                        format!("tenantguard: {stmt}: {e}"),
                    )
                });
            }
        }
        format!(
            "{}-- spec {id}: {spec}\n{};\n",
            summary(&plan),
            ddl.join(";\n")
        )
    })
}
