//! `tenantguard.lint()`: find every hole in tenant isolation. Each check is
//! one catalog query returning findings with a stable code and a fix the
//! DBA can run (identifiers quoted by `format('%I')`).

use pgrx::prelude::*;

/// (code, severity, query). Each query takes $1 = schema filter (NULL =
/// every user schema) and returns (object, detail, fix).
const CHECKS: &[(&str, &str, &str)] = &[
    (
        "TG001",
        "error",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname), 'table has a tenant column but row-level security is off',
               format('SELECT tenantguard.protect(%L);', format('%I.%I', n.nspname, c.relname))
          FROM tg_tables c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.has_tenant_col AND NOT c.relrowsecurity AND NOT c.shared"#,
    ),
    (
        "TG002",
        "error",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname), 'row-level security is enabled but not FORCEd: the owner bypasses it',
               format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY;', n.nspname, c.relname)
          FROM tg_tables c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relrowsecurity AND NOT c.relforcerowsecurity"#,
    ),
    (
        "TG003",
        "error",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname), 'row-level security is enabled but the table has no policy (every non-owner sees nothing, owners everything)',
               format('SELECT tenantguard.protect(%L);', format('%I.%I', n.nspname, c.relname))
          FROM tg_tables c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relrowsecurity AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)"#,
    ),
    (
        "TG004",
        "error",
        r#"
        SELECT format('%I on %I.%I', p.polname, n.nspname, c.relname), 'permissive policy is always true: it opens the table to every tenant',
               format('DROP POLICY %I ON %I.%I;', p.polname, n.nspname, c.relname)
          FROM pg_policy p JOIN tg_tables c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE p.polpermissive
           AND (pg_get_expr(p.polqual, p.polrelid) = 'true' OR pg_get_expr(p.polwithcheck, p.polrelid) = 'true')
           -- for someone other than the table's owner
           AND EXISTS (SELECT 1 FROM unnest(p.polroles) r WHERE r = 0 OR r <> c.relowner)"#,
    ),
    (
        "TG005",
        "error",
        r#"
        SELECT format('%I on %I.%I', p.polname, n.nspname, c.relname), 'policy reads current_setting() directly: any session can SET that value and switch tenants',
               format('DROP POLICY %I ON %I.%I; SELECT tenantguard.protect(%L);', p.polname, n.nspname, c.relname, format('%I.%I', n.nspname, c.relname))
          FROM pg_policy p JOIN tg_tables c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE coalesce(pg_get_expr(p.polqual, p.polrelid), '') || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') ~* 'current_setting'"#,
    ),
    (
        "TG006",
        "warning",
        r#"
        SELECT format('%I on %I.%I', p.polname, n.nspname, c.relname), 'extra permissive policy ORed with the tenant policy widens what a tenant can see',
               format('DROP POLICY %I ON %I.%I; -- or recreate it AS RESTRICTIVE', p.polname, n.nspname, c.relname)
          FROM pg_policy p JOIN tg_tables c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.protected AND p.polpermissive AND p.polname NOT LIKE 'tenantguard\_%'"#,
    ),
    (
        "TG007",
        "error",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname), format('login role %I owns a protected table: it can disable RLS or drop policies', r.rolname),
               format('ALTER TABLE %I.%I OWNER TO <a NOLOGIN owner role>;', n.nspname, c.relname)
          FROM tg_tables c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles r ON r.oid = c.relowner
         WHERE (c.protected OR c.has_tenant_col) AND r.rolcanlogin AND NOT r.rolsuper"#,
    ),
    (
        "TG008",
        "warning",
        r#"
        SELECT format('role %I', r.rolname), CASE WHEN r.rolsuper THEN 'superuser that can log in: bypasses every policy' ELSE 'BYPASSRLS role that can log in: bypasses every policy' END,
               format('ALTER ROLE %I NOLOGIN; -- or NOBYPASSRLS', r.rolname)
          FROM pg_roles r
         WHERE r.rolcanlogin AND (r.rolsuper OR r.rolbypassrls) AND r.oid <> 10
           AND ($1 IS NULL OR EXISTS (SELECT 1 FROM tg_tables t WHERE t.protected))"#,
    ),
    (
        "TG009",
        "error",
        r#"
        SELECT DISTINCT format('%I.%I', vn.nspname, v.relname),
               CASE v.relkind WHEN 'm'
                 THEN format('materialized view over protected table %I.%I holds every tenant''s rows and has no row-level security', n.nspname, c.relname)
                 ELSE format('view over protected table %I.%I runs with its owner''s rights (no security_invoker)', n.nspname, c.relname) END,
               CASE v.relkind WHEN 'm'
                 -- A materialized view cannot be security_invoker nor carry
                 -- policies: take it away from every role but its owner
                 -- (serve tenants through a protected table instead).
                 THEN format('REVOKE ALL ON %I.%I FROM PUBLIC%s;', vn.nspname, v.relname,
                             (SELECT coalesce(string_agg(DISTINCT ', ' || quote_ident(r.rolname), ''), '')
                                FROM aclexplode(v.relacl) g JOIN pg_roles r ON r.oid = g.grantee
                               WHERE g.grantee <> v.relowner))
                 ELSE format('ALTER VIEW %I.%I SET (security_invoker = on);', vn.nspname, v.relname) END
          FROM pg_class v JOIN pg_namespace vn ON vn.oid = v.relnamespace
          JOIN pg_rewrite rw ON rw.ev_class = v.oid
          JOIN pg_depend d ON d.objid = rw.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
          JOIN tg_tables c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE v.relkind IN ('v', 'm') AND (c.protected OR c.relrowsecurity)
           AND NOT coalesce(v.reloptions::text[] && ARRAY['security_invoker=true', 'security_invoker=on'], false)
           -- A materialized view only its owner can read is no hole.
           AND (v.relkind = 'v' OR EXISTS (SELECT 1 FROM aclexplode(v.relacl) g WHERE g.grantee <> v.relowner))
           AND ($1 IS NULL OR vn.nspname = $1)"#,
    ),
    (
        "TG010",
        "warning",
        r#"
        SELECT format('%I.%I(%s)', pn.nspname, f.proname, pg_get_function_identity_arguments(f.oid)), format('SECURITY DEFINER function reads protected table %I.%I with its owner''s rights', n.nspname, c.relname),
               format('ALTER FUNCTION %I.%I(%s) SECURITY INVOKER;', pn.nspname, f.proname, pg_get_function_identity_arguments(f.oid))
          FROM pg_proc f JOIN pg_namespace pn ON pn.oid = f.pronamespace
          JOIN tg_tables c ON c.protected OR c.relrowsecurity JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE f.prosecdef AND pn.nspname NOT IN ('pg_catalog', 'information_schema')
           AND (pn.nspname <> 'tenantguard' OR $1 = 'tenantguard')
           AND f.prosrc ~* ('\m' || regexp_replace(c.relname, '(\W)', '\\\1', 'g') || '\M')
           AND ($1 IS NULL OR pn.nspname = $1)"#,
    ),
    (
        "TG011",
        "warning",
        r#"
        SELECT format('%I.%I(%s)', pn.nspname, f.proname, pg_get_function_identity_arguments(f.oid)), 'SECURITY DEFINER function without a pinned search_path: callers can hijack the objects it resolves',
               format('ALTER FUNCTION %I.%I(%s) SET search_path = pg_catalog, pg_temp;', pn.nspname, f.proname, pg_get_function_identity_arguments(f.oid))
          FROM pg_proc f JOIN pg_namespace pn ON pn.oid = f.pronamespace
         WHERE f.prosecdef AND pn.nspname NOT IN ('pg_catalog', 'information_schema')
           AND (pn.nspname <> 'tenantguard' OR $1 = 'tenantguard')
           AND NOT coalesce(f.proconfig::text[] && (SELECT array_agg(x) FROM unnest(f.proconfig) x WHERE x LIKE 'search\_path=%'), false)
           AND ($1 IS NULL OR pn.nspname = $1)"#,
    ),
    (
        "TG012",
        "error",
        r#"
        SELECT format('%I on %I.%I', con.conname, n.nspname, c.relname), format('foreign key to protected table %s does not include the tenant column: a row can point at another tenant''s row', con.confrelid::regclass),
               format('ALTER TABLE %I.%I DROP CONSTRAINT %I; -- recreate it as FOREIGN KEY (%I, ...) REFERENCES %s (%I, ...)', n.nspname, c.relname, con.conname, c.tenant_column, con.confrelid::regclass, r.tenant_column)
          FROM pg_constraint con
          JOIN tg_tables c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN tg_tables r ON r.oid = con.confrelid
         WHERE con.contype = 'f' AND c.has_tenant_col AND r.has_tenant_col
           AND NOT (c.tenant_attnum = ANY (con.conkey) AND r.tenant_attnum = ANY (con.confkey))"#,
    ),
    (
        "TG013",
        "warning",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname), format('no index leads with tenant column %I: tenant-scoped queries scan the table', c.tenant_column),
               format('CREATE INDEX ON %I.%I (%I);', n.nspname, c.relname, c.tenant_column)
          FROM tg_tables c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.protected AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = c.tenant_attnum)"#,
    ),
    (
        "TG014",
        "warning",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname), 'table is neither protected nor marked shared',
               CASE WHEN c.has_tenant_col THEN format('SELECT tenantguard.protect(%L);', format('%I.%I', n.nspname, c.relname))
                    ELSE format('SELECT tenantguard.mark_shared(%L, ''why it is global'');', format('%I.%I', n.nspname, c.relname)) END
          FROM tg_tables c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT c.protected AND NOT c.shared AND NOT c.relrowsecurity
           -- The extension's own catalog is guarded by privileges (TG019
           -- lists what PUBLIC may read), not by tenant.
           AND n.nspname <> 'tenantguard'"#,
    ),
];

/// Checks that read the extension's own authorization tables, which the
/// caller may not be allowed to read: run as the extension owner. They only
/// report policy and object names and the action, never conditions.
const OWNER_CHECKS: &[(&str, &str, &str)] = &[
    (
        "TG015",
        "error",
        r#"
        SELECT format('%I on %I.%I', p.polname, n.nspname, c.relname),
               'compiled authorize policy names a spec that is missing or was altered: every statement on the table fails',
               format('DROP POLICY %I ON %I.%I; -- then re-run tenantguard.authorize_policy() for it', p.polname, n.nspname, c.relname)
          FROM pg_policy p JOIN tg_tables c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN LATERAL (SELECT (regexp_match(pg_get_expr(p.polqual, p.polrelid), 'authz_slot\([^,]*, ''([0-9a-f]{64})'''))[1] AS spec_id) s
         WHERE s.spec_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM tenantguard.authz_compiled ac
                            WHERE ac.spec_id = s.spec_id
                              AND encode(sha256(convert_to(ac.spec, 'UTF8')), 'hex') = ac.spec_id)"#,
    ),
    (
        "TG016",
        "warning",
        r#"
        SELECT format('%I on %I.%I', p.polname, n.nspname, c.relname),
               format('compiled authorize policy for %s lacks conditions granted since it was generated: statements of principals holding them evaluate authorize() per row (correct, slower)', ac.action),
               format('SELECT tenantguard.authorize_policy(%L, %L, %L, policy_name => %L, restrictive => %L, command => %L);',
                      format('%I.%I', n.nspname, c.relname), ac.action,
                      (SELECT array_agg(x->>0) FROM jsonb_array_elements(ac.spec::jsonb->'columns') x)::text,
                      p.polname, NOT p.polpermissive,
                      CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END)
          FROM pg_policy p JOIN tg_tables c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN LATERAL (SELECT (regexp_match(pg_get_expr(p.polqual, p.polrelid), 'authz_slot\([^,]*, ''([0-9a-f]{64})'''))[1] AS spec_id) s
          JOIN tenantguard.authz_compiled ac ON ac.spec_id = s.spec_id
         WHERE EXISTS (SELECT 1 FROM tenantguard.authz_permission ap
                        WHERE ap.condition IS NOT NULL
                          AND (ap.action = '*' OR ac.action ~ ('^' || replace(replace(ap.action, '.', '\.'), '*', '[^:]+') || '$'))
                          AND NOT (ac.spec::jsonb->'conditions') ? ap.condition)"#,
    ),
    (
        // Only for lint('tenantguard'): what the extension itself opens to
        // PUBLIC, each with why, so a reviewer sees the whole surface.
        "TG019",
        "info",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname),
               CASE WHEN c.relrowsecurity AND c.relforcerowsecurity
                 THEN 'readable by PUBLIC under row-level security: a tenant context sees its own tenant''s records only'
                 WHEN c.relname = 'subject_table' THEN 'readable by PUBLIC by design: which columns of which tables hold personal data (column names only), read by lint() and by export_subject()/erase_subject() as their caller. No tenant data'
                 ELSE 'readable by PUBLIC by design: table names, tenant columns, shared-table reasons, guarded schemas; the application role''s lint() and the guard''s event triggers (which run as the DDL''s author) read it. No tenant data' END,
               format('-- none needed; to hide it: REVOKE SELECT ON %I.%I FROM PUBLIC; (lint() then needs tenantguard_admin)', n.nspname, c.relname)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN LATERAL aclexplode(c.relacl) g
         WHERE $1 = 'tenantguard' AND n.nspname = 'tenantguard' AND c.relkind IN ('r', 'p', 'v') AND g.grantee = 0
        UNION ALL
        SELECT format('%I.%I(%s)', pn.nspname, f.proname, pg_get_function_identity_arguments(f.oid)),
               'SECURITY DEFINER and executable by PUBLIC: its first act is to check its caller (see docs/reference.md)',
               '-- none needed'
          FROM pg_proc f JOIN pg_namespace pn ON pn.oid = f.pronamespace
         WHERE $1 = 'tenantguard' AND pn.nspname = 'tenantguard' AND f.prosecdef
           AND has_function_privilege('public', f.oid, 'EXECUTE')"#,
    ),
    (
        "TG018",
        "error",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname),
               format('partition of protected table %s without protection of its own: a role granted on it directly reads every tenant', pg_partition_root(c.oid)::regclass),
               format('SELECT tenantguard.protect(%L);', format('%I.%I', n.nspname, c.relname))
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relispartition AND c.relkind IN ('r', 'p')
           AND EXISTS (SELECT 1 FROM tenantguard.protected_table p WHERE p.relid = pg_partition_root(c.oid))
           AND (NOT EXISTS (SELECT 1 FROM tenantguard.protected_table p WHERE p.relid = c.oid)
                OR NOT (c.relrowsecurity AND c.relforcerowsecurity))
           AND ($1 IS NULL OR n.nspname = $1)"#,
    ),
    (
        "TG017",
        "error",
        r#"
        SELECT format('%I.%I: %s to %s', n.nspname, c.relname, g.privilege_type, coalesce(quote_ident(r.rolname), 'PUBLIC')),
               CASE g.privilege_type
                 WHEN 'TRUNCATE' THEN 'TRUNCATE ignores row-level security: one statement of this role empties every tenant'
                 WHEN 'TRIGGER' THEN 'TRIGGER lets this role attach code that runs on every tenant''s rows'
                 ELSE 'REFERENCES lets this role probe every tenant''s keys through a foreign key' END,
               format('REVOKE %s ON %I.%I FROM %s;', g.privilege_type, n.nspname, c.relname, coalesce(quote_ident(r.rolname), 'PUBLIC'))
          FROM tg_tables c JOIN pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN LATERAL aclexplode(c.relacl) g
          LEFT JOIN pg_roles r ON r.oid = g.grantee
         WHERE c.protected AND g.grantee <> c.relowner AND g.privilege_type IN ('TRUNCATE', 'TRIGGER', 'REFERENCES')"#,
    ),
];

/// Data subjects (once their table exists: 0.2.0's SQL).
const SUBJECT_CHECKS: &[(&str, &str, &str)] = &[
    (
        "TG023",
        "warning",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname),
               format('protected table with columns that look personal (%s) and no data-subject declaration: they enter the audit trail in clear, and no request can export or erase them', string_agg(a.attname, ', ' ORDER BY a.attnum)),
               format('SELECT tenantguard.mark_subject(%L, %L, %L);', format('%I.%I', n.nspname, c.relname),
                      coalesce((SELECT s.attname FROM pg_attribute s WHERE s.attrelid = c.oid AND NOT s.attisdropped
                                   AND s.attname IN ('user_id', 'customer_id', 'subject_id', 'person_id', 'account_id', 'user_ref', 'email')
                                 ORDER BY array_position(ARRAY['user_id', 'customer_id', 'subject_id', 'person_id', 'account_id', 'user_ref', 'email']::name[], s.attname) LIMIT 1),
                               min(a.attname)),
                      array_agg(a.attname::text ORDER BY a.attnum))
          FROM tg_tables c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.protected
           AND a.attname ~* '(^|_)(e?mail|phone|mobile|name|firstname|lastname|surname|address|street|city|zip|postcode|postal_code|ip|ip_address|birth|birthday|birthdate|dob|ssn|iban)($|_)'
           AND a.attname <> c.tenant_column
           AND NOT EXISTS (SELECT 1 FROM tenantguard.subject_table st WHERE st.relid = c.oid)
         GROUP BY n.nspname, c.relname, c.oid"#,
    ),
    (
        "TG024",
        "warning",
        r#"
        SELECT format('database %I', current_database()),
               'data subjects are declared but tenantguard.audit_seal_actor is off: every record names its actor, client address and user agent in clear, and erase_subject() leaves them',
               format('ALTER DATABASE %I SET tenantguard.audit_seal_actor = on;', current_database())
         WHERE EXISTS (SELECT 1 FROM tenantguard.subject_table)
           AND NOT pg_catalog.current_setting('tenantguard.audit_seal_actor')::boolean"#,
    ),
];

/// On a Citus cluster (run only where Citus's metadata exists).
const CITUS_CHECKS: &[(&str, &str, &str)] = &[
    (
        "TG020",
        "error",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname),
               format('distributed by %s, not by its tenant column %s: a query naming the tenant fans out to every shard, and a tenant''s rows cannot move together', column_to_column_name(p.logicalrelid, p.partkey), c.tenant_column),
               format('SELECT alter_distributed_table(%L, distribution_column := %L);', format('%I.%I', n.nspname, c.relname), c.tenant_column)
          FROM tg_tables c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_dist_partition p ON p.logicalrelid = c.oid
         WHERE c.protected AND p.partkey IS NOT NULL
           AND column_to_column_name(p.logicalrelid, p.partkey) <> c.tenant_column"#,
    ),
    (
        "TG021",
        "error",
        r#"
        SELECT 'tenantguard.revocation', 'the access rules are node-local: a user revoked through the coordinator can still read on a direct worker connection',
               'SELECT tenantguard.citus_setup();'
         WHERE EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.partkey IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = 'tenantguard.revocation'::regclass)
           AND EXISTS (SELECT 1 FROM tg_tables LIMIT 1)"#,
    ),
    (
        "TG022",
        "warning",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname),
               'distributed table without audit triggers: its writes are not in the audit trail',
               format('SELECT tenantguard.audit(%L);', format('%I.%I', n.nspname, c.relname))
          FROM tg_tables c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_dist_partition p ON p.logicalrelid = c.oid
         WHERE c.protected AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'tenantguard_audit')"#,
    ),
    (
        "TG025",
        "warning",
        r#"
        SELECT format('%I.%I', n.nspname, c.relname),
               'audited distributed table not co-located with the other audited ones: a tenant''s writes to it are chained on the node of its shard, which may not be the node of its other records',
               format('SELECT update_distributed_table_colocation(%L, colocate_with := %L);', format('%I.%I', n.nspname, c.relname), f.logicalrelid::regclass::text)
          FROM tg_tables c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_dist_partition p ON p.logicalrelid = c.oid,
               LATERAL (SELECT a.logicalrelid, a.colocationid FROM pg_dist_partition a
                         WHERE a.partkey IS NOT NULL
                           AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = a.logicalrelid AND t.tgname = 'tenantguard_audit')
                         ORDER BY a.colocationid, a.logicalrelid LIMIT 1) f
         WHERE c.protected AND p.partkey IS NOT NULL AND p.colocationid <> f.colocationid
           AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'tenantguard_audit')"#,
    ),
    (
        "TG026",
        "warning",
        r#"
        SELECT 'citus.propagate_set_commands',
               format('is %s, not local: set_context() then forwards the context with one more SET per transaction, and a context set any other way (SET LOCAL by hand) does not reach the workers, which fail closed', current_setting('citus.propagate_set_commands')),
               'ALTER SYSTEM SET citus.propagate_set_commands = ''local''; SELECT pg_reload_conf();'
         WHERE current_setting('citus.propagate_set_commands') <> 'local'
           AND EXISTS (SELECT 1 FROM tg_tables c JOIN pg_dist_partition p ON p.logicalrelid = c.oid WHERE c.protected)"#,
    ),
];

/// On a Citus cluster, run as the extension's owner (a superuser): what
/// each worker's pg_hba.conf lets in.
const CITUS_OWNER_CHECKS: &[(&str, &str, &str)] = &[(
    "TG027",
    "warning",
    r#"
        SELECT format('%s:%s', r.nodename, r.nodeport),
               CASE WHEN r.success
                    THEN format('login roles that read protected tables (%s) may connect to this worker from elsewhere than the coordinator (%s): pg_hba.conf %s. Nothing needs the application there, and a worker is one more place to attack', apps.names, coord.addr, r.result)
                    ELSE format('could not read this worker''s pg_hba.conf rules: %s', r.result) END,
               '-- in that worker''s pg_hba.conf, accept these roles only from the coordinator''s address, then a line rejecting them from anywhere else (docs/operations.md, Citus)'
          FROM (SELECT string_agg(DISTINCT ro.rolname::text, ', ') AS names, array_agg(DISTINCT ro.rolname::text) AS arr
                  FROM pg_roles ro, tg_tables c
                 WHERE c.protected AND ro.rolcanlogin AND NOT ro.rolsuper AND NOT ro.rolbypassrls
                   AND has_table_privilege(ro.oid, c.oid, 'SELECT')) apps,
               (SELECT (SELECT n.nodename FROM pg_dist_node n WHERE n.groupid = 0 LIMIT 1) AS addr) coord,
               LATERAL run_command_on_workers(format($q$
                   WITH r AS (SELECT line_number, auth_method, user_name, address, netmask FROM pg_hba_file_rules
                               WHERE type LIKE 'host%%' AND error IS NULL
                                 AND database && ARRAY['all', 'sameuser', 'samerole', current_database()::text]
                                 AND (user_name && ARRAY['all'] OR user_name && %L::text[])),
                        catchall AS (SELECT min(line_number) AS l FROM r
                                      WHERE auth_method = 'reject' AND (address = 'all' OR netmask IN ('0.0.0.0', '::')))
                   SELECT coalesce(string_agg(format('line %%s: %%s from %%s', line_number, auth_method, coalesce(address || coalesce('/' || netmask, ''), '?')), '; ' ORDER BY line_number), '')
                     FROM r, catchall
                    WHERE auth_method <> 'reject'
                      AND NOT (address IS NOT DISTINCT FROM %L AND netmask IN ('255.255.255.255'))
                      AND (catchall.l IS NULL OR line_number < catchall.l)$q$, apps.arr, coord.addr)) r
         WHERE apps.names IS NOT NULL AND (NOT r.success OR r.result <> '')"#,
)];

/// The tables in scope, with what every check needs to know about them.
const TABLES_CTE: &str = r#"
WITH tg_tables AS (
    SELECT c.oid, c.relname, c.relnamespace, c.relowner, c.relrowsecurity, c.relforcerowsecurity, c.relacl,
           pt.relid IS NOT NULL AS protected,
           st.relid IS NOT NULL AS shared,
           coalesce(pt.tenant_column, 'tenant_id') AS tenant_column,
           a.attnum AS tenant_attnum,
           a.attnum IS NOT NULL AS has_tenant_col
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN tenantguard.protected_table pt ON pt.relid = c.oid
      LEFT JOIN tenantguard.shared_table st ON st.relid = c.oid
      LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = coalesce(pt.tenant_column, 'tenant_id') AND NOT a.attisdropped
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND (n.nspname <> 'tenantguard' OR $1 = 'tenantguard')
       AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
       AND ($1 IS NULL OR n.nspname = $1)
)
"#;

type Finding = (String, String, String, String, String);

/// Run each check's query over the tables in scope; append its findings.
fn run_checks(
    checks: &[(&str, &str, &str)],
    schema: Option<&str>,
    out: &mut Vec<Finding>,
) -> Result<(), pgrx::spi::Error> {
    Spi::connect(|c| {
        for (code, severity, q) in checks {
            let sql = format!("{TABLES_CTE} {q} ORDER BY 1");
            for r in c.select(&sql, None, &[schema.into()])? {
                out.push((
                    severity.to_string(),
                    code.to_string(),
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<String>(3)?.unwrap_or_default(),
                ));
            }
        }
        Ok(())
    })
}

#[pg_extern(volatile, parallel_unsafe)]
fn lint(
    schema: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(severity, String),
        name!(code, String),
        name!(object, String),
        name!(detail, String),
        name!(fix, String),
    ),
> {
    let mut out = Vec::new();
    crate::spi::with_pinned_search_path(|| {
        run_checks(CHECKS, schema, &mut out)
            .and_then(|()| crate::spi::as_owner(|| run_checks(OWNER_CHECKS, schema, &mut out)))
            .and_then(|()| {
                if crate::spi::relation_oid(c"subject_table").is_some() {
                    run_checks(SUBJECT_CHECKS, schema, &mut out)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| {
                if crate::spi::citus_metadata() {
                    run_checks(CITUS_CHECKS, schema, &mut out).and_then(|()| {
                        crate::spi::as_owner(|| run_checks(CITUS_OWNER_CHECKS, schema, &mut out))
                    })
                } else {
                    Ok(())
                }
            })
            .unwrap_or_else(|e| {
                crate::error::raise_msg(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("tenantguard lint: {e}"),
                )
            })
    });
    TableIterator::new(out)
}
