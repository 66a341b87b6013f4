//! Pure core of pg_tenantguard.
//!
//! Everything in this crate is plain Rust: it never links against Postgres,
//! so its `#[test]`s run with a bare `cargo test -p tenantguard-core`.
//! The extension crate (`pg_tenantguard`) only converts types and errors.

pub mod access;
pub mod authz;
pub mod bypass_grant;
pub mod chain;
pub mod compile;
pub mod cond;
pub mod crypto;
pub mod error;
pub mod idp;
pub mod jsonb;
pub mod jwk;
pub mod keyring;
pub mod net;
pub mod policy;
pub mod replication;
pub mod token;

pub use error::{DomainError, SqlState};
