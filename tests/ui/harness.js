// What the browser tests stand on: the real `adapter-host` binary on a free loopback port
// with a temporary data directory, its JWT key and a test config; tokens minted by the binary
// itself; Standard Webhooks signatures; Debian's Chromium driven by playwright-core.

import { spawn, execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, writeFileSync, copyFileSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { CLIENT_ID, CLIENT_SECRET } from './fake-crm.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const TARGET = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(ROOT, 'target');
export const BINARY = process.env.ADAPTER_HOST_BIN ?? join(TARGET, 'debug', 'adapter-host');
const GUESTS = join(TARGET, 'guests', 'wasm32-wasip2', 'release');
export const ARTIFACTS = join(TARGET, 'ui-artifacts');
const DOCS_SCREENSHOTS = join(ROOT, 'docs', 'screenshots');

/** A component built by scripts/test-ui.sh (the same place the Rust tests build them). */
export function component(stem) {
  const path = join(GUESTS, `${stem}.wasm`);
  if (!existsSync(path)) throw new Error(`${path} is missing: run scripts/test-ui.sh, which builds it`);
  return path;
}

export function fixture(relative) {
  return join(ROOT, 'sample-adapters', relative);
}

/** The demo tenant's signing secret of host/demo/config.toml. */
export const DEMO_SECRET = 'whsec_ZGVtby1zaWduaW5nLXNlY3JldC1ub3QtZm9yLXByb2R1Y3Rpb24=';
const OTHER_ORG_SECRET = `whsec_${randomBytes(24).toString('base64')}`;

async function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** The API key the Zenoti-like connection's CRM accepts, once the page has written it. */
export const ZENOTI_KEY = `zk_${randomBytes(16).toString('hex')}`;

/**
 * A config like the demo's (host/demo/config.toml), plus an adapter and connection of another
 * org, and two platform-level polled connections (the poller's events name no org) to the
 * fake CRM at `crm`: one connected with Salesforce's OAuth, one with a Zenoti-style API key,
 * neither given its credential yet.
 */
function config(crm) {
  const wasm = component('champion_health');
  const poller = component('poller');
  const scope = 'tenants/demo-tenant/platform';
  const polled = (id, provider, api) => `
[[connections]]
id = "${id}"
tenant_id = "demo-tenant"
provider = "${provider}"
adapter = "poller"
signature = { scheme = "standard_webhooks" }
secret = "${scope}/poll-signing"
allowed_orgs = ["org-456"]
polling = { interval_secs = 86400, max_pages = 5 }
api = ${api}
`;
  return `
[[adapters]]
tenant_id = "demo-tenant"
name = "poller"
wasm = ${JSON.stringify(poller)}
${polled('sf-crm', 'salesforce', `{ allow_private = true, credential = { kind = "oauth2", provider = "salesforce", client_id = "${CLIENT_ID}", client_secret = "${scope}/salesforce/client-secret", login_url = "${crm.base}" } }`)}
${polled('zenoti-crm', 'zenoti', `{ base_url = "${crm.base}", allow_private = true, credential = { kind = "api_key", secret = "${scope}/zenoti/api-key", header = "Authorization", prefix = "apikey " } }`)}
[[secrets]]
name = "${scope}/poll-signing"
value = "whsec_${randomBytes(24).toString('base64')}"

[[secrets]]
name = "${scope}/salesforce/client-secret"
value = "${CLIENT_SECRET}"

[[adapters]]
tenant_id = "demo-tenant"
name = "champion-health"
wasm = ${JSON.stringify(wasm)}

[[connections]]
id = "demo-champion"
tenant_id = "demo-tenant"
provider = "custom"
adapter = "champion-health"
signature = { scheme = "standard_webhooks" }
secret = "demo-tenant/demo-champion/signing"
allowed_orgs = ["org-456"]

[[secrets]]
name = "demo-tenant/demo-champion/signing"
value = "${DEMO_SECRET}"

[[adapters]]
tenant_id = "demo-tenant"
org_id = "org-789"
name = "org-789-crm"
wasm = ${JSON.stringify(wasm)}

[[connections]]
id = "org-789-crm"
tenant_id = "demo-tenant"
org_id = "org-789"
provider = "hubspot"
adapter = "org-789-crm"
signature = { scheme = "standard_webhooks" }
secret = "demo-tenant/org-789/signing"
allowed_orgs = ["org-789"]

[[secrets]]
name = "demo-tenant/org-789/signing"
value = "${OTHER_ORG_SECRET}"
`;
}

/** Starts the host against the fake CRM `crm`; `stop()` ends it and removes its data. */
export async function startHost(crm) {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: cargo build -p adapter-host`);
  const dir = mkdtempSync(join(tmpdir(), 'adapter-host-ui-'));
  const data = join(dir, 'data');
  mkdirSync(data);
  const key = join(dir, 'jwt.key');
  writeFileSync(key, randomBytes(32).toString('base64'), { mode: 0o600 });
  const configFile = join(dir, 'config.toml');
  writeFileSync(configFile, config(crm));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const log = [];
  const child = spawn(
    BINARY,
    ['serve', '--config', configFile, '--data-dir', data, '--listen', `127.0.0.1:${port}`, '--public-url', base, '--jwt-key-file', key, '--oauth-return-url', `${base}/ui/`],
    { env: { ...process.env, ADAPTER_HOST_LOG: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  child.stderr.on('data', (chunk) => log.push(chunk.toString()));
  const exited = new Promise((done) => child.once('exit', done));
  for (let i = 0; ; i += 1) {
    if (child.exitCode !== null) throw new Error(`the host exited: ${log.join('')}`);
    try {
      const answer = await fetch(`${base}/readyz`);
      if (answer.ok) break;
    } catch {
      // Not listening yet.
    }
    if (i > 600) throw new Error(`the host did not become ready: ${log.join('')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const token = (...args) => execFileSync(BINARY, ['token', '--jwt-key-file', key, '--tenant', 'demo-tenant', ...args], { encoding: 'utf8' }).trim();
  return {
    base,
    log,
    token,
    async stop() {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** POSTs `body` to `url`, signed the Standard Webhooks way with `secret` (`whsec_<base64>`). */
export async function sendSigned(url, secret, body, id = `msg_${randomBytes(8).toString('hex')}`) {
  const timestamp = Math.floor(Date.now() / 1000).toString();
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const mac = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest('base64');
  const answer = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': timestamp, 'webhook-signature': `v1,${mac}` },
    body,
  });
  return { status: answer.status, body: await answer.json() };
}

export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

export async function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
}

/**
 * A page in a fresh context (its own sessionStorage), recording every console error and
 * uncaught exception, so that each test can check there were none.
 */
export async function openPage(browser, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(Number(process.env.UI_TIMEOUT_MS ?? 10000));
  const errors = [];
  // Chromium logs every 4xx answer as "Failed to load resource"; a test that provokes an API
  // error on purpose (to see its problem shown) names the status with `page.expectStatus()`.
  const expected = new Set();
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const failed = message.text().match(/^Failed to load resource: the server responded with a status of (\d+)/);
    const api = new URL(message.location().url || 'about:blank', 'http://x').pathname.startsWith('/v1/');
    if (failed && api && expected.has(Number(failed[1]))) return;
    errors.push(`console: ${message.text()} (${message.location().url})`);
  });
  page.expectStatus = (...statuses) => statuses.forEach((status) => expected.add(status));
  page.expectNothing = () => expected.clear();
  page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
  page.errors = errors;
  page.closeAll = () => context.close();
  return page;
}

/** Signs in on the page's sign-in form with `token` (and `org` for a platform-level one). */
export async function signIn(page, base, token, org) {
  await page.goto(`${base}/ui/`);
  await page.getByLabel('Token', { exact: true }).fill(token);
  if (org) await page.getByLabel('Org (platform-level tokens only)').fill(org);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Connections', level: 1 }).waitFor();
}

/**
 * A screenshot into target/ui-artifacts/, and into docs/screenshots/ (the README's) when
 * UI_SCREENSHOTS=docs.
 */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  if (process.env.UI_SCREENSHOTS === 'docs') {
    mkdirSync(DOCS_SCREENSHOTS, { recursive: true });
    copyFileSync(path, join(DOCS_SCREENSHOTS, `${name}.png`));
  }
}

export function read(path) {
  return readFileSync(path);
}
