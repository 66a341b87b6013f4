//! The trail's records appended as COPY appends rows: each formed in
//! memory, routed to its month's partition, added to that partition's heap
//! and indexes, without a statement to plan or an executor to start per
//! flush (through SPI, that INSERT was about half of a flush's cost:
//! benches/README.md). Used whenever `audit_log` and its partitions are
//! shaped as this version creates them; anything else (a column added, an
//! INSERT trigger, a CHECK or NOT NULL constraint someone added, a
//! row-security policy for INSERT beyond the extension's, a foreign
//! partition, a table Citus manages) is left to the INSERT, which the caller runs when `append`
//! declines, so it enforces them as before. Imports no other
//! stage but `plans`.

use super::plans::RECORD_TYPES;
use pgrx::pg_sys;
use std::ffi::c_void;

// execPartition.h, unchanged from Postgres 13 to 18 (pgrx does not bind it).
extern "C-unwind" {
    fn ExecSetupPartitionTupleRouting(
        estate: *mut pg_sys::EState,
        rel: pg_sys::Relation,
    ) -> *mut c_void;
    fn ExecFindPartition(
        mtstate: *mut pg_sys::ModifyTableState,
        root: *mut pg_sys::ResultRelInfo,
        proute: *mut c_void,
        slot: *mut pg_sys::TupleTableSlot,
        estate: *mut pg_sys::EState,
    ) -> *mut pg_sys::ResultRelInfo;
    fn ExecCleanupTupleRouting(mtstate: *mut pg_sys::ModifyTableState, proute: *mut c_void);
}

/// Column 7 (`db_role`) is `name` in the table; records carry it as text.
const DB_ROLE: usize = 6;

/// The trail's column types, in order: `RECORD_TYPES`, with `db_role` a name.
const TRAIL_TYPES: [pg_sys::Oid; RECORD_TYPES.len()] = {
    let mut t = RECORD_TYPES;
    t[DB_ROLE] = pg_sys::NAMEOID;
    t
};

/// Whether a relation's columns are exactly `types`, in order, none
/// dropped or generated: the shape a direct write of the extension's
/// tables (the trail, its heads, the inbox) relies on.
///
/// SAFETY: `desc` is a valid tuple descriptor.
pub(super) unsafe fn columns_are(desc: pg_sys::TupleDesc, types: &[pg_sys::Oid]) -> bool {
    // SAFETY: per the function's contract; attributes below natts.
    unsafe {
        (*desc).natts as usize == types.len()
            && types.iter().enumerate().all(|(i, t)| {
                let att = crate::compat::tuple_desc_attr(desc, i);
                !att.attisdropped && att.atttypid == *t && att.attgenerated == 0
            })
    }
}

/// Whether a trigger fires on INSERT (row or statement, any timing).
///
/// SAFETY: `t` is NULL or a valid trigger descriptor.
unsafe fn insert_triggers(t: *const pg_sys::TriggerDesc) -> bool {
    // SAFETY: per the function's contract.
    unsafe {
        !t.is_null()
            && ((*t).trig_insert_before_row
                || (*t).trig_insert_after_row
                || (*t).trig_insert_instead_row
                || (*t).trig_insert_before_statement
                || (*t).trig_insert_after_statement
                || (*t).trig_insert_new_table)
    }
}

/// Whether a relation has CHECK constraints (an INSERT evaluates them;
/// the extension's tables have none).
///
/// SAFETY: `desc` is a valid tuple descriptor.
unsafe fn checked(desc: pg_sys::TupleDesc) -> bool {
    // SAFETY: per the function's contract.
    unsafe {
        let c = (*desc).constr;
        !c.is_null() && (*c).num_check > 0
    }
}

/// Whether a NOT NULL column of `desc` would get a NULL from `nulls`.
///
/// SAFETY: `desc` is a valid tuple descriptor with `nulls.len()` columns.
unsafe fn null_in_not_null(desc: pg_sys::TupleDesc, nulls: &[bool]) -> bool {
    // SAFETY: per the function's contract.
    unsafe {
        nulls
            .iter()
            .enumerate()
            .any(|(i, n)| *n && crate::compat::tuple_desc_attr(desc, i).attnotnull)
    }
}

/// Whether a row-security policy other than the extension's `owner_all`
/// applies to INSERT on the relation (the trail's INSERT, run as its
/// owner under FORCE ROW LEVEL SECURITY, would check it).
///
/// SAFETY: `rel` is an open relation.
unsafe fn other_insert_policies(rel: pg_sys::Relation) -> bool {
    // SAFETY: per the function's contract; the policy list is the
    // relcache's, read only.
    unsafe {
        let rs = (*rel).rd_rsdesc;
        if rs.is_null() || (*rs).policies.is_null() {
            return false;
        }
        let list = (*rs).policies;
        (0..(*list).length).any(|i| {
            let p = pg_sys::list_nth(list, i) as *const pg_sys::RowSecurityPolicy;
            let cmd = (*p).polcmd as u8;
            (cmd == b'*' || cmd == b'a')
                && std::ffi::CStr::from_ptr((*p).policy_name).to_bytes() != b"owner_all"
        })
    }
}

/// Append `rows` (each the 20 columns of `RECORD_TYPES`, None for NULL) to
/// `audit_log` (`rel`), in order, with this command's id, then advance the
/// command counter, as the INSERT did. Returns false, having written
/// nothing, when the table or a partition a row routes to is not shaped
/// for it; the caller then runs its INSERT.
pub(super) fn append(rel: pg_sys::Oid, rows: &[Vec<Option<pg_sys::Datum>>]) -> bool {
    if rows.is_empty() {
        return true;
    }
    if crate::spi::is_citus_table(rel) {
        return false;
    }
    extern "C-unwind" {
        /// text_name(text), the fmgr entry point of the text-to-name cast.
        fn text_name(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    }
    // SAFETY: the root is opened with the lock an INSERT takes, and closed
    // keeping it; the executor state, routing and slot are made as COPY
    // makes them (a ModifyTableState without a plan, for routing only) and
    // freed before returning; every allocation is in the executor state's
    // memory, so an error frees it with the transaction. Tuples are formed
    // from datums of the trail's column types (checked against each
    // relation's descriptor before anything is written), heap_multi_insert
    // toasts and WAL-logs them as COPY's does (the routing slot, which
    // never owns a tuple, is not read again once the write slots own
    // them), and ExecInsertIndexTuples adds the partition's index entries
    // for each tuple's new TID.
    unsafe {
        let root = pg_sys::table_open(rel, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let root_desc = (*root).rd_att;
        if (*(*root).rd_rel).relkind != pg_sys::RELKIND_PARTITIONED_TABLE as std::ffi::c_char
            || !columns_are(root_desc, &TRAIL_TYPES)
            || insert_triggers((*root).trigdesc)
            || checked(root_desc)
            || other_insert_policies(root)
        {
            pg_sys::table_close(root, pg_sys::NoLock as pg_sys::LOCKMODE);
            return false;
        }
        let estate = pg_sys::CreateExecutorState();
        let old_cxt = pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
        let rri = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
            as *mut pg_sys::ResultRelInfo;
        (*rri).type_ = pg_sys::NodeTag::T_ResultRelInfo;
        pg_sys::InitResultRelInfo(rri, root, 1, std::ptr::null_mut(), 0);
        let mt = pg_sys::palloc0(std::mem::size_of::<pg_sys::ModifyTableState>())
            as *mut pg_sys::ModifyTableState;
        (*mt).ps.type_ = pg_sys::NodeTag::T_ModifyTableState;
        (*mt).ps.state = estate;
        (*mt).operation = pg_sys::CmdType::CMD_INSERT;
        (*mt).mt_nrels = 1;
        (*mt).resultRelInfo = rri;
        (*mt).rootResultRelInfo = rri;
        let proute = ExecSetupPartitionTupleRouting(estate, root);
        let slot = pg_sys::MakeSingleTupleTableSlot(root_desc, &raw const pg_sys::TTSOpsHeapTuple);
        // Route every row first: nothing is written unless all can be.
        let mut routed: Vec<(pg_sys::HeapTuple, *mut pg_sys::ResultRelInfo)> =
            Vec::with_capacity(rows.len());
        let mut ok = true;
        for row in rows {
            let mut values: Vec<pg_sys::Datum> = row
                .iter()
                .map(|d| d.unwrap_or(pg_sys::Datum::from(0usize)))
                .collect();
            let mut nulls: Vec<bool> = row.iter().map(Option::is_none).collect();
            if let Some(role) = row[DB_ROLE] {
                values[DB_ROLE] =
                    pg_sys::DirectFunctionCall1Coll(Some(text_name), pg_sys::Oid::INVALID, role);
                nulls[DB_ROLE] = false;
            }
            if null_in_not_null(root_desc, &nulls) {
                ok = false;
                break;
            }
            let tuple = pg_sys::heap_form_tuple(root_desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            pg_sys::ExecStoreHeapTuple(tuple, slot, false);
            let part = ExecFindPartition(mt, rri, proute, slot, estate);
            let prel = (*part).ri_RelationDesc;
            if !(*part).ri_FdwRoutine.is_null()
                || insert_triggers((*part).ri_TrigDesc)
                || !columns_are((*prel).rd_att, &TRAIL_TYPES)
                || checked((*prel).rd_att)
                || null_in_not_null((*prel).rd_att, &nulls)
            {
                ok = false;
                break;
            }
            routed.push((tuple, part));
        }
        if ok {
            let cid = pg_sys::GetCurrentCommandId(true);
            let bulk = if routed.len() >= 32 {
                pg_sys::GetBulkInsertState()
            } else {
                std::ptr::null_mut()
            };
            // Each run of rows bound for one partition, up to MULTI at a
            // time, is added to its heap at once (heap_multi_insert fills
            // each page with one WAL record, as COPY does), then each row's
            // index entries. The slots are made once and reused; every
            // partition has the root's columns (checked above).
            const MULTI: usize = 64;
            let mut slots: Vec<*mut pg_sys::TupleTableSlot> = (0..routed.len().min(MULTI))
                .map(|_| {
                    pg_sys::MakeSingleTupleTableSlot(root_desc, &raw const pg_sys::TTSOpsHeapTuple)
                })
                .collect();
            let mut rest = routed.as_slice();
            while let Some((_, part)) = rest.first() {
                let part = *part;
                let n = rest
                    .iter()
                    .take(MULTI)
                    .take_while(|(_, p)| *p == part)
                    .count();
                let (run, next) = rest.split_at(n);
                rest = next;
                let prel = (*part).ri_RelationDesc;
                // Each slot takes its tuple (formed in this executor state's
                // memory), so heap_multi_insert uses it without a copy.
                for ((tuple, _), s) in run.iter().zip(&slots) {
                    pg_sys::ExecStoreHeapTuple(*tuple, *s, true);
                }
                // Sets each slot's TID and table.
                pg_sys::heap_multi_insert(prel, slots.as_mut_ptr(), n as i32, cid, 0, bulk);
                for s in &slots[..n] {
                    if !(*part).ri_IndexRelationDescs.is_null() {
                        crate::compat::insert_index_tuples(part, *s, estate);
                    }
                    let econtext = (*estate).es_per_tuple_exprcontext;
                    if !econtext.is_null() {
                        pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
                    }
                }
            }
            for s in slots.drain(..) {
                pg_sys::ExecDropSingleTupleTableSlot(s);
            }
            if !bulk.is_null() {
                pg_sys::FreeBulkInsertState(bulk);
            }
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        ExecCleanupTupleRouting(mt, proute);
        pg_sys::MemoryContextSwitchTo(old_cxt);
        pg_sys::FreeExecutorState(estate);
        pg_sys::table_close(root, pg_sys::NoLock as pg_sys::LOCKMODE);
        if ok {
            pg_sys::CommandCounterIncrement();
        }
        ok
    }
}

thread_local! {
    /// `Heads::find`'s answer, with the relations' generation it holds for.
    static FOUND: std::cell::Cell<Option<(u64, Option<Heads>)>> = const { std::cell::Cell::new(None) };
}

/// `audit_head`'s column types, in order.
const HEAD_TYPES: [pg_sys::Oid; 4] = [
    pg_sys::TEXTOID,
    pg_sys::INT8OID,
    pg_sys::BYTEAOID,
    pg_sys::TIMESTAMPTZOID,
];

/// `audit_head` and its primary key, when shaped as this version creates
/// them: the four columns, that one index (on `tenant`), no trigger.
#[derive(Clone, Copy)]
pub(super) struct Heads {
    rel: pg_sys::Oid,
    pkey: pg_sys::Oid,
}

impl Heads {
    /// None when either relation is missing or not shaped for direct access
    /// (the caller then runs its statements).
    pub(super) fn find() -> Option<Heads> {
        // Remembered until either relation's definition changes, checked
        // under the lock the moves take (which takes in every change
        // committed before it), so the answer holds while this transaction
        // writes.
        let rel = crate::spi::relation_oid_cached(c"audit_head")?;
        // SAFETY: the lock an UPDATE takes, kept until the transaction ends.
        unsafe { pg_sys::LockRelationOid(rel, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE) };
        let gen = crate::spi::relations_generation();
        let rel = crate::spi::relation_oid_cached(c"audit_head")?;
        let pkey = crate::spi::relation_oid_cached(c"audit_head_pkey")?;
        if crate::spi::is_citus_table(rel) {
            return None;
        }
        match FOUND.with(|f| f.get()) {
            Some((g, heads))
                if g == gen && heads.is_none_or(|h| h.rel == rel && h.pkey == pkey) =>
            {
                heads
            }
            _ => {
                let heads = Self::shaped(rel, pkey);
                FOUND.with(|f| f.set(Some((gen, heads))));
                heads
            }
        }
    }

    fn shaped(rel: pg_sys::Oid, pkey: pg_sys::Oid) -> Option<Heads> {
        // SAFETY: the relations are opened with the lock an UPDATE takes
        // and closed keeping it; the index list is a copy we free.
        unsafe {
            let r = pg_sys::table_open(rel, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let desc = (*r).rd_att;
            let cols_ok = columns_are(desc, &HEAD_TYPES);
            let indexes = pg_sys::RelationGetIndexList(r);
            let one_index = !indexes.is_null()
                && (*indexes).length == 1
                && pg_sys::list_nth_oid(indexes, 0) == pkey;
            pg_sys::list_free(indexes);
            let ok = cols_ok && one_index && (*r).trigdesc.is_null();
            pg_sys::table_close(r, pg_sys::NoLock as pg_sys::LOCKMODE);
            ok.then_some(Heads { rel, pkey })
        }
    }

    /// Find `tenant`'s head row under the latest snapshot (the chain's lock
    /// is held, see `run_latest`) and give it to `f`, with the relation.
    ///
    /// SAFETY: `f` gets a tuple valid until it returns.
    unsafe fn with_row<R>(
        &self,
        tenant: &str,
        f: impl FnOnce(pg_sys::Relation, Option<pg_sys::HeapTuple>) -> R,
    ) -> R {
        use pgrx::IntoDatum;
        // SAFETY: the relation is opened with the lock an UPDATE takes and
        // closed keeping it; the scan key compares the index's text column
        // with text equality; the snapshot is registered for the scan and
        // released after it.
        unsafe {
            let r = pg_sys::table_open(self.rel, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot());
            let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
            pg_sys::ScanKeyInit(
                &mut key,
                1,
                pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                pg_sys::RegProcedure::from(pg_sys::F_TEXTEQ),
                tenant.into_datum().expect("text"),
            );
            key.sk_collation = pg_sys::DEFAULT_COLLATION_OID;
            let scan = pg_sys::systable_beginscan(r, self.pkey, true, snapshot, 1, &mut key);
            let tuple = pg_sys::systable_getnext(scan);
            let out = f(r, (!tuple.is_null()).then_some(tuple));
            pg_sys::systable_endscan(scan);
            pg_sys::UnregisterSnapshot(snapshot);
            pg_sys::table_close(r, pg_sys::NoLock as pg_sys::LOCKMODE);
            out
        }
    }

    /// `tenant`'s head (seq, hash) and where its row is, or None when it
    /// has no head row yet.
    pub(super) fn read(&self, tenant: &str) -> Option<(i64, Vec<u8>, pg_sys::ItemPointerData)> {
        // SAFETY: the tuple is read inside the callback; columns 2 and 3
        // are bigint and bytea, never NULL (checked shape, NOT NULL).
        unsafe {
            self.with_row(tenant, |r, t| {
                t.map(|t| {
                    let mut null = false;
                    let seq = pg_sys::heap_getattr(t, 2, (*r).rd_att, &mut null);
                    let seq = if null { 0 } else { seq.value() as i64 };
                    let hash = pg_sys::heap_getattr(t, 3, (*r).rd_att, &mut null);
                    let hash =
                        <Vec<u8> as pgrx::FromDatum>::from_datum(hash, null).unwrap_or_default();
                    (seq, hash, (*t).t_self)
                })
            })
        }
    }

    /// Move `tenant`'s head to (seq, hash) as the UPDATE did (`updated_at`
    /// the transaction's start), then advance the command counter so the
    /// next read sees it. `at`: where this transaction last read or moved
    /// the row (the chain's lock held since, so it is the row's current
    /// version); without it, the row is looked up, and moved only if it is
    /// behind. Returns where the moved row now is.
    pub(super) fn advance(
        &self,
        tenant: &str,
        seq: i64,
        hash: &[u8],
        at: Option<pg_sys::ItemPointerData>,
    ) -> Option<pg_sys::ItemPointerData> {
        use pgrx::IntoDatum;
        // SAFETY: the new tuple holds the four columns, datums of their
        // types (checked shape in `find`); CatalogTupleUpdate updates the
        // version at `tid` (WAL-logged, HOT when it can be; it raises if
        // that version was updated meanwhile, which the chain's lock rules
        // out) and inserts the primary key's entry when the update is not
        // HOT (the table's only index, plain columns: checked in `find`).
        // It sets the new tuple's t_self to the new version's place.
        let update = |r: pg_sys::Relation, mut tid: pg_sys::ItemPointerData| unsafe {
            let mut values = [
                tenant.into_datum().expect("text"),
                pg_sys::Datum::from(seq),
                hash.into_datum().expect("bytea"),
                pg_sys::Datum::from(pg_sys::GetCurrentTransactionStartTimestamp()),
            ];
            let mut nulls = [false; 4];
            let new = pg_sys::heap_form_tuple((*r).rd_att, values.as_mut_ptr(), nulls.as_mut_ptr());
            pg_sys::CatalogTupleUpdate(r, &mut tid, new);
            let moved = (*new).t_self;
            pg_sys::heap_freetuple(new);
            moved
        };
        // SAFETY: the relation is opened with the lock an UPDATE takes and
        // closed keeping it; a looked-up tuple is read inside the callback.
        unsafe {
            let moved = match at {
                Some(tid) => {
                    let r =
                        pg_sys::table_open(self.rel, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
                    let moved = update(r, tid);
                    pg_sys::table_close(r, pg_sys::NoLock as pg_sys::LOCKMODE);
                    Some(moved)
                }
                None => self.with_row(tenant, |r, t| {
                    let t = t?;
                    let mut null = false;
                    let cur = pg_sys::heap_getattr(t, 2, (*r).rd_att, &mut null).value() as i64;
                    (!null && cur < seq).then(|| update(r, (*t).t_self))
                }),
            };
            pg_sys::CommandCounterIncrement();
            moved
        }
    }
}
