#!/usr/bin/env bash
# A real Citus 13.2.2 cluster (a coordinator and 2 workers, PG 15, as the
# postgres OS user on private ports), tenant-distributed tables, and every
# guarantee checked as the application role, through the coordinator and
# on direct worker connections. (tests/lib/install_citus.sh builds Citus.)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export PG=15
. tests/e2e/lib.sh
. tests/upgrade/state.sh
. tests/citus/lib.sh
citus_start "${TG_CITUS_PORT:-55530}" || { citus_stop; exit 1; }
[ -n "${TG_KEEP:-}" ] || trap citus_stop EXIT
SOCK=$CDIR/sock; PORT=$CPORT
check "citus: CREATE EXTENSION on the coordinator reaches both workers" \
  test "$(w1 q postgres "SELECT count(*) FROM pg_extension WHERE extname = 'pg_tenantguard'")$(w2 q postgres "SELECT count(*) FROM pg_extension WHERE extname = 'pg_tenantguard'")" = "11"
coord q postgres "CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS; CREATE ROLE ops LOGIN IN ROLE tenantguard_admin" >/dev/null
coord q postgres "CREATE TABLE pre (id int, tenant_id text NOT NULL, PRIMARY KEY (tenant_id, id)); SELECT create_distributed_table('pre', 'tenant_id');
  CREATE TABLE wrong (id int PRIMARY KEY, tenant_id text NOT NULL); SELECT create_distributed_table('wrong', 'id');
  SELECT count(*) FROM tenantguard.protect('pre'); SELECT count(*) FROM tenantguard.protect('wrong');" >/dev/null
check "lint(): TG021 before citus_setup(): the access rules are node-local" \
  test "$(coord q postgres "SELECT count(*) FROM tenantguard.lint() WHERE code = 'TG021'")" = "1"
check "lint(): TG020, a protected table distributed by another column than its tenant's" \
  test "$(coord q postgres "SELECT string_agg(object, ',') FROM tenantguard.lint() WHERE code = 'TG020'")" = "public.wrong"
check "lint(): no TG022: protect() audits a distributed table (the triggers go to its shards)" \
  test "$(coord q postgres "SELECT count(*) FROM tenantguard.lint() WHERE code = 'TG022'")" = "0"
check "lint(): TG025, an audited distributed table not co-located with the others (a tenant's chain would span nodes)" \
  test "$(coord q postgres "SELECT string_agg(object, ',') FROM tenantguard.lint() WHERE code = 'TG025'")" = "public.wrong"
out=$(coord q_err app "SELECT tenantguard.citus_setup()" 2>&1)
check "citus: the app role cannot run citus_setup()" has "$out" "permission denied"
out=$(coord q postgres "SELECT tenantguard.citus_setup()" 2>&1)
check "citus: citus_setup() makes the access rules, model, key salts and issuers reference tables ($out)" \
  test "$(coord q postgres "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'tenantguard.%' AND repmodel = 't'")" = "10"
check "lint(): TG021 gone after citus_setup()" test "$(coord q postgres "SELECT count(*) FROM tenantguard.lint() WHERE code = 'TG021'")" = "0"

# A table distributed by tenant, then protected in one call.
coord q postgres "CREATE TABLE docs (id bigint NOT NULL, tenant_id text NOT NULL, body text, secret bytea, PRIMARY KEY (tenant_id, id));
  SELECT create_distributed_table('docs', 'tenant_id');
  INSERT INTO docs SELECT g, CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END, 'doc ' || g FROM generate_series(1, 200) g;" >/dev/null
out=$(coord q postgres "SELECT count(*) FROM tenantguard.protect('docs')" 2>&1)
check "protect(): a distributed table is protected after distribution, in one call ($out)" \
  test "$(coord q postgres "SELECT count(*) FROM pg_policies WHERE tablename = 'docs'")" = "5"
check "protect(): the policies reach the shards on the workers" \
  test "$(w1 q postgres "SET citus.show_shards_for_app_name_prefixes TO '*'; SELECT count(DISTINCT tablename) > 0 FROM pg_policies WHERE tablename LIKE 'docs_%'")" = "t"
check "protect(): the bypass policy has no sub-select (Citus refuses them)" \
  test "$(coord q postgres "SELECT qual FROM pg_policies WHERE tablename = 'docs' AND policyname = 'tenantguard_bypass'")" = "tenantguard.bypassing()"
check "protect(): the tenant default is on the coordinator's table" \
  test "$(coord q postgres "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'docs'::regclass")" = "tenantguard.tenant_id()"
coord q postgres "GRANT SELECT, INSERT, UPDATE, DELETE ON docs TO app" >/dev/null
ACME=$(tok '{"tid":"acme","sub":"alice","exp":4000000000,"iat":1700000000}')
MALLORY=$(tok '{"tid":"acme","sub":"mallory","exp":4000000000,"iat":1700000000}')
CTX="SELECT tenantguard.set_context('$ACME') IS NULL;"

# Protected first, distributed after: Citus asks for its unsafe-triggers
# setting (the audit triggers) for that one call.
coord q postgres "CREATE TABLE early (id bigint NOT NULL, tenant_id text NOT NULL, body text, PRIMARY KEY (tenant_id, id));
  SELECT count(*) FROM tenantguard.protect('early'); GRANT SELECT, INSERT ON early TO app" >/dev/null
out=$(coord q_err postgres "SELECT create_distributed_table('early', 'tenant_id')" 2>&1)
check "protect() before distributing: create_distributed_table refuses the audit triggers by default" has "$out" "has triggers"
coord q postgres "SET citus.enable_unsafe_triggers = on; SELECT create_distributed_table('early', 'tenant_id')" >/dev/null
check "protect() before distributing: with citus.enable_unsafe_triggers for that call, it distributes with its 5 policies and the tenant default" \
  test "$(coord q postgres "SELECT count(*) FROM pg_policies WHERE tablename = 'early'"):$(coord q postgres "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'early'::regclass")" = "5:tenantguard.tenant_id()"
check "protect() before distributing: the app writes and reads its tenant there, and the write is audited on a worker" \
  test "$(coord q app "BEGIN; $CTX INSERT INTO early (id, body) VALUES (1, 'x'); SELECT tenant_id FROM early; COMMIT;" | tail -1):$(( $(w1 q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.early'") + $(w2 q postgres "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.early'") ))" = "acme:1"

# The context reaches every worker.
check "context: a multi-shard query through the coordinator sees exactly its tenant" \
  test "$(coord q app "BEGIN; $CTX SELECT string_agg(DISTINCT tenant_id, ',') || ':' || count(*) FROM docs; COMMIT;" | tail -1)" = "acme:100"
check "context: a router query (tenant named) sees its rows" \
  test "$(coord q app "BEGIN; $CTX SELECT count(*) FROM docs WHERE tenant_id = 'acme'; COMMIT;" | tail -1)" = "100"
check "context: a query naming the tenant is routed to one shard (Task Count: 1)" \
  bash -c "psql -X -At -h '$CDIR/sock' -p '$CPORT' -U app -d postgres -c \"BEGIN\" -c \"SELECT tenantguard.set_context('$ACME') IS NULL\" -c \"EXPLAIN SELECT count(*) FROM docs WHERE tenant_id = 'acme'\" -c COMMIT | grep -q 'Task Count: 1'"
check "context: a read is a read: set_context() and a routed select take no transaction id on the coordinator (a standby could not give one)" \
  test "$(coord q app "BEGIN; $CTX SELECT count(*) FROM docs WHERE tenant_id = 'acme'; SELECT coalesce(txid_current_if_assigned()::text, 'none'); COMMIT;" | tail -1)" = "none"
check "context: naming another tenant returns nothing" \
  test "$(coord q app "BEGIN; $CTX SELECT count(*) FROM docs WHERE tenant_id = 'globex'; COMMIT;" | tail -1)" = "0"
out=$(coord q_err app "SELECT count(*) FROM docs" 2>&1)
check "context: without one, a distributed query fails closed (42501)" has "$out" "no tenant context"
out=$(coord q_err app "BEGIN; SELECT set_config('tenantguard.context', '$ACME', true) IS NULL; SELECT count(*) FROM docs; COMMIT;" 2>&1)
check "context: set_config() does not reach the workers, which fail closed (use set_context())" has "$out" "no tenant context"
check "writes: INSERT with the tenant from the context's default" \
  test "$(coord q app "BEGIN; $CTX INSERT INTO docs (id, body) VALUES (1001, 'new'); SELECT tenant_id FROM docs WHERE id = 1001; COMMIT;" | tail -1)" = "acme"
out=$(coord q_err app "BEGIN; $CTX INSERT INTO docs VALUES (1002, 'globex', 'x'); COMMIT;" 2>&1)
check "writes: inserting another tenant's row is refused" has "$out" "row-level security"
check "writes: UPDATE and DELETE touch only its tenant" \
  test "$(coord q app "BEGIN; $CTX UPDATE docs SET body = 'u' WHERE id < 10; DELETE FROM docs WHERE id = 1001; COMMIT;" >/dev/null; coord q postgres "SELECT count(*) FROM docs WHERE body = 'u'")" = "4"

# One source of truth for the access rules: a direct worker connection.
check "worker: the app role connected straight to a worker, with a good token, sees only its tenant" \
  test "$(w1 q app "BEGIN; $CTX SELECT string_agg(DISTINCT tenant_id, ',') FROM docs; COMMIT;" | tail -1)" = "acme"
check "worker: mallory's token works there before" \
  test "$(w1 q app "BEGIN; SELECT tenantguard.set_context('$MALLORY') IS NULL; SELECT count(*) > 0 FROM docs; COMMIT;" | tail -1)" = "t"
coord q ops "SELECT tenantguard.revoke_user('acme', 'mallory')" >/dev/null
out=$(w1 q_err app "BEGIN; SELECT tenantguard.set_context('$MALLORY') IS NULL; SELECT count(*) FROM docs; COMMIT;" 2>&1)
check "worker: a user revoked through the coordinator is refused on a direct worker connection" has "$out" "revoked"
out=$(w2 q_err app "BEGIN; SELECT tenantguard.set_context('$MALLORY') IS NULL; INSERT INTO docs VALUES (3000, 'acme', 'x'); COMMIT;" 2>&1)
check "worker: ... and cannot write there either" has "$out" "revoked"
# At the next statement of an open worker session.
fifo=$W1DIR/open.fifo; rm -f "$fifo"; mkfifo "$fifo"
BOB=$(tok '{"tid":"acme","sub":"bob","exp":4000000000,"iat":1700000000}')
( psql -X -q -At -h "$W1DIR/sock" -p "$W1" -U app -d postgres <"$fifo" >"$W1DIR/open.out" 2>&1 ) &
exec 7>"$fifo"
echo "BEGIN; SELECT tenantguard.set_context('$BOB') IS NULL; SELECT 'before:' || (count(*) > 0) FROM docs;" >&7
sleep 0.5
coord q ops "SELECT tenantguard.revoke_user('acme', 'bob')" >/dev/null
echo "SELECT 'after:' || count(*) FROM docs;" >&7; echo "COMMIT;" >&7
exec 7>&-; wait
check "worker: an open worker session read before the revocation" grep -q "before:t" "$W1DIR/open.out"
check "worker: ... and is refused at its next statement" grep -q "revoked" "$W1DIR/open.out"
# The other rules, each made on the coordinator and enforced on a worker.
GUS=$(tok '{"tid":"globex","sub":"gus","exp":4000000000,"iat":1700000000}')
check "worker: globex reads there before" test "$(w2 q app "BEGIN; SELECT tenantguard.set_context('$GUS') IS NULL; SELECT count(*) > 0 FROM docs; COMMIT;" | tail -1)" = "t"
coord q ops "SELECT tenantguard.set_ip_allowlist('globex', ARRAY['10.9.9.0/24']::cidr[])" >/dev/null
out=$(w2 q_err app "BEGIN; SELECT tenantguard.set_context('$GUS') IS NULL; SELECT count(*) FROM docs; COMMIT;" 2>&1)
check "worker: an IP allowlist set on the coordinator applies on a worker" has "$out" "allowlist"
coord q ops "SELECT tenantguard.set_ip_allowlist('globex', NULL)" >/dev/null
coord q ops "SELECT tenantguard.revoke_tenant('globex')" >/dev/null
out=$(w2 q_err app "BEGIN; SELECT tenantguard.set_context('$GUS') IS NULL; SELECT count(*) FROM docs; COMMIT;" 2>&1)
check "worker: a tenant revoked on the coordinator is refused on a worker" has "$out" "revoked"
STAFF=$(tok '{"tid":"acme","sub":"staff-joe","staff":true,"exp":4000000000,"iat":1700000000}')
out=$(w1 q_err app "BEGIN; SELECT tenantguard.set_context('$STAFF') IS NULL; SELECT count(*) FROM docs; COMMIT;" 2>&1)
check "worker: a staff token without a window is refused on a worker" has "$out" "support access grant"
coord q ops "SELECT tenantguard.grant_support_access('acme', 'staff-joe', 'ticket 9', now() + interval '1 hour')" >/dev/null
check "worker: a support window granted on the coordinator admits it there" \
  test "$(w1 q app "BEGIN; SELECT tenantguard.set_context('$STAFF') IS NULL; SELECT count(*) > 0 FROM docs; COMMIT;" | tail -1)" = "t"

# authorize() and decrypt() inside distributed queries (run on the workers).
coord q ops "SELECT tenantguard.create_role('acme', 'reader');
  SELECT tenantguard.grant_permission('acme', 'reader', 'doc:read', 'resource.id < 50');
  SELECT tenantguard.grant_permission('acme', 'reader', 'doc:read', 'resource.id == 10', 'forbid');
  SELECT tenantguard.assign_role('acme', 'alice', 'reader');" >/dev/null
check "authorize(): inside a distributed query, the same answers as on one node (ids < 50, 10 forbidden)" \
  test "$(coord q app "BEGIN; $CTX SELECT count(*) FROM docs WHERE tenantguard.authorize('doc:read', jsonb_build_object('id', id)); COMMIT;" | tail -1)" = "23"
# encrypt() is VOLATILE (a fresh nonce), which Citus refuses in an UPDATE
# of a distributed table: the value is computed first, then written.
for id in 2 4; do
  c=$(coord q app "BEGIN; $CTX SELECT encode(tenantguard.encrypt('s$id', 'docs.$id'), 'hex'); COMMIT;" | tail -1)
  coord q app "BEGIN; $CTX UPDATE docs SET secret = decode('$c', 'hex') WHERE id = $id; COMMIT;" >/dev/null
done
check "decrypt(): inside a distributed query, values decrypt on the workers" \
  test "$(coord q app "BEGIN; $CTX SELECT string_agg(tenantguard.decrypt_text(secret, 'docs.' || id), ',' ORDER BY id) FROM docs WHERE secret IS NOT NULL; COMMIT;" | tail -1)" = "s2,s4"
coord q ops "SELECT tenantguard.shred_tenant('acme')" >/dev/null
out=$(w1 q_err app "BEGIN; $CTX SELECT count(tenantguard.decrypt_text(secret, 'docs.' || id)) FROM docs WHERE secret IS NOT NULL; COMMIT;" 2>&1)
check "decrypt(): a tenant shredded on the coordinator no longer decrypts on a worker" has "$out" "22000\|shredded\|decryption failed"

# Bypass across nodes: the coordinator checks the secret and sends the
# workers a grant signed under the master key, bound to the distributed
# transaction and the role, which one connection per node takes up.
coord q postgres "CREATE ROLE maint LOGIN IN ROLE tenantguard_bypass; GRANT SELECT ON docs TO maint" >/dev/null
ALL=$(coord q postgres "SELECT count(*) FROM docs")
GX=$(coord q postgres "SELECT count(*) FROM docs WHERE tenant_id = 'globex'")
BYP="SELECT tenantguard.begin_bypass(tenantguard.bypass_secret(), 'reindex', '1 minute') IS NULL;"
check "bypass: a multi-shard query sees every tenant's rows on every node ($ALL)" \
  test "$(coord q maint "BEGIN; $BYP SELECT count(*) FROM docs; COMMIT;" | tail -1)" = "$ALL"
check "bypass: ... also with a context set: every tenant, not the context's" \
  test "$(coord q maint "BEGIN; $CTX $BYP SELECT count(*) FROM docs; COMMIT;" | tail -1)" = "$ALL"
check "bypass: a router query reaches another tenant's shard" \
  test "$(coord q maint "BEGIN; $CTX $BYP SELECT count(*) FROM docs WHERE tenant_id = 'globex'; COMMIT;" | tail -1)" = "$GX"
check "bypass: recorded on the security trail with its distributed transaction" \
  test "$(coord q postgres "SELECT count(*) > 0 FROM tenantguard.security_log WHERE event = 'bypass_begin' AND detail ? 'citus_transaction' AND detail->>'reason' = 'reindex'")" = "t"
out=$(coord q_err maint "$BYP" 2>&1)
check "bypass: outside a transaction block it is refused on Citus (a grant serves one transaction)" has "$out" "transaction block"
out=$(coord q_err maint "BEGIN; $BYP SELECT count(*) FROM docs; COMMIT; SELECT count(*) FROM docs;" 2>&1)
check "bypass: it ends with its transaction on every node: the next query fails closed" has "$out" "no tenant context"
out=$(coord q_err maint "BEGIN; $BYP SELECT count(*) FROM docs; SELECT tenantguard.end_bypass(); SELECT count(*) FROM docs; COMMIT;" 2>&1)
check "bypass: end_bypass() ends it on the workers as well" has "$out" "no tenant context"
out=$(coord q_err maint "BEGIN; SELECT tenantguard.begin_bypass(tenantguard.bypass_secret(), 'short', '1 second') IS NULL; SELECT count(*) FROM docs; SELECT pg_sleep(1.2); SELECT count(*) FROM docs; COMMIT;" 2>&1)
check "bypass: past its ttl it ends on every node, within the transaction" has "$out" "no tenant context"
# A real grant, as the workers receive it (the coordinator's own session
# logs what it sends).
fifo=$CDIR/byp.fifo; rm -f "$fifo"; mkfifo "$fifo"
( psql -X -At -h "$CDIR/sock" -p "$CPORT" -U maint -d postgres <"$fifo" >"$CDIR/byp.out" 2>&1 ) &
exec 7>"$fifo"
echo "SET citus.log_remote_commands = on; BEGIN; $BYP SELECT 'held:' || count(*) FROM docs; SHOW tenantguard.bypass_grant;" >&7
for _ in $(seq 50); do grep -q "held:" "$CDIR/byp.out" && break; sleep 0.1; done
G=$(grep -o "tgbg1\.[-0-9a-f.]*" "$CDIR/byp.out" | head -1)
ASSIGN=$(grep -o "assign_distributed_transaction_id([^)]*)" "$CDIR/byp.out" | head -1)
check "bypass: the transaction holds it on both workers (a grant was sent: ${#G} bytes)" grep -q "held:$ALL" "$CDIR/byp.out"
check "bypass: SHOW prints no grant" grep -q "^(a bypass grant)$" "$CDIR/byp.out"
MAC=${G##*.}
check "bypass: the grant's MAC starts past what pg_stat_activity keeps of a query (track_activity_query_size)" \
  test $(( ${#G} - ${#MAC} )) -ge "$(w1 q postgres "SELECT setting FROM pg_settings WHERE name = 'track_activity_query_size'")"
out=$(w1 q_err app "BEGIN; SELECT $ASSIGN; SET LOCAL tenantguard.bypass_grant = '$G'; SELECT count(*) FROM docs; COMMIT;" 2>&1)
check "bypass attack: the app role replaying the grant on a worker is refused (another role's)" has "$out" "for another role"
out=$(w1 q_err maint "BEGIN; SELECT $ASSIGN; SET LOCAL tenantguard.bypass_grant = '$G'; COMMIT;" 2>&1)
check "bypass attack: replaying it in another session of its role, same distributed transaction, is refused" has "$out" "already taken up by another session"
TAMPERED=$(printf '%s' "$G" | awk -F. 'BEGIN{OFS="."} {$3 = $3 + 1; print}')
out=$(w2 q_err maint "BEGIN; SET LOCAL tenantguard.bypass_grant = '$TAMPERED'; COMMIT;" 2>&1)
check "bypass attack: a grant altered to another transaction is refused" has "$out" "signature does not verify"
# Forged: the same fields, signed the same way under the key the app knows
# (its HS256 signing key) instead of the master key.
HEAD=$(printf '%s' "$G" | cut -d. -f1-7)
FK=$(printf '%s' 'tenantguard bypass grant v1' | openssl dgst -sha256 -mac HMAC -macopt "key:dev-signing-key-never-use-in-production-0001" | awk '{print $NF}')
FMAC=$(printf '%s' "$HEAD" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$FK" | awk '{print $NF}')
FORGED="$HEAD.$(printf -- '-%.0s' $(seq 1100)).$FMAC"
out=$(w2 q_err maint "BEGIN; SELECT $ASSIGN; SET LOCAL tenantguard.bypass_grant = '$FORGED'; COMMIT;" 2>&1)
check "bypass attack: a grant forged under the signing key is refused" has "$out" "signature does not verify"
out=$(w1 q_err app "BEGIN; SET LOCAL tenantguard.bypass_grant = 'tgbg1.0.1.2.4000000000000000.00.00.-.00'; COMMIT;" 2>&1)
check "bypass attack: a value set by hand is refused" has "$out" "not a bypass grant\|signature"
echo "COMMIT;" >&7; exec 7>&-; wait
out=$(w1 q_err maint "BEGIN; SELECT $ASSIGN; SET LOCAL tenantguard.bypass_grant = '$G'; COMMIT;" 2>&1)
check "bypass attack: replaying it on a worker after commit is refused" has "$out" "already taken up by another session"
out=$(coord q_err maint "BEGIN; SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL tenantguard.bypass_grant = '$G'; SELECT count(*) FROM docs; COMMIT;" 2>&1)
check "bypass attack: replaying it through the coordinator in a new transaction is refused ($(printf '%s' "$out" | grep -o 'already taken up\|no tenant context' | head -1))" \
  has "$out" "already taken up\|no tenant context"
# Parallel workers on the workers (force_parallel_mode there): the
# answers do not change, and without a context the query still fails closed.
for n in w1 w2; do $n q postgres "ALTER SYSTEM SET force_parallel_mode = on" >/dev/null; $n q postgres "SELECT pg_reload_conf()" >/dev/null; done
sleep 0.3
check "parallel (workers): a worker's plan for a tenant's shard has a Gather" \
  bash -c "psql -X -At -h '$CDIR/sock' -p '$CPORT' -U app -d postgres -c BEGIN -c \"SELECT tenantguard.set_context('$ACME') IS NULL\" -c \"EXPLAIN SELECT count(*) FROM docs WHERE tenant_id = 'acme'\" -c COMMIT | grep -q Gather"
check "parallel (workers): a context still sees exactly its tenant" \
  test "$(coord q app "BEGIN; $CTX SELECT string_agg(DISTINCT tenant_id, ',') FROM docs; COMMIT;" | tail -1)" = "acme"
check "parallel (workers): a bypass still sees every row" \
  test "$(coord q maint "BEGIN; $BYP SELECT count(*) FROM docs; COMMIT;" | tail -1)" = "$(coord q postgres "SELECT count(*) FROM docs")"
out=$(coord q_err app "SELECT count(*) FROM docs" 2>&1)
check "parallel (workers): without a context, still 42501" has "$out" "no tenant context"
for n in w1 w2; do $n q postgres "ALTER SYSTEM RESET force_parallel_mode" >/dev/null; $n q postgres "SELECT pg_reload_conf()" >/dev/null; done
# COPY: Citus refuses COPY into a table with RLS; multi-row INSERT is the route.
out=$(coord q_err app "BEGIN; $CTX COPY docs (id, body) FROM PROGRAM 'true'; COMMIT;" 2>&1)
check "copy: COPY into a protected distributed table is refused" has "$out" "ERROR"
check "copy: the route, a multi-row INSERT, writes its tenant's rows" \
  test "$(coord q app "BEGIN; $CTX INSERT INTO docs (id, body) VALUES (2001, 'a'), (2002, 'b'), (2003, 'c'); SELECT count(*) FROM docs WHERE id > 2000; COMMIT;" | tail -1)" = "3"
# Audit on a cluster: the triggers fire on the shards; each node chains the
# writes to the shards it holds, under the logical table's name.
every() { echo $(( $(coord q postgres "$1") + $(w1 q postgres "$1") + $(w2 q postgres "$1") )); }
check "audit: protect() attached the audit triggers to the distributed table and to its shards" \
  test "$(coord q postgres "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'docs'::regclass AND tgname = 'tenantguard_audit'")$(w1 q postgres "SET citus.show_shards_for_app_name_prefixes TO '*'; SELECT count(*) > 0 FROM pg_trigger WHERE tgname LIKE 'tenantguard_audit_1%'")" = "1t"
INI=$(tok '{"tid":"initech","sub":"peter","exp":4000000000,"iat":1700000000}')
ICTX="SELECT tenantguard.set_context('$INI') IS NULL;"
coord q app "BEGIN; $ICTX INSERT INTO docs (id, body) VALUES (7001, 'a'), (7002, 'b'); UPDATE docs SET body = 'c' WHERE id = 7001; DELETE FROM docs WHERE id = 7002; COMMIT;" >/dev/null
check "audit: a tenant's writes are recorded once in the cluster (4 records)" \
  test "$(every "SELECT count(*) FROM tenantguard.audit_log WHERE tenant = 'initech'")" = "4"
check "audit: ... on the node that holds the tenant's shard, none elsewhere" \
  test "$(every "SELECT (count(*) > 0)::int FROM tenantguard.audit_log WHERE tenant = 'initech'")" = "1"
check "audit: the records name the logical table, not the shard" \
  test "$(every "SELECT count(*) FROM tenantguard.audit_log WHERE tenant = 'initech' AND tbl = 'public.docs'")" = "4"
coord q postgres "CREATE TABLE plans (tenant_id text NOT NULL, id int NOT NULL, name text, PRIMARY KEY (tenant_id, id));
  SELECT create_reference_table('plans'); SELECT count(*) FROM tenantguard.protect('plans'); GRANT SELECT, INSERT, UPDATE ON plans TO app;" >/dev/null
coord q app "BEGIN; $ICTX INSERT INTO plans (id, name) VALUES (1, 'gold'); UPDATE plans SET name = 'platinum' WHERE id = 1; COMMIT;" >/dev/null
check "audit: a reference-table write (a copy on each of 3 nodes) is recorded once" \
  test "$(every "SELECT count(*) FROM tenantguard.audit_log WHERE tbl = 'public.plans'")" = "2"
check "audit: ... in the tenant's chain, on the node of its shards: one chain per tenant" \
  test "$(every "SELECT (count(*) > 0)::int FROM tenantguard.audit_log WHERE tenant = 'initech'")" = "1"
out=$(coord q ops "SELECT node || ':' || records || ':' || ok FROM tenantguard.citus_verify_audit('initech')")
check "audit: citus_verify_audit() on the coordinator finds the tenant's one chain, whole ($out)" \
  test "$(printf '%s\n' "$out" | grep -c ':6:true$')" = "1"
check "audit: citus_verify_audit() covers every node, every chain verifies" \
  test "$(coord q ops "SELECT count(DISTINCT node) || ':' || bool_and(ok) FROM tenantguard.citus_verify_audit()")" = "3:true"
check "audit: citus_audit_digest() has the tenant's head" \
  test "$(coord q ops "SELECT count(*) FROM tenantguard.citus_audit_digest() WHERE tenant = 'initech'")" = "1"
check "audit: citus_export_audit() exports the tenant's 6 records from its node" \
  test "$(coord q ops "SELECT count(*) || ':' || count(DISTINCT e->>'node') FROM tenantguard.citus_export_audit('initech') e")" = "6:1"
out=$(coord q_err app "SELECT count(*) FROM tenantguard.citus_verify_audit()" 2>&1)
check "audit: the app role cannot run the cluster verification" has "$out" "permission denied"
# The rebalancer moves a tenant's shard to the other worker.
SH=$(coord q postgres "SELECT get_shard_id_for_distribution_column('docs', 'initech')")
FROM_PORT=$(coord q postgres "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = $SH")
if [ "$FROM_PORT" = "$W1" ]; then TO_PORT=$W2; else TO_PORT=$W1; fi
coord q postgres "SELECT citus_move_shard_placement($SH, '127.0.0.1', $FROM_PORT, '127.0.0.1', $TO_PORT, shard_transfer_mode => 'block_writes')" >/dev/null
check "rebalancer: the tenant's shard moved ($FROM_PORT -> $TO_PORT)" \
  test "$(coord q postgres "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = $SH")" = "$TO_PORT"
check "rebalancer: moving the rows recorded nothing (the copy is no write)" \
  test "$(every "SELECT count(*) FROM tenantguard.audit_log WHERE tenant = 'initech'")" = "6"
# Linked right after the move, before the tenant writes there: its chain
# continues on the new node from the old head.
out=$(coord q ops "SELECT tenant || ':' || previous_seq FROM tenantguard.citus_link_audit_segments()")
check "rebalancer: citus_link_audit_segments() links the tenant's chain on its new node to its previous head ($out)" \
  test "$out" = "initech:6"
check "rebalancer: ... once (idempotent)" test "$(coord q ops "SELECT count(*) FROM tenantguard.citus_link_audit_segments()")" = "0"
coord q app "BEGIN; $ICTX INSERT INTO docs (id, body) VALUES (7003, 'after the move'); COMMIT;" >/dev/null
out=$(coord q ops "SELECT node || ':' || records || ':' || ok FROM tenantguard.citus_verify_audit('initech') ORDER BY node")
check "rebalancer: the old part verifies on its node, the new part (the link, then the write) on the new node ($(printf '%s' "$out" | tr '\n' ' '))" \
  test "$(printf '%s\n' "$out" | grep -cx "127.0.0.1:$FROM_PORT:6:true\|127.0.0.1:$TO_PORT:2:true"):$(printf '%s\n' "$out" | wc -l)" = "2:2"
check "rebalancer: one chain across the two nodes: seqs 1 to 8, each once, the new node's first record linked to the old head" \
  test "$(coord q ops "SELECT count(DISTINCT (e->>'seq')::int) || ':' || min((e->>'seq')::int) || ':' || max((e->>'seq')::int) || ':' || count(DISTINCT e->>'node')
    || ':' || bool_or(e->>'action' = 'security:audit_segment_linked' AND (e->>'seq')::int = 7
                     AND e->>'prev_hash' = (SELECT f->>'hash' FROM tenantguard.citus_export_audit('initech') f WHERE (f->>'seq')::int = 6))
    FROM tenantguard.citus_export_audit('initech') e")" = "8:1:8:2:true"
out=$(coord q_err app "SELECT count(*) FROM tenantguard.citus_link_audit_segments()" 2>&1)
check "rebalancer: the app role cannot link segments" has "$out" "permission denied"
# Tampering on a worker is found from the coordinator.
INODE=$(coord q ops "SELECT node FROM tenantguard.citus_verify_audit('initech') WHERE records = 6")
IPORT=${INODE##*:}
if [ "$IPORT" = "$W1" ]; then IW=w1; else IW=w2; fi
# (a superuser on that worker, the guard off as for supervised maintenance)
$IW q postgres "ALTER SYSTEM SET tenantguard.audit_guard = off" >/dev/null; $IW q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
$IW q postgres "ALTER TABLE tenantguard.audit_log DISABLE TRIGGER refuse_change; UPDATE tenantguard.audit_log SET action = 'INSERT' WHERE tenant = 'initech' AND action = 'DELETE'; ALTER TABLE tenantguard.audit_log ENABLE ALWAYS TRIGGER refuse_change" >/dev/null
$IW q postgres "ALTER SYSTEM RESET tenantguard.audit_guard" >/dev/null; $IW q postgres "SELECT pg_reload_conf()" >/dev/null
check "audit: a record edited on a worker is found by citus_verify_audit() on the coordinator" \
  test "$(coord q ops "SELECT ok FROM tenantguard.citus_verify_audit('initech') WHERE records = 6")" = "f"
# The old segment removed whole, head included: nothing is left on its node
# to fail; the new segment's link finds it.
$IW q postgres "ALTER SYSTEM SET tenantguard.audit_guard = off" >/dev/null; $IW q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
$IW q postgres "ALTER TABLE tenantguard.audit_log DISABLE TRIGGER refuse_change; ALTER TABLE tenantguard.audit_head DISABLE TRIGGER USER;
  DELETE FROM tenantguard.audit_log WHERE tenant = 'initech'; DELETE FROM tenantguard.audit_head WHERE tenant = 'initech';
  ALTER TABLE tenantguard.audit_log ENABLE ALWAYS TRIGGER refuse_change; ALTER TABLE tenantguard.audit_head ENABLE TRIGGER USER" >/dev/null 2>&1
$IW q postgres "ALTER SYSTEM RESET tenantguard.audit_guard" >/dev/null; $IW q postgres "SELECT pg_reload_conf()" >/dev/null
check "rebalancer: a previous segment deleted whole (head too) on its node is found through the link" \
  test "$(coord q ops "SELECT string_agg(records || ':' || ok || ':' || (first_bad_id IS NOT NULL), ',') FROM tenantguard.citus_verify_audit('initech')")" = "2:false:true"
check "rebalancer: ... while the new node's part alone still verifies there (its checkpoint attested by the link)" \
  test "$($([ "$IW" = w1 ] && echo w2 || echo w1) q postgres "SELECT ok FROM tenantguard.verify_audit('initech')")" = "t"
# lint(): what Citus needs configured.
check "lint(): TG026, citus.propagate_set_commands not local in the configuration" \
  test "$(coord q postgres "SELECT count(*) FROM tenantguard.lint() WHERE code = 'TG026'")" = "1"
out=$(coord q postgres "SELECT string_agg(object, ',' ORDER BY object) FROM tenantguard.lint() WHERE code = 'TG027'")
check "lint(): TG027, the app roles may log in to both workers from elsewhere than the coordinator (::1 in pg_hba.conf)" \
  test "$out" = "127.0.0.1:$W1,127.0.0.1:$W2"
# w1 accepts the application only from the coordinator, and rejects it elsewhere.
{ printf 'host all app,maint 127.0.0.1/32 trust\nhost all app,maint all reject\n'; cat "$W1DIR/data/pg_hba.conf"; } >"$W1DIR/hba.new"
cat "$W1DIR/hba.new" >"$W1DIR/data/pg_hba.conf"; w1 q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
check "lint(): ... not once that worker accepts them from the coordinator only" \
  test "$(coord q postgres "SELECT string_agg(object, ',' ORDER BY object) FROM tenantguard.lint() WHERE code = 'TG027'")" = "127.0.0.1:$W2"
check "lint(): ... and the coordinator still reaches that worker as the app role" \
  test "$(coord q app "BEGIN; $CTX SELECT count(*) > 0 FROM docs; COMMIT;" | tail -1)" = "t"
summary
