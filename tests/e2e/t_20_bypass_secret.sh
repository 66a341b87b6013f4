# The bypass secret is never logged and never visible in pg_settings or
# pg_stat_activity, even with log_statement = all, when used with the
# recommended idiom begin_bypass(bypass_secret(), ...).
q postgres "ALTER SYSTEM SET log_statement = 'all'" && q postgres "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
out=$(psql -X -A -t -q -h "$SOCK" -p "$PORT" -U maint -d postgres <<'SQL'
BEGIN;
SELECT tenantguard.begin_bypass(tenantguard.bypass_secret(), 'e2e: nightly roll-up', '1 minute');
SELECT count(*) FROM t;
SELECT count(*) FROM pg_settings WHERE setting = tenantguard.bypass_secret();
SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || tenantguard.bypass_secret() || '%' AND pid <> pg_backend_pid();
COMMIT;
SELECT 'SECRET=' || tenantguard.bypass_secret();
SQL
)
secret=$(echo "$out" | sed -n 's/^SECRET=//p')
rows=$(echo "$out" | sed -n 2p)
check "bypass sees every tenant (2 rows)" test "$rows" = "2"
check "secret is 64 hex characters" bash -c "[[ '$secret' =~ ^[0-9a-f]{64}$ ]]"
check "secret not in pg_settings" test "$(echo "$out" | sed -n 3p)" = "0"
check "secret not in pg_stat_activity" test "$(echo "$out" | sed -n 4p)" = "0"
sleep 0.3
check "secret never in the server log (log_statement = all)" bash -c "! grep -q '$secret' '$LOG'"
check "bypass_begin logged with its reason" grep -q '"event":"bypass_begin".*e2e: nightly roll-up' "$LOG"
check "bypass_begin on the security trail" test "$(q postgres "SELECT count(*) FROM tenantguard.security_log WHERE event = 'bypass_begin' AND detail->>'reason' = 'e2e: nightly roll-up'")" = "1"
q postgres "ALTER SYSTEM RESET log_statement" && q postgres "SELECT pg_reload_conf()" >/dev/null
# The Citus grant setting on one node: the app role cannot make a grant.
out=$(q_err app "BEGIN; SET LOCAL tenantguard.bypass_grant = 'tgbg1.0.1.2.4000000000000000.00000000000000000000000000000000.617070.-.00'; COMMIT;" 2>&1)
check "bypass grant: a value set by hand is refused (42501)" has "$out" "bypass refused: \(not a bypass grant\|the bypass grant.s signature does not verify\)"
check "bypass grant: empty is the only value the app role can set" test "$(q app "SET tenantguard.bypass_grant = ''; SELECT tenantguard.bypassing()")" = "f"
