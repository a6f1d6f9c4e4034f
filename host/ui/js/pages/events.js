// Events of the outbox: filtered lists, and one event's payload and metadata as formatted JSON
// (decimals stay strings, and are marked as such).

import { get, seg } from '../api.js';
import { facts, field, h, replace, section, select, table } from '../dom.js';
import { badge, fromLocalInput, json, pager, time, toLocalInput } from '../format.js';

const TEXT_FILTERS = [
  ['event_type', 'Event type'],
  ['entity_type', 'Entity type'],
  ['entity_id', 'Entity id'],
  ['connection_id', 'Connection'],
];

export async function list(view, ctx) {
  const q = ctx.query;
  const form = h(
    'form',
    { class: 'filters', 'aria-label': 'Filter events' },
    TEXT_FILTERS.map(([name, label]) => field(label, h('input', { name, value: q[name] ?? '', autocomplete: 'off' }))),
    field('Status', select('status', [['', 'any status'], ['pending', 'pending'], ['published', 'published'], ['dead', 'dead']], q.status ?? '')),
    field('Created from', h('input', { name: 'since', type: 'datetime-local', value: toLocalInput(q.since) })),
    field('Created before', h('input', { name: 'until', type: 'datetime-local', value: toLocalInput(q.until) })),
    h('button', { type: 'submit' }, 'Apply filters'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [name] of TEXT_FILTERS) if (form.elements[name].value.trim()) params.set(name, form.elements[name].value.trim());
    if (form.elements.status.value) params.set('status', form.elements.status.value);
    const since = fromLocalInput(form.elements.since.value);
    const until = fromLocalInput(form.elements.until.value);
    if (since) params.set('since', since);
    if (until) params.set('until', until);
    ctx.navigate(`/events${params.toString() ? `?${params}` : ''}`);
  });
  const filter = {};
  for (const key of ['event_type', 'entity_type', 'entity_id', 'connection_id', 'status', 'since', 'until']) filter[key] = q[key];
  const rows = pager(
    'events',
    (cursor) => get('/v1/events', { ...filter, limit: 50, cursor }),
    (items) =>
      table(
        'Events',
        [
          ['Created', (e) => time(e.created_at)],
          ['Type', (e) => h('a', { href: `#/events/${seg(e.event_id)}` }, e.event_type)],
          ['Entity', (e) => `${e.entity_type} ${e.entity_id}`],
          ['Status', (e) => badge(e.status)],
          ['Org', (e) => e.org_id ?? 'platform level'],
          ['Payload', (e) => (e.payload_erased ? 'erased' : h('details', {}, h('summary', {}, 'show'), json(e.payload)))],
        ],
        items,
        'No event matches.',
      ),
  );
  replace(view, h('h1', {}, 'Events'), h('p', { class: 'lede' }, 'The integration events your adapters emitted, as published. Decimals are JSON strings (marked in the payload), never numbers.'), form, rows);
  await rows.ready;
}

export async function detail(view, ctx) {
  const [id] = ctx.params;
  const e = await get(`/v1/events/${seg(id)}`);
  replace(
    view,
    h('p', { class: 'crumbs' }, h('a', { href: '#/events' }, 'Events'), ' / ', e.event_id),
    h('div', { class: 'title-row' }, h('h1', {}, `Event ${e.event_type}`), badge(e.status)),
    section(
      'Event',
      facts([
        ['Event id', h('code', {}, e.event_id)],
        ['Entity', `${e.entity_type} ${e.entity_id}`],
        ['Org', e.org_id ?? 'platform level'],
        ['Connection', h('a', { href: `#/connections/${seg(e.connection_id)}` }, e.connection_id)],
        ['Delivery', h('a', { href: `#/deliveries/${seg(e.delivery_id)}` }, e.delivery_id)],
        ['Created', time(e.created_at)],
        ['Published', time(e.published_at)],
        ['Attempts', String(e.attempts)],
        e.last_error ? ['Last error', e.last_error] : null,
      ]),
    ),
    e.payload_erased
      ? section('Payload', h('p', { class: 'empty' }, 'The payload was erased (the tenant’s data, or a person’s): the event’s row stays, its content is gone.'))
      : section(
          'Payload',
          h('p', { class: 'hint' }, 'Highlighted values are decimals, carried as strings so that no digit is lost.'),
          e.masked?.length
            ? h('p', { class: 'hint masked-note' }, `Personal data masked (your role may not see it): ${e.masked.join(', ')}.`)
            : null,
          json(e.payload),
        ),
    section('Metadata', json(e.metadata)),
  );
}
