# With preload, the ProcessUtility guard refuses a non-superuser owner's
# weakening of a protected table in a guarded schema before it runs, on
# every version, without relying on the event-trigger data a release gives
# (16.2 leaves schema_name NULL for a dropped policy). The guard's event
# triggers are disabled here, so only the hook stands in the way.
q postgres "CREATE SCHEMA g36; CREATE ROLE owner36 LOGIN; GRANT USAGE, CREATE ON SCHEMA g36 TO owner36;
  SELECT tenantguard.guard_schema('g36');" >/dev/null
q owner36 "CREATE TABLE g36.t (id int PRIMARY KEY, tenant_id text NOT NULL)" >/dev/null
q postgres "ALTER EVENT TRIGGER tenantguard_guard_ddl DISABLE; ALTER EVENT TRIGGER tenantguard_guard_drop DISABLE;" >/dev/null
hook_refuses() { local what=$1 want=$2 sql=$3 out; out=$(q_err owner36 "$sql" 2>&1)
  if echo "$out" | grep -q "$want"; then ok "guard hook: owner's $what refused"; else fail "guard hook: owner's $what refused (got: $out)"; fi; }
for p in tenantguard_select tenantguard_insert tenantguard_update tenantguard_delete tenantguard_bypass; do
  hook_refuses "DROP POLICY $p" "dropping policy $p on g36.t is refused" "DROP POLICY $p ON g36.t"
done
hook_refuses "DROP POLICY IF EXISTS, two at once" "dropping policy tenantguard_select" "DROP POLICY IF EXISTS tenantguard_select ON g36.t"
hook_refuses "ALTER POLICY ... USING (true)" "altering policy tenantguard_select on g36.t is refused" "ALTER POLICY tenantguard_select ON g36.t USING (true)"
hook_refuses "ALTER POLICY ... TO PUBLIC on the bypass policy" "altering policy tenantguard_bypass" "ALTER POLICY tenantguard_bypass ON g36.t TO PUBLIC"
hook_refuses "ALTER POLICY ... RENAME" "altering policy tenantguard_select" "ALTER POLICY tenantguard_select ON g36.t RENAME TO mine"
hook_refuses "ALTER TABLE ... SET SCHEMA out of the guarded schema" "moving g36.t out of its guarded schema is refused" "ALTER TABLE g36.t SET SCHEMA public"
check "guard hook: every generated policy is intact" test "$(q postgres "SELECT count(*) FROM pg_policy WHERE polrelid = 'g36.t'::regclass AND polname LIKE 'tenantguard\_%'")" = "5"
check "guard hook: the table stays in its guarded schema" test "$(q postgres "SELECT relnamespace::regnamespace FROM pg_class WHERE oid = 'g36.t'::regclass")" = "g36"
check "guard hook: each refusal leaves a durable alert" grep -q '"event":"guard_refused".*altering policy tenantguard_select on g36.t' "$LOG"
check "guard hook: the owner may still narrow (a restrictive policy)" q owner36 "CREATE POLICY narrow ON g36.t AS RESTRICTIVE USING (id > 0); DROP POLICY narrow ON g36.t"
check "guard hook: a superuser may (a reviewed change)" q postgres "ALTER POLICY tenantguard_select ON g36.t RENAME TO tenantguard_select_x; ALTER POLICY tenantguard_select_x ON g36.t RENAME TO tenantguard_select"
q postgres "ALTER EVENT TRIGGER tenantguard_guard_ddl ENABLE; ALTER EVENT TRIGGER tenantguard_guard_drop ENABLE;
  SELECT tenantguard.unguard_schema('g36'); DROP SCHEMA g36 CASCADE; DROP OWNED BY owner36; DROP ROLE owner36;" >/dev/null 2>&1
