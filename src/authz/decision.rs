//! `authorize()`: RBAC + ABAC inside the engine: the decision.
//!
//! Policies live in the `authz_*` tables, per tenant, with global templates
//! under tenant `*` that a tenant may override. Each backend compiles a
//! tenant's policy once and keeps it until any backend changes the tables
//! (the same shared-invalidation path as revocation, see `access.rs`), so a
//! role change applies from the next call in every session. Roles in a
//! token are never consulted: the tables are authoritative.

use crate::context::{self, StatementId};
use crate::error::raise_msg;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use tenantguard_core::authz::{decide_among, effective_roles, Perm, Policy};
use tenantguard_core::cond::{self, Env};

use super::model::*;

pub(super) struct Subject {
    pub(super) policy: Rc<Policy>,
    pub(super) roles: Vec<String>,
    pub(super) principal: Value,
    /// The statement's start time (Unix µs): `now` in conditions.
    pub(super) now_us: i64,
    /// Per action: the permissions that apply to these roles (pattern
    /// matching done once per statement, not once per row), as granted and
    /// with this statement's principal and instant folded into their
    /// conditions (cond::bind_principal).
    pub(super) by_action: RefCell<Vec<(String, Applicable)>>,
}

pub(super) type Perms = Rc<Vec<(String, Perm)>>;

#[derive(Clone)]
pub(super) struct Applicable {
    pub(super) granted: Perms,
    pub(super) bound: Perms,
}

impl Subject {
    pub(super) fn applicable(&self, action: &str) -> Applicable {
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

pub(super) fn subject() -> Rc<Subject> {
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

pub(super) fn build_subject(c: &tenantguard_core::token::Claims) -> Subject {
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

pub(super) fn run(
    action: &str,
    resource: &Value,
    context_v: &Value,
    explain: bool,
) -> tenantguard_core::authz::Decision {
    run_with(action, resource, &[], context_v, explain)
}

pub(super) fn run_with(
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

pub(super) fn draw() -> f64 {
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
pub(super) fn sample_denial(
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
    crate::alerts::alert_json("authz_denied", "sampled", action, detail.clone());
    // SAFETY: plain reads of backend-global transaction state.
    let writable = unsafe {
        !pg_sys::IsInParallelMode() && !pg_sys::XactReadOnly && !pg_sys::RecoveryInProgress()
    };
    if !raising && writable && !crate::keys::audit_keyring().is_empty() {
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
pub(super) fn authorize(
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
pub(super) fn authorize_action(action: &str) -> bool {
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
pub(super) fn authorize_attrs(fcinfo: pg_sys::FunctionCallInfo) -> bool {
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
pub(super) fn utf8(b: &[u8]) -> &str {
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
pub(super) unsafe fn arg_text<'a>(d: pg_sys::Datum) -> &'a str {
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
pub(super) struct TextArray<'a> {
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

    pub(super) fn len(&self) -> usize {
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
pub(super) fn require(
    action: &str,
    resource: default!(JsonB, "'{}'"),
    context: default!(JsonB, "'{}'"),
) {
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
pub(super) fn explain_authorize(
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
pub(super) fn check_condition(condition: &str) -> bool {
    match cond::parse(condition) {
        Ok(_) => true,
        Err(e) => raise_msg(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid condition {e}"),
        ),
    }
}
