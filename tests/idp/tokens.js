// Obtain real tokens from tests/idp/provider.js, as a client would.
//
//   node tokens.js ISSUER access          client credentials, JWT access token
//   node tokens.js ISSUER id [USER]       authorization code flow, ID token
const [issuer, kind, user = 'alice'] = process.argv.slice(2);

async function accessToken() {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'svc', client_secret: 'svc-secret',
      resource: 'api://tenantguard', scope: 'api:read' }),
  });
  const body = await res.json();
  if (!body.access_token) throw new Error(`token endpoint: ${JSON.stringify(body)}`);
  return body.access_token;
}

async function idToken() {
  const jar = new Map();
  const go = async (url) => {
    const res = await fetch(url, { redirect: 'manual',
      headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') } });
    for (const c of res.headers.getSetCookie()) {
      const [kv] = c.split(';');
      const i = kv.indexOf('=');
      jar.set(kv.slice(0, i), kv.slice(i + 1));
    }
    return res;
  };
  let url = `${issuer}/auth?` + new URLSearchParams({ client_id: 'web', response_type: 'code', scope: 'openid',
    redirect_uri: 'http://127.0.0.1/cb', login_hint: user, nonce: 'n-1', state: 's-1' });
  for (let i = 0; i < 10; i++) {
    const res = await go(url);
    const loc = res.headers.get('location');
    if (!loc) throw new Error(`no redirect from ${url}: ${res.status} ${await res.text()}`);
    const next = new URL(loc, issuer);
    if (next.origin + next.pathname === 'http://127.0.0.1/cb') {
      const code = next.searchParams.get('code');
      if (!code) throw new Error(`callback without code: ${loc}`);
      const tok = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: 'http://127.0.0.1/cb',
          client_id: 'web', client_secret: 'web-secret' }),
      });
      const body = await tok.json();
      if (!body.id_token) throw new Error(`token endpoint: ${JSON.stringify(body)}`);
      return body.id_token;
    }
    url = next.href;
  }
  throw new Error('too many redirects');
}

(kind === 'id' ? idToken() : accessToken())
  .then((t) => console.log(t))
  .catch((e) => { console.error(e.message); process.exit(1); });
