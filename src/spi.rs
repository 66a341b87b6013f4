//! Small facts about the current backend, and running internal SQL as the
//! extension's owner.
//!
//! Convention for every internal query: schema-qualified names only and
//! `OPERATOR(pg_catalog.=)`, so a hostile `search_path` set by the caller
//! cannot redirect anything while it runs with elevated rights.

use pgrx::pg_sys;
use std::ffi::CStr;
use std::net::IpAddr;

fn role_name(oid: pg_sys::Oid) -> Option<String> {
    // SAFETY: GetUserNameFromId with noerr=true returns NULL for unknown roles.
    unsafe {
        let p = pg_sys::GetUserNameFromId(oid, true);
        if p.is_null() {
            None
        } else {
            Some(CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    }
}

pub fn current_role_name() -> Option<String> {
    // SAFETY: GetUserId is always valid inside a backend.
    role_name(unsafe { pg_sys::GetUserId() })
}

pub fn session_role_name() -> Option<String> {
    // SAFETY: as above.
    role_name(unsafe { pg_sys::GetSessionUserId() })
}

thread_local! {
    static CLIENT: std::cell::OnceCell<Option<String>> = const { std::cell::OnceCell::new() };
}

/// The client's address as `host(inet_client_addr())` reports it: None for
/// a Unix socket and in parallel and background workers. It never changes
/// during a backend's life, so it is looked up once. Called directly, not
/// through SQL: a refused token at connection start-up (where no SQL can
/// run) still leaves an alert naming the address.
pub fn client_addr() -> Option<String> {
    if let Some(v) = CLIENT.with(|c| c.get().cloned()) {
        return v;
    }
    extern "C-unwind" {
        fn inet_client_addr(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
        fn network_host(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    }
    // SAFETY: inet_client_addr() takes no arguments and reads only
    // MyProcPort (NULL-checked) and its own call frame's isnull, so a zeroed
    // frame is a valid call; it runs inside pgrx's error boundary. Its
    // result is an inet datum, which host() (network_host) turns into text.
    let v = unsafe {
        let mut fcinfo: pg_sys::FunctionCallInfoBaseData = std::mem::zeroed();
        let inet = pg_sys::ffi::pg_guard_ffi_boundary(|| inet_client_addr(&mut fcinfo));
        if fcinfo.isnull {
            None
        } else {
            let t = pg_sys::DirectFunctionCall1Coll(Some(network_host), pg_sys::Oid::INVALID, inet);
            let p = pg_sys::text_to_cstring(t.cast_mut_ptr());
            Some(std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    };
    CLIENT.with(|c| {
        let _ = c.set(v.clone());
    });
    v
}

pub fn client_ip() -> Option<IpAddr> {
    client_addr().and_then(|s| s.parse().ok())
}

pub fn in_parallel_worker() -> bool {
    // SAFETY: plain read of a backend-global.
    unsafe { pg_sys::ParallelWorkerNumber >= 0 }
}

/// Run `f` as the bootstrap superuser, like a SECURITY DEFINER function does
/// internally. The previous user is restored afterwards; if `f` raises, the
/// (sub)transaction abort restores it.
pub fn as_owner<R>(f: impl FnOnce() -> R) -> R {
    let mut uid = pg_sys::Oid::INVALID;
    let mut sec: i32 = 0;
    // SAFETY: plain getters/setters of backend-global state.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut uid, &mut sec);
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            sec | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let r = f();
    // SAFETY: restores what we saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(uid, sec) };
    r
}

/// Whether Citus is loaded in this backend (its GUCs exist).
pub fn citus_loaded() -> bool {
    // SAFETY: a GUC lookup with missing_ok; NULL when Citus is not loaded.
    unsafe {
        !pg_sys::GetConfigOption(c"citus.propagate_set_commands".as_ptr(), true, false).is_null()
    }
}

/// Citus's `DistributedTransactionId` (transaction_identifier.h, unchanged
/// since Citus 7): the distributed transaction this backend takes part in.
#[repr(C)]
struct CitusTransactionId {
    initiator_node: i32,
    originator: bool,
    number: u64,
    stamp: pg_sys::TimestampTz,
}

/// A function of the loaded Citus library, by its C symbol; None when Citus
/// is not loaded or has no such symbol.
fn citus_symbol(name: &CStr) -> Option<*mut std::ffi::c_void> {
    if !citus_loaded() {
        return None;
    }
    // SAFETY: Citus is loaded (preloaded), so this finds the same handle;
    // signalNotFound=false returns NULL for a missing symbol.
    let p = unsafe {
        pg_sys::load_external_function(
            c"citus".as_ptr(),
            name.as_ptr(),
            false,
            std::ptr::null_mut(),
        )
    };
    (!p.is_null()).then_some(p)
}

thread_local! {
    /// Citus's `IsCitusTable`, looked up once per backend (a lookup stats
    /// the library file).
    static IS_CITUS_TABLE: std::cell::OnceCell<Option<usize>> = const { std::cell::OnceCell::new() };
}

/// Whether Citus manages the relation (distributed, reference or local
/// table in its metadata): its rows then live where Citus puts them, and
/// only a statement reaches them. False without Citus.
pub fn is_citus_table(rel: pg_sys::Oid) -> bool {
    if !citus_loaded() {
        return false;
    }
    let f = IS_CITUS_TABLE
        .with(|c| *c.get_or_init(|| citus_symbol(c"IsCitusTable").map(|p| p as usize)));
    match f {
        // SAFETY: the symbol is `bool IsCitusTable(Oid relationId)`
        // (metadata_cache.h, unchanged since Citus 10); it reads Citus's
        // metadata cache.
        Some(p) => unsafe {
            let f: unsafe extern "C-unwind" fn(pg_sys::Oid) -> bool = std::mem::transmute(p);
            f(rel)
        },
        // Citus without the symbol: assume it may manage the table.
        None => true,
    }
}

/// The distributed transaction this backend takes part in, as (initiator
/// node, transaction number, start stamp): what Citus assigns on every
/// connection of one distributed transaction. None outside one, or without
/// Citus.
pub fn citus_transaction() -> Option<(i32, u64, i64)> {
    let f = citus_symbol(c"GetCurrentDistributedTransactionId")?;
    // SAFETY: the symbol is `DistributedTransactionId *
    // GetCurrentDistributedTransactionId(void)`, which pallocs a copy of this
    // backend's id under its spinlock; it takes no arguments, so calling it
    // through this pointer type with a null argument is sound on the C ABI.
    let id = unsafe {
        let g: unsafe extern "C-unwind" fn() -> *mut CitusTransactionId = std::mem::transmute(f);
        let p = pgrx::pg_sys::ffi::pg_guard_ffi_boundary(|| g());
        if p.is_null() {
            return None;
        }
        let id = std::ptr::read(p);
        pg_sys::pfree(p.cast());
        id
    };
    (id.number != 0).then_some((id.initiator_node, id.number, id.stamp))
}

/// On a Citus coordinator: make this transaction a distributed one now (as
/// Citus does before it first reaches a worker), so it has its id.
pub fn citus_begin_distributed() -> Option<(i32, u64, i64)> {
    let f = citus_symbol(c"UseCoordinatedTransaction")?;
    // SAFETY: `void UseCoordinatedTransaction(void)`: returns at once if the
    // transaction is already coordinated, raises (through pgrx's guard) if
    // it cannot start.
    unsafe {
        let g: unsafe extern "C-unwind" fn() = std::mem::transmute(f);
        pgrx::pg_sys::ffi::pg_guard_ffi_boundary(|| g());
    }
    citus_transaction()
}

/// On Citus: `SET LOCAL setting = value` as a statement, which Citus
/// forwards to every worker connection of the transaction (it forwards
/// these, with `citus.propagate_set_commands = 'local'`, and not
/// `set_config()`). The setting is one of ours, named by the caller; the
/// value is quoted as a literal (SET takes no parameters).
///
/// The statement goes straight to `ProcessUtility` (every hook in the
/// chain sees it, Citus's included, with its text, which Citus forwards),
/// not through SPI: SPI's parse-and-plan was about 10 µs per call, and
/// pgrx's `Spi::run` assigns the transaction an id, which a read-only
/// transaction must not have (it costs a commit record, and a standby
/// refuses it).
pub fn citus_set_local(setting: &'static str, value: &str) {
    // SAFETY: a GUC lookup with missing_ok.
    let forwarding = unsafe {
        let p = pg_sys::GetConfigOption(c"citus.propagate_set_commands".as_ptr(), true, false);
        !p.is_null() && CStr::from_ptr(p).to_bytes() == b"local"
    };
    if !forwarding {
        set_local_statement("SET LOCAL citus.propagate_set_commands = 'local'");
    }
    set_local_statement(&format!(
        "SET LOCAL {setting} = {}",
        pgrx::spi::quote_literal(value)
    ));
}

/// Run one `SET LOCAL` statement, given as text, through the utility hook
/// chain, as a statement of the running query (PROCESS_UTILITY_QUERY).
/// Anything that does not parse as exactly one SET is refused.
fn set_local_statement(sql: &str) {
    let text = std::ffi::CString::new(sql).unwrap_or_else(|_| {
        crate::error::raise_msg(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "tenantguard: a setting's value cannot contain a NUL byte",
        )
    });
    // SAFETY: the statement is parsed into the current memory context,
    // where it stays for the call; a SET LOCAL node is read only after its
    // tag is checked.
    unsafe {
        let pstmt = parse_utility(&text, "SET LOCAL", |n| {
            (*n).type_ == pg_sys::NodeTag::T_VariableSetStmt
                && (*(n as *mut pg_sys::VariableSetStmt)).is_local
        });
        run_utility(
            pstmt,
            &text,
            pg_sys::ProcessUtilityContext::PROCESS_UTILITY_QUERY,
        );
    }
}

/// Parse `sql` as exactly one statement that `accept`s, wrapped as the
/// planner wraps a utility statement (a PlannedStmt, zeroed and filled),
/// all in the current memory context. Anything else is refused: the text
/// is always the extension's own.
///
/// SAFETY: the parse tree lives as long as the current memory context;
/// `accept` gets a non-NULL node.
unsafe fn parse_utility(
    sql: &CStr,
    what: &str,
    accept: impl Fn(*mut pg_sys::Node) -> bool,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: per the function's contract; the list and the statement are
    // the parser's.
    unsafe {
        let raw = pg_sys::pg_parse_query(sql.as_ptr());
        let one = if !raw.is_null() && (*raw).length == 1 {
            pg_sys::list_nth(raw, 0) as *mut pg_sys::RawStmt
        } else {
            std::ptr::null_mut()
        };
        if one.is_null() || (*one).stmt.is_null() || !accept((*one).stmt) {
            crate::error::raise_msg(
                pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("tenantguard: internal {what} did not parse as one"),
            );
        }
        let pstmt =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::PlannedStmt>()) as *mut pg_sys::PlannedStmt;
        (*pstmt).type_ = pg_sys::NodeTag::T_PlannedStmt;
        (*pstmt).commandType = pg_sys::CmdType::CMD_UTILITY;
        (*pstmt).canSetTag = true;
        (*pstmt).utilityStmt = (*one).stmt;
        (*pstmt).stmt_location = (*one).stmt_location;
        (*pstmt).stmt_len = (*one).stmt_len;
        pstmt
    }
}

/// Run a statement from `parse_utility` through the utility hook chain
/// (Citus forwards its text), with no parameters and no query
/// environment, its output discarded.
///
/// SAFETY: `pstmt` is from `parse_utility(sql, ..)` and still allocated.
unsafe fn run_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    sql: &CStr,
    context: pg_sys::ProcessUtilityContext::Type,
) {
    // SAFETY: per the function's contract.
    unsafe {
        pg_sys::ProcessUtility(
            pstmt,
            sql.as_ptr(),
            false,
            context,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            pg_sys::None_Receiver,
            std::ptr::null_mut(),
        );
    }
}

/// In a background worker, between its transactions: run one `VACUUM`
/// (which may not run in a function or a transaction block, so not through
/// SPI) as a client's simple query runs it: a top-level command, in a
/// transaction of its own that VACUUM commits and restarts as it goes.
/// The statement lives in a memory context of its own, which outlives
/// those transactions. Then the statistics are reported.
pub fn worker_vacuum(sql: &'static CStr) {
    // SAFETY: called outside any transaction (a worker between its
    // transactions); the parse tree and its PlannedStmt are allocated in a
    // context under TopMemoryContext, freed after the commit; the text is
    // checked to be exactly one VACUUM, and ProcessUtility gets it as a
    // top-level command with no parameters, no query environment and no
    // output, as exec_simple_query passes it. An ERROR unwinds out of the
    // worker, which then exits (its transaction is aborted on the way).
    unsafe {
        let old = pg_sys::CurrentMemoryContext;
        let cxt = pg_sys::AllocSetContextCreateInternal(
            pg_sys::TopMemoryContext,
            c"tenantguard vacuum".as_ptr(),
            0,
            8 * 1024,
            8 * 1024 * 1024,
        );
        pg_sys::StartTransactionCommand();
        pg_sys::MemoryContextSwitchTo(cxt);
        let pstmt = parse_utility(sql, "VACUUM", |n| {
            (*n).type_ == pg_sys::NodeTag::T_VacuumStmt
        });
        run_utility(
            pstmt,
            sql,
            pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL,
        );
        pg_sys::CommitTransactionCommand();
        pg_sys::MemoryContextSwitchTo(old);
        pg_sys::MemoryContextDelete(cxt);
        pg_sys::pgstat_report_stat(false);
    }
}

/// Whether Citus's metadata exists in this database (CREATE EXTENSION citus).
pub fn citus_metadata() -> bool {
    // SAFETY: a catalog lookup with missing_ok semantics.
    unsafe {
        pg_sys::get_relname_relid(
            c"pg_dist_partition".as_ptr(),
            pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE),
        ) != pg_sys::Oid::INVALID
    }
}

/// The relation to read the extension's table `name` from, on this node:
/// on Citus, once `citus_setup()` made it a reference table, its copy on
/// this node (the shard `<name>_<shardid>`, which every node holds).
/// Reading the table itself from a query that already runs on a shard (an
/// RLS accessor on a worker) would be a nested distributed query, which
/// Citus refuses. Elsewhere, the table itself. Schema-qualified and quoted
/// (names come from the catalogs, never from a caller).
pub fn local_table(name: &str) -> String {
    let plain = format!("tenantguard.{}", pgrx::spi::quote_identifier(name));
    if !citus_metadata() {
        return plain;
    }
    read_one::<String>(
        "SELECT pg_catalog.format('tenantguard.%I', c.relname OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) s.shardid)
           FROM pg_catalog.pg_dist_shard s JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.logicalrelid
          WHERE s.logicalrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.format('tenantguard.%I', $1::pg_catalog.text))
            AND pg_catalog.to_regclass(pg_catalog.format('tenantguard.%I', c.relname OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) s.shardid)) IS NOT NULL
          LIMIT 1",
        &[name.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(plain)
}

/// Whether the extension's schema exists in this database (the library can
/// be preloaded into databases that never ran CREATE EXTENSION).
pub fn relation_oid(name: &CStr) -> Option<pg_sys::Oid> {
    // SAFETY: catalog lookups with missing_ok semantics.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"tenantguard".as_ptr(), true);
        if nsp == pg_sys::Oid::INVALID {
            return None;
        }
        let rel = pg_sys::get_relname_relid(name.as_ptr(), nsp);
        (rel != pg_sys::Oid::INVALID).then_some(rel)
    }
}

thread_local! {
    /// `relation_oid_cached`'s answers, with the generation they were
    /// found under.
    static RELATIONS: std::cell::RefCell<Vec<(&'static CStr, pg_sys::Oid, u64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    static RELATIONS_GEN: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
    static RELATIONS_WATCHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// As [`relation_oid`], remembered until a relcache invalidation of that
/// relation (dropped, renamed, altered) or of every relation. A name not
/// found is looked up again at the next call.
pub fn relation_oid_cached(name: &'static CStr) -> Option<pg_sys::Oid> {
    let gen = relations_generation();
    let known = RELATIONS.with(|r| {
        r.borrow()
            .iter()
            .find(|(n, _, g)| *n == name && *g == gen)
            .map(|(_, oid, _)| *oid)
    });
    if known.is_some() {
        return known;
    }
    let oid = relation_oid(name)?;
    RELATIONS.with(|r| {
        let mut r = r.borrow_mut();
        r.retain(|(n, _, g)| *n != name && *g == gen);
        r.push((name, oid, gen));
    });
    Some(oid)
}

/// Changes whenever a relation [`relation_oid_cached`] remembers (or every
/// relation) is invalidated: anything derived from those relations'
/// definitions since is stale. Pending invalidations are processed first.
pub fn relations_generation() -> u64 {
    if !RELATIONS_WATCHED.with(|w| w.replace(true)) {
        on_relcache_invalidation(relation_changed);
    }
    // SAFETY: processes pending shared invalidations, as every lock
    // acquisition does.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    RELATIONS_GEN.with(|g| g.get())
}

thread_local! {
    static RELCACHE_LISTENERS: std::cell::RefCell<Vec<fn(pg_sys::Oid)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Call `f` at every relcache invalidation, with the relation's OID
/// (InvalidOid: every relation). Every cache of the extension listens
/// through this one Postgres callback: Postgres has 10 relcache callback
/// slots for all the libraries a backend loads (Citus takes several), and
/// a library that asks for one more fails the statement. `f` must not
/// raise, and must only read and write its own backend-local state.
pub fn on_relcache_invalidation(f: fn(pg_sys::Oid)) {
    let first = RELCACHE_LISTENERS.with(|l| {
        let mut l = l.borrow_mut();
        let first = l.is_empty();
        if !l.iter().any(|g| std::ptr::fn_addr_eq(*g, f)) {
            l.push(f);
        }
        first
    });
    if first {
        // SAFETY: registers a callback for the life of the backend; it only
        // calls the listeners, which never raise.
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(
                Some(relcache_invalidated),
                pg_sys::Datum::from(0),
            )
        };
    }
}

unsafe extern "C-unwind" fn relcache_invalidated(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    RELCACHE_LISTENERS.with(|l| {
        if let Ok(l) = l.try_borrow() {
            l.iter().for_each(|f| f(relid));
        }
    });
}

fn relation_changed(relid: pg_sys::Oid) {
    let ours = relid == pg_sys::Oid::INVALID
        || RELATIONS.with(|r| {
            r.try_borrow()
                .map(|r| r.iter().any(|(_, oid, _)| *oid == relid))
                .unwrap_or(true)
        });
    if ours {
        RELATIONS_GEN.with(|g| g.set(g.get() + 1));
    }
}

/// A background worker's unit of work: `f` in a transaction of its own,
/// then the transaction's statistics reported, as a backend reports them
/// when it goes idle. A worker that never went idle would otherwise report
/// none until it exits: autovacuum would not see the rows it deleted or
/// updated (the audit writer's drained inbox would grow without a vacuum).
pub fn worker_transaction<R>(
    f: impl FnOnce() -> R + std::panic::UnwindSafe + std::panic::RefUnwindSafe,
) -> R {
    let r = pgrx::bgworkers::BackgroundWorker::transaction(f);
    // SAFETY: outside any transaction (the one above has committed), as
    // pgstat_report_stat requires; without `force` it flushes at most once
    // a second.
    unsafe { pg_sys::pgstat_report_stat(false) };
    r
}

pub fn in_transaction() -> bool {
    // SAFETY: plain read of transaction state.
    unsafe { pg_sys::IsTransactionState() }
}

/// Whether SQL (SPI) can run here: inside a transaction, and either under a
/// snapshot or a portal SPI can take one for. Connection start-up applies
/// the startup packet's options and `ALTER ROLE/DATABASE ... SET` inside a
/// transaction but with neither, and SPI would fail there with FATAL.
pub fn can_run_sql() -> bool {
    // Declared here without pgrx's error-boundary wrapper: both are plain
    // getters of backend-global state that cannot raise, and this runs in
    // every statement's context check.
    extern "C" {
        fn IsTransactionState() -> bool;
        fn ActiveSnapshotSet() -> bool;
    }
    // SAFETY: see above; plain reads of backend-global transaction, snapshot
    // and portal state.
    unsafe { IsTransactionState() && (ActiveSnapshotSet() || !pg_sys::ActivePortal.is_null()) }
}

/// Run `f` with `search_path` pinned to `pg_catalog, pg_temp` (what a
/// SECURITY DEFINER function's SET clause does), so catalog deparsing and
/// the DDL we run are independent of the caller's search_path. Not for
/// parallel mode, where GUCs cannot change.
pub fn with_pinned_search_path<R>(f: impl FnOnce() -> R) -> R {
    with_guc(c"search_path", c"pg_catalog, pg_temp", f)
}

/// [`with_guc`] for several settings at once (one nest level).
pub fn with_gucs<R>(settings: &[(&std::ffi::CStr, &std::ffi::CStr)], f: impl FnOnce() -> R) -> R {
    if settings.is_empty() {
        return f();
    }
    // SAFETY: the same sequence fmgr_security_definer uses; on error the
    // (sub)transaction abort pops the GUC nest level.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        for (name, value) in settings {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        let r = f();
        pg_sys::AtEOXact_GUC(true, level);
        r
    }
}

/// Run `f` with one GUC set for its duration (restored afterwards, and by
/// the (sub)transaction abort on error). Not for parallel mode.
pub fn with_guc<R>(name: &std::ffi::CStr, value: &std::ffi::CStr, f: impl FnOnce() -> R) -> R {
    with_gucs(&[(name, value)], f)
}

/// Whether [`select_latest`] reads what is committed now. Not in parallel
/// mode (a parallel query's leader and workers cannot take new snapshots):
/// there it reads under the query's snapshot, and what it returns serves
/// that statement only (see [`cache_stamp`]).
pub fn loads_are_latest() -> bool {
    // SAFETY: plain read of transaction state.
    unsafe { !pg_sys::IsInParallelMode() }
}

/// How long a value loaded through [`select_latest`] may be cached: 0 for
/// "until the cache generation changes" (it was read as committed now);
/// in parallel mode, where it was read under the query's snapshot, this
/// statement's start, so it serves this statement only (every row of a
/// parallel scan, in the leader or a worker) and is loaded again after it.
pub fn cache_stamp() -> i64 {
    if loads_are_latest() {
        0
    } else {
        // SAFETY: reads a backend-global timestamp (the leader's, in a
        // worker); never 0 in a running statement.
        unsafe { pg_sys::GetCurrentStatementStartTimestamp() }.max(1)
    }
}

/// Whether a value cached with `stamp` may still be used.
pub fn cache_stamp_valid(stamp: i64) -> bool {
    stamp == 0 || stamp == cache_stamp()
}

/// One row of [`select_latest`].
pub struct LatestRow {
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
}

impl LatestRow {
    /// Column `col` (1-based), converted as pgrx's SPI rows do (type-checked).
    pub fn get<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(
        &self,
        col: usize,
    ) -> Result<Option<T>, pgrx::spi::Error> {
        let mut isnull = false;
        // SAFETY: the tuple and descriptor come from SPI_tuptable of the
        // query just run, still connected; `col` is checked by SPI.
        unsafe {
            let oid = pg_sys::SPI_gettypeid(self.desc, col as i32);
            if oid == pg_sys::Oid::INVALID {
                return Err(pgrx::spi::SpiErrorCodes::NoAttribute.into());
            }
            let d = pg_sys::SPI_getbinval(self.tuple, self.desc, col as i32, &mut isnull);
            Ok(T::try_from_datum(d, isnull, oid)?)
        }
    }
}

/// Run a read-only query over the extension's own tables (the access rules,
/// the authorization model) under a snapshot taken now, and hand each row to
/// `each`. Must run inside `Spi::connect`.
///
/// Those rows feed caches that stay valid until the tables change again,
/// so they must be what is committed now: not what an open cursor's
/// snapshot, a REPEATABLE READ transaction's snapshot or a STABLE function's
/// snapshot shows. (Loaded under such a snapshot, a revocation that had
/// just bumped the cache generation would be missed, and the stale rules
/// kept for good.) The transaction's own changes are included.
pub fn select_latest(
    query: &str,
    args: &[&str],
    mut each: impl FnMut(&LatestRow) -> Result<(), pgrx::spi::Error>,
) -> Result<(), pgrx::spi::Error> {
    let q = std::ffi::CString::new(query).expect("queries have no NUL");
    // SAFETY: plain reads of snapshot state. In parallel mode no new
    // snapshot can be taken: read under the query's own (see
    // loads_are_latest(), whose callers then keep nothing).
    let snapshot = unsafe {
        if !loads_are_latest() {
            if pg_sys::ActiveSnapshotSet() {
                pg_sys::GetActiveSnapshot()
            } else {
                pg_sys::GetTransactionSnapshot()
            }
        } else {
            pg_sys::GetLatestSnapshot()
        }
    };
    let mut types = vec![pg_sys::TEXTOID; args.len()];
    // SAFETY: SPI is connected (see above); the plan, the argument datums and
    // the snapshot are used only within this call; SPI_execute_snapshot
    // registers the snapshot for the query's duration. Rows are read before
    // the next SPI call.
    unsafe {
        let plan = pg_sys::SPI_prepare(q.as_ptr(), args.len() as i32, types.as_mut_ptr());
        if plan.is_null() {
            return Err(pgrx::spi::Error::from(pgrx::spi::SpiErrorCodes::Argument));
        }
        let mut values: Vec<pg_sys::Datum> = args
            .iter()
            .map(|a| pgrx::datum::IntoDatum::into_datum(*a).expect("text is never NULL"))
            .collect();
        let nulls = std::ffi::CString::new(" ".repeat(args.len())).expect("spaces");
        let rc = pg_sys::SPI_execute_snapshot(
            plan,
            values.as_mut_ptr(),
            nulls.as_ptr(),
            snapshot,
            std::ptr::null_mut(),
            true,
            false,
            0,
        );
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            pg_sys::SPI_freeplan(plan);
            return Err(pgrx::spi::Error::from(pgrx::spi::SpiErrorCodes::OpUnknown));
        }
        let table = pg_sys::SPI_tuptable;
        let n = pg_sys::SPI_processed as usize;
        let mut result = Ok(());
        if !table.is_null() {
            for i in 0..n {
                let row = LatestRow {
                    tuple: *(*table).vals.add(i),
                    desc: (*table).tupdesc,
                };
                if let Err(e) = each(&row) {
                    result = Err(e);
                    break;
                }
            }
            pg_sys::SPI_freetuptable(table);
        }
        pg_sys::SPI_freeplan(plan);
        result
    }
}

/// Whether the current user is a superuser or has the privileges of
/// `tenantguard_admin`.
pub fn is_audit_admin() -> bool {
    // SAFETY: catalog lookups; a missing role gives InvalidOid.
    unsafe {
        if pg_sys::superuser() {
            return true;
        }
        let admin = pg_sys::get_role_oid(c"tenantguard_admin".as_ptr(), true);
        admin != pg_sys::Oid::INVALID && pg_sys::has_privs_of_role(pg_sys::GetUserId(), admin)
    }
}

// ------------------------------------------------------------ read-only SPI
// pgrx's `Spi::get_one*` run their query through `SpiClient::update`, which
// assigns a transaction id first: on a primary every read-only transaction
// that called them consumed an XID (and wrote a commit record), and on a hot
// standby they failed with "cannot assign TransactionIds during recovery".
// Read paths use these instead: the same results, through `select`, which
// runs read-only while the transaction has no XID of its own.

/// One value of the first row, read-only (as `Spi::get_one_with_args`).
pub fn read_one<A: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(
    query: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Option<A>, pgrx::spi::Error> {
    pgrx::spi::Spi::connect(|c| c.select(query, Some(1), args)?.first().get_one::<A>())
}

/// Two values of the first row, read-only (as `Spi::get_two_with_args`).
pub fn read_two<
    A: pgrx::datum::FromDatum + pgrx::datum::IntoDatum,
    B: pgrx::datum::FromDatum + pgrx::datum::IntoDatum,
>(
    query: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<(Option<A>, Option<B>), pgrx::spi::Error> {
    pgrx::spi::Spi::connect(|c| c.select(query, Some(1), args)?.first().get_two::<A, B>())
}

/// Whether this server is a hot standby (in recovery).
pub fn on_standby() -> bool {
    // SAFETY: a plain read of shared recovery state.
    unsafe { pg_sys::RecoveryInProgress() }
}

/// Refuse, with 25006 and what needed it, work that must write on a standby
/// (instead of Postgres's "cannot assign TransactionIds during recovery").
pub fn require_primary(what: &str) {
    if on_standby() {
        crate::error::raise_msg(
            pgrx::prelude::PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("tenantguard: {what} writes, and this server is a hot standby: run it on the primary"),
        );
    }
}
