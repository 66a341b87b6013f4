//! The policy accessors (`tenantguard.tenant_id()`, `tenant_ids()`, the
//! typed variants, …): what a generated policy calls on every row. Each
//! answer is computed once per statement and kept (`answer`), checked
//! against the context's and the access rules' generations.

use super::bypass_state;
use super::*;
// ------------------------------------------------------- policy accessors
//
// The generated policies call these directly (`tenant_id = ANY
// (tenantguard.tenant_ids())`): an index scan evaluates them once, as its
// key, and a scan that filters calls them once per row. So they answer from
// a cache, with a copy of a finished datum: no claims lookup, string or
// array building per row.
//
// What an answer is tied to: a query execution (a portal: a statement, or
// a cursor across all its FETCHes) reads under the context in force when
// it first asks, as if the accessor ran once for it (an InitPlan, which
// is what earlier policies used, at a cost per statement). So a cursor's
// rows do not change tenant when the session sets another context before
// the next FETCH. The answer is computed again, with every check, when:
// - the context changes while that execution runs (a function's SET
//   clause, set_context() in a PL/pgSQL function, a savepoint rollback);
// - a revocation, allowlist or grant changes anywhere (the access rules'
//   generation), or the signing keys change;
// - a bypass starts or ends;
// - the token expires (checked against each statement's start, so a FETCH
//   after expiry fails).
// Outside a portal (planning, parallel workers) the answer is cached per
// statement and context instead.

/// What a finished answer depends on: the token (the context's and the
/// keyring's generations) and, for the scope without a context, whether a
/// bypass is in force (here, or in a worker's leader).
type BuiltKey = (u64, u64, bool, bool);

thread_local! {
    static BUILT: RefCell<(Option<BuiltKey>, [Option<Answer>; ACCESSORS])> =
        const { RefCell::new((None, [const { None }; ACCESSORS])) };
}

/// This statement's checks for `which` (they raise on failure: expiry,
/// revocation, allowlist, no context), then its value: built once per token
/// and reused by later statements.
fn checked_value(
    which: Accessor,
    by_value: bool,
    len: Option<usize>,
    stmt: StatementId,
    build: impl FnOnce() -> pg_sys::Datum,
) -> (pg_sys::Datum, Answer, Option<i64>) {
    // Outside a bypass, every accessor needs this statement's checked
    // context, and an answer depends on the token alone: kept with the
    // token's verification, so the next transaction that sets the same
    // token copies it out instead of building it again.
    if !bypass_state::active() && !bypass_state::leader_active() {
        let v = require_verified(stmt);
        let hit = v.built.borrow()[which as usize].clone();
        if let Some(a) = hit {
            return (copy_out(&a), a, Some(v.exp));
        }
        let d = build();
        let kept = keep(d, by_value, len);
        v.built.borrow_mut()[which as usize] = Some(kept.clone());
        return (d, kept, Some(v.exp));
    }
    if which.is_scope() {
        let _ = scope_or_bypass();
    } else {
        let _ = require();
    }
    let key: BuiltKey = (
        gucs::context_generation(),
        crate::keys::keyring_generation(),
        bypass_state::active(),
        bypass_state::leader_active(),
    );
    let hit = BUILT.with(|b| {
        let b = b.borrow();
        if b.0 == Some(key) {
            b.1[which as usize].clone()
        } else {
            None
        }
    });
    if let Some(a) = hit {
        return (copy_out(&a), a, None);
    }
    let d = build();
    let kept = keep(d, by_value, len);
    BUILT.with(|b| {
        let mut b = b.borrow_mut();
        if b.0 != Some(key) {
            *b = (Some(key), [const { None }; ACCESSORS]);
        }
        b.1[which as usize] = Some(kept.clone());
    });
    (d, kept, None)
}

/// What an answer depends on besides the portal (or statement) it serves.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Validity {
    bypass: bool,
    access_gen: u64,
    keyring_gen: u64,
}

/// Answers for one live portal, dropped with the portal's memory.
struct Pin {
    portal: usize,
    validity: Validity,
    /// Statement start timestamps from this one on are past the token's
    /// `exp` (Postgres µs).
    expires: i64,
    answers: [Option<Answer>; ACCESSORS],
}

/// Answers outside any portal, per statement and context.
type StatementKey = (StatementId, u64, bool);

thread_local! {
    static PINS: RefCell<Vec<Pin>> = const { RefCell::new(Vec::new()) };
    static PER_STATEMENT: RefCell<(Option<StatementKey>, [Option<Answer>; ACCESSORS])> =
        const { RefCell::new((None, [const { None }; ACCESSORS])) };
}

/// A fresh palloc'd copy of a cached answer, in the caller's memory
/// context, as a newly built datum would be.
fn copy_out(a: &Answer) -> pg_sys::Datum {
    match a {
        Answer::Value(d) => *d,
        Answer::Inline { len, buf } => palloc_copy(&buf[..*len as usize]),
        Answer::Bytes(b) => palloc_copy(b),
    }
}

/// A palloc'd copy of a flattened datum.
fn palloc_copy(b: &[u8]) -> pg_sys::Datum {
    // SAFETY: palloc'd `b.len()` bytes, filled with a complete datum of the
    // accessor's type.
    unsafe {
        let p = pg_sys::palloc(b.len()) as *mut u8;
        std::ptr::copy_nonoverlapping(b.as_ptr(), p, b.len());
        pg_sys::Datum::from(p)
    }
}

/// Keep a copy of a datum just built by pgrx.
fn keep(d: pg_sys::Datum, by_value: bool, len: Option<usize>) -> Answer {
    if by_value {
        return Answer::Value(d);
    }
    let p = d.cast_mut_ptr::<u8>();
    // SAFETY: `d` is a flat varlena (text, arrays) or a `len`-byte
    // fixed-length value (uuid), freshly built.
    unsafe {
        let n = len.unwrap_or_else(|| pgrx::varlena::varsize_any(p.cast()));
        let bytes = std::slice::from_raw_parts(p, n);
        if n <= INLINE_ANSWER {
            let mut buf = [0u8; INLINE_ANSWER];
            buf[..n].copy_from_slice(bytes);
            Answer::Inline { len: n as u8, buf }
        } else {
            Answer::Bytes(Rc::from(bytes))
        }
    }
}

/// Memory-context callback of a portal: the portal is gone, and so is its
/// pin (its address may be reused by a later portal). Must not raise.
unsafe extern "C-unwind" fn drop_pin(arg: *mut std::ffi::c_void) {
    let portal = arg as usize;
    let _ = PINS.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.retain(|x| x.portal != portal);
        }
    });
}

/// The context changed (assign hook): answers pinned to the portal running
/// now no longer hold; other portals (open cursors) keep theirs.
pub fn context_changed() {
    // SAFETY: plain read of a backend-global pointer.
    let portal = unsafe { pg_sys::ActivePortal } as usize;
    if portal == 0 {
        return;
    }
    let _ = PINS.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if let Some(pin) = p.iter_mut().find(|x| x.portal == portal) {
                pin.answers = [const { None }; ACCESSORS];
            }
        }
    });
}

/// The accessor's answer: from the running portal's pin, or (outside a
/// portal) this statement's cache, or `build()`'s datum, kept on the way
/// out. `build` returns a datum of the accessor's SQL type: pass-by-value
/// when `by_value`, otherwise a flat varlena or a `len`-byte value.
fn answer(
    which: Accessor,
    by_value: bool,
    len: Option<usize>,
    build: impl FnOnce() -> pg_sys::Datum,
) -> pg_sys::Datum {
    // SAFETY: plain read of a backend-global pointer.
    let portal = unsafe { pg_sys::ActivePortal };
    if portal.is_null() || crate::spi::in_parallel_worker() {
        return answer_per_statement(which, by_value, len, build);
    }
    let key = portal as usize;
    let access_gen = access::current_generation();
    let validity = Validity {
        bypass: bypass_state::active(),
        access_gen,
        keyring_gen: crate::keys::keyring_generation(),
    };
    let now = statement_start();
    let hit = PINS.with(|p| {
        let mut p = p.borrow_mut();
        let pin = p.iter_mut().find(|x| x.portal == key)?;
        if pin.validity != validity || now >= pin.expires {
            pin.answers = [const { None }; ACCESSORS];
            return None;
        }
        pin.answers[which as usize].as_ref().map(copy_out)
    });
    if let Some(d) = hit {
        return d;
    }
    let (d, kept, exp) = checked_value(which, by_value, len, statement_key_at(access_gen), build);
    // This statement's verified context (cached by the checks): its expiry
    // bounds the pin. No context (a bypass) never expires.
    let exp = match exp {
        Some(e) => Some(e),
        None => match current() {
            Ok(Some(c)) => Some(c.exp),
            _ => None,
        },
    };
    let expires = exp.map_or(i64::MAX, |e| (e - PG_EPOCH_UNIX).saturating_mul(1_000_000));
    let pinned = PINS.with(|p| p.borrow().iter().any(|x| x.portal == key));
    if !pinned {
        // First answer for this portal: register the callback that drops
        // its pin before adding the pin, so no pin can outlive its portal
        // (and be found by a later portal at the same address).
        // SAFETY: the callback record lives in the portal's own memory
        // context and runs when that context is reset or deleted (the
        // portal is dropped).
        unsafe {
            let cx = (*portal).portalContext;
            let cb = pg_sys::MemoryContextAlloc(
                cx,
                std::mem::size_of::<pg_sys::MemoryContextCallback>(),
            ) as *mut pg_sys::MemoryContextCallback;
            (*cb).func = Some(drop_pin);
            (*cb).arg = key as *mut std::ffi::c_void;
            (*cb).next = std::ptr::null_mut();
            pg_sys::MemoryContextRegisterResetCallback(cx, cb);
        }
    }
    PINS.with(|p| {
        let mut p = p.borrow_mut();
        match p.iter_mut().find(|x| x.portal == key) {
            Some(pin) => {
                if pin.validity != validity || pin.expires != expires {
                    pin.answers = [const { None }; ACCESSORS];
                }
                pin.validity = validity;
                pin.expires = expires;
                pin.answers[which as usize] = Some(kept);
            }
            None => {
                let mut answers = [const { None }; ACCESSORS];
                answers[which as usize] = Some(kept);
                p.push(Pin {
                    portal: key,
                    validity,
                    expires,
                    answers,
                });
            }
        }
    });
    d
}

fn answer_per_statement(
    which: Accessor,
    by_value: bool,
    len: Option<usize>,
    build: impl FnOnce() -> pg_sys::Datum,
) -> pg_sys::Datum {
    let key: StatementKey = (
        statement_key(),
        gucs::context_generation(),
        bypass_state::active(),
    );
    let hit = PER_STATEMENT.with(|a| {
        let mut a = a.borrow_mut();
        if a.0 != Some(key) {
            *a = (Some(key), [const { None }; ACCESSORS]);
            return None;
        }
        a.1[which as usize].as_ref().map(copy_out)
    });
    if let Some(d) = hit {
        return d;
    }
    let (d, kept, _) = checked_value(which, by_value, len, key.0, build);
    PER_STATEMENT.with(|a| {
        let mut a = a.borrow_mut();
        if a.0 == Some(key) {
            a.1[which as usize] = Some(kept);
        }
    });
    d
}

fn built<T: IntoDatum>(v: T) -> pg_sys::Datum {
    v.into_datum().unwrap_or_else(|| {
        crate::error::raise_msg(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "tenantguard: accessor built a NULL",
        )
    })
}

const UUID_LEN: Option<usize> = Some(16);

fn parse_ids<T>(ids: &[String], ty: &'static str, f: impl Fn(&str) -> Option<T>) -> Vec<T> {
    ids.iter()
        .map(|s| {
            f(s).ok_or_else(|| DomainError::TenantIdType {
                value: s.clone(),
                ty,
            })
            .or_raise()
        })
        .collect()
}

fn parse_uuid(s: &str) -> Option<pgrx::Uuid> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(pgrx::Uuid::from_bytes(b))
}

// Typed accessors, so a policy on a uuid/bigint/int tenant column compares
// equal types and keeps its index.

fn uuid_of(t: String) -> pgrx::Uuid {
    parse_ids(&[t], "uuid", parse_uuid).remove(0)
}

fn bigint_of(t: String) -> i64 {
    parse_ids(&[t], "bigint", |s| s.parse::<i64>().ok()).remove(0)
}

fn int_of(t: String) -> i32 {
    parse_ids(&[t], "integer", |s| s.parse::<i32>().ok()).remove(0)
}

/// One policy accessor: the SQL function (declared through pgrx, so the
/// schema lists it with its type; its body is what a miss computes) is
/// bound to a hand-written fmgr entry point `<name>_fast` that answers from
/// the per-statement cache.
macro_rules! policy_accessor {
    ($name:ident, $fast:ident, $finfo:ident, $sql:literal, $ty:ty, $which:expr, $by_value:expr, $len:expr, $build:expr, $body:expr) => {
        #[pg_extern(stable, parallel_safe, sql = $sql)]
        fn $name() -> $ty {
            $body
        }

        #[doc(hidden)]
        #[no_mangle]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        #[doc(hidden)]
        #[no_mangle]
        #[pg_guard]
        pub unsafe extern "C-unwind" fn $fast(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            answer($which, $by_value, $len, || $build)
        }
    };
}

policy_accessor!(
    tenant_id,
    tenant_id_fast,
    pg_finfo_tenant_id_fast,
    "CREATE FUNCTION \"tenant_id\"() RETURNS TEXT
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_id_fast';",
    String,
    Accessor::Id,
    false,
    None,
    built(active_tenant()),
    active_tenant()
);

policy_accessor!(
    tenant_ids,
    tenant_ids_fast,
    pg_finfo_tenant_ids_fast,
    "CREATE FUNCTION \"tenant_ids\"() RETURNS TEXT[]
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_ids_fast';",
    Vec<String>,
    Accessor::Ids,
    false,
    None,
    built(read_scope()),
    read_scope()
);

policy_accessor!(
    tenant_id_uuid,
    tenant_id_uuid_fast,
    pg_finfo_tenant_id_uuid_fast,
    "CREATE FUNCTION \"tenant_id_uuid\"() RETURNS uuid
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_id_uuid_fast';",
    pgrx::Uuid,
    Accessor::IdUuid,
    false,
    UUID_LEN,
    built(uuid_of(active_tenant())),
    uuid_of(active_tenant())
);

policy_accessor!(
    tenant_ids_uuid,
    tenant_ids_uuid_fast,
    pg_finfo_tenant_ids_uuid_fast,
    "CREATE FUNCTION \"tenant_ids_uuid\"() RETURNS uuid[]
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_ids_uuid_fast';",
    Vec<pgrx::Uuid>,
    Accessor::IdsUuid,
    false,
    None,
    built(parse_ids(&read_scope(), "uuid", parse_uuid)),
    parse_ids(&read_scope(), "uuid", parse_uuid)
);

policy_accessor!(
    tenant_id_bigint,
    tenant_id_bigint_fast,
    pg_finfo_tenant_id_bigint_fast,
    "CREATE FUNCTION \"tenant_id_bigint\"() RETURNS bigint
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_id_bigint_fast';",
    i64,
    Accessor::IdBigint,
    true,
    None,
    built(bigint_of(active_tenant())),
    bigint_of(active_tenant())
);

policy_accessor!(
    tenant_ids_bigint,
    tenant_ids_bigint_fast,
    pg_finfo_tenant_ids_bigint_fast,
    "CREATE FUNCTION \"tenant_ids_bigint\"() RETURNS bigint[]
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_ids_bigint_fast';",
    Vec<i64>,
    Accessor::IdsBigint,
    false,
    None,
    built(parse_ids(&read_scope(), "bigint", |s| s
        .parse::<i64>()
        .ok())),
    parse_ids(&read_scope(), "bigint", |s| s.parse::<i64>().ok())
);

policy_accessor!(
    tenant_id_int,
    tenant_id_int_fast,
    pg_finfo_tenant_id_int_fast,
    "CREATE FUNCTION \"tenant_id_int\"() RETURNS INT
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_id_int_fast';",
    i32,
    Accessor::IdInt,
    true,
    None,
    built(int_of(active_tenant())),
    int_of(active_tenant())
);

policy_accessor!(
    tenant_ids_int,
    tenant_ids_int_fast,
    pg_finfo_tenant_ids_int_fast,
    "CREATE FUNCTION \"tenant_ids_int\"() RETURNS INT[]
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'tenant_ids_int_fast';",
    Vec<i32>,
    Accessor::IdsInt,
    false,
    None,
    built(parse_ids(&read_scope(), "integer", |s| s
        .parse::<i32>()
        .ok())),
    parse_ids(&read_scope(), "integer", |s| s.parse::<i32>().ok())
);
