// A fake CRM on loopback for the browser tests: Salesforce's OAuth 2.0 endpoints (a consent
// page the browser is sent to, the token endpoint with PKCE checked, revocation) and the
// `poller` test guest's API (`GET /items?page=N`), which answers only a request carrying the
// access token it issued or the API key it was told of. What it was asked is kept for the
// tests to check.

import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

export const CLIENT_ID = 'ui-test-client';
export const CLIENT_SECRET = `client-secret-${randomBytes(12).toString('hex')}`;

const ITEMS = [
  { id: 'A-1', version: 1 },
  { id: 'A-2', version: 1 },
];

/** Starts the fake; `stop()` ends it. */
export async function startFakeCrm() {
  const codes = new Map(); // code -> { redirect, challenge, used }
  const access = new Set();
  const seen = { authorize: null, tokenExchanges: 0, revoked: 0, items: [] };
  let apiKey = null;
  let base = '';

  const server = createServer(async (request, response) => {
    const url = new URL(request.url, base);
    const body = await new Promise((done) => {
      const chunks = [];
      request.on('data', (chunk) => chunks.push(chunk));
      request.on('end', () => done(Buffer.concat(chunks).toString('utf8')));
    });
    const send = (status, value, type = 'application/json') => {
      response.writeHead(status, { 'content-type': type });
      response.end(type === 'application/json' ? JSON.stringify(value) : value);
    };
    if (request.method === 'GET' && url.pathname === '/services/oauth2/authorize') {
      const q = Object.fromEntries(url.searchParams);
      seen.authorize = q;
      if (q.client_id !== CLIENT_ID || q.code_challenge_method !== 'S256' || !q.code_challenge) {
        return send(400, 'bad authorize request', 'text/plain');
      }
      const approve = new URL('/services/oauth2/approve', base);
      for (const key of ['redirect_uri', 'state', 'code_challenge']) approve.searchParams.set(key, q[key] ?? '');
      return send(
        200,
        `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Allow access</title></head>
<body><h1>Allow adapter-host to read your CRM?</h1><a href="${approve.href.replace(/&/g, '&amp;')}">Allow</a></body></html>`,
        'text/html; charset=utf-8',
      );
    }
    if (request.method === 'GET' && url.pathname === '/services/oauth2/approve') {
      const code = `code-${randomBytes(8).toString('hex')}`;
      const redirect = url.searchParams.get('redirect_uri');
      codes.set(code, { redirect, challenge: url.searchParams.get('code_challenge'), used: false });
      const back = new URL(redirect);
      back.searchParams.set('code', code);
      back.searchParams.set('state', url.searchParams.get('state'));
      response.writeHead(302, { location: back.href });
      return response.end();
    }
    if (request.method === 'POST' && url.pathname === '/services/oauth2/token') {
      const form = Object.fromEntries(new URLSearchParams(body));
      if (form.client_id !== CLIENT_ID || form.client_secret !== CLIENT_SECRET) return send(401, { error: 'invalid_client' });
      if (form.grant_type !== 'authorization_code') return send(400, { error: 'unsupported_grant_type' });
      const found = codes.get(form.code);
      const challenge = createHash('sha256').update(form.code_verifier ?? '').digest('base64url');
      if (!found || found.used || found.redirect !== form.redirect_uri || found.challenge !== challenge) {
        return send(400, { error: 'invalid_grant', error_description: 'unknown code, reused, or PKCE failed' });
      }
      found.used = true;
      seen.tokenExchanges += 1;
      const token = `access-${randomBytes(12).toString('hex')}`;
      access.add(token);
      // Salesforce's answer: no lifetime, and the org's instance, which becomes the API's base.
      return send(200, { access_token: token, refresh_token: `refresh-${randomBytes(12).toString('hex')}`, token_type: 'Bearer', scope: 'api refresh_token', instance_url: base, issued_at: String(Date.now()) });
    }
    if (request.method === 'POST' && url.pathname === '/services/oauth2/revoke') {
      seen.revoked += 1;
      return send(200, {});
    }
    if (request.method === 'GET' && url.pathname === '/items') {
      const authorization = request.headers.authorization ?? '';
      const bearer = authorization.startsWith('Bearer ') && access.has(authorization.slice(7));
      const key = apiKey !== null && authorization === `apikey ${apiKey}`;
      seen.items.push(bearer ? 'bearer' : key ? 'api_key' : 'refused');
      if (!bearer && !key) return send(401, { error: 'invalid credential' });
      return send(200, { items: ITEMS, next: null });
    }
    if (url.pathname === '/favicon.ico') {
      response.writeHead(204);
      return response.end();
    }
    return send(404, { error: `no ${request.method} ${url.pathname}` });
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  base = `http://127.0.0.1:${server.address().port}`;
  return {
    base,
    seen,
    items: ITEMS,
    /** The API key its API accepts (`Authorization: apikey <key>`, Zenoti's way). */
    acceptApiKey(key) {
      apiKey = key;
    },
    stop: () =>
      new Promise((done) => {
        server.close(done);
        server.closeAllConnections();
      }),
  };
}
