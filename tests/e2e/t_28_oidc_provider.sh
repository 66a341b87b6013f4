# A real OpenID Provider on this machine (the certified `oidc-provider`
# package, tests/idp/provider.js): its JWKS synced by the recipes, real
# tokens (a client-credentials JWT access token, an ID token from the
# authorization code flow) used as the application role, a key rotation,
# and a second provider instance (another issuer, its own keys) refused.
if ! command -v node >/dev/null; then fail "oidc-provider: node is not installed"; return 0 2>/dev/null || exit 1; fi
[ -d tests/idp/node_modules/oidc-provider ] || (cd tests/idp && npm ci --no-audit --no-fund --silent >/dev/null 2>&1 || npm install --no-audit --no-fund --silent >/dev/null 2>&1)
[ -d examples/node/node_modules ] || (cd examples/node && npm ci --no-audit --no-fund --silent >/dev/null 2>&1 || npm install --no-audit --no-fund --silent >/dev/null 2>&1)
python3 -c "import psycopg" 2>/dev/null || pip install --quiet -r examples/python/requirements.txt >/dev/null 2>&1
APORT=$((PORT + 20)); BPORT2=$((PORT + 21))
A=http://127.0.0.1:$APORT; B=http://127.0.0.1:$BPORT2
rm -f "$DIR/idp-a.json" "$DIR/idp-b.json"
start_idp() { # start_idp PORT KEYS -> pid in IDP_PID
  node tests/idp/provider.js "$1" "$2" >>"$DIR/idp-$1.log" 2>&1 &
  IDP_PID=$!
  for i in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
start_idp "$APORT" "$DIR/idp-a.json" || fail "oidc-provider A did not start: $(tail -3 "$DIR/idp-$APORT.log")"
PA=$IDP_PID
start_idp "$BPORT2" "$DIR/idp-b.json" || fail "oidc-provider B did not start"
PB=$IDP_PID
ADMIN_DSN="postgresql://ops@/postgres?host=$SOCK&port=$PORT"
jwks_a=$(python3 -c "import json, urllib.request; print(json.dumps(json.load(urllib.request.urlopen('$A/jwks'))))")
q ops "SELECT tenantguard.trust_issuer('$A', '$jwks_a', ARRAY['api://tenantguard', 'web'], '{\"tenant\": \"org_id\"}')" >/dev/null
check "oidc-provider: its issuer is trusted with the JWKS it publishes" test "$(q ops "SELECT cardinality(kids) FROM tenantguard.issuers() WHERE iss = '$A'")" = "1"

AT=$(node tests/idp/tokens.js "$A" access 2>&1)
check "oidc-provider: a client-credentials access token in JWT format (RFC 9068, at+jwt)" \
  bash -c "printf '%s' '$AT' | cut -d. -f1 | base64 -d 2>/dev/null | grep -q 'at+jwt'"
check "oidc-provider: the app role reads exactly its tenant's rows with the access token" \
  test "$(q app "BEGIN; SELECT tenantguard.set_context('$AT') IS NULL; SELECT string_agg(tenant_id, ',') FROM t; COMMIT;" | tail -1)" = "acme"
IDT=$(node tests/idp/tokens.js "$A" id gus 2>&1)
check "oidc-provider: an ID token (authorization code flow) reads exactly its tenant's rows" \
  test "$(q app "BEGIN; SELECT tenantguard.set_context('$IDT') IS NULL; SELECT string_agg(tenant_id, ',') || ':' || tenantguard.user_id() FROM t; COMMIT;" | tail -1)" = "globex:gus"
BT=$(node tests/idp/tokens.js "$B" access 2>&1)
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$BT') IS NULL; SELECT count(*) FROM t; COMMIT;" 2>&1)
check "oidc-provider: a token of a second instance (another issuer, its own keys) is refused" has "$out" "is not trusted"
# The second instance's token with the first one's issuer name would need
# its key: tests/vectors/idp.json (trusted_iss_untrusted_key) covers it.

# Rotation: a new key first, the old one still published; restart; sync.
kill "$PA"; wait "$PA" 2>/dev/null
node -e "
const fs = require('fs'); const { generateKeyPairSync } = require('crypto');
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const keys = JSON.parse(fs.readFileSync('$DIR/idp-a.json', 'utf8'));
keys.unshift({ ...privateKey.export({ format: 'jwk' }), kid: 'k-rotated', alg: 'ES256', use: 'sig' });
fs.writeFileSync('$DIR/idp-a.json', JSON.stringify(keys));"
start_idp "$APORT" "$DIR/idp-a.json" || fail "oidc-provider A did not restart"
PA=$IDP_PID
out=$(TG_ADMIN_DSN=$ADMIN_DSN python3 examples/python/sync_jwks.py "$A" "$A/jwks" 2>&1)
check "rotation: the python sync installs the provider's new JWKS ($out)" test "$(q ops "SELECT kids[1] FROM tenantguard.issuers() WHERE iss = '$A'")" = "k-rotated"
AT2=$(node tests/idp/tokens.js "$A" access 2>&1)
check "rotation: a token signed with the new key works" \
  test "$(q app "BEGIN; SELECT tenantguard.set_context('$AT2') IS NULL; SELECT count(*) FROM t; COMMIT;" | tail -1)" = "1"
# The provider drops the old key; the next sync (node) installs that set.
kill "$PA"; wait "$PA" 2>/dev/null
node -e "
const fs = require('fs'); const keys = JSON.parse(fs.readFileSync('$DIR/idp-a.json', 'utf8'));
fs.writeFileSync('$DIR/idp-a.json', JSON.stringify(keys.slice(0, 1)));"
start_idp "$APORT" "$DIR/idp-a.json" || fail "oidc-provider A did not restart"
PA=$IDP_PID
out=$(TG_ADMIN_DSN=$ADMIN_DSN node examples/node/sync_jwks.js "$A" "$A/jwks" 2>&1)
check "rotation: the node sync installs the set without the old key, the previous set keeps it ($out)" \
  test "$(q ops "SELECT array_to_string(kids, ',') || '/' || cardinality(previous_kids) FROM tenantguard.issuers() WHERE iss = '$A'")" = "k-rotated/2"
check "rotation: a token signed with the old key still works until it expires" \
  test "$(q app "BEGIN; SELECT tenantguard.set_context('$AT') IS NULL; SELECT count(*) FROM t; COMMIT;" | tail -1)" = "1"
check "rotation: each sync that changed the keys is on the security trail" \
  test "$(q postgres "SELECT count(*) FROM tenantguard.security_log WHERE event = 'issuer_keys_set' AND detail->>'iss' = '$A'")" = "2"
JTI=$(python3 -c "import base64, json, sys; p = sys.argv[1].split('.')[1]; print(json.loads(base64.urlsafe_b64decode(p + '=' * (-len(p) % 4)))['jti'])" "$AT2")
q ops "SELECT tenantguard.revoke_session('$JTI')" >/dev/null
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$AT2') IS NULL; SELECT count(*) FROM t; COMMIT;" 2>&1)
check "revoke_session(jti) refuses the provider's access token" has "$out" "revoked"
kill "$PA" "$PB" 2>/dev/null; wait "$PA" "$PB" 2>/dev/null
