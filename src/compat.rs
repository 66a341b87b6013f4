//! Postgres-version shims, all in one place: everything that differs by
//! major version and is not hidden by pgrx. A foundation: imports nothing
//! of the extension.

use pgrx::pg_sys;
use std::ffi::c_void;

/// The `i`-th attribute of a tuple descriptor. PG 18 moved the array
/// behind `TupleDescAttr()` (`compact_attrs` first); before, it is `attrs`.
///
/// SAFETY: `desc` is a valid tuple descriptor and `i < natts`; the result
/// lives as long as the descriptor.
pub unsafe fn tuple_desc_attr<'a>(
    desc: pg_sys::TupleDesc,
    i: usize,
) -> &'a pg_sys::FormData_pg_attribute {
    #[cfg(not(feature = "pg18"))]
    // SAFETY: see the function's contract.
    unsafe {
        &*(*desc).attrs.as_ptr().add(i)
    }
    #[cfg(feature = "pg18")]
    // SAFETY: see the function's contract.
    unsafe {
        &*pg_sys::TupleDescAttr(desc, i as std::ffi::c_int)
    }
}

#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
pub unsafe fn guc_alloc(n: usize) -> *mut c_void {
    extern "C" {
        fn malloc(n: usize) -> *mut c_void;
    }
    // SAFETY: up to PG 15 GUC strings and extras are plain malloc() memory.
    unsafe { malloc(n) }
}

#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
pub unsafe fn guc_release(p: *mut c_void) {
    extern "C" {
        fn free(p: *mut c_void);
    }
    // SAFETY: p came from malloc() (the GUC machinery's or ours).
    unsafe { free(p) }
}

#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
pub unsafe fn guc_alloc(n: usize) -> *mut c_void {
    // SAFETY: from PG 16 on, GUC memory comes from guc_malloc().
    unsafe { pg_sys::guc_malloc(pg_sys::LOG as i32, n) }
}

#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
pub unsafe fn guc_release(p: *mut c_void) {
    // SAFETY: p came from guc_malloc().
    unsafe { pg_sys::guc_free(p) }
}

/// This backend's local transaction id (the number of its virtual
/// transaction id): tells one transaction of the backend from the next
/// without assigning an XID. PG 17 moved it into `PGPROC.vxid`.
pub fn local_transaction_id() -> u32 {
    // SAFETY: MyProc is this backend's PGPROC, set before any SQL runs.
    unsafe {
        let p = pg_sys::MyProc;
        if p.is_null() {
            return 0;
        }
        #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
        {
            (*p).lxid
        }
        #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
        {
            (*p).vxid.lxid
        }
    }
}

/// `ExecInsertIndexTuples()` for a tuple just inserted (not an update, no
/// ON CONFLICT): the index entries of `rri`'s relation for the slot's
/// tuple. PG 16 added `onlySummarizing` (false: every index).
///
/// SAFETY: `rri` has its indexes open, `slot` holds the inserted tuple
/// with its TID, `estate` is a live executor state.
pub unsafe fn insert_index_tuples(
    rri: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    estate: *mut pg_sys::EState,
) {
    #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
    // SAFETY: see the function's contract.
    unsafe {
        pg_sys::ExecInsertIndexTuples(
            rri,
            slot,
            estate,
            false,
            false,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
    #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
    // SAFETY: see the function's contract.
    unsafe {
        pg_sys::ExecInsertIndexTuples(
            rri,
            slot,
            estate,
            false,
            false,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            false,
        );
    }
}
