// A real, certified OpenID Connect provider (panva/oidc-provider) on loopback, for citykey's
// tests only. Configured from the environment (tests/support/oidc_provider.py starts it):
//
//   OIDC_PORT                 loopback port to listen on
//   OIDC_ISSUER               the issuer URL (http://127.0.0.1:<port>)
//   OIDC_CLIENT_ID / OIDC_CLIENT_SECRET   the one confidential client (client_secret_basic)
//   OIDC_REDIRECT_URIS        comma-separated redirect URIs of that client
//   OIDC_POST_LOGOUT_REDIRECT_URIS  comma-separated (optional)
//   OIDC_KEYS_FILE            JSON {"keys": [private JWK, ...]}; the first signs. The tests own
//                             the keys, so a restart with a new file is a key rotation.
//   OIDC_RESOURCE             resource indicator of the citykey API (absolute URI)
//   OIDC_AUDIENCE             "aud" of its access tokens (default citykey-api)
//
// Sign-in: the provider's development login form (any password) for the accounts below; consent
// is implied for the one first-party client. Access tokens are JWTs for the citykey API and
// carry "pid", like ID-porten's.

import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    console.error(`provider.mjs: ${name} is required`);
    process.exit(2);
  }
  return value;
};

const port = Number(env('OIDC_PORT'));
const issuer = env('OIDC_ISSUER');
const clientId = env('OIDC_CLIENT_ID');
const clientSecret = env('OIDC_CLIENT_SECRET');
const redirectUris = env('OIDC_REDIRECT_URIS').split(',').filter(Boolean);
const logoutUris = env('OIDC_POST_LOGOUT_REDIRECT_URIS', '').split(',').filter(Boolean);
const keys = JSON.parse(readFileSync(env('OIDC_KEYS_FILE'), 'utf8')).keys;
const resource = env('OIDC_RESOURCE', 'urn:citykey:api');
const audience = env('OIDC_AUDIENCE', 'citykey-api');
const API_SCOPE = 'citykey';

// Fake test people: 11-digit national identity numbers that belong to nobody.
const ACCOUNTS = {
  kari: { pid: '01017000027', name: 'Kari Nordmann', given_name: 'Kari' },
  ola: { pid: '02028000035', name: 'Ola Nordmann', given_name: 'Ola' },
  anon: { pid: '03039000043' }, // no name: citykey must still sign her in
  nopid: { name: 'No Pid' }, // a provider account without a national identity
};

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    post_logout_redirect_uris: logoutUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: keys[0].alg,
  }],
  jwks: { keys },
  cookies: { keys: ['test-only-cookie-key-0123456789abcdef'] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', API_SCOPE],
  // pid with the openid scope, as ID-porten does.
  claims: { openid: ['sub', 'pid'], profile: ['name', 'given_name'] },
  // Claims in the ID token even though an access token is issued (it is for the API, not for
  // userinfo), as ID-porten does with pid.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, indicator) => {
        if (indicator !== resource) throw new Error(`unknown resource ${indicator}`);
        return {
          scope: API_SCOPE,
          audience,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: keys[0].alg, kid: keys[0].kid } },
        };
      },
    },
  },
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account }) };
  },
  // The pid travels in the API's access token too (ID-porten's access tokens carry it).
  async extraTokenClaims(ctx, token) {
    const account = ACCOUNTS[token.accountId];
    return account?.pid ? { pid: account.pid } : undefined;
  },
  // First-party client: no consent screen. Grant what the client asks for.
  async loadExistingGrant(ctx) {
    const existing = ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (existing) return ctx.oidc.provider.Grant.find(existing);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile');
    grant.addOIDCClaims(['pid', 'name', 'given_name']);
    grant.addResourceScope(resource, API_SCOPE);
    await grant.save();
    return grant;
  },
  ttl: { Session: 3600, Grant: 3600, Interaction: 600, IdToken: 600, AuthorizationCode: 60 },
};

const provider = new Provider(issuer, configuration);
const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
