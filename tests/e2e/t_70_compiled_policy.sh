# The compiled policy form (authorize_policy): as the application role, the
# rows it admits are exactly the rows authorize(action, <row as jsonb>)
# admits, for principals on the compiled path and on the fallback path; a
# revocation applies from the next statement; a condition granted after
# generation is still honoured; no context fails closed.
q postgres "
  SELECT tenantguard.create_role('acme', 'approver');
  SELECT tenantguard.create_role('acme', 'auditor');
  SELECT tenantguard.create_role('acme', 'boss', ARRAY['approver']);
  SELECT tenantguard.create_role('globex', 'approver');
  SELECT tenantguard.grant_permission('acme', 'approver', 'expense:approve',
    'principal.id != resource.submitted_by && resource.department == principal.department && resource.amount <= principal.approval_limit');
  SELECT tenantguard.grant_permission('acme', 'approver', 'expense:*', 'resource.amount > 5000 && !resource.urgent', 'forbid');
  SELECT tenantguard.grant_permission('acme', 'auditor', 'expense:approve', 'resource.n >= principal.level || has(resource.note)');
  SELECT tenantguard.grant_permission('acme', 'auditor', 'expense:approve', 'resource.submitted_by < \"m\" && resource.department != null', 'forbid');
  SELECT tenantguard.grant_permission('acme', 'boss', 'expense:approve');
  SELECT tenantguard.grant_permission('globex', 'approver', 'expense:approve', 'resource.department == \"sales\"');
  SELECT tenantguard.assign_role('acme', u, r) FROM (VALUES ('alice', 'approver'), ('bob', 'auditor'), ('carol', 'boss'),
    ('dave', 'approver'), ('erin', 'approver'), ('gina', 'approver'), ('hal', 'auditor'), ('alice', 'auditor')) v(u, r);
  SELECT tenantguard.assign_role('globex', 'frank', 'approver');
  SELECT tenantguard.set_principal_attrs('acme', u, a::jsonb) FROM (VALUES
    ('alice', '{\"department\": \"finance\", \"approval_limit\": 1000, \"level\": 4}'),
    ('bob', '{\"level\": 3}'),
    ('carol', '{\"department\": \"sales\", \"approval_limit\": 10000}'),
    ('dave', '{\"department\": \"finance\", \"approval_limit\": \"1000\"}'),
    ('gina', '{\"department\": null, \"approval_limit\": 1000}'),
    ('hal', '{\"level\": 2.5}')) v(u, a);
  CREATE TABLE expenses (id int PRIMARY KEY, tenant_id text NOT NULL, submitted_by text, department text NOT NULL,
                         amount numeric, n int, urgent boolean, note varchar(20));
  INSERT INTO expenses
    SELECT row_number() OVER (), 'acme', s, d, a, n, u, nt
      FROM unnest(ARRAY['alice', 'bob', 'zed', 'Alice', NULL]) s, unnest(ARRAY['finance', 'sales']) d,
           unnest(ARRAY[0, 999.5, 1000, 1001, 6000, NULL]::numeric[]) a, unnest(ARRAY[1, 3, 5, NULL]) n,
           unnest(ARRAY[true, false, NULL]) u, unnest(ARRAY['x', NULL]) nt;
  INSERT INTO expenses SELECT id + 100000, 'globex', submitted_by, department, amount, n, urgent, note FROM expenses;
  CREATE TABLE expenses_ref (LIKE expenses INCLUDING ALL); INSERT INTO expenses_ref SELECT * FROM expenses;
  SELECT count(*) FROM tenantguard.protect('expenses');
  SELECT count(*) FROM tenantguard.protect('expenses_ref');
  GRANT SELECT ON expenses, expenses_ref TO app;" >/dev/null
ddl=$(q postgres "SELECT tenantguard.authorize_policy('expenses', 'expense:approve', ARRAY['submitted_by', 'department', 'amount', 'n', 'urgent', 'note'])")
check "authorize_policy compiles every condition of the action (all tenants)" \
  test "$(echo "$ddl" | grep -c '^-- compiled:')" = 5 -a "$(echo "$ddl" | grep -c 'interpreted')" = 0
check "the policy names its spec by hash, and the spec is recorded" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.authz_compiled WHERE action = 'expense:approve'")" = 1
cmp_user() { # cmp_user USER: compiled rows vs interpreter rows, as app
  local t; t=$(tok "{\"tid\":\"acme\",\"sub\":\"$1\",\"exp\":4000000000}")
  psql -X -q -At -h "$SOCK" -p "$PORT" -U app -d postgres 2>&1 <<SQL
BEGIN;
SELECT tenantguard.set_context('$t');
SET LOCAL client_min_messages = debug1;
SELECT 'compiled:' || count(*) || ':' || coalesce(md5(string_agg(id::text, ',' ORDER BY id)), '-') FROM expenses;
RESET client_min_messages;
SELECT 'reference:' || count(*) || ':' || coalesce(md5(string_agg(id::text, ',' ORDER BY id)), '-') FROM expenses_ref
 WHERE tenantguard.authorize('expense:approve', jsonb_build_object('submitted_by', submitted_by, 'department', department,
       'amount', amount, 'n', n, 'urgent', urgent, 'note', note));
COMMIT;
SQL
}
same() { # same OUT: compiled and reference lines agree
  local c r; c=$(echo "$1" | sed -n 's/^compiled://p'); r=$(echo "$1" | sed -n 's/^reference://p')
  [ -n "$c" ] && [ "$c" = "$r" ]
}
for u in alice bob carol hal frank; do
  out=$(cmp_user "$u")
  check "$u (compiled path): same rows as authorize() ($(echo "$out" | sed -n 's/^compiled:\([0-9]*\):.*/\1/p') rows)" same "$out"
  check "$u: the statement did not fall back to the interpreter" bash -c "! echo '$out' | grep -q 'answered by the interpreter'"
done
check "the policy admits some rows and hides others (alice)" \
  bash -c "n=\$(echo '$(cmp_user alice)' | sed -n 's/^compiled:\([0-9]*\):.*/\1/p'); [ \"\$n\" -gt 0 ] && [ \"\$n\" -lt 720 ]"
for u in dave erin gina; do
  out=$(cmp_user "$u")
  check "$u (attribute of another type, missing or null): falls back, same rows as authorize()" \
    bash -c "echo '$out' | grep -q 'answered by the interpreter' && $(declare -f same); same '$out'"
done
# Freshness: alice loses the approver role; her next statement sees it.
t_alice=$(tok '{"tid":"acme","sub":"alice","exp":4000000000}')
out=$(psql -X -q -At -h "$SOCK" -p "$PORT" -U app -d postgres 2>&1 <<SQL
SELECT tenantguard.set_context('$t_alice', false);
SELECT 'before:' || count(*) FROM expenses;
\! psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres -c "SELECT tenantguard.unassign_role('acme', 'alice', 'auditor')" >/dev/null
SELECT 'after:' || count(*) FROM expenses;
SELECT 'ref:' || count(*) FROM expenses_ref WHERE tenantguard.authorize('expense:approve', jsonb_build_object('submitted_by', submitted_by, 'department', department, 'amount', amount, 'n', n, 'urgent', urgent, 'note', note));
SQL
)
check "unassigning a role cuts rows on the next statement of an open session" \
  bash -c "b=\$(echo '$out' | sed -n 's/^before://p'); a=\$(echo '$out' | sed -n 's/^after://p'); r=\$(echo '$out' | sed -n 's/^ref://p'); [ \"\$a\" -lt \"\$b\" ] && [ \"\$a\" = \"\$r\" ]"
# A condition granted after generation: answered by the interpreter, correctly.
q postgres "SELECT tenantguard.grant_permission('acme', 'approver', 'expense:approve', 'resource.n == 5 && resource.note == \"x\"')" >/dev/null
out=$(cmp_user alice)
check "a condition granted after generation: the statement falls back and stays exact" \
  bash -c "echo '$out' | grep -q 'answered by the interpreter' && $(declare -f same); same '$out'"
ddl=$(q postgres "SELECT tenantguard.authorize_policy('expenses', 'expense:approve', ARRAY['submitted_by', 'department', 'amount', 'n', 'urgent', 'note'])")
out=$(cmp_user alice)
check "re-generated: compiled again, same rows" bash -c "! echo '$out' | grep -q 'answered by the interpreter' && $(declare -f same); same '$out'"
# An edited spec row no longer matches its hash: refused (fail closed), not
# silently reinterpreted.
q postgres "UPDATE tenantguard.authz_compiled SET spec = replace(spec, '<=', '>=') WHERE action = 'expense:approve'" >/dev/null
out=$(cmp_user bob)
check "an altered spec is refused in a new backend" bash -c "echo \"\$1\" | grep -q 'spec was altered'" _ "$out"
ddl=$(q postgres "DELETE FROM tenantguard.authz_compiled; SELECT tenantguard.authorize_policy('expenses', 'expense:approve', ARRAY['submitted_by', 'department', 'amount', 'n', 'urgent', 'note'])")
out=$(cmp_user bob)
check "regenerated after the repair: exact again" bash -c "$(declare -f same); same \"\$1\"" _ "$out"
# Fail closed, and the generator is not for the application role.
err=$(q_err app "SELECT count(*) FROM expenses")
check "no context: the compiled policy raises 'no tenant context'" bash -c "echo '$err' | grep -q 'no tenant context'"
err=$(q_err app "SELECT tenantguard.authorize_policy('expenses', 'expense:approve', ARRAY['n'])")
check "authorize_policy is not executable by the application role" bash -c "echo '$err' | grep -q 'permission denied'"
q postgres "DROP TABLE expenses, expenses_ref" >/dev/null
