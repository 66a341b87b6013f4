//! The immutable, tamper-evident audit trail, one stage a file. Each
//! stage imports only the stages above it in this list (lowest first):
//!
//! | stage | what it does |
//! |---|---|
//! | `tamper` | what the ProcessUtility guard reads: internal DDL, sessions that wrote records |
//! | `plans` | the statements the trail runs, planned once; datum helpers |
//! | `replication` | who writes the trail under logical replication: the publisher, or this server |
//! | `chain` | the transaction's records placed in their tenants' chains; chain locks; commit callbacks |
//! | `inbox` | sealed records staged for the background writer, and drained into the chains |
//! | `writer` | the background writer: shared-memory slots, start on demand, its main loop |
//! | `capture` | the row triggers, `append`, `append_deferred`, `log_event`, `audit()` |
//! | `security_log` | the dedicated security trail, also chained |
//! | `verify` | `verify_audit`, digests |
//! | `export` | `export_audit` |
//! | `retention` | monthly partitions, `drop_audit_partition`, checkpoints |
//! | `cluster` | on Citus: `citus_verify_audit`, `citus_audit_digest`, `citus_export_audit` over every node |
//!
//! Other modules use only what this file re-exports, plus `security_log`
//! and `tamper`.

mod append;
mod capture;
mod chain;
mod cluster;
mod export;
mod inbox;
mod plans;
pub mod replication;
mod retention;
pub mod security_log;
pub mod tamper;
mod verify;
mod writer;

pub use capture::{
    append_deferred, attach_on_protect, is_audited, reattach, set_opener, set_roles_of, set_sealer,
    Entry,
};
pub use inbox::inbox_waiting;
#[cfg(feature = "pg_test")]
pub use plans::{jsonb_paths, TEST_CLOCK_US};
pub use writer::report as writer_report;
pub use writer::sweep as sweep_inbox;

/// At library load: hand the chain stage the work the higher stages do
/// around commit, and (with preload) register the background writer.
pub fn init(preloaded: bool) {
    chain::set_commit_hooks(chain::CommitHooks {
        pre_commit: Some(stage_for_writer),
        committed_staged: Some(writer::wake),
        drained: Some(writer::drained),
    });
    if preloaded {
        writer::init();
    }
}

/// Before commit: with background chaining on, seal this transaction's
/// records into the inbox instead of chaining them now.
fn stage_for_writer() {
    if writer::background() {
        inbox::stage_pending();
    }
}
