//! RBAC + ABAC `authorize()` (issue 6). Until it lands, no roles are known.

pub fn roles_of(_tenant: &str, _user: &str) -> Option<String> {
    None
}
