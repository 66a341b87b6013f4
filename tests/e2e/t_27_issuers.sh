# Identity providers' tokens (RS/PS/ES/EdDSA), trusted by issuer: the shared
# vectors (tests/vectors/idp.json) as the application role, every attack
# refused with no rows and a tenantguard-alert line, registration refusals,
# rotation, distrust in an open session, explain_context().
VEC=tests/vectors/idp.json
# Register every issuer of the vector file, as tenantguard_admin.
python3 tests/vectors/issuers_sql.py >"$DIR/issuers.sql"
out=$(psql -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U ops -d postgres -f "$DIR/issuers.sql" 2>&1)
check "issuers: tenantguard_admin trusts the vector file's 9 issuers" test "$(q ops "SELECT count(*) FROM tenantguard.issuers()")" = "9"
check "issuers: each registration is on the security trail" test "$(q postgres "SELECT count(*) FROM tenantguard.security_log WHERE event = 'issuer_trusted'")" = "9"
out=$(q_err app "SELECT tenantguard.trust_issuer('https://evil.test', '{\"keys\":[]}', ARRAY['x'])" 2>&1)
check "issuers: the app role cannot trust an issuer" has "$out" "permission denied"
out=$(q_err app "SELECT count(*) FROM tenantguard.issuer" 2>&1)
check "issuers: the app role cannot read the issuer table" has "$out" "permission denied"

# Registration refusals.
for name in private_key_in_jwks symmetric_key rsa_1024; do
  jwks=$(python3 -c "import json,sys; d=json.load(open('$VEC')); print(json.dumps([j for j in d['refused_jwks'] if j['name']=='$name'][0]['jwks']))")
  out=$(q_err ops "SELECT tenantguard.trust_issuer('https://refused.test', '$jwks', ARRAY['a'])" 2>&1)
  check "issuers: a JWKS with $name is refused at registration (22023)" has "$out" "invalid JWKS"
done
out=$(q_err ops "SELECT tenantguard.trust_issuer('https://noaud.test', '$(python3 -c "import json; print(json.dumps(json.load(open('$VEC'))['issuers'][1]['jwks']))")', ARRAY[]::text[])" 2>&1)
check "issuers: an issuer without an accepted audience is refused" has "$out" "at least one accepted audience"

# The vectors, each as the application role.
n_ok=0; n_bad=0; bad=""
while IFS=$'\t' read -r name token expect tid; do
  before=$(grep -c 'tenantguard-alert' "$LOG")
  out=$(q app "BEGIN; SELECT tenantguard.set_context('$token') IS NULL; SELECT coalesce(string_agg(DISTINCT tenant_id, ','), '-') FROM t; COMMIT;" 2>&1 | tail -1)
  if [ "$expect" = accept ]; then
    if [ "$out" = "$tid" ]; then n_ok=$((n_ok+1)); else n_bad=$((n_bad+1)); bad="$bad $name($out)"; fi
  else
    sleep 0.05
    after=$(grep -c 'tenantguard-alert' "$LOG")
    if has "$out" "ERROR" && [ "$after" -gt "$before" ]; then n_ok=$((n_ok+1)); else n_bad=$((n_bad+1)); bad="$bad $name($out)"; fi
  fi
done < <(python3 -c "
import json; d=json.load(open('$VEC'))
for v in d['vectors']:
    if not v.get('staff'): print('\t'.join([v['name'], v['token'], v['expect'], v.get('tid', '')]))")
check "issuers: all $((n_ok+n_bad)) shared vectors (the staff one below) as the app role: accepted ones read exactly their tenant, attacks refused with no rows and an alert line${bad:+ (wrong:$bad)}" test "$n_bad" = 0

vec() { python3 -c "import json; d=json.load(open('$VEC')); print([v for v in d['vectors'] if v['name']=='$1'][0]['token'])"; }
ES=$(vec es256); RS=$(vec rs256)
check "issuers: claims() returns the payload plus the mapped values under \"tenantguard\"" \
  test "$(q app "BEGIN; SELECT tenantguard.set_context('$ES') IS NULL; SELECT (tenantguard.claims()->>'org_id') || ':' || (tenantguard.claims()->'tenantguard'->>'tid') || ':' || tenantguard.user_id(); COMMIT;" | tail -1)" = "acme:acme:alice"
KC=$(vec keycloak_staff_role)
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$KC') IS NULL; SELECT count(*) FROM t; COMMIT;" 2>&1)
check "issuers: a staff role mapped from Keycloak's realm_access.roles needs a support window, as any staff token" has "$out" "staff token without a live support access grant"
q ops "SELECT tenantguard.grant_support_access('acme', 'joe', 'ticket 7', now() + interval '1 hour')" >/dev/null
check "issuers: ... and reads with one" test "$(q app "BEGIN; SELECT tenantguard.set_context('$KC') IS NULL; SELECT count(*) FROM t; COMMIT;" | tail -1)" = "1"
SB=$(vec supabase_app_metadata)
check "issuers: Supabase's app_metadata.tenants widen the read scope" \
  test "$(q app "BEGIN; SELECT tenantguard.set_context('$SB') IS NULL; SELECT array_to_string(tenantguard.tenant_ids(), ','); COMMIT;" | tail -1)" = "acme,initech"

# Revocation applies to issuers' tokens as to HS256 ones.
q ops "SELECT tenantguard.revoke_user('acme', 'revoked-later')" >/dev/null
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$(vec es256_revocable)') IS NULL; SELECT count(*) FROM t; COMMIT;" 2>&1)
check "issuers: revoke_user() refuses an issuer's token for that user" has "$out" "revoked"

# explain_context(): why, without any key.
ex=$(q ops "SELECT tenantguard.explain_context('$(vec wrong_aud)')")
check "explain_context(): names the step, issuer, kid, algorithm and audience of a refusal" \
  test "$(q ops "SELECT (e->>'accepted') || ':' || (e->>'refused_at') || ':' || (e->>'iss') || ':' || (e->>'kid') || ':' || (e->>'alg') || ':' || (e->'audience'->>'ok') FROM (SELECT '$ex'::jsonb e) x")" = "false:verification:https://idp.example.test:ec:ES256:false"
ex=$(q ops "SELECT tenantguard.explain_context('$RS')")
check "explain_context(): shows an accepted token's mapping" test "$(q ops "SELECT (e->>'accepted') || ':' || (e->'claims'->>'tid') FROM (SELECT '$ex'::jsonb e) x")" = "true:acme"
check "explain_context(): reveals no key material" bash -c "! printf '%s' '$ex' | grep -q '\"n\"\\|\"x\":\\|\"d\"'"
out=$(q_err app "SELECT tenantguard.explain_context('$RS')" 2>&1)
check "explain_context(): not for the app role" has "$out" "permission denied"

# Rotation: new keys installed, the previous set kept until replaced.
ISS=https://idp.example.test
main=$(python3 -c "import json; print(json.dumps(json.load(open('$VEC'))['issuers'][0]['jwks']))")
other=$(python3 -c "import json; print(json.dumps(json.load(open('$VEC'))['issuers'][1]['jwks']))")
q ops "SELECT tenantguard.set_issuer_keys('$ISS', '$other')" >/dev/null
check "rotation: tokens of the previous key set still work" test "$(q app "BEGIN; SELECT tenantguard.set_context('$ES') IS NULL; SELECT count(*) FROM t; COMMIT;" | tail -1)" = "1"
q ops "SELECT tenantguard.set_issuer_keys('$ISS', '$other')" >/dev/null
check "rotation: the same JWKS again keeps the previous set" test "$(q app "BEGIN; SELECT tenantguard.set_context('$ES') IS NULL; SELECT count(*) FROM t; COMMIT;" | tail -1)" = "1"
ed=$(python3 -c "import json; d=json.load(open('$VEC'))['issuers'][0]['jwks']; print(json.dumps({'keys':[k for k in d['keys'] if k['kid']=='ed']}))")
q ops "SELECT tenantguard.set_issuer_keys('$ISS', '$ed')" >/dev/null
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$ES') IS NULL; SELECT count(*) FROM t; COMMIT;" 2>&1)
check "rotation: two rotations later the old key is gone" has "$out" "unknown kid"
check "rotation: each change of keys is on the security trail" test "$(q postgres "SELECT count(*) FROM tenantguard.security_log WHERE event = 'issuer_keys_set'")" = "2"
q ops "SELECT tenantguard.set_issuer_keys('$ISS', '$main')" >/dev/null

# In parallel workers (the accessors verify the token again there).
PARGUC=debug_parallel_query; [ "$(q postgres "SHOW server_version_num")" -lt 160000 ] && PARGUC=force_parallel_mode
out=$(q app "BEGIN; SELECT tenantguard.set_context('$(vec eddsa)') IS NULL; SET LOCAL $PARGUC = on; SELECT count(*) FROM t; COMMIT;" 2>&1 | tail -1)
check "issuers: an issuer's token holds in a parallel worker" test "$out" = "1"

# The sync recipes: fetch a JWKS over HTTP, install it (examples/).
mkdir -p "$DIR/jwks"
python3 -c "import json; d=json.load(open('$VEC'))['issuers'][0]['jwks']; print(json.dumps({'keys':[k for k in d['keys'] if k['kid']=='ed']}))" >"$DIR/jwks/ed.json"
cp "$DIR/jwks/ed.json" "$DIR/jwks/ed-again.json"
python3 -c "import json; print(json.dumps(json.load(open('$VEC'))['issuers'][0]['jwks']))" >"$DIR/jwks/main.json"
HPORT=$((PORT + 7))
( cd "$DIR/jwks" && exec python3 -m http.server "$HPORT" --bind 127.0.0.1 ) >/dev/null 2>&1 &
HTTPD=$!
for i in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$HPORT") 2>/dev/null && break; sleep 0.1; done
ADMIN_DSN="postgresql://ops@/postgres?host=$SOCK&port=$PORT"
ALLKIDS=$(python3 -c "import json; print(','.join(k['kid'] for k in json.load(open('$VEC'))['issuers'][0]['jwks']['keys']))")
python3 -c "import psycopg" 2>/dev/null || pip install --quiet -r examples/python/requirements.txt >/dev/null 2>&1
out=$(TG_ADMIN_DSN=$ADMIN_DSN python3 examples/python/sync_jwks.py "$ISS" "http://127.0.0.1:$HPORT/ed.json" 2>&1)
check "sync (python): installs the fetched JWKS ($out)" test "$(q ops "SELECT array_to_string(kids, ',') FROM tenantguard.issuers() WHERE iss = '$ISS'")" = "ed"
check "sync (python): tokens of the replaced set still work until they expire" test "$(q app "BEGIN; SELECT tenantguard.set_context('$ES') IS NULL; SELECT count(*) FROM t; COMMIT;" | tail -1)" = "1"
[ -d examples/node/node_modules ] || (cd examples/node && npm ci --no-audit --no-fund --silent >/dev/null 2>&1 || npm install --no-audit --no-fund --silent >/dev/null 2>&1)
out=$(TG_ADMIN_DSN=$ADMIN_DSN node examples/node/sync_jwks.js "$ISS" "http://127.0.0.1:$HPORT/main.json" 2>&1)
check "sync (node): installs the fetched JWKS ($out)" test "$(q ops "SELECT array_to_string(kids, ',') FROM tenantguard.issuers() WHERE iss = '$ISS'")" = "$ALLKIDS"
out=$(TG_ADMIN_DSN=$ADMIN_DSN python3 examples/python/sync_jwks.py "$ISS" "http://127.0.0.1:$HPORT/missing.json" 2>&1; echo "rc=$?")
check "sync (python): a failed fetch exits 1 and leaves the keys" bash -c "printf '%s' '$out' | grep -q 'rc=1' && [ \"\$(psql -X -At -h '$SOCK' -p '$PORT' -U ops -d postgres -c \"SELECT array_to_string(kids, ',') FROM tenantguard.issuers() WHERE iss = '$ISS'\")\" = '$ALLKIDS' ]"
kill "$HTTPD" 2>/dev/null; wait "$HTTPD" 2>/dev/null

# Distrust reaches a session that already set a token, at its next statement.
fifo=$DIR/distrust.fifo; rm -f "$fifo"; mkfifo "$fifo"
( psql -X -q -At -h "$SOCK" -p "$PORT" -U app -d postgres <"$fifo" >"$DIR/distrust.out" 2>&1 ) &
exec 7>"$fifo"
echo "BEGIN; SELECT tenantguard.set_context('$RS') IS NULL; SELECT 'before:' || count(*) FROM t;" >&7
sleep 0.5
q ops "SELECT tenantguard.distrust_issuer('$ISS')" >/dev/null
echo "SELECT 'after:' || count(*) FROM t;" >&7
echo "COMMIT;" >&7
exec 7>&-
wait
check "distrust: the open session read before" grep -q "before:1" "$DIR/distrust.out"
check "distrust: its next statement is refused (issuer no longer trusted)" grep -q "is not trusted" "$DIR/distrust.out"
check "distrust: on the security trail" test "$(q postgres "SELECT count(*) FROM tenantguard.security_log WHERE event = 'issuer_distrusted'")" = "1"
out=$(q_err app "BEGIN; SELECT tenantguard.set_context('$RS') IS NULL; SELECT count(*) FROM t; COMMIT;" 2>&1)
check "distrust: new sessions are refused too" has "$out" "is not trusted"
# HS256 is a separate trust root: unaffected.
check "issuers: HS256 tokens work unchanged" test "$(q app "BEGIN; SELECT tenantguard.set_context('$ACME') IS NULL; SELECT count(*) FROM t; COMMIT;" | tail -1)" = "1"
