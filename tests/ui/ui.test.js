// The web page at /ui, end to end: headless Chromium against the real binary. The tests run
// in order and build on each other (an adapter, a connection, its deliveries), as a tenant
// admin would use the page; each checks that the page logged no console error.

import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { DEMO_SECRET, ZENOTI_KEY, component, fixture, launch, openPage, read, screenshot, sendSigned, signIn, startHost } from './harness.js';
import { startFakeCrm } from './fake-crm.js';

let host;
let crm;
let browser;
let admin; // the org-456 tenant admin's page, kept across tests
const opened = [];
const CONNECTION_SECRET = 'whsec_dWktdGVzdC1jb25uZWN0aW9uLXNlY3JldC0wMDAx';
const ROTATED_SECRET = 'whsec_dWktdGVzdC1yb3RhdGVkLXNlY3JldC0wMDAwMDAy';
let connectionId;
let webhookUrl;

before(async () => {
  crm = await startFakeCrm();
  [host, browser] = await Promise.all([startHost(crm), launch()]);
  admin = await openPage(browser);
  opened.push(admin);
});

after(async () => {
  await browser?.close();
  await host?.stop();
  await crm?.stop();
});

afterEach(() => {
  for (const page of opened) {
    page.expectNothing();
    const errors = page.errors.splice(0);
    assert.deepEqual(errors, [], 'the page logged no console error');
  }
});

async function page(viewport) {
  const p = await openPage(browser, viewport);
  opened.push(p);
  return p;
}

const orgAdminToken = () => host.token('--org', 'org-456', '--role', 'tenant_admin', '--subject', 'ada@org-456');

test('signs in with a pasted token and lists the connections with their health', async () => {
  await admin.goto(`${host.base}/ui/`);
  await admin.getByRole('heading', { name: 'Sign in' }).waitFor();
  // Not a token: said so, nothing stored.
  await admin.getByLabel('Token', { exact: true }).fill('not a token');
  await admin.getByRole('button', { name: 'Sign in' }).click();
  await admin.getByRole('alert').filter({ hasText: 'Not a token' }).waitFor();
  await signIn(admin, host.base, orgAdminToken());
  const row = admin.getByRole('row').filter({ hasText: 'demo-champion' });
  await row.waitFor();
  assert.match(await row.innerText(), /platform level/);
  assert.match(await admin.locator('.session').innerText(), /ada@org-456 · demo-tenant · tenant_admin/);
  // Another org's connection is not listed.
  assert.equal(await admin.getByRole('row').filter({ hasText: 'org-789-crm' }).count(), 0);
  await screenshot(admin, 'connections');
});

test('creates an adapter, uploads versions with the check and compile shown, and refuses a non-component with its problem', async () => {
  await admin.getByRole('link', { name: 'Adapters' }).click();
  await admin.getByLabel('New adapter name').fill('acme-crm');
  await admin.getByRole('button', { name: 'Create adapter' }).click();
  await admin.getByRole('heading', { name: 'Adapter acme-crm' }).waitFor();

  // Something that is not a component: the API's problem, title and detail.
  admin.expectStatus(400);
  const junk = join(tmpdir(), 'not-a-component.wasm');
  writeFileSync(junk, 'this is text, not WebAssembly');
  await admin.getByLabel('Component (.wasm)').setInputFiles(junk);
  await admin.getByRole('button', { name: 'Upload version' }).click();
  const refused = admin.getByRole('alert').filter({ hasText: 'Bad Request' });
  await refused.waitFor();
  assert.ok((await refused.locator('.problem-detail').innerText()).length > 10, 'the detail says why');

  await admin.getByLabel('Component (.wasm)').setInputFiles(component('champion_health'));
  await admin.getByRole('button', { name: 'Upload version' }).click();
  await admin.getByText('Version 1 is ready.').waitFor();
  // What the check found it declares, with its decimal fields.
  const declared = admin.locator('section').filter({ hasText: 'Version 1' }).first();
  assert.match(await declared.innerText(), /member\.enrolled/);
  assert.match(await declared.innerText(), /decimals:/);
  // ... the world it implements, and the interfaces it imports.
  assert.match(await declared.innerText(), /world 0\.\d+\.0/);
  assert.match(await declared.innerText(), /crm:adapter\/|wasi:/);

  await admin.getByLabel('Component (.wasm)').setInputFiles(component('hostile'));
  await admin.getByRole('button', { name: 'Upload version' }).click();
  await admin.getByText('Version 2 is ready.').waitFor();
  await admin.getByRole('row').filter({ hasText: 'v2' }).waitFor();
  await screenshot(admin, 'adapter');
});

test('creates a connection with its signing secret, copies the webhook URL and rotates the secret with grace', async () => {
  await admin.getByRole('link', { name: 'Connections' }).click();
  await admin.getByRole('link', { name: 'New connection' }).click();
  await admin.getByLabel('Adapter', { exact: true }).selectOption({ label: 'acme-crm (v2)' });
  await admin.getByLabel('Adapter version').fill('1');
  await admin.getByLabel('Secret name').fill('acme/signing');
  await admin.getByLabel('Secret value').fill(CONNECTION_SECRET);
  await admin.getByLabel('Settings').fill('region=eu');
  await admin.getByRole('button', { name: 'Create connection' }).click();
  await admin.getByRole('heading', { name: /^Connection / }).waitFor();
  connectionId = (await admin.getByRole('heading', { level: 1 }).innerText()).replace('Connection ', '').trim();
  webhookUrl = await admin.getByLabel('Webhook URL (give it to the CRM)').inputValue();
  assert.equal(webhookUrl, `${host.base}/v1/hooks/${connectionId}`);
  await admin.getByRole('button', { name: 'Copy' }).click();
  await admin.locator('.copied').filter({ hasText: /Copied|Selected/ }).waitFor();
  assert.match(await admin.locator('section').filter({ hasText: 'Signing secret' }).innerText(), /acme\/signing/);
  // The secret is never shown; a rotation keeps the old one valid for the grace period.
  assert.equal(await admin.getByText(CONNECTION_SECRET).count(), 0);
  await admin.getByLabel('New value').fill(ROTATED_SECRET);
  await admin.getByLabel('Grace period (seconds)').fill('600');
  await admin.getByRole('button', { name: 'Rotate secret' }).click();
  await admin.getByRole('status').filter({ hasText: 'version 2' }).waitFor();
  assert.match(await admin.getByRole('status').innerText(), /verifies for 600 s more/);
  await screenshot(admin, 'connection');
});

test('a signed delivery shows in the deliveries list, its event with decimals as strings', async () => {
  const body = read(fixture('champion-health/fixtures/enrollment-1kb.json'));
  // Signed with the previous secret, still valid in its grace period.
  const sent = await sendSigned(webhookUrl, CONNECTION_SECRET, body);
  assert.equal(sent.status, 200, JSON.stringify(sent.body));
  assert.equal(sent.body.status, 'processed');
  await admin.getByRole('link', { name: 'Its deliveries' }).click();
  const row = admin.getByRole('row').filter({ hasText: sent.body.delivery_id });
  await row.waitFor();
  assert.match(await row.innerText(), /processed/);
  await screenshot(admin, 'deliveries');

  await admin.getByRole('link', { name: 'Events', exact: true }).click();
  await admin.getByRole('link', { name: 'member.enrolled' }).first().click();
  await admin.getByRole('heading', { name: 'Event member.enrolled' }).waitFor();
  const decimals = admin.locator('section').filter({ hasText: 'Payload' }).locator('.j-decimal');
  assert.ok((await decimals.count()) > 0, 'decimal strings are marked');
  assert.match(await decimals.first().innerText(), /^"-?\d+\.\d+"$/, 'shown with their quotes: strings');
  await screenshot(admin, 'event');
});

test('a delivery the adapter fails on is kept with its reason, and redriven after rolling back the version', async () => {
  await admin.goto(`${host.base}/ui/#/connections/${connectionId}`);
  await admin.getByLabel('Switch to').selectOption('2');
  await admin.getByRole('button', { name: 'Switch version' }).click();
  await admin.getByRole('status').filter({ hasText: 'Now running version 2' }).waitFor();
  await admin.getByText('version 2', { exact: true }).waitFor();

  // Version 2 (a hostile test guest) refuses the champion's JSON as a bad request: the
  // delivery is rejected, kept for redrive, and answered 202.
  const failed = [];
  for (const name of ['enrollment-updated.json', 'agent-created.json']) {
    const sent = await sendSigned(webhookUrl, ROTATED_SECRET, read(fixture(`champion-health/fixtures/${name}`)));
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    assert.equal(sent.body.status, 'rejected');
    failed.push(sent.body.delivery_id);
  }
  await admin.goto(`${host.base}/ui/#/deliveries?connection_id=${connectionId}&status=rejected`);
  await admin.getByRole('row').filter({ hasText: failed[0] }).waitFor();
  await admin.getByRole('link', { name: failed[0] }).click();
  await admin.getByRole('heading', { name: 'Why it failed' }).waitFor();
  const firstRun = await admin.locator('main').innerText();
  assert.match(firstRun, /Invocation 1: adapter error/);
  assert.match(firstRun, /unknown command/, 'the adapter\'s own reason');
  await screenshot(admin, 'delivery-failed');

  // Roll back to version 1, then redrive: this one from its page, the rest by the filter.
  await admin.goto(`${host.base}/ui/#/connections/${connectionId}`);
  await admin.getByRole('button', { name: 'Roll back to v1' }).click();
  await admin.getByRole('status').filter({ hasText: 'Now running version 1' }).waitFor();
  await admin.goto(`${host.base}/ui/#/deliveries/${failed[0]}`);
  await admin.getByRole('button', { name: 'Redrive' }).click();
  await admin.getByRole('status').filter({ hasText: `Delivery ${failed[0]} redriven: processed` }).waitFor();
  await admin.locator('.title-row .badge').filter({ hasText: 'processed' }).waitFor();
  assert.match(await admin.locator('main').innerText(), /Invocation 2: accepted/);

  await admin.goto(`${host.base}/ui/#/deliveries?connection_id=${connectionId}&status=rejected`);
  await admin.getByRole('row').filter({ hasText: failed[1] }).waitFor();
  await admin.getByRole('button', { name: 'Redrive every rejected delivery of this filter' }).click();
  await admin.getByText('1 redriven, 0 refused.').waitFor();
  await admin.getByText('No delivery matches.').waitFor();
});

test('a replay is explained before it starts, refused past 7 days, and followed to its end', async () => {
  await admin.getByRole('link', { name: 'Replays' }).click();
  const rules = admin.getByRole('note');
  assert.match(await rules.innerText(), /at most 7 days/);
  assert.match(await rules.innerText(), /at most 10 may start in an hour/);
  const from = admin.getByLabel('From');
  const keep = await from.inputValue();
  await from.fill('2020-01-01T00:00');
  await admin.getByText(/a replay covers at most 7 days/).waitFor();
  await admin.getByRole('button', { name: 'Start replay' }).click();
  await admin.getByRole('alert').filter({ hasText: 'Not a valid range' }).waitFor();
  await from.fill(keep);
  await admin.getByRole('button', { name: 'Start replay' }).click();
  const progress = admin.locator('section').filter({ hasText: /^Replay / });
  await progress.locator('.badge').filter({ hasText: 'done' }).waitFor();
  // Status, range, then the events replayed.
  const replayed = Number((await progress.locator('dd').nth(2).innerText()).trim());
  assert.ok(replayed >= 1, `replayed ${replayed} events`);
  await admin.getByRole('row').filter({ hasText: 'done' }).first().waitFor();
  await screenshot(admin, 'replays');
});

test('a subscriber is added with its secret, and its dead deliveries listed for retry', async () => {
  await admin.getByRole('link', { name: 'Subscribers' }).click();
  await admin.getByLabel('URL').fill('http://127.0.0.1:9/hook');
  await admin.getByLabel('Event types').fill('member.*');
  await admin.getByLabel('Signing secret name').fill('subscribers/calculator');
  await admin.getByLabel('Signing secret value').fill(DEMO_SECRET);
  await admin.getByRole('button', { name: 'Add subscriber' }).click();
  await admin.getByRole('link', { name: 'http://127.0.0.1:9/hook' }).click();
  await admin.getByRole('heading', { name: 'Subscriber', level: 1 }).waitFor();
  await admin.getByText('No dead delivery: nothing to retry.').waitFor();
  await admin.getByLabel('Show').selectOption('');
  await admin.getByRole('table', { name: 'Subscriber deliveries' }).or(admin.getByText('No delivery matches.')).waitFor();
});

test('a platform admin connects a Salesforce connection with OAuth and polls it now; writes a Zenoti API key, never shown, and polls with it', async () => {
  // Platform-level connections (their events name no org): an org's admin reads them only...
  await admin.goto(`${host.base}/ui/#/connections/sf-crm`);
  await admin.getByRole('heading', { name: 'CRM connection (OAuth 2.0)' }).waitFor();
  assert.equal(await admin.getByRole('button', { name: 'Connect to Salesforce' }).count(), 0);
  // ... a platform-level token changes them.
  const platform = await page();
  await signIn(platform, host.base, host.token('--role', 'tenant_admin', '--subject', 'ops@platform'), 'org-456');
  await platform.goto(`${host.base}/ui/#/connections/sf-crm`);
  const oauth = platform.locator('section').filter({ hasText: 'CRM connection (OAuth 2.0)' });
  await oauth.getByText('never connected').waitFor();
  // To the provider's consent page and back: the host's callback returns to the page.
  await platform.getByRole('button', { name: 'Connect to Salesforce' }).click();
  await platform.getByRole('heading', { name: 'Allow adapter-host to read your CRM?' }).waitFor();
  assert.equal(crm.seen.authorize.code_challenge_method, 'S256', 'PKCE');
  await platform.getByRole('link', { name: 'Allow' }).click();
  await platform.getByRole('status').filter({ hasText: 'Connected sf-crm to its CRM' }).waitFor();
  await oauth.locator('.badge').filter({ hasText: 'connected' }).waitFor();
  assert.equal(crm.seen.tokenExchanges, 1);
  assert.ok((await platform.locator('main').innerText()).includes(crm.base), 'the instance named when connecting is the API base');

  const polls = platform.getByRole('table', { name: 'Poll runs' });
  await platform.getByRole('button', { name: 'Poll now' }).click();
  await platform.getByRole('status').filter({ hasText: /^Poll run .* started$/ }).waitFor();
  const manual = polls.getByRole('row').filter({ hasText: 'manual' }).filter({ hasText: 'done' });
  await manual.waitFor();
  assert.match(await platform.locator('section').filter({ hasText: 'Pages per run' }).innerText(), /Running now\s+no/);
  // Started, Trigger, Status, Pages, Events: one event per item.
  assert.equal((await manual.locator('td').nth(4).innerText()).trim(), String(crm.items.length));
  assert.equal(crm.seen.items.at(-1), 'bearer', 'the request carried the access token');
  await screenshot(platform, 'connection-oauth');
  await platform.getByRole('button', { name: 'Disconnect' }).click();
  await platform.getByRole('status').filter({ hasText: 'Disconnected; the grant was revoked' }).waitFor();
  assert.equal(crm.seen.revoked, 1);

  crm.acceptApiKey(ZENOTI_KEY);
  await platform.goto(`${host.base}/ui/#/connections/zenoti-crm`);
  await platform.getByRole('heading', { name: 'CRM API key' }).waitFor();
  await platform.getByLabel('API key', { exact: true }).fill(ZENOTI_KEY);
  await platform.getByRole('button', { name: 'Save key' }).click();
  await platform.getByRole('status').filter({ hasText: 'Key written (version 1)' }).waitFor();
  assert.equal(await platform.getByLabel('API key', { exact: true }).inputValue(), '', 'the field is cleared');
  await platform.getByRole('button', { name: 'Poll now' }).click();
  const withKey = polls.getByRole('row').filter({ hasText: 'manual' }).filter({ hasText: 'done' });
  await withKey.waitFor();
  assert.equal((await withKey.locator('td').nth(4).innerText()).trim(), String(crm.items.length));
  assert.equal(crm.seen.items.at(-1), 'api_key', 'the request carried the key the page wrote');
  const shown = await platform.evaluate(() => document.documentElement.outerHTML);
  assert.ok(!shown.includes(ZENOTI_KEY), 'the key is nowhere on the page');
});

test('a platform admin picks an org from the tenant\'s orgs, switches with X-Org-Id and sees each org in turn', async () => {
  const chooser = await page();
  await chooser.goto(`${host.base}/ui/`);
  await chooser.getByLabel('Token', { exact: true }).fill(host.token('--role', 'viewer', '--subject', 'auditor@platform'));
  await chooser.getByRole('button', { name: 'Sign in' }).click();
  await chooser.getByRole('heading', { name: 'Choose an org' }).waitFor();
  const orgs = chooser.getByRole('table', { name: 'The tenant’s orgs' });
  const org456 = orgs.getByRole('row').filter({ hasText: 'org-456' });
  // The connection, adapter and subscriber made above are its own; demo-champion, sf-crm and
  // zenoti-crm (platform level) allow it.
  assert.match(await org456.innerText(), /1 connection, allowed by 3 connections, 1 adapter, 1 subscriber/);
  assert.match(await orgs.getByRole('row').filter({ hasText: 'org-789' }).innerText(), /1 connection, 1 adapter/);
  await chooser.getByRole('button', { name: 'Act in org org-789' }).click();
  await chooser.getByRole('row').filter({ hasText: 'org-789-crm' }).waitFor();
  await chooser.getByRole('status').filter({ hasText: 'Acting in org org-789' }).waitFor();
  // The switcher offers the tenant's orgs.
  await chooser.waitForFunction(() => document.querySelectorAll('.org-switcher datalist option').length === 2);
  const offered = await chooser.locator('.org-switcher datalist option').evaluateAll((options) => options.map((o) => o.value));
  assert.deepEqual(offered, ['org-456', 'org-789']);
});

test('a platform admin switches orgs with X-Org-Id and sees each org in turn', async () => {
  const platform = await page();
  await signIn(platform, host.base, host.token('--role', 'tenant_admin', '--subject', 'root@platform'), 'org-456');
  assert.match(await platform.locator('.session').innerText(), /platform-level token/);
  await platform.getByRole('row').filter({ hasText: connectionId }).waitFor();
  assert.equal(await platform.getByRole('row').filter({ hasText: 'org-789-crm' }).count(), 0);
  await platform.getByLabel('Org (X-Org-Id)').fill('org-789');
  await platform.getByRole('button', { name: 'Switch org' }).click();
  await platform.getByRole('row').filter({ hasText: 'org-789-crm' }).waitFor();
  assert.equal(await platform.getByRole('row').filter({ hasText: connectionId }).count(), 0);
  await platform.getByRole('row').filter({ hasText: 'demo-champion' }).waitFor();
  await screenshot(platform, 'org-switcher');
});

test('an org user is denied another org, and a viewer a write, each shown as its problem', async () => {
  // The API answers another org's connection with 404 (no existence leak); the page says so.
  admin.expectStatus(404);
  await admin.goto(`${host.base}/ui/#/connections/org-789-crm`);
  const denied = admin.getByRole('alert');
  await denied.waitFor();
  assert.match(await denied.locator('.problem-title').innerText(), /Not Found/);
  assert.match(await denied.locator('.problem-detail').innerText(), /no connection `org-789-crm`/);
  assert.equal(await admin.getByLabel('Org (X-Org-Id)').count(), 0, 'an org token has no org switcher');

  const viewer = await page();
  viewer.expectStatus(403);
  await signIn(viewer, host.base, host.token('--org', 'org-456', '--role', 'viewer'));
  await viewer.goto(`${host.base}/ui/#/connections/${connectionId}`);
  await viewer.getByLabel('New value').fill('whsec_dmlld2VyLWNhbm5vdC13cml0ZQ==');
  await viewer.getByRole('button', { name: 'Rotate secret' }).click();
  const forbidden = viewer.getByRole('alert').filter({ hasText: 'Forbidden' });
  await forbidden.waitFor();
  assert.match(await forbidden.innerText(), /needs the tenant_admin role/);
  await screenshot(viewer, 'problem');

  // An expired or foreign token: back to sign-in, with the 401's reason.
  const stranger = await page();
  stranger.expectStatus(401);
  await stranger.goto(`${host.base}/ui/`);
  await stranger.evaluate(() => sessionStorage.setItem('adapter-host.token', 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4Iiwib3JnX2lkIjoibyJ9.c2ln'));
  await stranger.reload();
  await stranger.getByRole('heading', { name: 'Sign in' }).waitFor();
  await stranger.getByRole('alert').filter({ hasText: 'Unauthorized' }).waitFor();
});

test('a payload whose decimal turns into a number shows as drift on its connection, with the delivery', async () => {
  const body = (i, amount) => JSON.stringify({ type: 'deal.won', event_id: `evt-${i}`, data: { deal_id: 'D-1', amount } });
  for (let i = 0; i < 20; i += 1) await sendSigned(webhookUrl, ROTATED_SECRET, body(i, `${i}.50`));
  const turned = await sendSigned(webhookUrl, ROTATED_SECRET, body(20, 12.5));
  const drift = admin.getByRole('table', { name: 'Payload drift' }).getByRole('row').filter({ hasText: '/data/amount' });
  // Judged off the webhook path: reload until it shows (bounded by the timeout).
  for (let i = 0; i < 40 && !(await drift.count()); i += 1) {
    await admin.goto(`${host.base}/ui/#/connections/${connectionId}?t=${i}`);
    await admin.getByRole('heading', { name: 'Payload drift' }).waitFor();
  }
  assert.match(await drift.innerText(), /webhook:deal\.won/);
  assert.match(await drift.innerText(), /decimal sent as a number/);
  assert.match(await drift.innerText(), /string → number/);
  await drift.getByRole('link', { name: turned.body.delivery_id }).click();
  await admin.getByRole('heading', { name: /^Delivery / }).waitFor();
});

test('works at phone width without sideways scrolling, and by keyboard', async () => {
  const phone = await page({ width: 390, height: 844 });
  await signIn(phone, host.base, orgAdminToken());
  await phone.getByRole('row').filter({ hasText: connectionId }).waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  await screenshot(phone, 'connections-phone');
  // Keyboard: a page's heading has the focus; Tab reaches its first action, Enter follows it.
  assert.equal(await phone.evaluate(() => document.activeElement?.tagName), 'H1');
  await phone.keyboard.press('Tab');
  assert.equal(await phone.evaluate(() => document.activeElement?.textContent), 'New connection');
  await phone.keyboard.press('Enter');
  await phone.getByRole('heading', { name: 'New connection', level: 1 }).waitFor();
});

test('a person erased through the identity map reads as erased on its event and its delivery', async () => {
  const token = orgAdminToken();
  const call = (path, init = {}) =>
    fetch(`${host.base}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } });
  const found = await (await call('/v1/identities?source=champion_health&external_id=M-88412')).json();
  assert.equal(found.items.length, 1, JSON.stringify(found));
  const eventId = found.items[0].first_event_id;
  const event = await (await call(`/v1/events/${encodeURIComponent(eventId)}`)).json();
  const erased = await call('/v1/erasure/subjects', {
    method: 'POST',
    body: JSON.stringify({ source: 'champion_health', external_id: 'M-88412' }),
  });
  assert.equal(erased.status, 200, await erased.text());

  await admin.goto(`${host.base}/ui/#/events/${encodeURIComponent(eventId)}`);
  await admin.getByRole('heading', { name: /^Event / }).waitFor();
  await admin.getByText('The payload was erased').waitFor();
  await admin.getByRole('link', { name: event.delivery_id }).click();
  await admin.getByText('Its body was erased').waitFor();
  assert.match(await admin.getByText(/^erased, sha256/).innerText(), /erased/);
  assert.equal(await admin.getByRole('button', { name: 'Redrive' }).count(), 0, 'an erased body cannot be redriven');
});

test('personal data an adapter declares is masked on the event page unless the role may see it', async () => {
  const token = orgAdminToken();
  const call = (path, init = {}) =>
    fetch(`${host.base}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...init.headers } });
  // The hostile test guest declares contact.created's /email and /phones/* as personal data.
  const adapter = await (await call('/v1/adapters', { method: 'POST', body: JSON.stringify({ name: 'people' }) })).json();
  const uploaded = await call(`/v1/adapters/${adapter.id}/versions`, {
    method: 'POST',
    headers: { 'content-type': 'application/wasm' },
    body: read(component('hostile')),
  });
  assert.equal(uploaded.status, 201, await uploaded.text());
  const secret = 'whsec_dWktdGVzdC1wZW9wbGUtc2lnbmluZy1zZWNyZXQ=';
  assert.equal((await call('/v1/secrets/people-signing', { method: 'PUT', body: JSON.stringify({ value: secret }) })).status, 200);
  const connection = await (await call('/v1/connections', {
    method: 'POST',
    body: JSON.stringify({ provider: 'custom', adapter_id: adapter.id, signature: { scheme: 'standard_webhooks' }, secret: 'people-signing' }),
  })).json();
  const email = 'lin.person@example.test';
  const sent = await sendSigned(connection.webhook_url, secret, `person\n${email}\n+1 555 0199\norg-456`);
  assert.equal(sent.body.events, 1, JSON.stringify(sent.body));
  const events = await (await call(`/v1/events?connection_id=${encodeURIComponent(connection.id)}`)).json();
  const eventId = events.items[0].event_id;

  await admin.goto(`${host.base}/ui/#/events/${encodeURIComponent(eventId)}`);
  await admin.getByText('Personal data masked (your role may not see it): /email, /phones/0.').waitFor();
  assert.ok((await admin.getByText('~masked').count()) > 0, 'the values read ~masked');
  assert.ok(!(await admin.content()).includes(email), 'the email is nowhere on the page');

  const reader = await page();
  await signIn(reader, host.base, host.token('--org', 'org-456', '--role', 'viewer', '--pii-reader'));
  await reader.goto(`${host.base}/ui/#/events/${encodeURIComponent(eventId)}`);
  await reader.getByRole('heading', { name: 'Event contact.created' }).waitFor();
  await reader.getByText(email).first().waitFor();
  assert.equal(await reader.getByText('Personal data masked').count(), 0);
});
