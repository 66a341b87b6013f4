-- authorize(): both policy packs, every rule family, as the application role.
\set VERBOSITY terse
-- (pg_regress runs from the repository root; results muted, errors shown)
\o /dev/null
\i sql/examples/three_role.sql
\i sql/examples/seven_tier.sql
\o
\c - tg_ops
-- Invalid conditions are refused at grant time, with the position.
SELECT tenantguard.grant_permission('acme', 'manager', 'invoice:approve', 'resource.amount <= ');
SELECT tenantguard.grant_permission('acme', 'manager', 'invoice:approve', 'user.id == 1');
SELECT tenantguard.grant_permission('acme', 'manager', 'invoice:approve', '1 == ''one''');
-- Assignments (tenant acme unless noted).
SELECT tenantguard.assign_role('acme', 'sam', 'super_admin');
SELECT tenantguard.assign_role('acme', 'adam', 'admin');
SELECT tenantguard.assign_role('acme', 'olga', 'owner');
SELECT tenantguard.assign_role('acme', 'mia', 'manager');
SELECT tenantguard.assign_role('acme', 'eve', 'employee');
SELECT tenantguard.assign_role('acme', 'quinn', 'qa');
SELECT tenantguard.assign_role('acme', 'bea', 'owner');
SELECT tenantguard.assign_role('acme', 'bea', 'blocked');
SELECT tenantguard.assign_role('acme', 'ada', 'system_admin');
SELECT tenantguard.assign_role('acme', 'bo', 'business_user');
SELECT tenantguard.assign_role('acme', 'bob', 'business_user');
SELECT tenantguard.set_principal_attrs('acme', 'bo', '{"department": "finance", "approval_limit": 1000}');
SELECT tenantguard.set_principal_attrs('acme', 'bob', '{"department": "sales", "approval_limit": 5000}');
-- Time-bound guests: an auditor whose access ends in 2 seconds, a board
-- member whose access has not started yet.
SELECT tenantguard.assign_role('acme', 'auditor', 'read_only', now(), clock_timestamp() + interval '2 seconds');
SELECT tenantguard.assign_role('acme', 'board', 'read_only', now() + interval '1 day');
-- Tenant-specific override: in acme, a tenant role of its own.
SELECT tenantguard.create_role('acme', 'acme_special');
SELECT tenantguard.grant_permission('acme', 'acme_special', 'widget:polish') > 0 AS granted;
SELECT tenantguard.assign_role('acme', 'pat', 'acme_special');
SELECT tenantguard.assign_role('globex', 'pat', 'acme_special');
-- A tenant-level forbid beats the global permit.
SELECT tenantguard.grant_permission('acme', 'owner', 'billing:refund', NULL, 'forbid') > 0 AS granted;
\c - postgres
CREATE FUNCTION pg_temp.tok(tid text, sub text) RETURNS text LANGUAGE sql AS
$$ SELECT tenantguard.sign_context(jsonb_build_object('tid', tid, 'sub', sub, 'exp', 4000000000, 'iat', 1700000000)) $$;
SELECT pg_temp.tok('acme', 'sam') AS sam, pg_temp.tok('acme', 'adam') AS adam, pg_temp.tok('acme', 'olga') AS olga, pg_temp.tok('acme', 'mia') AS mia,
       pg_temp.tok('acme', 'eve') AS eve, pg_temp.tok('acme', 'quinn') AS quinn, pg_temp.tok('acme', 'bea') AS bea,
       pg_temp.tok('acme', 'ada') AS ada, pg_temp.tok('acme', 'bo') AS bo, pg_temp.tok('acme', 'bob') AS bob,
       pg_temp.tok('acme', 'auditor') AS auditor, pg_temp.tok('acme', 'board') AS board,
       pg_temp.tok('acme', 'pat') AS pat_acme, pg_temp.tok('globex', 'pat') AS pat_globex,
       pg_temp.tok('acme', 'nobody') AS nobody \gset
\c - tg_app
-- The app role cannot change the policy.
SELECT tenantguard.assign_role('acme', 'eve', 'super_admin');
INSERT INTO tenantguard.authz_assignment VALUES ('acme', 'eve', 'super_admin');
CREATE FUNCTION pg_temp.can(token text, action text, resource jsonb DEFAULT '{}') RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tenantguard.set_context(token);
    RETURN tenantguard.authorize(action, resource);
END $$;
-- The seven-tier matrix (full / limited / own / none).
SELECT area, verb,
       pg_temp.can(:'sam', area || ':' || verb) AS super_admin,
       pg_temp.can(:'adam', area || ':' || verb) AS admin,
       pg_temp.can(:'olga', area || ':' || verb) AS owner,
       pg_temp.can(:'mia', area || ':' || verb) AS manager,
       pg_temp.can(:'eve', area || ':' || verb, '{"owner_id": "eve"}') AS employee_own,
       pg_temp.can(:'eve', area || ':' || verb, '{"owner_id": "someone"}') AS employee_other,
       pg_temp.can(:'quinn', area || ':' || verb) AS qa,
       pg_temp.can(:'bea', area || ':' || verb) AS blocked_owner
  FROM unnest(ARRAY['users', 'billing', 'email', 'export', 'settings']) area,
       unnest(ARRAY['read', 'update']) verb
 ORDER BY 1, 2;
-- Forbid precedence: acme forbids billing:refund for owners; super_admin (no forbid) may.
SELECT pg_temp.can(:'olga', 'billing:refund') AS owner_refund, pg_temp.can(:'sam', 'billing:refund') AS super_admin_refund;
-- Hierarchy through three levels: system_admin -> business_user -> read_only.
SELECT pg_temp.can(:'ada', 'invoice:read') AS via_read_only, pg_temp.can(:'ada', 'record:delete') AS via_business_user,
       pg_temp.can(:'ada', 'settings:write') AS own_level;
-- ABAC: self-approval, department, amount at and one over the limit.
SELECT pg_temp.can(:'bo', 'document:approve', '{"submitted_by": "al", "department": "finance", "amount": 1000}') AS ok,
       pg_temp.can(:'bo', 'document:approve', '{"submitted_by": "bo", "department": "finance", "amount": 10}') AS self_approval,
       pg_temp.can(:'bo', 'document:approve', '{"submitted_by": "al", "department": "sales", "amount": 10}') AS other_department,
       pg_temp.can(:'bo', 'document:approve', '{"submitted_by": "al", "department": "finance", "amount": 1001}') AS one_over_limit,
       pg_temp.can(:'bo', 'document:approve', '{"submitted_by": "al", "department": "finance"}') AS amount_missing;
-- Default deny, unknown users, roles never taken from the token.
SELECT pg_temp.can(:'nobody', 'invoice:read') AS no_roles;
-- Tenant A's role definitions never apply in tenant B.
SELECT pg_temp.can(:'pat_acme', 'widget:polish') AS in_acme, pg_temp.can(:'pat_globex', 'widget:polish') AS in_globex;
-- Time windows: not yet started; live then ended on time.
SELECT pg_temp.can(:'board', 'invoice:read') AS board_before_start;
SELECT pg_temp.can(:'auditor', 'invoice:read') AS auditor_live;
SELECT pg_sleep(2.2);
SELECT pg_temp.can(:'auditor', 'invoice:read') AS auditor_after_end;
-- require() raises 42501 naming the action; explain shows why.
BEGIN;
SELECT tenantguard.set_context(:'bo');
SELECT tenantguard.require('document:approve', '{"submitted_by": "bo", "department": "finance", "amount": 10}');
ROLLBACK;
BEGIN;
SELECT tenantguard.set_context(:'bo');
SELECT jsonb_pretty(tenantguard.explain_authorize('document:approve', '{"submitted_by": "bo", "department": "finance", "amount": 10}')
       - 'matched') AS decision;
SELECT m->>'role' AS role, m->>'action' AS action, m->>'satisfied' AS satisfied, m->'trace'->0 AS first_check
  FROM jsonb_array_elements(tenantguard.explain_authorize('document:approve', '{"submitted_by": "bo", "department": "finance", "amount": 10}')->'matched') m;
SELECT tenantguard.explain_authorize('settings:write')->>'forbidden_by' IS NULL AS no_forbid,
       tenantguard.explain_authorize('settings:write')->>'decision' AS decision;
ROLLBACK;
BEGIN;
SELECT tenantguard.set_context(:'bea');
SELECT tenantguard.explain_authorize('users:read')->>'decision' AS decision,
       tenantguard.explain_authorize('users:read')->>'forbidden_by' IS NOT NULL AS forbid_won;
ROLLBACK;
-- No context: fail closed.
SELECT tenantguard.authorize('invoice:read');
SELECT tenantguard.authorize_action('invoice:read');
-- In an RLS policy: the RBAC-only form and the row-attribute form.
\c - postgres
SET ROLE tg_owner;
CREATE TABLE app.approvals (id int PRIMARY KEY, tenant_id text NOT NULL, submitted_by text, department text, amount numeric);
RESET ROLE;
SELECT count(*) > 0 AS protected FROM tenantguard.protect('app.approvals');
INSERT INTO app.approvals VALUES (1, 'acme', 'al', 'finance', 900), (2, 'acme', 'bo', 'finance', 10),
    (3, 'acme', 'al', 'sales', 10), (4, 'acme', 'al', 'finance', 5000);
CREATE POLICY approvable ON app.approvals AS RESTRICTIVE FOR SELECT TO tg_app USING (
    tenantguard.authorize_attrs('document:approve', ARRAY['submitted_by', 'department', 'amount'],
                                ARRAY[submitted_by, department, amount::text]));
GRANT SELECT ON app.approvals TO tg_app;
\c - tg_app
BEGIN;
SELECT tenantguard.set_context(:'bo');
SELECT id FROM app.approvals ORDER BY id;
ROLLBACK;
-- The row form reads its arrays in place: NULL elements, NULL keys,
-- unequal lengths, empty and two-dimensional arrays, multibyte text and a
-- compressed, out-of-line array all decide as their JSON equivalents.
BEGIN;
SELECT tenantguard.set_context(:'bo');
SELECT tenantguard.authorize_attrs('document:approve', ARRAY['submitted_by', 'department', 'amount'], ARRAY['al', 'finance', '1000']) AS plain,
       tenantguard.authorize_attrs('document:approve', ARRAY['submitted_by', 'department', 'amount'], ARRAY['al', NULL, '10']) AS null_department,
       tenantguard.authorize_attrs('document:approve', ARRAY['submitted_by', NULL, 'department', 'amount'], ARRAY['al', 'x', 'finance', '10']) AS null_key_skipped,
       tenantguard.authorize_attrs('document:approve', ARRAY['submitted_by', 'department', 'amount'], ARRAY['al', 'finance']) AS shorter_vals,
       tenantguard.authorize_attrs('document:approve', '{}'::text[], '{}'::text[]) AS empty,
       tenantguard.authorize_attrs('document:approve', ARRAY[['submitted_by', 'department'], ['amount', 'x']], ARRAY[['al', 'finance'], ['10', 'y']]) AS two_dims,
       tenantguard.authorize_attrs('document:approve', ARRAY['ü', 'department', 'submitted_by', 'amount'], ARRAY['çà', 'finance', 'ålé', '10']) AS multibyte,
       tenantguard.authorize_attrs('document:approve', ARRAY['department', 'submitted_by', 'amount'], ARRAY['finanzé', 'al', '10']) AS other_department;
CREATE TEMP TABLE big_attrs AS
  SELECT ARRAY['submitted_by', 'department', 'amount'] || array_agg('pad' || g) AS k,
         ARRAY['al', 'finance', '10'] || array_agg(md5(g::text)) AS v
    FROM generate_series(1, 4000) g;
SELECT pg_column_size(k) < octet_length(k::text) AS compressed,
       tenantguard.authorize_attrs('document:approve', k, v) AS big_arrays,
       tenantguard.authorize_attrs('document:approve', k, v)
         = tenantguard.authorize('document:approve', (SELECT jsonb_object_agg(kk, CASE kk WHEN 'amount' THEN to_jsonb(vv::numeric) ELSE to_jsonb(vv) END)
                                                      FROM unnest(k, v) AS u(kk, vv))) AS same_as_jsonb
  FROM big_attrs;
ROLLBACK;
-- Denied decisions are sampled into the audit trail when configured
-- (superuser-only; here for the app role). One record per statement and
-- action, even for an RLS scan that denies many rows.
\c - postgres
ALTER ROLE tg_app SET tenantguard.authz_deny_sample = 1;
\c - tg_app
SELECT tenantguard.has_context();
SET tenantguard.authz_deny_sample = 0;
BEGIN;
SELECT tenantguard.set_context(:'bo');
SELECT count(*) AS before FROM tenantguard.audit_log WHERE action = 'authz:deny' \gset
SELECT tenantguard.authorize('billing:delete') AS denied_call;
SELECT id FROM app.approvals ORDER BY id;
SELECT tenantguard.authorize('invoice:read') AS allowed_call;
-- Pending until written: at commit, or now.
SELECT count(*) - :before AS before_flush FROM tenantguard.audit_log WHERE action = 'authz:deny';
SELECT tenantguard.audit_flush() AS written;
SELECT tenantguard.audit_flush() AS written_again;
SELECT action, payload->>'action' AS denied_action, payload->>'user' AS who, tenant
  FROM tenantguard.audit_log WHERE action = 'authz:deny' ORDER BY seq OFFSET :before;
COMMIT;
\c - postgres
ALTER ROLE tg_app RESET tenantguard.authz_deny_sample;
-- Every change went to the security trail.
\c - postgres
SELECT event, count(*) FROM tenantguard.security_log WHERE event IN ('role_created', 'permission_granted', 'role_assigned', 'principal_attrs_set')
 GROUP BY 1 ORDER BY 1;
