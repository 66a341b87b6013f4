# Keys never reach the server log, even with log_statement = all; without a
# master key, encryption is refused (never silently stored in clear).
q postgres "ALTER SYSTEM SET log_statement = 'all'" && q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
q postgres "CREATE TABLE secrets (id int PRIMARY KEY, tenant_id text NOT NULL, v bytea); SELECT count(*) FROM tenantguard.protect('secrets'); GRANT SELECT, INSERT ON secrets TO app" >/dev/null
out=$(psql -X -q -At -h "$SOCK" -p "$PORT" -U app -d postgres 2>&1 <<SQL
BEGIN;
SELECT tenantguard.set_context('$ACME');
INSERT INTO secrets VALUES (1, 'acme', tenantguard.encrypt('sso-token-xyz', 'secrets.v.1'));
SELECT tenantguard.decrypt_text(v, 'secrets.v.1') FROM secrets;
COMMIT;
SQL
)
check "round trip through the e2e cluster" bash -c "echo '$out' | grep -q '^sso-token-xyz$'"
sleep 0.3
master=$(grep '^tenantguard.master_key' "$DIR/data/postgresql.conf" | sed "s/^[^:]*:\([^']*\)'.*/\1/")
check "master key material is not in the server log" bash -c "[ -n '$master' ] && ! grep -qF '$master' '$LOG'"
check "signing key material is not in the server log" bash -c "! grep -qF 'dev-signing-key-never-use-in-production' '$LOG'"
check "audit key material is not in the server log" bash -c "! grep -qF 'dev-audit-chain-key-never-use' '$LOG'"
q postgres "ALTER SYSTEM RESET log_statement" && q postgres "SELECT pg_reload_conf()" >/dev/null
# Without a master key: a clear error, and nothing is written.
sed -i 's/^tenantguard.master_key/#tenantguard.master_key/' "$DIR/data/postgresql.conf"
q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
err=$(psql -X -q -At -h "$SOCK" -p "$PORT" -U app -d postgres 2>&1 <<SQL
BEGIN;
SELECT tenantguard.set_context('$ACME');
INSERT INTO secrets VALUES (2, 'acme', tenantguard.encrypt('would-be-plaintext', 'secrets.v.2'));
COMMIT;
SQL
)
check "no master key: encrypt refused with a clear error" bash -c "echo '$err' | grep -q 'no master key configured'"
check "no master key: nothing stored" test "$(q postgres "SELECT count(*) FROM secrets WHERE id = 2")" = "0"
sed -i 's/^#tenantguard.master_key/tenantguard.master_key/' "$DIR/data/postgresql.conf"
q postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.3
