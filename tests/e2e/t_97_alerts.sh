# tenantguard.alert_notify = on (this cluster): a refused attempt aborts its
# own transaction, yet the background worker records it in security_log and
# sends NOTIFY tenantguard_alert.
DB=postgres
count_alerts() { q postgres "SELECT count(*) FROM tenantguard.security_log WHERE event = 'alert:context_refused'"; }
before=$(count_alerts)
psql -X -h "$SOCK" -p "$PORT" -U postgres -d postgres -c "LISTEN tenantguard_alert" -c "SELECT pg_sleep(4)" -c "SELECT 1" > "$DIR/listen.out" 2>&1 &
listener=$!
sleep 1
q_err app "SET tenantguard.context = 'eyJhbGciOiJub25lIn0.eyJ0aWQiOiJnbG9iZXgiLCJzdWIiOiJtYWxsb3J5In0.'" >/dev/null
wait $listener
check "a forged token is sent on NOTIFY tenantguard_alert" grep -q 'notification "tenantguard_alert" with payload .*context_refused' "$DIR/listen.out"
n=$before
for _ in $(seq 1 50); do n=$(count_alerts); [ "$n" -gt "$before" ] && break; sleep 0.1; done
check "the refused attempt has a security_log row although its transaction aborted" test "$n" -gt "$before"
check "the row names the role and the reason" test "$(q postgres "SELECT db_role || '/' || (detail->>'reason') FROM tenantguard.security_log WHERE event = 'alert:context_refused' ORDER BY id DESC LIMIT 1")" = "app/unsupported_alg"
check "status() reports the alert worker" test "$(q postgres "SELECT tenantguard.status()->'alert_worker'->>'database'")" = "postgres"
check "the app role cannot read the security trail" q_err app "SELECT count(*) FROM tenantguard.security_log"
check "the chains still verify" test "$(q postgres "SELECT bool_and(ok) FROM tenantguard.verify_audit()")" = "t"
