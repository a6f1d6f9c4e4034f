// The page's shell: the session bar (who is signed in, the org switcher of a platform-level
// token), the main navigation, and a router over `#/…` paths. Each page module renders into
// <main> and is told, through `ctx.alive()`, when the reader has moved on.

import { UNAUTHORIZED, session } from './api.js';
import { h, replace, field, uid } from './dom.js';
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
  // A platform-level token names the org of each call (X-Org-Id); the API has no list of
  // orgs, so the reader types one (the ones used in this tab are offered again).
  const listId = uid('orgs');
  const input = h('input', { name: 'org', value: session.org ?? '', list: listId, required: true, autocomplete: 'off', size: 12, placeholder: 'org id' });
  const form = h(
    'form',
    { class: 'org-switcher', 'aria-label': 'Org switcher' },
    field('Org (X-Org-Id)', input),
    h('datalist', { id: listId }, session.knownOrgs.map((org) => h('option', { value: org }))),
    h('button', { type: 'submit' }, 'Switch org'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const org = input.value.trim();
    if (!org) return;
    session.switchOrg(org);
    notify(`Acting in org ${org}`);
    route();
  });
  replace(bar, who, h('span', { class: 'org platform' }, 'platform-level token'), form, signOut);
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
    replace(
      view,
      h('h1', {}, 'Choose an org'),
      h('p', {}, 'This token is platform-level: it names no org, so every call names one in X-Org-Id. Type the org to act in above and press "Switch org".'),
    );
    bar.querySelector('input')?.focus();
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
