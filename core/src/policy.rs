//! Policy planning: from the catalog facts of one table, the DDL that makes
//! it tenant-protected. Pure: the extension gathers the facts (and quotes
//! every identifier with Postgres's own `quote_identifier`) and runs the
//! statements; this module decides *which* statements, so idempotency and
//! the exact SQL are unit-tested without a server.

use crate::error::DomainError;

/// Names of the policies `protect` owns. Other policies on the table are
/// left alone (and reported by the linter).
pub const POLICY_SELECT: &str = "tenantguard_select";
pub const POLICY_INSERT: &str = "tenantguard_insert";
pub const POLICY_UPDATE: &str = "tenantguard_update";
pub const POLICY_DELETE: &str = "tenantguard_delete";
pub const POLICY_BYPASS: &str = "tenantguard_bypass";
pub const ALL_POLICIES: [&str; 5] = [
    POLICY_SELECT,
    POLICY_INSERT,
    POLICY_UPDATE,
    POLICY_DELETE,
    POLICY_BYPASS,
];

/// The role whose members may use the bypass policy.
pub const BYPASS_ROLE: &str = "tenantguard_bypass";

/// Tenant column types with a typed accessor, so the comparison in the
/// policy is between equal types and the index on the column stays usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantType {
    Text,
    Uuid,
    BigInt,
    Int,
}

impl TenantType {
    /// From `format_type()` of the column.
    pub fn from_pg(ty: &str, column: &str) -> Result<TenantType, DomainError> {
        match ty {
            "text" => Ok(TenantType::Text),
            t if t == "character varying" || t.starts_with("character varying(") => {
                Ok(TenantType::Text)
            }
            "uuid" => Ok(TenantType::Uuid),
            "bigint" => Ok(TenantType::BigInt),
            "integer" => Ok(TenantType::Int),
            other => Err(DomainError::UnsupportedTenantType {
                column: column.to_string(),
                ty: other.to_string(),
            }),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            TenantType::Text => "",
            TenantType::Uuid => "_uuid",
            TenantType::BigInt => "_bigint",
            TenantType::Int => "_int",
        }
    }

    /// The active tenant, typed.
    pub fn active_fn(self) -> String {
        format!("tenantguard.tenant_id{}()", self.suffix())
    }

    /// The read scope, typed.
    pub fn scope_fn(self) -> String {
        format!("tenantguard.tenant_ids{}()", self.suffix())
    }
}

/// What the extension read from the catalogs about one table. Identifiers
/// are already quoted by Postgres.
#[derive(Debug, Clone)]
pub struct TableFacts {
    /// `schema.table`, each part quoted.
    pub table: String,
    /// The tenant column, quoted.
    pub column: String,
    pub column_type: TenantType,
    pub rls_enabled: bool,
    pub rls_forced: bool,
    /// Names of the policies on the table.
    pub policies: Vec<String>,
    /// `pg_get_expr` of the column default, if any.
    pub column_default: Option<String>,
    /// An index exists whose first key column is the tenant column.
    pub has_tenant_index: bool,
    /// The audit triggers are attached (audit issue).
    pub audited: bool,
    /// What Citus makes of the table, if Citus is installed.
    pub citus: Citus,
}

/// A table as Citus sees it (docs/operations.md, Citus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Citus {
    /// Citus is not installed in this database.
    #[default]
    Absent,
    /// Installed; the table is a plain (or Citus-local) table, which may
    /// be distributed later.
    Local,
    /// Distributed; `by_tenant`: the tenant column is its distribution column.
    Distributed { by_tenant: bool },
    /// A reference table (a copy on every node).
    Reference,
}

impl Citus {
    fn present(self) -> bool {
        self != Citus::Absent
    }
}

/// The policy statements, keyed by policy name.
pub fn policy_ddl(f: &TableFacts) -> Vec<(&'static str, String)> {
    let t = &f.table;
    let c = &f.column;
    // The accessors are called directly. They are STABLE, so an index scan
    // evaluates them once, as its key (`col = ANY (accessor())` is an index
    // qual), and a scan that filters calls them per row; each answers from a
    // per-statement cache (a copy of a finished datum), which costs less per
    // row than plain RLS's current_setting(). Every statement, including
    // each FETCH of a cursor, re-checks the context (expiry, revocation).
    let scope = format!("{c} = ANY ({})", f.column_type.scope_fn());
    let active = format!("{c} = {}", f.column_type.active_fn());
    vec![
        (
            POLICY_SELECT,
            format!("CREATE POLICY {POLICY_SELECT} ON {t} AS PERMISSIVE FOR SELECT TO PUBLIC USING ({scope})"),
        ),
        (
            POLICY_INSERT,
            format!("CREATE POLICY {POLICY_INSERT} ON {t} AS PERMISSIVE FOR INSERT TO PUBLIC WITH CHECK ({active})"),
        ),
        (
            POLICY_UPDATE,
            format!("CREATE POLICY {POLICY_UPDATE} ON {t} AS PERMISSIVE FOR UPDATE TO PUBLIC USING ({active}) WITH CHECK ({active})"),
        ),
        (
            POLICY_DELETE,
            format!("CREATE POLICY {POLICY_DELETE} ON {t} AS PERMISSIVE FOR DELETE TO PUBLIC USING ({active})"),
        ),
        (
            // Only members of tenantguard_bypass see this policy at all, so the
            // application role's plans keep the pure, indexable tenant qual.
            POLICY_BYPASS,
            if f.citus.present() {
                // Citus refuses sub-selects in the policies of distributed
                // tables: the accessor directly (STABLE: evaluated per row,
                // for members of tenantguard_bypass only).
                format!("CREATE POLICY {POLICY_BYPASS} ON {t} AS PERMISSIVE FOR ALL TO {BYPASS_ROLE} USING (tenantguard.bypassing()) WITH CHECK (tenantguard.bypassing())")
            } else {
                format!("CREATE POLICY {POLICY_BYPASS} ON {t} AS PERMISSIVE FOR ALL TO {BYPASS_ROLE} USING ((SELECT tenantguard.bypassing())) WITH CHECK ((SELECT tenantguard.bypassing()))")
            },
        ),
    ]
}

/// The DDL that brings the table to the protected state. Empty when it is
/// already there: running `protect` twice changes nothing.
pub fn plan_protect(f: &TableFacts, with_audit: bool) -> Vec<String> {
    let mut out = Vec::new();
    let t = &f.table;
    if !f.rls_enabled {
        out.push(format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"));
    }
    if !f.rls_forced {
        out.push(format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"));
    }
    for (name, ddl) in policy_ddl(f) {
        if !f.policies.iter().any(|p| p == name) {
            out.push(ddl);
        }
    }
    let want_default = f.column_type.active_fn();
    if f.column_default.as_deref() != Some(want_default.as_str()) {
        let ddl = format!(
            "ALTER TABLE {t} ALTER COLUMN {} SET DEFAULT {want_default}",
            f.column
        );
        if f.citus == (Citus::Distributed { by_tenant: true }) {
            // Citus refuses ALTER TABLE on the distribution column: the
            // default lives on the coordinator's table, where INSERTs are
            // planned (their defaults are evaluated there).
            out.push(
                "SELECT pg_catalog.set_config('citus.enable_ddl_propagation', 'off', true)".into(),
            );
            out.push(ddl);
            out.push(
                "SELECT pg_catalog.set_config('citus.enable_ddl_propagation', 'on', true)".into(),
            );
        } else {
            out.push(ddl);
        }
    }
    if !f.has_tenant_index {
        out.push(format!("CREATE INDEX ON {t} ({})", f.column));
    }
    if with_audit && !f.audited {
        out.push(format!(
            "SELECT tenantguard.audit('{}'::regclass)",
            t.replace('\'', "''")
        ));
    }
    out
}

/// The DDL that removes what `protect` added (the index stays: it is useful
/// and dropping an index is not "unprotecting").
pub fn plan_unprotect(f: &TableFacts) -> Vec<String> {
    let mut out = Vec::new();
    let t = &f.table;
    for name in ALL_POLICIES {
        if f.policies.iter().any(|p| p == name) {
            out.push(format!("DROP POLICY {name} ON {t}"));
        }
    }
    if f.column_default.as_deref() == Some(f.column_type.active_fn().as_str()) {
        out.push(format!(
            "ALTER TABLE {t} ALTER COLUMN {} DROP DEFAULT",
            f.column
        ));
    }
    if f.rls_forced {
        out.push(format!("ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY"));
    }
    if f.rls_enabled {
        out.push(format!("ALTER TABLE {t} DISABLE ROW LEVEL SECURITY"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare() -> TableFacts {
        TableFacts {
            table: "public.\"Order Lines\"".into(),
            column: "tenant_id".into(),
            column_type: TenantType::Uuid,
            rls_enabled: false,
            rls_forced: false,
            policies: vec![],
            column_default: None,
            has_tenant_index: false,
            audited: false,
            citus: Citus::Absent,
        }
    }

    fn protected() -> TableFacts {
        TableFacts {
            rls_enabled: true,
            rls_forced: true,
            policies: ALL_POLICIES.iter().map(|s| s.to_string()).collect(),
            column_default: Some("tenantguard.tenant_id_uuid()".into()),
            has_tenant_index: true,
            audited: true,
            ..bare()
        }
    }

    #[test]
    fn citus_plans() {
        let dist = TableFacts {
            citus: Citus::Distributed { by_tenant: true },
            ..bare()
        };
        let p = plan_protect(&dist, true);
        assert!(p
            .iter()
            .any(|s| s
                .contains("USING (tenantguard.bypassing()) WITH CHECK (tenantguard.bypassing())")));
        assert!(
            !p.iter()
                .any(|s| s.contains("SELECT tenantguard.bypassing()")),
            "no sub-select: {p:#?}"
        );
        let i = p.iter().position(|s| s.contains("SET DEFAULT")).unwrap();
        assert!(p[i - 1].contains("'citus.enable_ddl_propagation', 'off'"));
        assert!(p[i + 1].contains("'citus.enable_ddl_propagation', 'on'"));
        assert!(
            p.iter().any(|s| s.contains("tenantguard.audit(")),
            "audited: the triggers go to the shards"
        );
        let local = TableFacts {
            citus: Citus::Local,
            ..bare()
        };
        let p = plan_protect(&local, true);
        assert!(p
            .iter()
            .any(|s| s.contains("USING (tenantguard.bypassing())")));
        assert!(p.iter().any(|s| s.contains("tenantguard.audit(")));
        assert!(!p.iter().any(|s| s.contains("enable_ddl_propagation")));
    }

    #[test]
    fn full_plan_for_a_bare_table() {
        let p = plan_protect(&bare(), true);
        assert_eq!(p.len(), 10, "{p:#?}");
        assert_eq!(
            p[0],
            "ALTER TABLE public.\"Order Lines\" ENABLE ROW LEVEL SECURITY"
        );
        assert_eq!(
            p[1],
            "ALTER TABLE public.\"Order Lines\" FORCE ROW LEVEL SECURITY"
        );
        assert!(p[2].contains(
            "FOR SELECT TO PUBLIC USING (tenant_id = ANY (tenantguard.tenant_ids_uuid()))"
        ));
        assert!(p[3].contains(
            "FOR INSERT TO PUBLIC WITH CHECK (tenant_id = tenantguard.tenant_id_uuid())"
        ));
        assert!(p[6].contains("TO tenantguard_bypass USING ((SELECT tenantguard.bypassing()))"));
        assert!(p[7].ends_with("SET DEFAULT tenantguard.tenant_id_uuid()"));
        assert_eq!(p[8], "CREATE INDEX ON public.\"Order Lines\" (tenant_id)");
        assert_eq!(
            p[9],
            "SELECT tenantguard.audit('public.\"Order Lines\"'::regclass)"
        );
    }

    #[test]
    fn idempotent() {
        assert!(plan_protect(&protected(), true).is_empty());
    }

    #[test]
    fn only_the_missing_pieces() {
        let mut f = protected();
        f.rls_forced = false;
        f.policies.retain(|p| p != POLICY_DELETE);
        let p = plan_protect(&f, true);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].contains("FORCE ROW LEVEL SECURITY"));
        assert!(p[1].starts_with("CREATE POLICY tenantguard_delete"));
    }

    #[test]
    fn typed_accessors() {
        for (ty, f) in [
            ("text", "tenantguard.tenant_id()"),
            ("character varying(64)", "tenantguard.tenant_id()"),
            ("uuid", "tenantguard.tenant_id_uuid()"),
            ("bigint", "tenantguard.tenant_id_bigint()"),
            ("integer", "tenantguard.tenant_id_int()"),
        ] {
            assert_eq!(TenantType::from_pg(ty, "c").unwrap().active_fn(), f);
        }
        assert!(TenantType::from_pg("jsonb", "c").is_err());
    }

    #[test]
    fn quotes_in_names_cannot_escape_the_audit_literal() {
        let mut f = bare();
        f.table = "public.\"x'); DROP TABLE t; --\"".into();
        let p = plan_protect(&f, true);
        assert!(p.iter().any(
            |s| s == "SELECT tenantguard.audit('public.\"x''); DROP TABLE t; --\"'::regclass)"
        ));
    }

    #[test]
    fn unprotect_reverses() {
        let p = plan_unprotect(&protected());
        assert_eq!(p.len(), 8);
        assert!(plan_unprotect(&bare()).is_empty());
    }
}
