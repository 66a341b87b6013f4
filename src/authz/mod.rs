//! `authorize()`: RBAC + ABAC inside the engine.
//!
//! | stage | what it does |
//! |---|---|
//! | `model` | policies and principals loaded from the `authz_*` tables, cached per backend |
//! | `decision` | `authorize()`, `require()`, `explain_authorize()`, deny sampling (through audit's public API) |
//! | `compiled` | `authorize_policy()`: a rule compiled to an RLS policy over per-statement slot values |

mod compiled;
mod decision;
mod model;

/// At library load: the audit trail records each record's actor roles as
/// this model sees them.
pub fn init() {
    crate::audit::set_roles_of(model::roles_of);
}
