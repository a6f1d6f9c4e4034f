// Outgoing webhook subscribers, their deliveries, and retrying the dead ones.

import { del, get, patch, post, put, secretName, seg, session } from '../api.js';
import { action, facts, field, h, replace, section, select, table } from '../dom.js';
import { attempt, badge, pager, time } from '../format.js';

export async function list(view, ctx) {
  const errors = h('div');
  const platform = session.platform ? h('input', { type: 'checkbox', name: 'platform_level', id: 'sub-platform' }) : null;
  const form = h(
    'form',
    { class: 'form', 'aria-label': 'New subscriber' },
    field('URL', h('input', { name: 'url', type: 'url', required: true, placeholder: 'https://example.com/hooks/events' })),
    field('Event types', h('input', { name: 'event_types', placeholder: 'deal.*, enrollment.created' }), 'Comma separated; `entity.*` and `*` match many; empty: all.'),
    field('Signing secret name', h('input', { name: 'secret', required: true, autocomplete: 'off', placeholder: 'subscribers/calculator' })),
    field('Signing secret value', h('input', { name: 'secret_value', type: 'password', autocomplete: 'new-password', placeholder: 'whsec_…' }), 'A Standard Webhooks key (whsec_ and base64), written first; leave empty to use one written before.'),
    platform ? h('div', { class: 'field check' }, platform, h('label', { for: 'sub-platform' }, 'Platform level (every org’s events)')) : null,
    errors,
    h('button', { type: 'submit', class: 'primary' }, 'Add subscriber'),
  );
  const rows = pager(
    'subscribers',
    (cursor) => get('/v1/subscribers', { limit: 50, cursor }),
    (items) =>
      table(
        'Subscribers',
        [
          ['URL', (s) => h('a', { href: `#/subscribers/${seg(s.id)}` }, s.url)],
          ['Event types', (s) => (s.event_types.length ? s.event_types.join(', ') : 'all')],
          ['State', (s) => badge(s.enabled ? 'active' : 'disabled')],
          ['Secret', (s) => h('code', {}, secretName(s.secret_ref))],
          ['Org', (s) => s.org_id ?? 'platform level'],
        ],
        items,
        'No subscriber yet.',
      ),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    await attempt(errors, async () => {
      const f = form.elements;
      const secret = f.secret.value.trim();
      const level = platform?.checked || undefined;
      if (f.secret_value.value) {
        await put(`/v1/secrets/${secret.split('/').map(seg).join('/')}`, { value: f.secret_value.value, platform_level: level });
        f.secret_value.value = '';
      }
      const types = f.event_types.value.split(',').map((t) => t.trim()).filter(Boolean);
      const created = await post('/v1/subscribers', { url: f.url.value.trim(), event_types: types, secret, platform_level: level });
      ctx.notify(`Subscriber ${created.id} added`);
      form.reset();
      await rows.reload();
    });
  });
  replace(view, h('h1', {}, 'Subscribers'), h('p', { class: 'lede' }, 'Where the host POSTs your events, signed the Standard Webhooks way, retried and parked as dead after 8 attempts.'), rows, section('Add a subscriber', form));
  await rows.ready;
}

export async function detail(view, ctx) {
  const [id] = ctx.params;
  const s = await get(`/v1/subscribers/${seg(id)}`);
  const status = ctx.query.status ?? 'dead';
  const errors = h('div');
  const reload = () => ctx.navigate(`/subscribers/${seg(id)}${status ? `?status=${status}` : ''}`);
  const statusPicker = select('status', [['dead', 'dead'], ['pending', 'pending'], ['delivered', 'delivered'], ['', 'all']], status);
  statusPicker.addEventListener('change', () => ctx.navigate(`/subscribers/${seg(id)}?status=${statusPicker.value}`));
  let rows;
  rows = pager(
    'deliveries',
    (cursor) => get(`/v1/subscribers/${seg(id)}/deliveries`, { status: status || undefined, limit: 50, cursor }),
    (items) =>
      table(
        'Subscriber deliveries',
        [
          ['Event', (d) => `#${d.outbox_seq}`],
          ['Status', (d) => badge(d.status)],
          ['Attempts', (d) => String(d.attempts)],
          ['Last answer', (d) => (d.last_status ? `HTTP ${d.last_status}` : '—')],
          ['Last error', (d) => d.last_error ?? ''],
          ['Next attempt', (d) => (d.status === 'pending' ? time(d.next_attempt_at) : '—')],
          [
            '',
            (d) =>
              d.status === 'dead'
                ? action('Retry', async () => {
                    const ok = await attempt(errors, () => post(`/v1/subscribers/${seg(id)}/deliveries/${d.outbox_seq}/retry`));
                    if (ok) {
                      ctx.notify(`Event #${d.outbox_seq} is due again`);
                      await rows.reload();
                    }
                  }, { 'aria-label': `Retry event ${d.outbox_seq}` })
                : null,
          ],
        ],
        items,
        status === 'dead' ? 'No dead delivery: nothing to retry.' : 'No delivery matches.',
      ),
  );
  const toggle = action(s.enabled ? 'Disable' : 'Enable', async () => {
    if (await attempt(errors, () => patch(`/v1/subscribers/${seg(id)}`, { enabled: !s.enabled }))) reload();
  });
  const remove = action('Delete subscriber', async () => {
    if (await attempt(errors, () => del(`/v1/subscribers/${seg(id)}`))) {
      ctx.notify('Subscriber deleted');
      ctx.navigate('/subscribers');
    }
  }, { class: 'danger' });
  replace(
    view,
    h('p', { class: 'crumbs' }, h('a', { href: '#/subscribers' }, 'Subscribers'), ' / ', s.id),
    h('div', { class: 'title-row' }, h('h1', {}, 'Subscriber'), badge(s.enabled ? 'active' : 'disabled')),
    section(
      'Subscriber',
      facts([
        ['URL', h('code', {}, s.url)],
        ['Event types', s.event_types.length ? s.event_types.join(', ') : 'all'],
        ['Signing secret', h('code', {}, secretName(s.secret_ref))],
        ['Org', s.org_id ?? 'platform level'],
        ['Created', time(s.created_at)],
      ]),
      h('div', { class: 'actions' }, toggle, remove),
    ),
    errors,
    h('div', { class: 'title-row' }, h('h2', {}, 'Deliveries'), field('Show', statusPicker)),
    rows,
  );
  await rows.ready;
}
