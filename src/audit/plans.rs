//! The statements the trail runs, planned once per backend and kept, and
//! the datum helpers they bind: the lowest stage of the audit trail. It
//! imports no other stage.

use crate::context;
use crate::error::raise_msg;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;
use std::cell::RefCell;
use std::ffi::CStr;
use std::rc::Rc;

#[cfg(feature = "pg_test")]
thread_local! {
    /// `#[pg_test]` builds only: a fixed record time, so retention tests
    /// can fill partitions of years ago. Not compiled into releases.
    pub static TEST_CLOCK_US: std::cell::Cell<Option<i64>> = const { std::cell::Cell::new(None) };
}

pub(super) fn unix_us_now() -> i64 {
    #[cfg(feature = "pg_test")]
    if let Some(t) = TEST_CLOCK_US.with(|c| c.get()) {
        return t;
    }
    // SAFETY: reads the clock.
    context::to_unix_us(unsafe { pg_sys::GetCurrentTimestamp() })
}

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01).
pub(super) const PG_EPOCH_UNIX_US: i64 = 946_684_800 * 1_000_000;

/// `TopSubTransactionId` (xact.h): the top level's subtransaction id.
pub(super) const TOP_SUBXACT: pg_sys::SubTransactionId = 1;

pub(super) fn spi_fail(e: pgrx::spi::Error) -> ! {
    raise_msg(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("tenantguard audit: {e}"),
    )
}

/// This tenant's chain head, read once the chain's lock is held (see
/// `lock_chain`). No row means the tenant's first record: NEW_HEAD_SQL
/// creates it.
pub(super) const HEAD_SQL: &str = "SELECT h.seq, h.hash FROM tenantguard.audit_head h
                   WHERE h.tenant OPERATOR(pg_catalog.=) $1";

pub(super) const NEW_HEAD_SQL: &str =
    "INSERT INTO tenantguard.audit_head (tenant, seq, hash) VALUES ($1, 0, $2)
                             ON CONFLICT (tenant) DO NOTHING";

/// Move a chain's head to the last record a flush wrote (run right after
/// the flush's INSERT, in the same subtransaction: a savepoint rollback
/// takes back both).
pub(super) const MOVE_HEAD_SQL: &str =
    "UPDATE tenantguard.audit_head SET seq = $2, hash = $3, updated_at = pg_catalog.now()
                  WHERE tenant OPERATOR(pg_catalog.=) $1 AND seq OPERATOR(pg_catalog.<) $2";

/// Write a batch of records: one array per column, one row per element
/// (set-returning functions in the select list run in step, one value per
/// call, without materializing).
pub(super) const INSERT_BATCH_SQL: &str = "INSERT INTO tenantguard.audit_log (id, tenant, seq, at, actor, actor_roles, db_role, action, tbl,
                        row_key, old_values, new_values, client_ip, user_agent, application_name, txid, payload,
                        key_id, prev_hash, hash)
                 SELECT pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),
                        pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9), pg_catalog.unnest($10),
                        pg_catalog.unnest($11), pg_catalog.unnest($12), pg_catalog.unnest($13), pg_catalog.unnest($14), pg_catalog.unnest($15),
                        pg_catalog.unnest($16), pg_catalog.unnest($17), pg_catalog.unnest($18), pg_catalog.unnest($19), pg_catalog.unnest($20)";

/// Element types of the trail's columns `at` .. `key_id` (see `body`).
pub(super) const BODY_TYPES: [pg_sys::Oid; 15] = [
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::JSONBOID,
    pg_sys::JSONBOID,
    pg_sys::JSONBOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::INT8OID,
    pg_sys::JSONBOID,
    pg_sys::TEXTOID,
];

/// Element types of the trail's columns, in `INSERT_BATCH_SQL`'s order.
pub(super) const RECORD_TYPES: [pg_sys::Oid; 20] = [
    pg_sys::INT8OID,
    pg_sys::TEXTOID,
    pg_sys::INT8OID,
    BODY_TYPES[0],
    BODY_TYPES[1],
    BODY_TYPES[2],
    BODY_TYPES[3],
    BODY_TYPES[4],
    BODY_TYPES[5],
    BODY_TYPES[6],
    BODY_TYPES[7],
    BODY_TYPES[8],
    BODY_TYPES[9],
    BODY_TYPES[10],
    BODY_TYPES[11],
    BODY_TYPES[12],
    BODY_TYPES[13],
    BODY_TYPES[14],
    pg_sys::BYTEAOID,
    pg_sys::BYTEAOID,
];

/// Batches of up to this many records are written with `INSERT ...
/// VALUES` (one parameter per column and record): its executor starts
/// without the 20 set-returning functions of `INSERT_BATCH_SQL`, which
/// cost more than they save below a few rows (benches/README.md).
pub(super) const VALUES_ROWS: usize = 4;

/// `INSERT_BATCH_SQL`'s statement for exactly `rows` records, as VALUES
/// rows of numbered parameters (built from numbers only).
fn insert_rows_sql(rows: usize) -> String {
    let head = &INSERT_BATCH_SQL[..INSERT_BATCH_SQL.find("SELECT").expect("a SELECT")];
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let ps: Vec<String> = (1..=RECORD_TYPES.len())
                .map(|c| format!("${}", r * RECORD_TYPES.len() + c))
                .collect();
            format!("({})", ps.join(", "))
        })
        .collect();
    format!("{head}VALUES {}", tuples.join(", "))
}

/// Stage a batch of sealed records in the inbox (background chaining),
/// when the heap cannot be appended to directly (see `stage_pending`).
pub(super) const STAGE_SQL: &str = "INSERT INTO tenantguard.audit_inbox
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";

/// Take up to $1 (NULL: all) committed inbox rows, as they lie in the
/// table (the inbox has no index to sort by), removing them: a TID scan,
/// planned with sequential scans off (see `drain_inbox`). Run under the
/// latest snapshot, with the inbox's lock held, so nothing is taken twice.
///
/// Only rows in the block range [$5, $6) (a TID range scan): the pages a
/// previous pass emptied lie before where it stopped, and reading them
/// again at every pass, until VACUUM frees them, was most of the writer's
/// time (see `drain_inbox`, which wraps around).
///
/// Only rows sealed under a key the audit keyring holds ($2): a row whose
/// key was removed stays in the inbox, intact, until the key is back (see
/// `INBOX_WAITING_SQL`), rather than being taken for a forgery. Nor rows
/// of the tenants in $3 (the writer's `BLOCKED`) or of the transactions in
/// $4 (its `QUARANTINED`). Each row comes with its ctid last.
pub(super) const DRAIN_SQL: &str = "DELETE FROM tenantguard.audit_inbox i
                  WHERE i.ctid OPERATOR(pg_catalog.=) ANY (ARRAY(
                        SELECT x.ctid FROM tenantguard.audit_inbox x
                         WHERE x.ctid OPERATOR(pg_catalog.>=) $5 AND x.ctid OPERATOR(pg_catalog.<) $6
                           AND x.key_id OPERATOR(pg_catalog.=) ANY ($2)
                           AND NOT (x.tenant OPERATOR(pg_catalog.&&) $3)
                           AND x.txid OPERATOR(pg_catalog.<>) ALL ($4) LIMIT $1))
              RETURNING i.*, i.ctid";

/// The other rows of the transactions `DRAIN_SQL` took rows of: a
/// transaction's records are chained together, in the order it captured
/// them.
pub(super) const DRAIN_REST_SQL: &str = "DELETE FROM tenantguard.audit_inbox i
                  WHERE i.txid OPERATOR(pg_catalog.=) ANY ($1)
                    AND i.key_id OPERATOR(pg_catalog.=) ANY ($2)
                    AND NOT (i.tenant OPERATOR(pg_catalog.&&) $3)
              RETURNING i.*";

/// Inbox records sealed under keys the audit keyring ($1) no longer holds:
/// how many, and the key ids. Nothing chains them until the key is back.
pub(super) const INBOX_WAITING_SQL: &str = "SELECT pg_catalog.count(*)::int8,
                    pg_catalog.array_agg(DISTINCT key_id ORDER BY key_id)::text[]
               FROM tenantguard.audit_inbox
              WHERE key_id OPERATOR(pg_catalog.<>) ALL ($1)";

/// Longest JSON text left to the background writer to normalize (jsonb
/// refuses strings of 256 MB and more).
pub(super) const RAW_JSON_MAX: usize = 1 << 26;

/// Records a transaction keeps before writing them (it also writes them
/// just before commit or PREPARE, and whenever it needs a record id or
/// reads the trail itself).
pub(super) const BATCH: usize = 256;

thread_local! {
    /// The statements of an append, planned once per backend and kept
    /// (the plan cache re-plans them after DDL on the audit tables).
    static PLANS: RefCell<Option<Rc<Plans>>> = const { RefCell::new(None) };
}

pub(super) struct Plans {
    pub(super) insert: pg_sys::SPIPlanPtr,
    /// `insert_rows[k - 1]`: the VALUES insert of exactly k records.
    pub(super) insert_rows: Vec<pg_sys::SPIPlanPtr>,
    pub(super) stage: OwnedPreparedStatement,
    /// Run under the latest snapshot, like the head statements.
    pub(super) drain: pg_sys::SPIPlanPtr,
    pub(super) drain_rest: pg_sys::SPIPlanPtr,
    /// The head statements, run under the latest snapshot (`run_latest`).
    pub(super) head: pg_sys::SPIPlanPtr,
    pub(super) new_head: pg_sys::SPIPlanPtr,
    pub(super) move_head: pg_sys::SPIPlanPtr,
}

/// Prepare and keep a statement for `run_latest`.
///
/// SAFETY: SPI must be connected.
pub(super) unsafe fn keep_raw(
    sql: &str,
    types: &[pg_sys::Oid],
) -> Result<pg_sys::SPIPlanPtr, pgrx::spi::Error> {
    let q = std::ffi::CString::new(sql).expect("queries have no NUL");
    let mut types = types.to_vec();
    // SAFETY: per the function's contract; SPI_keepplan moves the plan out
    // of SPI's memory, to live as long as the backend.
    unsafe {
        let plan = pg_sys::SPI_prepare(q.as_ptr(), types.len() as i32, types.as_mut_ptr());
        if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
            return Err(pgrx::spi::Error::from(pgrx::spi::SpiErrorCodes::Argument));
        }
        Ok(plan)
    }
}

/// Execute a kept plan under the latest snapshot (see `run_latest`),
/// returning SPI's result code (rows in `SPI_tuptable`).
///
/// SAFETY: SPI must be connected; `plan` was kept by `keep_raw` with
/// parameter types matching `args`.
pub(super) unsafe fn exec_latest(
    plan: pg_sys::SPIPlanPtr,
    args: &[Option<pg_sys::Datum>],
    read_only: bool,
) -> i32 {
    let mut values: Vec<pg_sys::Datum> = args
        .iter()
        .map(|a| a.unwrap_or(pg_sys::Datum::from(0usize)))
        .collect();
    let nulls: Vec<std::ffi::c_char> = args
        .iter()
        .map(|a| if a.is_some() { b' ' } else { b'n' } as std::ffi::c_char)
        .collect();
    // SAFETY: per the function's contract; SPI_execute_snapshot registers
    // the snapshot for the statement's duration.
    unsafe {
        pg_sys::SPI_execute_snapshot(
            plan,
            values.as_mut_ptr(),
            nulls.as_ptr(),
            pg_sys::GetLatestSnapshot(),
            std::ptr::null_mut(),
            read_only,
            true,
            0,
        )
    }
}

/// Run a kept head statement under the latest snapshot (with this
/// transaction's own changes), not the transaction's: in REPEATABLE READ or
/// SERIALIZABLE, the head another transaction moved after this one's
/// snapshot was taken is read and moved from where it is now, instead of
/// failing with a serialization error. Safe because the chain's lock is
/// held: no other transaction moves this head until this one ends. Returns
/// the (seq, hash) rows of a SELECT.
///
/// SAFETY: SPI must be connected; `plan` was kept by `keep_raw` with
/// parameter types matching `args`.
pub(super) unsafe fn run_latest(
    plan: pg_sys::SPIPlanPtr,
    args: &[Option<pg_sys::Datum>],
    read_only: bool,
) -> Result<Vec<(i64, Vec<u8>)>, pgrx::spi::Error> {
    // SAFETY: per the function's contract; the rows are read before the
    // next SPI call.
    unsafe {
        let rc = exec_latest(plan, args, read_only);
        if rc < 0 {
            return Err(pgrx::spi::Error::from(pgrx::spi::SpiErrorCodes::OpUnknown));
        }
        let mut rows = Vec::new();
        let table = pg_sys::SPI_tuptable;
        if rc == pg_sys::SPI_OK_SELECT as i32 && !table.is_null() {
            for i in 0..pg_sys::SPI_processed as usize {
                let tuple = *(*table).vals.add(i);
                let mut null = false;
                let seq = pg_sys::SPI_getbinval(tuple, (*table).tupdesc, 1, &mut null);
                let seq = if null { 0 } else { seq.value() as i64 };
                let hash = pg_sys::SPI_getbinval(tuple, (*table).tupdesc, 2, &mut null);
                let hash = <Vec<u8> as pgrx::FromDatum>::from_datum(hash, null).unwrap_or_default();
                rows.push((seq, hash));
            }
        }
        Ok(rows)
    }
}

/// A JSON value as the record stores it: its text in jsonb's normal form
/// (what `::jsonb::text` gives, what is hashed and what verification reads
/// back) and the flat jsonb datum (bound to the INSERT as is, not parsed
/// again), by calling jsonb's own input and output functions.
#[derive(Clone)]
pub(super) struct Json {
    pub(super) text: String,
    pub(super) flat: Vec<u8>,
}

impl Json {
    /// JSON text as captured, not normalized yet (no jsonb datum).
    pub(super) fn raw(text: String) -> Json {
        Json {
            text,
            flat: Vec::new(),
        }
    }

    /// In jsonb's normal form (a no-op if it is already).
    pub(super) fn normal(&self) -> Json {
        if self.flat.is_empty() {
            jsonb_normal(Some(self.text.clone())).expect("some in, some out")
        } else {
            self.clone()
        }
    }

    /// A palloc'd copy of the jsonb datum, in the current memory context.
    pub(super) fn datum(&self) -> pg_sys::Datum {
        // SAFETY: `flat` holds a complete flat jsonb varlena; the copy is
        // palloc'd with its exact size.
        unsafe {
            let p = pg_sys::palloc(self.flat.len()) as *mut u8;
            std::ptr::copy_nonoverlapping(self.flat.as_ptr(), p, self.flat.len());
            pg_sys::Datum::from(p)
        }
    }
}

pub(super) fn jsonb_normal(json: Option<String>) -> Option<Json> {
    let json = json?;
    Some(jsonb_fast(&json).unwrap_or_else(|| jsonb_slow(json)))
}

/// A JSON value's normal text and stored jsonb datum.
#[cfg(feature = "pg_test")]
pub type Normalized = (String, Vec<u8>);

/// Both ways of normalizing `json`, for the pg_test that compares them:
/// the fast path's (None if it declines) and jsonb's own.
#[cfg(feature = "pg_test")]
pub fn jsonb_paths(json: &str) -> (Option<Normalized>, Normalized) {
    let fast = jsonb_fast(json).map(|j| (j.text, j.flat));
    let slow = jsonb_slow(json.to_string());
    (fast, (slow.text, slow.flat))
}

fn jsonb_fast(json: &str) -> Option<Json> {
    // A row image or row key (a flat object of strings and nulls, as the
    // capture makes them): its normal text and binary form computed in
    // Rust, byte for byte what jsonb_in and jsonb_out give (the pg_test
    // `jsonb_fast_path_matches_jsonb` compares them); anything else goes
    // through jsonb's own functions below.
    let (text, container) = tenantguard_core::jsonb::flat_object(json)?;
    // A 4-byte varlena header, as SET_VARSIZE_4B writes it (the container
    // is at most 64 MiB: flat_object leaves larger ones to jsonb).
    let n = (container.len() + pg_sys::VARHDRSZ) as u32;
    let header = if cfg!(target_endian = "big") {
        n & 0x3FFF_FFFF
    } else {
        n << 2
    };
    let mut flat = Vec::with_capacity(n as usize);
    flat.extend_from_slice(&header.to_ne_bytes());
    flat.extend_from_slice(&container);
    Some(Json { text, flat })
}

/// jsonb_in then jsonb_out, as a cast would.
fn jsonb_slow(json: String) -> Json {
    let c = std::ffi::CString::new(json).unwrap_or_else(|_| {
        raise_msg(
            PgSqlErrorCode::ERRCODE_UNTRANSLATABLE_CHARACTER,
            "tenantguard audit: a JSON value contains a NUL byte",
        )
    });
    // SAFETY: jsonb_in/jsonb_out (fixed built-in OIDs, no catalog lookup
    // per record), called as a cast would; they raise (as a Rust panic
    // through pgrx's guard) on invalid input. jsonb's I/O parameter is
    // its own type OID. jsonb_in returns a flat varlena with a 4-byte
    // header, which is copied whole.
    unsafe {
        let d = pg_sys::OidInputFunctionCall(
            pg_sys::Oid::from(pg_sys::F_JSONB_IN),
            c.as_ptr().cast_mut(),
            pg_sys::JSONBOID,
            -1,
        );
        let p = pg_sys::OidOutputFunctionCall(pg_sys::Oid::from(pg_sys::F_JSONB_OUT), d);
        let v = d.cast_mut_ptr::<u8>();
        let n = pgrx::varlena::varsize_any(v.cast());
        let json = Json {
            text: CStr::from_ptr(p).to_string_lossy().into_owned(),
            flat: std::slice::from_raw_parts(v, n).to_vec(),
        };
        pg_sys::pfree(p.cast());
        pg_sys::pfree(v.cast());
        json
    }
}

pub(super) fn plans(client: &pgrx::spi::SpiClient<'_>) -> Result<Rc<Plans>, pgrx::spi::Error> {
    if let Some(p) = PLANS.with(|p| p.borrow().clone()) {
        return Ok(p);
    }
    let (ta, i8a, tsa, ja, ba) = (
        PgOid::from(pg_sys::TEXTARRAYOID),
        PgOid::from(pg_sys::INT8ARRAYOID),
        PgOid::from(pg_sys::TIMESTAMPTZARRAYOID),
        PgOid::from(pg_sys::JSONBARRAYOID),
        PgOid::from(pg_sys::BYTEAARRAYOID),
    );
    let batch = [
        i8a, ta, i8a, tsa, ta, ta, ta, ta, ta, ja, ja, ja, ta, ta, ta, i8a, ja, ta, ba, ba, ta,
        i8a, ba,
    ];
    let stage: Vec<PgOid> = INBOX_TYPES.iter().map(|t| PgOid::from(*t)).collect();
    let (t, i8, b) = (pg_sys::TEXTOID, pg_sys::INT8OID, pg_sys::BYTEAOID);
    // SAFETY: SPI is connected (we hold its client).
    let p = unsafe {
        Rc::new(Plans {
            insert: keep_raw(INSERT_BATCH_SQL, &batch.map(|o| o.value()))?,
            insert_rows: (1..=VALUES_ROWS)
                .map(|k| {
                    let types: Vec<pg_sys::Oid> = (0..k).flat_map(|_| RECORD_TYPES).collect();
                    keep_raw(&insert_rows_sql(k), &types)
                })
                .collect::<Result<_, _>>()?,
            stage: client.prepare_mut(STAGE_SQL, &stage)?.keep(),
            drain: keep_raw(
                DRAIN_SQL,
                &[
                    i8,
                    pg_sys::TEXTARRAYOID,
                    pg_sys::TEXTARRAYOID,
                    pg_sys::INT8ARRAYOID,
                    pg_sys::TIDOID,
                    pg_sys::TIDOID,
                ],
            )?,
            drain_rest: keep_raw(
                DRAIN_REST_SQL,
                &[
                    pg_sys::INT8ARRAYOID,
                    pg_sys::TEXTARRAYOID,
                    pg_sys::TEXTARRAYOID,
                ],
            )?,
            head: keep_raw(HEAD_SQL, &[t])?,
            new_head: keep_raw(NEW_HEAD_SQL, &[t, b])?,
            move_head: keep_raw(MOVE_HEAD_SQL, &[t, i8, b])?,
        })
    };
    PLANS.with(|slot| *slot.borrow_mut() = Some(p.clone()));
    Ok(p)
}

/// A one-dimensional array of `elem` from datums (None: NULL), palloc'd in
/// the current memory context.
pub(super) fn array_of(elem: pg_sys::Oid, items: &[Option<pg_sys::Datum>]) -> pg_sys::Datum {
    let mut datums: Vec<pg_sys::Datum> = items
        .iter()
        .map(|d| d.unwrap_or(pg_sys::Datum::from(0usize)))
        .collect();
    let mut nulls: Vec<bool> = items.iter().map(Option::is_none).collect();
    let mut dims = [items.len() as i32];
    let mut lbs = [1i32];
    // SAFETY: `datums`/`nulls` have `dims[0]` entries of type `elem`
    // (NULL entries ignored); construct_md_array copies them into a new
    // array, with the type's storage parameters looked up in the syscache.
    unsafe {
        let mut len: i16 = 0;
        let mut byval = false;
        let mut align: std::ffi::c_char = 0;
        pg_sys::get_typlenbyvalalign(elem, &mut len, &mut byval, &mut align);
        pg_sys::Datum::from(pg_sys::construct_md_array(
            datums.as_mut_ptr(),
            nulls.as_mut_ptr(),
            1,
            dims.as_mut_ptr(),
            lbs.as_mut_ptr(),
            elem,
            len.into(),
            byval,
            align,
        ))
    }
}

pub(super) fn text_datum(s: Option<&str>) -> Option<pg_sys::Datum> {
    s.and_then(|s| s.into_datum())
}

/// Column types of `audit_inbox`, in order.
pub(super) const INBOX_TYPES: [pg_sys::Oid; 18] = [
    pg_sys::INT8OID,
    pg_sys::INT4OID,
    pg_sys::TEXTOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TIMESTAMPTZARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::TEXTARRAYOID,
    pg_sys::BYTEAARRAYOID,
];

/// Element types of the inbox's array columns (`tenant` .. `seal`).
pub(super) const INBOX_ELEMS: [pg_sys::Oid; 15] = [
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::BYTEAOID,
];
