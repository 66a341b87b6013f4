# A context given at connection start-up: a startup packet option
# (libpq `options=-c tenantguard.context=...`, PGOPTIONS) or a role's
# `ALTER ROLE ... SET`. Postgres applies these inside the start-up
# transaction, where no SQL can run: the token's signature and times are
# checked there, and the revocation and allowlist rules at the session's
# first statement. (Until this was handled, a valid token made every such
# login fail with FATAL "cannot execute SQL without an outer snapshot".)
STARTUP_BOB=$(tok '{"tid":"acme","sub":"startup-bob","exp":4000000000,"iat":1700000000}')
STARTUP_CY=$(tok '{"tid":"acme","sub":"startup-cy","exp":4000000000,"iat":1700000000}')
startup() { # startup ROLE OPTIONS SQL: connect with PGOPTIONS, print output and errors
  PGOPTIONS="$2" psql -X -At -h "$SOCK" -p "$PORT" -U "$1" -d postgres -c "$3" 2>&1
}
out=$(startup app "-c tenantguard.context=$ACME" "SELECT tenantguard.tenant_id(), string_agg(tenant_id, ',') FROM t")
check "a valid token in the startup packet: the session acts for its tenant (got: $out)" test "$out" = "acme|acme"
last=${ACME: -1}; [ "$last" = A ] && swap=E || swap=A
startup app "-c tenantguard.context=${ACME%?}$swap" "SELECT 'connected'" > "$DIR/startup_forged.out"
check "a forged token in the startup packet: the connection is refused with the verification error" \
  grep -q 'FATAL: .*tenant context token signature is invalid' "$DIR/startup_forged.out"
check "  ... and not let in" bash -c "! grep -q connected '$DIR/startup_forged.out'"
check "  ... and the refusal leaves an alert in the server log" \
  bash -c "grep 'tenantguard-alert:' '$LOG' | grep '\"event\":\"context_refused\"' | grep -q '\"reason\":\"bad_signature\"'"
q postgres "SELECT tenantguard.revoke_user('acme', 'startup-bob')" >/dev/null
startup app "-c tenantguard.context=$STARTUP_BOB" "SELECT count(*) FROM t" > "$DIR/startup_revoked.out"
check "a revoked user's token in the startup packet: the first statement is refused" \
  grep -q "access was revoked" "$DIR/startup_revoked.out"
check "  ... and reads nothing" bash -c "! grep -qx '[0-9]*' '$DIR/startup_revoked.out'"
q postgres "CREATE ROLE startup_app LOGIN NOSUPERUSER NOBYPASSRLS; GRANT SELECT ON t TO startup_app;
            ALTER ROLE startup_app SET tenantguard.context = '$STARTUP_CY'" >/dev/null
out=$(startup startup_app "" "SELECT tenantguard.user_id(), count(*) FROM t")
check "ALTER ROLE ... SET a valid token: logins work and act for it (got: $out)" test "$out" = "startup-cy|1"
q postgres "SELECT tenantguard.revoke_user('acme', 'startup-cy')" >/dev/null
startup startup_app "" "SELECT count(*) FROM t" > "$DIR/startup_role_revoked.out"
check "ALTER ROLE ... SET a token whose user was revoked since: logins still work, the first statement is refused" \
  bash -c "grep -q 'access was revoked' '$DIR/startup_role_revoked.out' && ! grep -qx '[0-9]*' '$DIR/startup_role_revoked.out'"
q postgres "ALTER ROLE startup_app RESET ALL; DROP OWNED BY startup_app; DROP ROLE startup_app" >/dev/null
# Over TCP the start-up refusal names the client's address (looked up
# without SQL), and so does the same refusal later in a session.
PGOPTIONS="-c tenantguard.context=${ACME%?}$swap" psql -X -At -h 127.0.0.1 -p "$PORT" -U app -d postgres -c "SELECT 1" >/dev/null 2>&1
check "a forged start-up token over TCP: the alert names the client address" \
  bash -c "grep 'tenantguard-alert:' '$LOG' | grep '\"reason\":\"bad_signature\"' | grep -q '\"client_addr\":\"127.0.0.1\"'"
psql -X -At -h 127.0.0.1 -p "$PORT" -U app -d postgres -c "SELECT tenantguard.set_context('${ACME%?}$swap')" >/dev/null 2>&1
check "  ... and so does one set in a session" \
  test "$(grep 'tenantguard-alert:' "$LOG" | grep '"reason":"bad_signature"' | grep -c '"client_addr":"127.0.0.1"')" -ge 2
