// Install an identity provider's current JWKS in pg_tenantguard (cron-able).
//
//   TG_ADMIN_DSN=postgresql://ops@db/app node sync_jwks.js ISSUER JWKS_URL
//
// The database never makes network calls: this job fetches the provider's
// JWKS and calls tenantguard.set_issuer_keys() as a member of
// tenantguard_admin. The same JWKS again changes nothing; a new one becomes
// current and the replaced set stays trusted as the previous one.
'use strict';
const { Client } = require('pg');

async function main() {
  const [iss, url] = process.argv.slice(2);
  const res = await fetch(url, { signal: AbortSignal.timeout(10000) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const jwks = await res.json();
  if (!jwks || !Array.isArray(jwks.keys)) throw new Error(`${url}: not a JWKS document`);
  const client = new Client({ connectionString: process.env.TG_ADMIN_DSN });
  await client.connect();
  try {
    const r = await client.query('SELECT tenantguard.set_issuer_keys($1, $2::jsonb) AS kids', [iss, JSON.stringify(jwks)]);
    console.log(`${iss}: keys ${r.rows[0].kids.join(', ')}`);
  } finally {
    await client.end();
  }
}

main().catch((e) => { console.error(`sync_jwks: ${e.message}`); process.exit(1); });
