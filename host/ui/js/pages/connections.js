// Connections: the list with health at a glance, and the form that creates one.

import { get, post, put, seg, session } from '../api.js';
import { h, field, select, table, replace } from '../dom.js';
import { ago, badge, pager, seconds, attempt } from '../format.js';

const PAGE = 25;

/** The figures behind a connection's health, or null when they cannot be read. */
async function figures(id) {
  try {
    return await get(`/v1/connections/${seg(id)}/health`);
  } catch {
    return null;
  }
}

export async function list(view, ctx) {
  const rows = pager(
    'connections',
    (cursor) => get('/v1/connections', { limit: PAGE, cursor }),
    async (items) => {
      // The list carries the monitor's last assessment; the error rate and poll figures are
      // the health endpoint's, computed now.
      const healths = await Promise.all(items.map((c) => figures(c.id)));
      // The API lists no orgs: a platform-level connection's allowed orgs are worth offering.
      if (session.platform) session.rememberOrgs(items.filter((c) => c.org_id === null).flatMap((c) => c.allowed_org_ids));
      const withHealth = items.map((c, i) => ({ ...c, now: healths[i] }));
      return table(
        'Connections',
        [
          ['Connection', (c) => h('a', { href: `#/connections/${seg(c.id)}` }, c.id)],
          ['Provider', (c) => c.provider],
          ['Health', (c) => [badge(c.now?.status ?? c.health?.status), c.status === 'disabled' ? [' ', badge('disabled')] : null]],
          ['Last delivery', (c) => ago(c.last_delivery_at)],
          [
            'Error rate',
            (c) => {
              const f = c.now?.figures;
              if (!f) return '—';
              const pct = `${(Number(f.failure_rate) * 100).toFixed(1)} %`;
              return h('span', { title: `${f.deliveries_failed + f.deliveries_rejected} of ${f.deliveries} deliveries in the last ${Math.round(f.window_secs / 60)} min` }, `${pct} of ${f.deliveries}`);
            },
          ],
          [
            'Polling',
            (c) => {
              if (!c.polling) return 'webhooks only';
              const cadence = c.polling.interval_secs ? seconds(c.polling.interval_secs) : 'pushed pages';
              const failing = c.now?.figures?.poll_failures_in_a_row;
              return failing ? [cadence, ' ', badge('failing'), ` ${failing} in a row`] : cadence;
            },
          ],
          ['Adapter', (c) => h('a', { href: `#/adapters/${seg(c.adapter_id)}` }, `${c.adapter_id} v${c.adapter_version}`)],
          ['Org', (c) => c.org_id ?? 'platform level'],
        ],
        withHealth,
        'No connection yet: create one to get a webhook URL for your CRM.',
      );
    },
  );
  replace(
    view,
    h('div', { class: 'title-row' }, h('h1', {}, 'Connections'), h('a', { class: 'button primary', href: '#/connections/new' }, 'New connection')),
    h('p', { class: 'lede' }, `Your CRM accounts in org ${session.org}, and the platform-level ones every org shares.`),
    rows,
  );
  await rows.ready;
}

const SCHEMES = [
  ['standard_webhooks', 'Standard Webhooks (custom CRMs, relays)'],
  ['hubspot', 'HubSpot (v1, v2, v3)'],
  ['salesforce_outbound', 'Salesforce outbound messages'],
  ['zoho_token', 'Zoho channel token'],
  ['stripe', 'Stripe'],
  ['github', 'GitHub'],
  ['shopify', 'Shopify'],
  ['slack', 'Slack'],
  ['generic_hmac', 'Generic HMAC'],
  ['unsigned', 'Unsigned (needs a capability URL or an allow list)'],
];

/** The signature settings the form's fields describe. */
function signatureOf(form) {
  const scheme = form.elements.scheme.value;
  const signature = { scheme };
  if (scheme === 'hubspot') signature.version = form.elements.hubspot_version.value;
  if (scheme === 'salesforce_outbound') signature.organization_id = form.elements.organization_id.value.trim();
  if (scheme === 'zoho_token' && form.elements.channel_id.value.trim()) signature.channel_id = form.elements.channel_id.value.trim();
  if (scheme === 'generic_hmac') {
    signature.header = form.elements.hmac_header.value.trim();
    signature.encoding = form.elements.hmac_encoding.value;
  }
  return signature;
}

/** `key=value` lines as an object. */
export function parseSettings(text) {
  const settings = {};
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed) continue;
    const at = trimmed.indexOf('=');
    if (at < 1) throw { title: 'Settings', detail: `"${trimmed}" is not key=value` };
    settings[trimmed.slice(0, at).trim()] = trimmed.slice(at + 1).trim();
  }
  return settings;
}

export async function create(view, ctx) {
  const adapters = (await get('/v1/adapters', { limit: 1000 })).items;
  const errors = h('div');
  const schemeFields = h('div', { class: 'scheme-fields' });
  const scheme = select('scheme', SCHEMES, 'standard_webhooks');
  const adapter = select(
    'adapter_id',
    adapters.map((a) => [a.id, `${a.name} (${a.latest_version ? `v${a.latest_version}` : 'no ready version'})`]),
  );
  const version = h('input', { name: 'adapter_version', type: 'number', min: 1, inputmode: 'numeric' });
  function showSchemeFields() {
    const which = scheme.value;
    replace(
      schemeFields,
      which === 'hubspot' ? field('HubSpot signature version', select('hubspot_version', [['v3', 'v3'], ['v2', 'v2'], ['v1', 'v1']], 'v3')) : null,
      which === 'salesforce_outbound' ? field('Salesforce organization id', h('input', { name: 'organization_id', required: true })) : null,
      which === 'zoho_token' ? field('Zoho channel id (optional)', h('input', { name: 'channel_id' })) : null,
      which === 'generic_hmac'
        ? [field('Signature header', h('input', { name: 'hmac_header', required: true, value: 'x-signature' })), field('Encoding', select('hmac_encoding', [['hex', 'hex'], ['base64', 'base64']], 'hex'))]
        : null,
    );
  }
  scheme.addEventListener('change', showSchemeFields);
  showSchemeFields();
  const form = h(
    'form',
    { class: 'card form', 'aria-labelledby': 'new-title' },
    h('h1', { id: 'new-title' }, 'New connection'),
    adapters.length ? null : h('p', { class: 'problem', role: 'alert' }, 'There is no adapter yet: ', h('a', { href: '#/adapters' }, 'upload one first'), '.'),
    field('Provider', h('input', { name: 'provider', required: true, list: 'providers', value: 'custom', maxlength: 64 }), 'salesforce, hubspot, zoho, zenoti or custom'),
    h('datalist', { id: 'providers' }, ['salesforce', 'hubspot', 'zoho', 'zenoti', 'custom'].map((p) => h('option', { value: p }))),
    field('Adapter', adapter),
    field('Adapter version', version, 'Leave empty for the latest ready version.'),
    field('Signature scheme', scheme),
    schemeFields,
    h(
      'fieldset',
      {},
      h('legend', {}, 'Signing secret'),
      field('Secret name', h('input', { name: 'secret', autocomplete: 'off', placeholder: 'crm/signing' }), 'A name in your org’s secret namespace.'),
      field('Secret value', h('input', { name: 'secret_value', type: 'password', autocomplete: 'new-password' }), 'Written to the secret store first (write-only: it is never shown again). Leave empty to use a secret written before.'),
    ),
    field('Settings', h('textarea', { name: 'settings', rows: 3, placeholder: 'key=value, one a line' })),
    session.platform ? h('div', { class: 'field check' }, h('input', { type: 'checkbox', name: 'platform_level', id: 'platform-level' }), h('label', { for: 'platform-level' }, 'Platform level (every org of the tenant sees it)')) : null,
    session.platform ? field('Allowed orgs', h('input', { name: 'allowed_org_ids', placeholder: 'org-a, org-b' }), 'Orgs its events may be scoped to (platform-level connections).') : null,
    errors,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create connection'), h('a', { href: '#/connections' }, 'Cancel')),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    await attempt(errors, async () => {
      const f = form.elements;
      const platform = Boolean(f.platform_level?.checked);
      const body = {
        provider: f.provider.value.trim(),
        adapter_id: f.adapter_id.value,
        signature: signatureOf(form),
        settings: parseSettings(f.settings.value),
      };
      if (f.adapter_version.value) body.adapter_version = Number(f.adapter_version.value);
      const secret = f.secret.value.trim();
      if (secret) body.secret = secret;
      if (platform) body.platform_level = true;
      const allowed = f.allowed_org_ids?.value.trim();
      if (allowed) body.allowed_org_ids = allowed.split(',').map((o) => o.trim()).filter(Boolean);
      if (f.secret_value.value) {
        if (!secret) throw { title: 'Secret name missing', detail: 'Name the secret its value is written under.' };
        await put(`/v1/secrets/${secret.split('/').map(seg).join('/')}`, { value: f.secret_value.value, platform_level: platform || undefined });
        f.secret_value.value = '';
      }
      const created = await post('/v1/connections', body);
      ctx.notify(`Connection ${created.id} created`);
      ctx.navigate(`/connections/${created.id}`);
    });
    button.disabled = false;
  });
  replace(view, form);
}
