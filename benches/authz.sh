#!/usr/bin/env bash
# Issue 6: authorize() against the same rule written as a SQL predicate and
# as a PL/pgSQL function; and an RLS policy calling the row-level form.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
. benches/setup_cluster.sh
psqlb >/dev/null <<'SQL'
\i sql/examples/three_role.sql
\i sql/examples/seven_tier.sql
-- Pad the policy to 50 rules for tenant t1.
SELECT tenantguard.grant_permission('t1', 'business_user', 'thing' || i || ':read') FROM generate_series(1, 50 - (SELECT count(*) FROM tenantguard.authz_permission)::int) i;
SELECT tenantguard.assign_role('t1', 'u1', 'business_user');
SELECT tenantguard.set_principal_attrs('t1', 'u1', '{"department": "finance", "approval_limit": 1000}');
CREATE TABLE approvals (id int PRIMARY KEY, tenant_id text NOT NULL, submitted_by text, department text, amount numeric);
INSERT INTO approvals SELECT g, 't1', CASE WHEN g % 10 = 0 THEN 'u1' ELSE 'u' || g % 7 END,
       CASE WHEN g % 3 = 0 THEN 'sales' ELSE 'finance' END, g % 2000 FROM generate_series(1, 100000) g;
CREATE TABLE approvals_sql (LIKE approvals INCLUDING ALL);  INSERT INTO approvals_sql SELECT * FROM approvals;
-- Hand-written predicate (what a developer would inline; no role lookup).
ALTER TABLE approvals_sql ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON approvals_sql USING (submitted_by <> 'u1' AND department = 'finance' AND amount <= 1000);
ALTER TABLE approvals ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON approvals USING (tenantguard.authorize_attrs('document:approve', ARRAY['submitted_by', 'department', 'amount'], ARRAY[submitted_by, department, amount::text]));
-- The compiled form: the same rule translated to SQL by authorize_policy().
CREATE TABLE approvals_compiled (LIKE approvals INCLUDING ALL);  INSERT INTO approvals_compiled SELECT * FROM approvals;
ALTER TABLE approvals_compiled ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
SELECT tenantguard.authorize_policy('approvals_compiled', 'document:approve', ARRAY['submitted_by', 'department', 'amount'], restrictive => false) \g /dev/null
GRANT SELECT ON approvals, approvals_sql, approvals_compiled TO bench;
-- The same rule as a PL/pgSQL function, reading the same tables.
CREATE FUNCTION plpgsql_can_approve(uid text, tenant text, submitted_by text, department text, amount numeric) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER AS $$
DECLARE attrs jsonb; has_role boolean;
BEGIN
  SELECT EXISTS (SELECT 1 FROM tenantguard.authz_assignment a
                  JOIN tenantguard.authz_permission p ON p.role = a.role AND p.tenant IN ('*', a.tenant)
                 WHERE a.tenant = plpgsql_can_approve.tenant AND a.user_id = uid AND p.action = 'document:approve'
                   AND a.valid_from <= now() AND (a.valid_until IS NULL OR a.valid_until > now())) INTO has_role;
  IF NOT has_role THEN RETURN false; END IF;
  SELECT p.attrs INTO attrs FROM tenantguard.authz_principal p WHERE p.tenant = plpgsql_can_approve.tenant AND p.user_id = uid;
  RETURN uid <> submitted_by AND department = attrs->>'department' AND amount <= (attrs->>'approval_limit')::numeric;
END $$;
GRANT EXECUTE ON FUNCTION plpgsql_can_approve(text, text, text, text, numeric) TO bench;
SELECT tenantguard.sign_context('{"tid":"t1","sub":"u1","exp":4000000000,"iat":1700000000}') AS tok \gset
SQL
TOK=$(psqlb -c "SELECT tenantguard.sign_context('{\"tid\":\"t1\",\"sub\":\"u1\",\"exp\":4000000000,\"iat\":1700000000}')")
echo "== authorize(): single decisions in one backend (policy of $(psqlb -c "SELECT count(*) FROM tenantguard.authz_permission") rules), median of 5 batches of 200,000"
psql -X -q -At -h "$SOCK" -p "$PORT" -U bench -d bench <<SQL
SELECT tenantguard.set_context('$TOK', false) \g /dev/null
CREATE FUNCTION pg_temp.t(q text) RETURNS float8 LANGUAGE plpgsql AS \$\$
DECLARE t0 timestamptz; r float8[] := '{}'; n int := 200000; x bigint;
BEGIN
  FOR i IN 1..5 LOOP
    t0 := clock_timestamp();
    EXECUTE format('SELECT count(*) FILTER (WHERE %s) FROM generate_series(1, %s) g', q, n) INTO x;
    r := r || (extract(epoch FROM clock_timestamp() - t0) * 1e9 / n);
  END LOOP;
  RETURN (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM unnest(r) v);
END \$\$;
WITH m AS (SELECT pg_temp.t('true') AS empty,
                  pg_temp.t('(''u1'' <> ''u'' || g % 7 AND ''finance'' = ''finance'' AND g % 2000 <= 1000)') AS sql_pred,
                  pg_temp.t('tenantguard.authorize_action(''document:submit'')') AS rbac,
                  pg_temp.t('tenantguard.authorize_attrs(''document:approve'', ARRAY[''submitted_by'', ''department'', ''amount''], ARRAY[''u'' || g % 7, ''finance'', (g % 2000)::text])') AS abac,
                  pg_temp.t('tenantguard.authorize(''document:approve'', jsonb_build_object(''submitted_by'', ''u'' || g % 7, ''department'', ''finance'', ''amount'', g % 2000))') AS abac_jsonb,
                  pg_temp.t('plpgsql_can_approve(''u1'', ''t1'', ''u'' || g % 7, ''finance'', g % 2000)') AS plpgsql)
SELECT format(E'| form | ns per decision (loop overhead subtracted) |\n|---|---|\n| hand-written SQL predicate | %s |\n| authorize_action (RBAC, cached) | %s |\n| authorize_attrs (RBAC + ABAC rule) | %s |\n| authorize(action, jsonb) | %s |\n| PL/pgSQL function (same rule) | %s |\n\nauthorize_attrs p50 = %s us (target < 1 us); speed-up vs PL/pgSQL = %sx (target >= 20x)',
  round((sql_pred - empty)::numeric), round((rbac - empty)::numeric), round((abac - empty)::numeric), round((abac_jsonb - empty)::numeric),
  round((plpgsql - empty)::numeric), round(((abac - empty) / 1000)::numeric, 3), round(((plpgsql - empty) / nullif(abac - empty, 0))::numeric, 1))
FROM m;
SQL
echo
echo "== RLS scan of 100k rows: hand-written predicate vs a policy calling authorize_attrs() vs the compiled policy (medians)"
psql -X -q -At -h "$SOCK" -p "$PORT" -U bench -d bench <<SQL
SELECT tenantguard.set_context('$TOK', false) \g /dev/null
CREATE FUNCTION pg_temp.scan(tbl text) RETURNS float8 LANGUAGE plpgsql AS \$\$
DECLARE t0 timestamptz; r float8[] := '{}'; x bigint;
BEGIN
  FOR i IN 1..5 LOOP
    t0 := clock_timestamp();
    EXECUTE format('SELECT count(*) FROM %I', tbl) INTO x;
    r := r || (extract(epoch FROM clock_timestamp() - t0) * 1000);
  END LOOP;
  RETURN (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM unnest(r) v);
END \$\$;
SELECT format('same rows: authorize_attrs %s, compiled %s (%s rows visible)',
  (SELECT array_agg(id ORDER BY id) FROM approvals) = (SELECT array_agg(id ORDER BY id) FROM approvals_sql),
  (SELECT array_agg(id ORDER BY id) FROM approvals_compiled) = (SELECT array_agg(id ORDER BY id) FROM approvals_sql),
  (SELECT count(*) FROM approvals_sql));
-- A and B alternate: three rounds of (hand-written, row form, compiled).
CREATE TEMP TABLE m (r int, sql_ms float8, tg_ms float8, comp_ms float8);
INSERT INTO m SELECT r, pg_temp.scan('approvals_sql'), pg_temp.scan('approvals'), pg_temp.scan('approvals_compiled') FROM generate_series(1, 3) r;
SELECT format(E'hand-written %s ms\nauthorize_attrs() per row %s ms: ratio %s\ncompiled policy (authorize_policy) %s ms: ratio %s (target <= 1.5)',
  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY sql_ms)::numeric, 1),
  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY tg_ms)::numeric, 1),
  round((percentile_cont(0.5) WITHIN GROUP (ORDER BY tg_ms) / percentile_cont(0.5) WITHIN GROUP (ORDER BY sql_ms))::numeric, 2),
  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY comp_ms)::numeric, 1),
  round((percentile_cont(0.5) WITHIN GROUP (ORDER BY comp_ms) / percentile_cont(0.5) WITHIN GROUP (ORDER BY sql_ms))::numeric, 2)) FROM m;
SQL
