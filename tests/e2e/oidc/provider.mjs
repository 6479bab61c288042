// A real OpenID Connect provider on loopback for keystile's end-to-end tests:
// npm oidc-provider (strict about PKCE, codes and client authentication) with its
// development login and consent pages, one confidential client, and accounts whose
// claims the tests control. Every start makes a new signing key (a new kid), so a
// restart is a key rotation as far as keystile can tell.
//
// Environment: PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI.
// Accounts (type the name on the login page, any password):
//   alice  alice@example.com, verified, groups [idp-admins]
//   bob    bob@example.com, verified, no groups
//   uma    uma@example.com, NOT verified
//   dora   dora@elsewhere.test, verified (a domain keystile does not allow)
//   late   late@example.com, verified; its codes expire after 1 second
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const { PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI } = process.env;
const ISSUER = `http://127.0.0.1:${PORT}`;

const ACCOUNTS = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['idp-admins'] },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob', groups: [] },
  uma: { email: 'uma@example.com', email_verified: false, name: 'Uma', groups: [] },
  dora: { email: 'dora@elsewhere.test', email_verified: true, name: 'Dora', groups: [] },
  late: { email: 'late@example.com', email_verified: true, name: 'Late', groups: [] },
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `k-${randomBytes(6).toString('hex')}`, use: 'sig', alg: 'RS256',
};

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: [REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true }, // S256 only (the library's default methods)
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'email', 'profile'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups'],
  },
  ttl: {
    AuthorizationCode: (ctx, code) => (code.accountId === 'late' ? 1 : 60),
  },
  async findAccount(ctx, sub) {
    const account = ACCOUNTS[sub];
    if (!account) return undefined;
    return { accountId: sub, async claims() { return { sub, ...account }; } };
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

provider.listen(Number(PORT), '127.0.0.1', () => {
  console.log(`oidc-provider ${ISSUER} kid ${signingKey.kid}`);
});
process.on('SIGTERM', () => process.exit(0));
