// A real OpenID Connect provider on loopback for jitportal's end-to-end tests.
//
// oidc-provider (https://github.com/panva/node-oidc-provider) with one
// confidential client, the accounts of accounts.json (password checked, a
// disabled account cannot sign in nor refresh its tokens), a minimal login
// page of our own (labels "Username" and "Password", button "Sign in"),
// consent granted automatically (a first-party client), a refresh token with
// every code, and RP-initiated logout. The accounts file is
// read again whenever it changes, so a test can disable an account or change
// its groups while the provider runs. An account with an "otp" also has a
// second factor: a sign-in giving that one-time code has acr ACR_MFA and amr
// ["pwd", "otp"], one without it acr ACR_PWD and amr ["pwd"] (step-up tests).
//
//   node server.mjs --port 0 --client-id portal --client-secret s3cret \
//     --redirect-uri http://127.0.0.1:8000/accounts/oidc/idp/login/callback/ \
//     --post-logout-redirect-uri http://127.0.0.1:8000/accounts/login/
//
// Every option can also come from the environment: --port IDP_PORT,
// --issuer IDP_ISSUER, --client-id IDP_CLIENT_ID, --client-secret
// IDP_CLIENT_SECRET, --redirect-uri IDP_REDIRECT_URI (comma-separated for
// several), --post-logout-redirect-uri IDP_POST_LOGOUT_REDIRECT_URI,
// --accounts IDP_ACCOUNTS (a JSON file). Port 0 picks a free port. Once
// listening it prints "IdP ready on <issuer>".

import { generateKeyPairSync, timingSafeEqual, createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const HERE = dirname(fileURLToPath(import.meta.url));
const ACR_PWD = 'urn:jitportal:idp:pwd';
const ACR_MFA = 'urn:jitportal:idp:mfa';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string' },
    'post-logout-redirect-uri': { type: 'string' },
    accounts: { type: 'string' },
  },
});

const env = process.env;
const option = (name, envName, fallback) => args[name] ?? env[envName] ?? fallback;
const required = (name, envName) => {
  const value = option(name, envName);
  if (!value) {
    console.error(`idp: --${name} (or ${envName}) is required`);
    process.exit(2);
  }
  return value;
};

const config = {
  port: Number(option('port', 'IDP_PORT', '0')),
  issuer: option('issuer', 'IDP_ISSUER'),
  clientId: required('client-id', 'IDP_CLIENT_ID'),
  clientSecret: required('client-secret', 'IDP_CLIENT_SECRET'),
  redirectUris: required('redirect-uri', 'IDP_REDIRECT_URI').split(',').filter(Boolean),
  postLogoutRedirectUris: (option('post-logout-redirect-uri', 'IDP_POST_LOGOUT_REDIRECT_URI', '')).split(',').filter(Boolean),
  accountsFile: option('accounts', 'IDP_ACCOUNTS', join(HERE, 'accounts.json')),
};

let accounts = {};
let accountsVersion = '';

// The accounts as the file holds them now (read again when its mtime or size changes).
function currentAccounts() {
  const stat = statSync(config.accountsFile);
  const version = `${stat.mtimeMs}:${stat.size}`;
  if (version !== accountsVersion) {
    accounts = JSON.parse(readFileSync(config.accountsFile, 'utf8'));
    accountsVersion = version;
  }
  return accounts;
}
currentAccounts();

// ---------------------------------------------------------------------------
// Accounts

function claimsOf(id) {
  const a = currentAccounts()[id];
  const claims = {
    sub: id,
    preferred_username: id,
    name: [a.given_name, a.family_name].filter(Boolean).join(' ') || id,
    given_name: a.given_name,
    family_name: a.family_name,
    email: a.email,
    email_verified: a.email_verified ?? true,
    groups: a.groups ?? [],
  };
  if (a.manager) claims.manager = a.manager;
  if (a.employee_id) claims.employee_id = a.employee_id;
  return claims;
}

async function findAccount(ctx, id) {
  const all = currentAccounts();
  const a = Object.hasOwn(all, id) ? all[id] : undefined;
  // A disabled account is unknown to the provider: an existing session of it
  // stops working, no token is issued for it, and its refresh token is
  // refused with invalid_grant.
  if (!a || a.disabled) return undefined;
  return {
    accountId: id,
    async claims() {
      return claimsOf(id);
    },
  };
}

function digest(text) {
  return createHash('sha256').update(String(text)).digest();
}

// Returns [accountId, null] or [null, error message].
function checkLogin(username, password) {
  const all = currentAccounts();
  const a = Object.hasOwn(all, username) ? all[username] : undefined;
  const ok = timingSafeEqual(digest(password), digest(a ? a.password : '\0no account\0'));
  if (!a || !ok) return [null, 'Invalid username or password.'];
  if (a.disabled) return [null, 'This account is disabled. Ask your administrator.'];
  return [username, null];
}

// ---------------------------------------------------------------------------
// Pages (no external assets: the test browser has no internet)

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

function page(title, body) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)} · Test IdP</title>
<style>body{font-family:sans-serif;max-width:26rem;margin:3rem auto}label,input,button{display:block;margin:.3rem 0}
input{width:100%;padding:.3rem}button{padding:.4rem 1rem}.error{color:#b00}</style></head>
<body><p><strong>Test IdP</strong> (jitportal e2e)</p>
${body}
</body></html>`;
}

function loginPage(uid, { username = '', error = '', clientId = '' } = {}) {
  return page('Sign in', `<h1>Sign in</h1>
<p>to continue to ${esc(clientId)}</p>
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
  <label for="username">Username</label>
  <input id="username" name="username" value="${esc(username)}" autofocus required>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" required>
  <label for="otp">One-time code (if you have one)</label>
  <input id="otp" name="otp" inputmode="numeric">
  <button type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Cancel</button></form>`);
}

async function logoutSource(ctx, form) {
  ctx.body = page('Sign out', `<h1>Sign out</h1>
<p>Do you want to sign out from the test IdP?</p>
${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.body = page('Signed out', '<h1>Signed out</h1><p>You are signed out of the test IdP.</p>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Error', `<h1>Something went wrong</h1>
${Object.entries(out).map(([k, v]) => `<p><strong>${esc(k)}</strong>: ${esc(v)}</p>`).join('\n')}`);
}

// ---------------------------------------------------------------------------
// Provider

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'e2e-rs256' };
}

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: config.clientId,
        client_secret: config.clientSecret,
        client_name: 'jitportal',
        redirect_uris: config.redirectUris,
        post_logout_redirect_uris: config.postLogoutRedirectUris,
        response_types: ['code'],
        grant_types: ['authorization_code', 'refresh_token'],
        // client_secret_post is allowed too (see clientAuthMethods below)
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    acrValues: [ACR_PWD, ACR_MFA],
    // Confidential clients may use PKCE (S256 only) and the portal does;
    // only public clients are forced to.
    pkce: { required: (ctx, client) => client.clientAuthMethod === 'none' },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    claims: {
      // acr and amr (how the person signed in: the password, or the one-time code too) in every
      // ID token, as Keycloak and Entra ID send them.
      openid: ['sub', 'acr', 'amr'],
      profile: ['preferred_username', 'name', 'given_name', 'family_name'],
      email: ['email', 'email_verified'],
      groups: ['groups', 'manager', 'employee_id'],
    },
    // The ID token carries the scope claims too, not only userinfo.
    conformIdTokenClaims: false,
    // Like Keycloak: a refresh token with every code, which outlives the IdP
    // session. (oidc-provider alone keeps offline_access only with
    // prompt=consent, and a portal sending that makes most IdPs ask for
    // consent at every sign-in.)
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    // Each refresh token works once, as with rotation at Okta, Auth0 or
    // Keycloak; using one twice ends the whole grant.
    rotateRefreshToken: true,
    findAccount,
    // A first-party client: consent is granted for whatever it asks.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
      if (!grant) {
        grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      }
      grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
      const claims = [...ctx.oidc.requestParamClaims];
      if (claims.length) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: ['jitportal-e2e-idp-cookie-key-1', 'jitportal-e2e-idp-cookie-key-0'] },
    jwks: { keys: [signingKey()] },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
      userinfo: { enabled: true },
    },
    renderError,
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
  });
  provider.on('server_error', (ctx, err) => console.error('idp: server_error', err));
  provider.on('authorization.error', (ctx, err) => console.error('idp: authorization.error', err.message, err.error_description ?? ''));
  provider.on('grant.error', (ctx, err) => console.error('idp: grant.error', err.message, err.error_description ?? ''));
  provider.on('userinfo.error', (ctx, err) => console.error('idp: userinfo.error', err.message, err.error_description ?? ''));
  return provider;
}

// ---------------------------------------------------------------------------
// HTTP: our interaction routes, everything else to the provider

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(html);
}

async function handleInteraction(provider, req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return send(res, 400, page('Error', `<h1>Sign-in expired</h1><p class="error" role="alert">${esc(err.message)}</p>`));
  }
  if (details.uid !== uid) return send(res, 400, page('Error', '<h1>Wrong interaction</h1>'));
  const client = await provider.Client.find(details.params.client_id);
  const clientId = client?.clientName || details.params.client_id;

  if (req.method === 'GET' && !action) {
    if (details.prompt.name !== 'login') {
      // Consent is granted by loadExistingGrant; nothing else is expected.
      return provider.interactionFinished(req, res, { consent: {} }, { mergeWithLastSubmission: true });
    }
    return send(res, 200, loginPage(uid, { clientId }));
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const username = (form.get('username') || '').trim();
    const [accountId, error] = checkLogin(username, form.get('password') || '');
    if (error) {
      console.log(`idp: login refused for ${JSON.stringify(username)}: ${error}`);
      return send(res, 200, loginPage(uid, { username, error, clientId }));
    }
    const secondFactor = currentAccounts()[accountId].otp;
    const mfa = Boolean(secondFactor) && timingSafeEqual(digest(form.get('otp') || ''), digest(secondFactor));
    const login = { accountId, acr: mfa ? ACR_MFA : ACR_PWD, amr: mfa ? ['pwd', 'otp'] : ['pwd'] };
    console.log(`idp: ${accountId} signed in (${login.acr})`);
    return provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'abort') {
    return provider.interactionFinished(
      req, res, { error: 'access_denied', error_description: 'End-User aborted the sign-in' }, { mergeWithLastSubmission: false },
    );
  }
  return send(res, 405, page('Error', '<h1>Method not allowed</h1>'));
}

let provider;
let providerCallback;

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://localhost');
    const match = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login|abort))?\/?$/);
    if (match) {
      await handleInteraction(provider, req, res, match[1], match[2]);
      return;
    }
    if (url.pathname === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end('ok');
      return;
    }
    providerCallback(req, res);
  } catch (err) {
    console.error('idp: request failed', err);
    if (!res.headersSent) send(res, 500, page('Error', `<h1>Internal error</h1><p>${esc(err.message)}</p>`));
    else res.end();
  }
});

server.listen(config.port, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = config.issuer || `http://127.0.0.1:${port}`;
  provider = buildProvider(issuer);
  providerCallback = provider.callback();
  console.log(`IdP ready on ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
