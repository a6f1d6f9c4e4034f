// The page's shell: the session bar (who is signed in, the org switcher of a platform-level
// token), the main navigation, and a router over `#/…` paths. Each page module renders into
// <main> and is told, through `ctx.alive()`, when the reader has moved on.

import { UNAUTHORIZED, get, session } from './api.js';
import { h, replace, field, table, uid } from './dom.js';
import { problem } from './format.js';
import * as signin from './pages/signin.js';
import * as connections from './pages/connections.js';
import * as connection from './pages/connection.js';
import * as adapters from './pages/adapters.js';
import * as deliveries from './pages/deliveries.js';
import * as events from './pages/events.js';
import * as replays from './pages/replays.js';
import * as subscribers from './pages/subscribers.js';

const ROUTES = [
  [/^\/connections$/, connections.list],
  [/^\/connections\/new$/, connections.create],
  [/^\/connections\/([^/]+)$/, connection.detail],
  [/^\/adapters$/, adapters.list],
  [/^\/adapters\/([^/]+)$/, adapters.detail],
  [/^\/deliveries$/, deliveries.list],
  [/^\/deliveries\/([^/]+)$/, deliveries.detail],
  [/^\/events$/, events.list],
  [/^\/events\/([^/]+)$/, events.detail],
  [/^\/replays$/, replays.list],
  [/^\/subscribers$/, subscribers.list],
  [/^\/subscribers\/([^/]+)$/, subscribers.detail],
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const bar = document.getElementById('session');
const notice = document.getElementById('notice');
let generation = 0;

/** Says something in the live region (read by screen readers) for a few seconds. */
let noticeAt = 0;
export function notify(text, tone = 'good') {
  noticeAt = Date.now();
  replace(notice, h('p', { class: `notice-${tone}` }, text));
  const shown = notice.firstChild;
  setTimeout(() => {
    if (notice.firstChild === shown) replace(notice);
  }, 6000);
}

export function navigate(path) {
  if (location.hash === `#${path}`) route();
  else location.hash = path;
}

function parse() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(1) : '/connections';
  const [path, search = ''] = raw.split('?');
  return { path, query: Object.fromEntries(new URLSearchParams(search)) };
}

function renderBar() {
  const claims = session.claims;
  nav.hidden = !claims;
  if (!claims) return replace(bar);
  const who = h('span', { class: 'who' }, `${claims.sub ?? 'someone'} · ${claims.tenant_id ?? '?'} · ${session.role || 'no role'}`);
  const signOut = h('button', { type: 'button', class: 'quiet' }, 'Sign out');
  signOut.addEventListener('click', () => {
    session.signOut();
    navigate('/connections');
  });
  if (!session.platform) {
    return replace(bar, who, h('span', { class: 'org', title: 'The token is scoped to this org' }, `org ${claims.org_id}`), signOut);
  }
  // A platform-level token names the org of each call (X-Org-Id). The switcher offers the
  // orgs the tenant's rows name (GET /v1/orgs) and those used in this tab; any other can be
  // typed (an org no row names yet, for its first connection).
  const listId = uid('orgs');
  const input = h('input', { name: 'org', value: session.org ?? '', list: listId, required: true, autocomplete: 'off', size: 12, placeholder: 'org id' });
  const options = h('datalist', { id: listId });
  const form = h(
    'form',
    { class: 'org-switcher', 'aria-label': 'Org switcher' },
    field('Org (X-Org-Id)', input),
    options,
    h('button', { type: 'submit' }, 'Switch org'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const org = input.value.trim();
    if (org) switchTo(org);
  });
  replace(bar, who, h('span', { class: 'org platform' }, 'platform-level token'), form, signOut);
  tenantOrgs().then((orgs) => {
    const all = new Set([...orgs.map((o) => o.org_id), ...session.knownOrgs]);
    replace(options, [...all].sort().map((org) => h('option', { value: org })));
  });
}

function switchTo(org) {
  session.switchOrg(org);
  notify(`Acting in org ${org}`);
  route();
}

/** The tenant's orgs (`GET /v1/orgs`, the first 1000), asked once per token; [] when refused. */
let orgsOf = { token: null, orgs: null };
function tenantOrgs() {
  if (orgsOf.token !== session.token) {
    orgsOf = { token: session.token, orgs: get('/v1/orgs', { limit: 1000 }).then((page) => page.items, () => []) };
  }
  return orgsOf.orgs;
}

/** The page a platform-level session starts on: the tenant's orgs, each a button to act in it. */
async function chooseOrg(view) {
  const orgs = await tenantOrgs();
  const count = (n, what) => `${n} ${what}${n === 1 ? '' : 's'}`;
  const uses = (o) =>
    [
      o.connections && count(o.connections, 'connection'),
      o.allowed_by && `allowed by ${count(o.allowed_by, 'connection')}`,
      o.adapters && count(o.adapters, 'adapter'),
      o.subscribers && count(o.subscribers, 'subscriber'),
    ]
      .filter(Boolean)
      .join(', ');
  replace(
    view,
    h('h1', {}, 'Choose an org'),
    h('p', {}, 'This token is platform-level: it names no org, so every call names one in X-Org-Id. Pick one of the tenant’s orgs, or type any org above and press "Switch org".'),
    orgs.length
      ? table(
          'The tenant’s orgs',
          [
            ['Org', (o) => h('code', {}, o.org_id)],
            ['Named by', uses],
            ['', (o) => {
              const button = h('button', { type: 'button', 'aria-label': `Act in org ${o.org_id}` }, 'Act in this org');
              button.addEventListener('click', () => switchTo(o.org_id));
              return button;
            }],
          ],
          orgs,
          '',
        )
      : h('p', { class: 'empty' }, 'No row of this tenant names an org yet.'),
  );
}

async function route() {
  // A notice said just before this navigation (it caused it) stays; older ones are stale.
  if (Date.now() - noticeAt > 1500) replace(notice);
  generation += 1;
  const mine = generation;
  const ctx = { alive: () => mine === generation, navigate, notify, query: {}, params: [] };
  renderBar();
  const { path, query } = parse();
  ctx.query = query;
  for (const link of nav.querySelectorAll('a')) {
    const current = path.startsWith(link.getAttribute('href').slice(1));
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const view = h('div', { class: 'view' });
  replace(main, view);
  if (!session.token) {
    await signin.render(view, { ...ctx, done: () => navigate(path === '/' ? '/connections' : path) });
    return;
  }
  if (session.platform && !session.org) {
    await chooseOrg(view);
    if (ctx.alive()) bar.querySelector('input')?.focus();
    return;
  }
  const match = ROUTES.find(([pattern]) => pattern.test(path));
  try {
    if (!match) {
      replace(view, h('h1', {}, 'Not found'), h('p', {}, `There is no page ${path}.`), h('a', { href: '#/connections' }, 'Connections'));
    } else {
      ctx.params = path.match(match[0]).slice(1).map(decodeURIComponent);
      await match[1](view, ctx);
    }
  } catch (error) {
    if (!ctx.alive()) return;
    // A 401 has sent the reader to sign-in already.
    if (error.status === 401) return;
    view.append(problem(error));
    if (!error.title) console.warn(error);
  }
  if (ctx.alive()) {
    const heading = view.querySelector('h1');
    if (heading) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
  }
}

/** The OAuth callback sends the browser back here (with `--oauth-return-url .../ui/`). */
function oauthReturn() {
  const params = new URLSearchParams(location.search);
  const outcome = params.get('oauth');
  if (!outcome) return;
  const id = params.get('connection');
  history.replaceState(null, '', `${location.pathname}${id ? `#/connections/${encodeURIComponent(id)}` : location.hash}`);
  if (outcome === 'connected') notify(`Connected${id ? ` ${id}` : ''} to its CRM`);
  else notify(`The CRM did not connect: ${params.get('error') ?? outcome}`, 'bad');
}

window.addEventListener('hashchange', route);
// A refused token (expired, or not one this host accepts), on any page: sign in again, saying why.
window.addEventListener(UNAUTHORIZED, (event) => {
  if (!session.token) return;
  session.signOut();
  generation += 1;
  const mine = generation;
  renderBar();
  const view = h('div', { class: 'view' });
  replace(main, view);
  const { path } = parse();
  signin.render(view, { alive: () => mine === generation, navigate, notify, query: {}, params: [], why: event.detail, done: () => navigate(path) });
});
window.addEventListener('unhandledrejection', (event) => {
  // A page's own failures are shown where they happen; this is the last resort.
  event.preventDefault();
  main.append(problem(event.reason ?? { title: 'Unexpected error' }));
});
oauthReturn();
route();
