// pg_tenantguard from Node.js: pg (Pool) and jsonwebtoken.
//   TG_DSN=postgresql://app@127.0.0.1:5432/db TG_KID=k2026 TG_KEY=... node recipe.js
// 1. mint a token  2. set it per transaction through the pool
// 3. read and write tenant data  4. authorize()/require() with 42501 handled.
const fs = require('fs');
const path = require('path');
const jwt = require('jsonwebtoken');
const { Pool } = require('pg');

const { TG_DSN, TG_KID, TG_KEY } = process.env;
const pool = new Pool({ connectionString: TG_DSN, max: 4 });
const results = [];
const check = (name, ok) => { results.push(!!ok); console.log(`${ok ? 'ok' : 'not ok'} - ${name}`); };

const mint = (tid, sub, ttl = 300) =>
  jwt.sign({ tid, sub }, TG_KEY, { algorithm: 'HS256', keyid: TG_KID, expiresIn: ttl });

// One transaction acting for the token's tenant; the context ends with it.
async function inTenant(token, fn) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT tenantguard.set_context($1)', [token]); // bind parameter
    const r = await fn(client);
    await client.query('COMMIT');
    return r;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    client.release();
  }
}

(async () => {
  const alice = mint('acme', 'alice');
  const bob = mint('globex', 'bob');
  await inTenant(alice, (c) => c.query('INSERT INTO notes (body) VALUES ($1)', ['from node']));
  const rows = await inTenant(alice, (c) => c.query('SELECT tenant_id FROM notes')).then((r) => r.rows);
  check('node: reads only its tenant', rows.length > 0 && rows.every((r) => r.tenant_id === 'acme'));
  const seen = await inTenant(bob, (c) => c.query("SELECT count(*)::int AS n FROM notes WHERE tenant_id = 'acme'"));
  check('node: globex sees none of acme\'s rows', seen.rows[0].n === 0);
  try {
    await pool.query('SELECT count(*) FROM notes');
    check('node: no context fails closed', false);
  } catch (e) {
    check(`node: no context fails closed (${e.code}: ${e.message})`, e.code === '42501');
  }
  const can = (doc) => inTenant(alice, (c) => c.query("SELECT tenantguard.authorize('document:approve', $1) AS ok", [JSON.stringify(doc)])).then((r) => r.rows[0].ok);
  check('node: authorize() allows within the limit', await can({ submitted_by: 'carol', department: 'finance', amount: 500 }));
  check('node: authorize() denies one over the limit', !(await can({ submitted_by: 'carol', department: 'finance', amount: 1001 })));
  try {
    await inTenant(alice, (c) => c.query("SELECT tenantguard.require('user:delete')"));
    check('node: require() raises 42501', false);
  } catch (e) {
    check(`node: require() raises 42501 naming the action (${e.message})`, e.code === '42501' && e.message.includes('user:delete'));
  }
  const spec = JSON.parse(fs.readFileSync(path.join(__dirname, '../../tests/vectors/tokens.json'), 'utf8'));
  for (const v of spec.vectors) {
    let lib = 'accept';
    try { jwt.verify(v.token, spec.key, { algorithms: ['HS256'] }); } catch { lib = 'reject'; }
    let ext = 'accept';
    try { await inTenant(v.token, async () => null); } catch { ext = 'reject'; }
    check(`node vector ${v.name}: jsonwebtoken=${lib} extension=${ext} expected=${v.expect}`, lib === ext && ext === v.expect);
  }
  // Identity providers' tokens (tests/vectors/idp.json): jose and the
  // extension agree (the library judges signature, algorithm, kid, issuer,
  // audience and expiry; mapping, lifetime and required claims are
  // tenantguard's own rules).
  const jose = await import('jose');
  const idp = JSON.parse(fs.readFileSync(path.join(__dirname, '../../tests/vectors/idp.json'), 'utf8'));
  const issuers = Object.fromEntries(idp.issuers.map((i) => [i.iss, i]));
  const LIB = new Set(['unknown_kid', 'bad_signature', 'unknown_kid_or_bad_signature', 'alg', 'alg_mismatch', 'untrusted_issuer', 'audience', 'expired']);
  const joseVerdict = async (token) => {
    try {
      const hdr = jose.decodeProtectedHeader(token);
      const iss = issuers[jose.decodeJwt(token).iss];
      const jwk = iss && iss.jwks.keys.find((k) => k.kid === hdr.kid);
      if (!jwk || hdr.alg !== jwk.alg) return 'reject'; // the algorithm comes from the key
      const byAud = iss.audience_claim === 'aud';
      const { payload } = await jose.jwtVerify(token, await jose.importJWK(jwk, jwk.alg), {
        algorithms: [jwk.alg], issuer: iss.iss, audience: byAud ? iss.audiences : undefined,
        requiredClaims: ['exp'], clockTolerance: iss.leeway_s,
      });
      if (!byAud && !iss.audiences.includes(payload[iss.audience_claim])) return 'reject';
      return 'accept';
    } catch { return 'reject'; }
  };
  for (const v of idp.vectors) {
    const lib = (v.expect === 'accept' || LIB.has(v.reason)) ? await joseVerdict(v.token) : null;
    let ext = null;
    if (!v.name.includes('revocable') && !v.staff) {
      ext = 'accept';
      try { await inTenant(v.token, async () => null); } catch { ext = 'reject'; }
    }
    check(`node idp vector ${v.name}: jose=${lib || 'n/a'} extension=${ext || 'n/a'} expected=${v.expect}`,
      (lib === null || lib === v.expect) && (ext === null || ext === v.expect));
  }
  await pool.end();
  const passed = results.filter(Boolean).length;
  console.log(`${passed} passed, ${results.length - passed} failed`);
  process.exit(passed === results.length ? 0 : 1);
})().catch((e) => { console.error(e); process.exit(1); });
