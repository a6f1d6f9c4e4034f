// Deliveries: filtered lists, why one failed, its invocations (usage, logs), redrive one or
// every failed delivery a filter selects.

import { get, post, seg } from '../api.js';
import { action, facts, field, h, replace, section, select, table } from '../dom.js';
import { attempt, badge, bytes, fromLocalInput, json, jsonText, micros, pager, problem, time, toLocalInput } from '../format.js';

const STATUSES = [['', 'any status'], ['received', 'received'], ['processed', 'processed'], ['ignored', 'ignored'], ['failed', 'failed'], ['rejected', 'rejected']];
const REDRIVABLE = new Set(['failed', 'rejected']);

async function redriveOne(id, ctx, slot) {
  return attempt(slot, async () => {
    const ran = await post(`/v1/deliveries/${seg(id)}/redrive`);
    ctx.notify(`Delivery ${id} redriven: ${ran.status}, ${ran.events} new event(s)`, ran.status === 'processed' || ran.status === 'ignored' ? 'good' : 'bad');
  });
}

export async function list(view, ctx) {
  const q = ctx.query;
  const errors = h('div');
  const form = h(
    'form',
    { class: 'filters', 'aria-label': 'Filter deliveries' },
    field('Connection', h('input', { name: 'connection_id', value: q.connection_id ?? '', autocomplete: 'off' })),
    field('Status', select('status', STATUSES, q.status ?? '')),
    field('Received from', h('input', { name: 'since', type: 'datetime-local', value: toLocalInput(q.since) })),
    field('Received before', h('input', { name: 'until', type: 'datetime-local', value: toLocalInput(q.until) })),
    h('button', { type: 'submit' }, 'Apply filters'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const f = form.elements;
    const params = new URLSearchParams();
    if (f.connection_id.value.trim()) params.set('connection_id', f.connection_id.value.trim());
    if (f.status.value) params.set('status', f.status.value);
    const since = fromLocalInput(f.since.value);
    const until = fromLocalInput(f.until.value);
    if (since) params.set('since', since);
    if (until) params.set('until', until);
    ctx.navigate(`/deliveries${params.toString() ? `?${params}` : ''}`);
  });
  const filter = { connection_id: q.connection_id, status: q.status, since: q.since ? Number(q.since) : undefined, until: q.until ? Number(q.until) : undefined };
  let rows;
  rows = pager(
    'deliveries',
    (cursor) => get('/v1/deliveries', { ...filter, limit: 50, cursor }),
    (items) =>
      table(
        'Deliveries',
        [
          ['Received', (d) => time(d.received_at)],
          ['Delivery', (d) => h('a', { href: `#/deliveries/${seg(d.id)}` }, d.id)],
          ['Connection', (d) => h('a', { href: `#/connections/${seg(d.connection_id)}` }, d.connection_id)],
          ['Kind', (d) => `${d.kind} ${d.method}`],
          ['Status', (d) => badge(d.status)],
          ['Attempts', (d) => d.attempts],
          ['Size', (d) => bytes(d.body_bytes)],
          [
            '',
            (d) =>
              REDRIVABLE.has(d.status) && !d.body_purged_at
                ? action('Redrive', async () => {
                    if (await redriveOne(d.id, ctx, errors)) await rows.reload();
                  }, { 'aria-label': `Redrive ${d.id}` })
                : null,
          ],
        ],
        items,
        'No delivery matches.',
      ),
  );
  // Every failed (or rejected) delivery the filter selects, up to 100 at once.
  const bulkResult = h('div', { 'aria-live': 'polite' });
  const bulkStatus = q.status === 'rejected' ? 'rejected' : 'failed';
  const bulk = action(`Redrive every ${bulkStatus} delivery of this filter`, async () => {
    await attempt(bulkResult, async () => {
      const body = { status: bulkStatus };
      for (const key of ['connection_id', 'since', 'until']) if (filter[key] !== undefined && filter[key] !== '') body[key] = filter[key];
      const batch = await post('/v1/deliveries/redrive', body);
      replace(
        bulkResult,
        h('p', {}, `${batch.redriven} redriven, ${batch.refused} refused.`),
        table(
          'Redrive results',
          [
            ['Delivery', (r) => h('a', { href: `#/deliveries/${seg(r.delivery_id)}` }, r.delivery_id)],
            ['Outcome', (r) => (r.error ? problem(r.error) : [badge(r.status), ` ${r.events} new event(s)`])],
          ],
          batch.results,
          'Nothing to redrive: no delivery of this filter failed.',
        ),
      );
      await rows.reload();
    });
  });
  replace(
    view,
    h('h1', {}, 'Deliveries'),
    h('p', { class: 'lede' }, 'What your connections received, newest first. A failed delivery is kept with its reason and can be run again through the connection’s current adapter version.'),
    form,
    h('div', { class: 'actions' }, bulk),
    bulkResult,
    errors,
    rows,
  );
  await rows.ready;
}

function invocation(inv, i) {
  let log = [];
  try {
    log = JSON.parse(inv.log_json);
  } catch {
    log = inv.log_json;
  }
  const lines = Array.isArray(log) ? log : Array.isArray(log?.lines) ? log.lines : null;
  return section(
    `Invocation ${i + 1}: ${inv.outcome.replace(/_/g, ' ')}`,
    facts([
      ['Outcome', badge(inv.outcome)],
      ['Adapter', h('a', { href: `#/adapters/${seg(inv.adapter_id)}` }, `${inv.adapter_id} v${inv.adapter_version}`)],
      ['Export', String(inv.export)],
      ['Started', time(inv.started_at)],
      ['Time', micros(inv.duration_us)],
      ['Fuel', String(inv.fuel)],
      ['Peak memory', bytes(inv.peak_memory_bytes)],
      ['In / out', `${bytes(inv.bytes_in)} / ${bytes(inv.bytes_out)}`],
      ['Events', String(inv.events)],
      ['Detail', jsonText(inv.detail_json)],
    ]),
    h('h3', {}, 'Log'),
    inv.log_erased
      ? h('p', { class: 'empty' }, 'The log was erased.')
      : inv.log_purged_at
      ? h('p', { class: 'empty' }, `The log expired on ${time(inv.log_purged_at)} (the retention of invocation logs).`)
      : lines
      ? lines.length
        ? h('pre', { class: 'log', tabindex: 0 }, lines.map((line) => (typeof line === 'string' ? line : `${line.level ?? ''} ${line.message ?? JSON.stringify(line)}`)).join('\n'))
        : h('p', { class: 'empty' }, 'The adapter logged nothing.')
      : json(log),
  );
}

export async function detail(view, ctx) {
  const [id] = ctx.params;
  const d = await get(`/v1/deliveries/${seg(id)}`);
  const info = d.delivery;
  const errors = h('div');
  replace(
    view,
    h('p', { class: 'crumbs' }, h('a', { href: '#/deliveries' }, 'Deliveries'), ' / ', info.id),
    h('div', { class: 'title-row' }, h('h1', {}, `Delivery ${info.id}`), badge(info.status)),
    d.body_erased
      ? h('p', { class: 'note' }, 'Its body was erased (the tenant’s data, or the data of a person it held): its history stays, it can no longer be redriven.')
      : info.body_purged_at
      ? h('p', { class: 'note' }, `Its body expired on ${time(info.body_purged_at)} (the retention of delivery bodies): its history stays, it can no longer be redriven.`)
      : null,
    REDRIVABLE.has(info.status) && !info.body_purged_at && !d.body_erased
      ? h(
          'div',
          { class: 'actions' },
          action('Redrive', async () => {
            if (await redriveOne(info.id, ctx, errors)) ctx.navigate(`/deliveries/${seg(info.id)}`);
          }, { class: 'primary' }),
          h('span', {}, 'Runs it again through the connection’s current adapter version; events already appended are never repeated.'),
        )
      : null,
    errors,
    d.reason ? section('Why it failed', json(d.reason)) : null,
    section(
      'Delivery',
      facts([
        ['Connection', h('a', { href: `#/connections/${seg(info.connection_id)}` }, info.connection_id)],
        ['Kind', info.kind],
        ['Request', `${info.method} ${info.path}${info.query ? `?${info.query}` : ''}`],
        ['Received', time(info.received_at)],
        ['Processed', time(info.processed_at)],
        ['Attempts', String(info.attempts)],
        ['Provider delivery id', info.provider_delivery_id ?? '—'],
        ['Body', d.body_erased ? `erased, sha256 ${info.body_sha256.slice(0, 16)}…` : info.body_purged_at ? `expired, sha256 ${info.body_sha256.slice(0, 16)}…` : `${bytes(info.body_bytes)}, sha256 ${info.body_sha256.slice(0, 16)}… (the body itself is the CRM’s data and is not shown)`],
        ['Trace id', h('code', {}, info.trace_id)],
        ['Events', h('a', { href: `#/events?connection_id=${seg(info.connection_id)}` }, 'events of its connection')],
      ]),
    ),
    h('h2', {}, `Invocations (${d.invocations.length})`),
    d.invocations.length ? d.invocations.map(invocation) : h('p', { class: 'empty' }, 'Not run yet.'),
    d.exchanges.length ? section('Requests made', json(d.exchanges)) : null,
  );
}
