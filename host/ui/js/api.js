// The management API, and the session it is called with: a bearer token kept in this tab's
// sessionStorage, and for a platform-level token (no org_id) the org sent as X-Org-Id.

const TOKEN_KEY = 'adapter-host.token';
const ORG_KEY = 'adapter-host.org';
const ORGS_KEY = 'adapter-host.orgs';

/** An API error: its problem+json (RFC 9457) `title` and `detail`, and the status. */
export class Problem extends Error {
  constructor(problem, status) {
    super(problem.detail || problem.title);
    this.title = problem.title || `HTTP ${status}`;
    this.detail = problem.detail || '';
    this.status = status;
    this.type = problem.type;
    this.requestId = problem.request_id;
  }
}

/** The claims of a JWT, read (not verified: the host does that) to show who is signed in. */
export function readClaims(token) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('a JWT has three parts separated by dots');
  const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
  const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  const claims = JSON.parse(new TextDecoder().decode(bytes));
  if (typeof claims !== 'object' || claims === null) throw new Error('the token has no claims');
  return claims;
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  get claims() {
    const token = this.token;
    if (!token) return null;
    try {
      return readClaims(token);
    } catch {
      return null;
    }
  },
  /** Whether the token is platform-level: it names no org, each call names one. */
  get platform() {
    const claims = this.claims;
    return Boolean(claims) && !claims.org_id;
  },
  /** The org calls act in. */
  get org() {
    const claims = this.claims;
    if (!claims) return null;
    return claims.org_id || sessionStorage.getItem(ORG_KEY);
  },
  get role() {
    const roles = this.claims?.roles ?? [];
    return Array.isArray(roles) ? roles.join(', ') : String(roles);
  },
  /** Orgs a platform-level session has switched to (the API has no list of orgs). */
  get knownOrgs() {
    try {
      return JSON.parse(sessionStorage.getItem(ORGS_KEY) || '[]');
    } catch {
      return [];
    }
  },
  signIn(token, org) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.removeItem(ORG_KEY);
    if (org) this.switchOrg(org);
  },
  switchOrg(org) {
    sessionStorage.setItem(ORG_KEY, org);
    this.rememberOrgs([org]);
  },
  /** Orgs worth offering in the switcher (used before, or named by a platform-level row). */
  rememberOrgs(orgs) {
    const known = new Set(this.knownOrgs);
    for (const org of orgs) known.add(org);
    sessionStorage.setItem(ORGS_KEY, JSON.stringify([...known].sort()));
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(ORG_KEY);
  },
};

function headers(extra = {}) {
  const all = { accept: 'application/json, application/problem+json', ...extra };
  if (session.token) all.authorization = `Bearer ${session.token}`;
  if (session.platform && session.org) all['x-org-id'] = session.org;
  return all;
}

/** The path with `query`'s non-empty entries. */
export function withQuery(path, query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, value);
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function problemOf(response) {
  const type = response.headers.get('content-type') || '';
  const text = await response.text();
  if (type.includes('json')) {
    try {
      return new Problem(JSON.parse(text), response.status);
    } catch {
      // Fall through: not JSON after all.
    }
  }
  return new Problem({ title: response.statusText || `HTTP ${response.status}`, detail: text.trim() }, response.status);
}

/** The event a refused token (401) raises, so that the page asks to sign in again. */
export const UNAUTHORIZED = 'adapter-host:unauthorized';

/**
 * Calls the API: `{status, data, headers}`, or throws a `Problem`. `body` is sent as JSON,
 * `raw` (an ArrayBuffer or Blob) as application/octet-stream. A 401 also raises
 * `UNAUTHORIZED` on window (unless `signInAgain` is false).
 */
export async function call(method, path, { body, raw, query, signInAgain = true } = {}) {
  const init = { method, headers: headers(), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  } else if (raw !== undefined) {
    init.headers['content-type'] = 'application/octet-stream';
    init.body = raw;
  }
  let response;
  try {
    response = await fetch(withQuery(path, query), init);
  } catch (error) {
    throw new Problem({ title: 'The host did not answer', detail: String(error.message || error) }, 0);
  }
  if (!response.ok) {
    const problem = await problemOf(response);
    if (problem.status === 401 && signInAgain) window.dispatchEvent(new CustomEvent(UNAUTHORIZED, { detail: problem }));
    throw problem;
  }
  const data = response.status === 204 ? null : await response.json();
  return { status: response.status, data, headers: response.headers };
}

export const get = async (path, query) => (await call('GET', path, { query })).data;
export const post = async (path, body) => (await call('POST', path, { body })).data;
export const patch = async (path, body) => (await call('PATCH', path, { body })).data;
export const put = async (path, body) => (await call('PUT', path, { body })).data;
export const del = async (path) => (await call('DELETE', path)).data;

/** A path segment. */
export const seg = (value) => encodeURIComponent(value);

/**
 * The name a caller writes a secret under, from the reference the API shows
 * (`tenants/{t}/orgs/{o}/{name}` or `tenants/{t}/platform/{name}`).
 */
export function secretName(ref) {
  if (!ref) return '';
  const org = ref.match(/^tenants\/[^/]+\/orgs\/[^/]+\/(.+)$/);
  if (org) return org[1];
  const platform = ref.match(/^tenants\/[^/]+\/platform\/(.+)$/);
  return platform ? platform[1] : ref;
}
