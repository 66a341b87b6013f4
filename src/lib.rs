//! pg_tenantguard: tenant isolation as a property of the database.
//!
//! The pure logic (token codec, keyring, access rules, policy planning)
//! lives in the `tenantguard-core` crate; the modules here only read
//! Postgres state, call the core, and convert errors at the SQL boundary.

use pgrx::prelude::*;

// Foundations: import no capability (docs/architecture.md).
mod access;
mod alerts;
mod compat;
mod context;
mod error;
mod gucs;
mod issuers;
mod keys;
mod spi;
// Capabilities, lowest first: each imports only those above it here.
mod audit;
mod authz;
mod bypass;
mod crypto;
mod heartbeat;
mod protect;
mod subjects;
// The ProcessUtility guard, and the report that reads everyone.
mod guard_hook;
mod status;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!(
    "../sql/audit.sql",
    name = "audit_tables",
    requires = ["bootstrap"]
);
pgrx::extension_sql_file!(
    "../sql/authz.sql",
    name = "authz_tables",
    requires = ["bootstrap"]
);
pgrx::extension_sql_file!(
    "../sql/crypto.sql",
    name = "crypto_tables",
    requires = ["bootstrap"]
);
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);
pgrx::extension_sql_file!("../sql/guard.sql", name = "guard", requires = ["finalize"]);
pgrx::extension_sql_file!(
    "../sql/replication.sql",
    name = "replication",
    requires = ["finalize"]
);
pgrx::extension_sql_file!("../sql/idp.sql", name = "idp", requires = ["replication"]);
pgrx::extension_sql_file!("../sql/citus.sql", name = "citus", requires = ["idp"]);
pgrx::extension_sql_file!(
    "../sql/subjects.sql",
    name = "subjects",
    requires = ["bootstrap"]
);

/// Library load: registers GUCs (with the hooks of the modules that own
/// what they check), hooks and workers; nothing else.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    status::note_load();
    let preloaded = status::preloaded();
    keys::set_listeners(keys::Listeners {
        signing_changed: Some(context::forget_verified),
        master_changed: Some(crypto::forget_keys),
    });
    let (signing_keys, audit_keys, master_key) = keys::hooks();
    gucs::init(gucs::Hooks {
        signing_keys,
        audit_keys,
        master_key,
        leader_bypass: context::bypass_state::hooks(),
        bypass_grant: context::bypass_state::grant_hooks(),
        context: context::guc::hooks(),
    });
    gucs::init_limits(preloaded);
    gucs::reserve_prefix();
    access::init();
    issuers::init();
    context::bypass_state::init_callbacks();
    audit::init(preloaded);
    authz::init();
    subjects::init();
    if preloaded {
        context::bypass_state::init_shmem();
        guard_hook::init();
        alerts::init();
        heartbeat::init();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    // #[pg_schema] needs an inline module; the tests live in their own file.
    include!("pg_tests.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "tenantguard.signing_keys = 'k1:pg-test-key-0123456789abcdef0123456789,k2:pg-test-key2-0123456789abcdef012345678'",
            "tenantguard.audit_keys = 'a1:pg-test-audit-key-0123456789abcdef01234'",
            "tenantguard.master_key = 'm1:pg-test-master-key-0123456789abcdef0123'",
        ]
    }
}
