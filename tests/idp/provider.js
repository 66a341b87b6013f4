// A real OpenID Provider (the certified `oidc-provider` package) on a
// loopback port, for tests/e2e/t_28_oidc_provider.sh.
//
//   node provider.js PORT KEYS_FILE
//
// KEYS_FILE: a JSON array of private JWKs (created with one ES256 key if
// missing). The provider signs with the first and publishes all of them at
// /jwks, so a rotation is: put a new key first, restart. Clients:
// - `svc` (client_credentials): access tokens in JWT format for the
//   resource `api://tenantguard` (RFC 9068), with the tenant in `org_id`;
// - `web` (authorization code, PKCE not required): ID tokens, the tenant
//   in `org_id`, for the scripted login below (/login-as/USER).
import fs from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, keysFile] = process.argv.slice(2);
if (!fs.existsSync(keysFile)) {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: `k-${Date.now()}`, alg: 'ES256', use: 'sig' };
  fs.writeFileSync(keysFile, JSON.stringify([jwk]));
}
const keys = JSON.parse(fs.readFileSync(keysFile, 'utf8'));
const issuer = `http://127.0.0.1:${port}`;
const TENANT = { alice: 'acme', gus: 'globex' };

const provider = new Provider(issuer, {
  clients: [
    { client_id: 'svc', client_secret: 'svc-secret', grant_types: ['client_credentials'], redirect_uris: [], response_types: [],
      id_token_signed_response_alg: 'ES256' },
    { client_id: 'web', client_secret: 'web-secret', grant_types: ['authorization_code'], response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/cb'], id_token_signed_response_alg: 'ES256' },
  ],
  jwks: { keys },
  scopes: ['openid', 'api:read'],
  claims: { openid: ['sub', 'org_id'] },
  pkce: { required: () => false },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id, org_id: TENANT[id] }) }),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'api://tenantguard',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api:read', audience: 'api://tenantguard', accessTokenTTL: 300,
        accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  extraTokenClaims: async (ctx, token) => (token.kind === 'ClientCredentials' ? { org_id: 'acme' } : {}),
  ttl: { IdToken: 300, AccessToken: 300, ClientCredentials: 300 },
});
provider.proxy = false;

// Scripted login: /interaction/UID finishes the interaction as the user
// named by the `login_hint` of the authorization request, granting what was
// asked. (What a login page would do after checking a password.)
provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const user = details.params.login_hint || 'alice';
  let result;
  if (details.prompt.name === 'login') {
    result = { login: { accountId: user } };
  } else {
    const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope('openid');
    grant.addOIDCClaims(['org_id']);
    result = { consent: { grantId: await grant.save() } };
  }
  await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
});

provider.listen(Number(port), '127.0.0.1', () => console.log(`listening ${issuer}`));
