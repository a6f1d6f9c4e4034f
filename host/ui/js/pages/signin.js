// Sign-in: a pasted bearer token, checked by asking the API for something small.

import { call, readClaims, session } from '../api.js';
import { h, field, replace } from '../dom.js';
import { problem } from '../format.js';

export async function render(view, ctx) {
  const token = h('textarea', { name: 'token', rows: 5, required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'eyJhbGciOi…' });
  const org = h('input', { name: 'org', autocomplete: 'off', placeholder: 'org-456' });
  const errors = h('div');
  if (ctx.why) replace(errors, problem(ctx.why));
  const form = h(
    'form',
    { class: 'card signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    h(
      'p',
      {},
      'Paste a management API token (a JWT). On a local host, mint one with ',
      h('code', {}, 'scripts/token.sh'),
      ' or ',
      h('code', {}, 'adapter-host token --jwt-key-file data/jwt.key --tenant demo-tenant --org org-456 --role tenant_admin'),
      '. Where the host verifies your identity provider’s tokens (',
      h('code', {}, '--jwks-url'),
      '), paste one of those.',
    ),
    field('Token', token, 'Kept in this tab only (sessionStorage); closing the tab signs you out.'),
    field('Org (platform-level tokens only)', org, 'A token without org_id names the org of each call; you can switch later.'),
    errors,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    replace(errors);
    const text = token.value.trim().replace(/^Bearer\s+/i, '');
    let claims;
    try {
      claims = readClaims(text);
    } catch (error) {
      replace(errors, problem({ title: 'Not a token', detail: `This is not a JWT: ${error.message}` }));
      return;
    }
    session.signIn(text, claims.org_id ? null : org.value.trim());
    if (!claims.org_id && !org.value.trim()) {
      ctx.done();
      return;
    }
    try {
      await call('GET', '/v1/adapters', { query: { limit: 1 }, signInAgain: false });
      ctx.notify(`Signed in as ${claims.sub ?? 'someone'}`);
      ctx.done();
    } catch (error) {
      session.signOut();
      replace(errors, problem(error));
    }
  });
  replace(view, form);
  token.focus();
}
