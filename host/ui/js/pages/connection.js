// One connection: its webhook URL, signature and secret (write-only, rotated with grace), the
// adapter version it runs (switch, roll back), health, polling ("poll now"), the CRM's
// credentials (OAuth connect, API keys), and its configuration.

import { del, get, patch, post, put, secretName, seg, session } from '../api.js';
import { action, facts, field, h, replace, section, select, table } from '../dom.js';
import { ago, attempt, badge, json, seconds, time } from '../format.js';
import { parseSettings } from './connections.js';

const PROVIDER_NAMES = { salesforce: 'Salesforce', hubspot: 'HubSpot', zoho: 'Zoho', custom: 'the provider' };
const MAX_GRACE_HINT = 'Seconds the previous value keeps verifying, so the CRM can move to the new one (0: at once).';

/** PUT /v1/secrets/{name}, the name's segments kept. */
function writeSecret(name, value, grace, platform) {
  const path = name.split('/').map(seg).join('/');
  return put(`/v1/secrets/${path}`, { value, grace_secs: grace || 0, platform_level: platform || undefined });
}

export async function detail(view, ctx) {
  const [id] = ctx.params;
  const c = await get(`/v1/connections/${seg(id)}`);
  const platformRow = c.org_id === null;
  const readOnly = platformRow && !session.platform;
  const reload = () => ctx.navigate(`/connections/${seg(id)}`);

  replace(
    view,
    h('p', { class: 'crumbs' }, h('a', { href: '#/connections' }, 'Connections'), ' / ', c.id),
    h('div', { class: 'title-row' }, h('h1', {}, `Connection ${c.id}`), badge(c.status), c.health ? badge(c.health.status) : null),
    readOnly ? h('p', { class: 'note' }, 'This connection is platform level: every org of the tenant sees it, and only a platform-level token can change it.') : null,
  );

  view.append(webhookSection(c));
  view.append(await versionSection(c, ctx, reload, readOnly));
  view.append(await healthSection(c));
  view.append(await driftSection(c));
  view.append(secretSection(c, ctx, reload, readOnly));
  view.append(await pollingSection(c, ctx));
  const credentials = credentialSection(c, ctx, reload, readOnly);
  if (credentials) view.append(credentials);
  view.append(configSection(c, ctx, reload, readOnly));
  view.append(
    section(
      'Traffic',
      h(
        'p',
        {},
        h('a', { href: `#/deliveries?connection_id=${seg(c.id)}` }, 'Its deliveries'),
        ' · ',
        h('a', { href: `#/deliveries?connection_id=${seg(c.id)}&status=failed` }, 'failed ones'),
        ' · ',
        h('a', { href: `#/events?connection_id=${seg(c.id)}` }, 'its events'),
      ),
    ),
  );
}

function webhookSection(c) {
  const url = h('input', { readonly: true, value: c.webhook_url, class: 'mono', name: 'webhook_url', size: Math.min(c.webhook_url.length, 60) });
  const copied = h('span', { class: 'copied', 'aria-live': 'polite' });
  const copy = action('Copy', async () => {
    url.select();
    try {
      await navigator.clipboard.writeText(c.webhook_url);
      copied.textContent = 'Copied';
    } catch {
      // No clipboard permission (an insecure origin, a headless browser): the text is
      // selected for Ctrl+C instead.
      copied.textContent = 'Selected: press Ctrl+C to copy';
    }
  });
  const scheme = c.signature?.scheme ?? 'unknown';
  const guard = c.webhook;
  return section(
    'Webhook',
    field('Webhook URL (give it to the CRM)', url, guard?.capability_secret ? 'Append "/" and the capability token: the URL alone is refused.' : undefined),
    h('div', { class: 'actions' }, copy, copied),
    facts([
      ['Signature scheme', h('code', {}, scheme)],
      ['Signature settings', json(c.signature)],
      guard?.allowed_ips?.length ? ['Allowed sources', guard.allowed_ips.join(', ')] : null,
      guard?.methods?.length ? ['Methods', guard.methods.join(', ')] : null,
      guard?.capability_secret ? ['Capability secret', secretName(guard.capability_secret)] : null,
    ]),
  );
}

async function versionSection(c, ctx, reload, readOnly) {
  const versions = (await get(`/v1/adapters/${seg(c.adapter_id)}/versions`, { limit: 1000 })).items;
  const ready = versions.filter((v) => v.status === 'ready');
  const errors = h('div');
  const picker = select(
    'adapter_version',
    ready.map((v) => [v.version, `v${v.version}${v.version === c.adapter_version ? ' (running)' : ''} · ${v.info?.name ?? ''} ${v.info?.version ?? ''} · ${v.sha256.slice(0, 12)}`]),
    c.adapter_version,
  );
  const switchTo = async (version) => {
    await attempt(errors, async () => {
      await patch(`/v1/connections/${seg(c.id)}`, { adapter_version: Number(version) });
      ctx.notify(`Now running version ${version}`);
      reload();
    });
  };
  const previous = ready.filter((v) => v.version < c.adapter_version).pop();
  return section(
    'Adapter version',
    facts([
      ['Adapter', h('a', { href: `#/adapters/${seg(c.adapter_id)}` }, c.adapter_id)],
      ['Running', `version ${c.adapter_version}`],
      ['Changed', c.version_changed_at ? [time(c.version_changed_at), ` by ${c.version_changed_by}`] : 'never'],
    ]),
    readOnly
      ? null
      : h(
          'div',
          { class: 'actions' },
          field('Switch to', picker),
          action('Switch version', () => switchTo(picker.value)),
          previous ? action(`Roll back to v${previous.version}`, () => switchTo(previous.version)) : null,
        ),
    errors,
  );
}

/** What changed in the CRM's payloads against their learned shape. */
async function driftSection(c) {
  let drifts;
  try {
    drifts = await get(`/v1/connections/${seg(c.id)}/drifts`, { limit: 10 });
  } catch (error) {
    return section('Payload drift', h('p', {}, `Not available: ${error.detail || error.message}`));
  }
  const changed = { appeared: 'appeared', disappeared: 'disappeared', type_changed: 'changed type', decimal_as_number: 'decimal sent as a number' };
  return section(
    'Payload drift',
    h('p', { class: 'lede' }, 'The host learns the shape of this connection’s payloads per kind and notes each change (after 20 payloads of a kind).'),
    table(
      'Payload drift',
      [
        ['Found', (d) => time(d.detected_at)],
        ['Kind', (d) => h('code', {}, d.kind)],
        ['Field', (d) => h('code', {}, d.pointer)],
        ['Change', (d) => changed[d.change] ?? d.change],
        ['Was → now', (d) => `${d.was} → ${d.now}`],
        ['Example', (d) => h('a', { href: `#/deliveries/${seg(d.example_delivery_id)}` }, d.example_delivery_id)],
      ],
      drifts.items,
      'No change seen in its payloads.',
    ),
  );
}

async function healthSection(c) {
  let health;
  try {
    health = await get(`/v1/connections/${seg(c.id)}/health`);
  } catch (error) {
    return section('Health', h('p', {}, `Not available: ${error.detail || error.message}`));
  }
  const f = health.figures;
  return section(
    'Health',
    h('p', {}, badge(health.status), ` computed now, over the last ${Math.round(f.window_secs / 60)} minutes`),
    health.reasons.length
      ? h('ul', { class: 'reasons' }, health.reasons.map((r) => h('li', {}, badge(r.status), ' ', h('strong', {}, r.rule), ': ', r.detail)))
      : h('p', {}, 'Nothing wrong.'),
    facts([
      ['Deliveries', `${f.deliveries} (${f.deliveries_failed} failed, ${f.deliveries_rejected} rejected)`],
      ['Error rate', `${(Number(f.failure_rate) * 100).toFixed(1)} %`],
      ['Last delivery', ago(f.last_delivery_at)],
      ['Signature failures', String(f.signature_failures)],
      ['Poll runs', `${f.polls} (${f.polls_failed} failed, ${f.poll_failures_in_a_row} in a row)`],
      ['Events waiting', String(f.outbox_pending)],
      ['Dead subscriber deliveries', String(f.dead_subscriber_deliveries)],
      ['Open alerts', health.open_alerts.length ? health.open_alerts.map((a) => `${a.rule}: ${a.detail}`).join('; ') : 'none'],
    ]),
  );
}

function secretSection(c, ctx, reload, readOnly) {
  const current = secretName(c.secret_refs?.[0]);
  const errors = h('div');
  const name = h('input', { name: 'secret_name', value: current || `${c.id}/signing`, autocomplete: 'off', required: true });
  const value = h('input', { name: 'secret_value', type: 'password', autocomplete: 'new-password', required: true });
  const grace = h('input', { name: 'grace_secs', type: 'number', min: 0, value: 0, inputmode: 'numeric' });
  const form = h(
    'form',
    { class: 'form', 'aria-label': 'Write the signing secret' },
    field('Secret name', name),
    field('New value', value, c.signature?.scheme === 'standard_webhooks' ? 'A Standard Webhooks key: whsec_ followed by base64.' : 'The CRM’s signing secret.'),
    field('Grace period (seconds)', grace, MAX_GRACE_HINT),
    errors,
    h('button', { type: 'submit', class: 'primary' }, current ? 'Rotate secret' : 'Write secret'),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = form.querySelector('button');
    button.disabled = true;
    await attempt(errors, async () => {
      const written = await writeSecret(name.value.trim(), value.value, Number(grace.value), c.org_id === null);
      value.value = '';
      if (name.value.trim() !== current) {
        await patch(`/v1/connections/${seg(c.id)}`, { secret: name.value.trim() });
      }
      ctx.notify(`Secret ${written.name} written (version ${written.version})${Number(grace.value) ? `; the previous value verifies for ${grace.value} s more` : ''}`);
      if (name.value.trim() !== current) reload();
    });
    button.disabled = false;
  });
  return section(
    'Signing secret',
    h('p', {}, current ? ['Verified with ', h('code', {}, current), '. The value is write-only: the API never shows it.'] : 'No signing secret is set.'),
    readOnly ? null : form,
  );
}

async function pollingSection(c, ctx) {
  const errors = h('div');
  const body = h('div');
  if (!c.polling) {
    return section('Polling', h('p', {}, 'Not polled: this connection takes webhooks only. Set "polling" (and "api") under Configuration to poll its CRM.'));
  }
  let polls = null;
  try {
    polls = await get(`/v1/connections/${seg(c.id)}/polls`, { limit: 10 });
  } catch (error) {
    errors.append(h('p', {}, `Poll runs are not available: ${error.detail}`));
  }
  // The state names the run holding the lease; a run listed as ended is not running any more.
  const running = (p) => p?.state?.run_id && !p.items.some((r) => r.id === p.state.run_id && r.status !== 'running');
  const show = (p) =>
    replace(
      body,
      facts([
        ['Cadence', c.polling.interval_secs ? seconds(c.polling.interval_secs) : 'pages pushed by an external poller'],
        ['Pages per run', c.polling.max_pages ?? '—'],
        ['Next run', p?.state ? time(p.state.next_run_at) : '—'],
        ['Failures in a row', p?.state ? String(p.state.failures) : '—'],
        ['Running now', running(p) ? `yes (${p.state.run_id})` : 'no'],
      ]),
      table(
        'Poll runs',
        [
          ['Started', (r) => time(r.started_at)],
          ['Trigger', (r) => r.trigger],
          ['Status', (r) => badge(r.status)],
          ['Pages', (r) => r.pages],
          ['Events', (r) => r.events],
          ['Reason', (r) => r.reason ?? ''],
        ],
        p?.items ?? [],
        'No run yet.',
      ),
    );
  show(polls);
  const pollNow = c.polling.interval_secs
    ? action('Poll now', async () => {
        await attempt(errors, async () => {
          const run = await post(`/v1/connections/${seg(c.id)}/poll`);
          ctx.notify(`Poll run ${run.id} started`);
          for (let i = 0; i < 60 && ctx.alive(); i += 1) {
            const p = await get(`/v1/connections/${seg(c.id)}/polls`, { limit: 10 });
            show(p);
            if (!p.items.some((r) => r.id === run.id && r.status === 'running')) break;
            await new Promise((resolve) => setTimeout(resolve, 1000));
          }
        });
      })
    : null;
  return section('Polling', body, pollNow ? h('div', { class: 'actions' }, pollNow) : null, errors);
}

function credentialSection(c, ctx, reload, readOnly) {
  const credential = c.api?.credential;
  if (!credential || credential.kind === 'none') return null;
  const errors = h('div');
  if (credential.kind === 'oauth2') {
    const who = PROVIDER_NAMES[credential.provider] ?? credential.provider;
    const auth = c.auth;
    return section(
      'CRM connection (OAuth 2.0)',
      facts([
        ['Provider', who],
        ['API', c.api.base_url ? h('code', {}, c.api.base_url) : 'named by the provider when connected'],
        ['State', auth ? badge(auth.state) : 'never connected'],
        auth?.reason ? ['Why', auth.reason] : null,
        auth?.connected_at ? ['Connected', [time(auth.connected_at), auth.connected_by ? ` by ${auth.connected_by}` : '']] : null,
        auth?.scopes ? ['Scopes', auth.scopes] : null,
      ]),
      readOnly
        ? null
        : h(
            'div',
            { class: 'actions' },
            action(`Connect to ${who}`, async () => {
              await attempt(errors, async () => {
                const started = await post(`/v1/connections/${seg(c.id)}/oauth/start`);
                // The provider's consent page; it sends the browser back to the host's
                // callback, which returns here when the host has --oauth-return-url.
                location.assign(started.authorize_url);
              });
            }, { class: 'primary' }),
            auth?.state === 'connected'
              ? action('Disconnect', async () => {
                  await attempt(errors, async () => {
                    const out = await del(`/v1/connections/${seg(c.id)}/oauth`);
                    ctx.notify(out.revoked ? 'Disconnected; the grant was revoked' : `Disconnected (${out.note ?? 'not revoked'})`);
                    reload();
                  });
                })
              : null,
          ),
      errors,
    );
  }
  // API keys and bearer tokens (Zenoti's API key): written to the secret the credential names.
  const name = secretName(credential.secret);
  const value = h('input', { name: 'api_key', type: 'password', autocomplete: 'new-password', required: true });
  const form = h(
    'form',
    { class: 'form', 'aria-label': 'Write the API key' },
    field(credential.kind === 'bearer' ? 'Bearer token' : 'API key', value, `Stored as secret ${name}; the host adds it to requests to ${c.api.base_url ?? 'the CRM'} and the adapter never sees it.`),
    errors,
    h('button', { type: 'submit', class: 'primary' }, 'Save key'),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    await attempt(errors, async () => {
      const written = await writeSecret(name, value.value, 0, c.org_id === null);
      value.value = '';
      ctx.notify(`Key written (version ${written.version})`);
    });
  });
  return section(
    'CRM API key',
    facts([
      ['Kind', credential.kind],
      credential.header ? ['Header', credential.header] : null,
      credential.query ? ['Query parameter', credential.query] : null,
    ]),
    readOnly ? null : form,
  );
}

/** The connection's api, polling and webhook settings with secret names instead of references. */
function names(c) {
  const copy = (value) => (value === null || value === undefined ? null : JSON.parse(JSON.stringify(value)));
  const api = copy(c.api);
  if (api?.credential?.secret) api.credential.secret = secretName(api.credential.secret);
  if (api?.credential?.client_secret) api.credential.client_secret = secretName(api.credential.client_secret);
  const polling = copy(c.polling);
  if (polling?.push_secret) polling.push_secret = secretName(polling.push_secret);
  const webhook = copy(c.webhook);
  if (webhook?.capability_secret) webhook.capability_secret = secretName(webhook.capability_secret);
  return { api, polling, webhook };
}

function configSection(c, ctx, reload, readOnly) {
  const errors = h('div');
  const settingsText = Object.entries(c.settings ?? {}).map(([k, v]) => `${k}=${v}`).join('\n');
  const settings = h('textarea', { name: 'settings', rows: 3, value: settingsText });
  settings.value = settingsText;
  const orgs = h('input', { name: 'allowed_org_ids', value: c.allowed_org_ids.join(', ') });
  const jsonField = (name, value) => {
    const area = h('textarea', { name, rows: 4, class: 'mono', spellcheck: 'false' });
    area.value = value === null || value === undefined ? 'null' : JSON.stringify(value, null, 2);
    return area;
  };
  // The API shows secrets by reference; a patch names them (in the connection's scope).
  const named = names(c);
  const api = jsonField('api', named.api);
  const polling = jsonField('polling', named.polling);
  const webhook = jsonField('webhook', named.webhook);
  const enabled = h('input', { type: 'checkbox', name: 'enabled', id: `enabled-${c.id}`, checked: c.status === 'active' });
  const form = h(
    'form',
    { class: 'form', 'aria-label': 'Configuration' },
    h('div', { class: 'field check' }, enabled, h('label', { for: enabled.id }, 'Enabled (a disabled connection answers 404 to its CRM and is not polled)')),
    field('Allowed orgs', orgs, c.org_id ? `An org’s connection emits for its own org only: [] or ${c.org_id}.` : 'Orgs its events may be scoped to.'),
    field('Settings', settings, 'key=value, one a line; the adapter reads them.'),
    field('API access (JSON)', api, 'base_url, allowed_origins, rate_limit, credential; null: none. Secret names, not values.'),
    field('Polling (JSON)', polling, 'interval_secs (at least 60), max_pages, push_secret; null: not polled.'),
    field('Webhook guard (JSON)', webhook, 'allowed_ips, capability_secret, methods; null: none.'),
    errors,
    h('button', { type: 'submit', class: 'primary' }, 'Save configuration'),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    await attempt(errors, async () => {
      const parse = (area, label) => {
        try {
          return JSON.parse(area.value);
        } catch (error) {
          throw { title: `${label} is not JSON`, detail: error.message };
        }
      };
      const change = {};
      const wantEnabled = enabled.checked;
      if (wantEnabled !== (c.status === 'active')) change.enabled = wantEnabled;
      const allowed = orgs.value.split(',').map((o) => o.trim()).filter(Boolean);
      if (allowed.join(',') !== c.allowed_org_ids.join(',')) change.allowed_org_ids = allowed;
      if (settings.value.trim() !== settingsText) change.settings = parseSettings(settings.value);
      for (const [area, key, label] of [[api, 'api', 'API access'], [polling, 'polling', 'Polling'], [webhook, 'webhook', 'Webhook guard']]) {
        const value = parse(area, label);
        if (JSON.stringify(value) !== JSON.stringify(named[key] ?? null)) change[key] = value;
      }
      if (!Object.keys(change).length) {
        ctx.notify('Nothing changed');
        return;
      }
      await patch(`/v1/connections/${seg(c.id)}`, change);
      ctx.notify(`Saved: ${Object.keys(change).join(', ')}`);
      reload();
    });
  });
  // Only a connection that never took a delivery can be deleted (the API answers 409
  // otherwise: disable it instead). Two steps, so that one stray click deletes nothing.
  const removeErrors = h('div');
  let armed = false;
  const remove = action('Delete connection', async (button) => {
    if (!armed) {
      armed = true;
      button.textContent = 'Click again to delete it for good';
      return;
    }
    await attempt(removeErrors, async () => {
      await del(`/v1/connections/${seg(c.id)}`);
      ctx.notify(`Connection ${c.id} deleted`);
      ctx.navigate('/connections');
    });
  }, { class: 'danger' });
  return section(
    'Configuration',
    facts([['Org', c.org_id ?? 'platform level'], ['Created', time(c.created_at)], ['Updated', time(c.updated_at)]]),
    readOnly ? json({ allowed_org_ids: c.allowed_org_ids, settings: c.settings, api: c.api, polling: c.polling, webhook: c.webhook }) : [form, h('div', { class: 'actions' }, remove), removeErrors],
  );
}
