//! Policy generation and checking, run by the DBA: `protect()` and friends
//! (`policy`), the linter (`lint`). The guarded-schema event triggers are
//! SQL (`sql/guard.sql`); the ProcessUtility guard is `guard_hook.rs`.

mod lint;
mod policy;
