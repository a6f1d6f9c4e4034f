// Adapters and their immutable versions: upload a component (checked against the world,
// then compiled, with its progress shown), see what it declares.

import { call, get, post, seg, session, withQuery } from '../api.js';
import { facts, field, h, replace, section, table } from '../dom.js';
import { attempt, badge, bytes, json, pager, problem, time } from '../format.js';

export async function list(view, ctx) {
  const errors = h('div');
  const name = h('input', { name: 'name', required: true, pattern: '[A-Za-z0-9._\\-]{1,128}', autocomplete: 'off' });
  const platform = session.platform ? h('input', { type: 'checkbox', name: 'platform_level', id: 'adapter-platform' }) : null;
  const form = h(
    'form',
    { class: 'form inline', 'aria-label': 'New adapter' },
    field('New adapter name', name, 'A-Z a-z 0-9 . _ -, unique in the tenant'),
    platform ? h('div', { class: 'field check' }, platform, h('label', { for: 'adapter-platform' }, 'Platform level')) : null,
    h('button', { type: 'submit', class: 'primary' }, 'Create adapter'),
    errors,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    await attempt(errors, async () => {
      const adapter = await post('/v1/adapters', { name: name.value.trim(), platform_level: platform?.checked || undefined });
      ctx.notify(`Adapter ${adapter.name} created: upload its first version`);
      ctx.navigate(`/adapters/${seg(adapter.id)}`);
    });
  });
  const rows = pager(
    'adapters',
    (cursor) => get('/v1/adapters', { limit: 50, cursor }),
    (items) =>
      table(
        'Adapters',
        [
          ['Name', (a) => h('a', { href: `#/adapters/${seg(a.id)}` }, a.name)],
          ['Latest ready version', (a) => (a.latest_version ? `v${a.latest_version}` : 'none')],
          ['Org', (a) => a.org_id ?? 'platform level'],
          ['Created', (a) => time(a.created_at)],
          ['Id', (a) => h('code', {}, a.id)],
        ],
        items,
        'No adapter yet.',
      ),
  );
  replace(view, h('h1', {}, 'Adapters'), h('p', { class: 'lede' }, 'WebAssembly components that turn what a CRM sends into integration events. Versions are immutable; a connection runs one, switched in one call.'), section('Create', form), rows);
  await rows.ready;
}

/** What a version declares: its own name and version, and each event type with its decimals. */
function declared(v) {
  const info = v.info ?? {};
  if (!info.event_types) return v.status === 'compiling' ? 'known once compiled' : '—';
  return h(
    'div',
    {},
    h('div', {}, `${info.name ?? '?'} ${info.version ?? ''} for ${info.provider ?? '?'}`),
    h(
      'ul',
      { class: 'plain' },
      info.event_types.map((t) =>
        h('li', {}, h('code', {}, t.name), t.decimal_fields?.length ? [' decimals: ', t.decimal_fields.map((f) => h('code', {}, f))] : null),
      ),
    ),
  );
}

/** The world a version implements and what it imports, as the check found them. */
function imports(v) {
  if (!v.world) return v.status === 'compiling' ? 'known once compiled' : '—';
  return h(
    'div',
    {},
    h('div', {}, `world ${v.world}`),
    v.imports?.length ? h('ul', { class: 'plain' }, v.imports.map((name) => h('li', {}, h('code', {}, name)))) : h('div', {}, 'imports nothing'),
  );
}

/** POSTs the file with upload progress (fetch has none), answering `{status, data}`. */
function upload(path, file, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('authorization', `Bearer ${session.token}`);
    if (session.platform && session.org) xhr.setRequestHeader('x-org-id', session.org);
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) progress(e.loaded / e.total);
    });
    xhr.addEventListener('load', () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = { title: xhr.statusText, detail: xhr.responseText };
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve({ status: xhr.status, data });
      else reject(Object.assign(new Error(data.detail), { title: data.title ?? `HTTP ${xhr.status}`, detail: data.detail, status: xhr.status, requestId: data.request_id }));
    });
    xhr.addEventListener('error', () => reject({ title: 'The host did not answer', detail: 'the upload broke off' }));
    xhr.send(file);
  });
}

export async function detail(view, ctx) {
  const [id] = ctx.params;
  const adapter = await get(`/v1/adapters/${seg(id)}`);
  const errors = h('div');
  const result = h('div', { 'aria-live': 'polite' });
  const file = h('input', { type: 'file', name: 'component', accept: '.wasm,application/wasm', required: true });
  const limits = h('input', { name: 'limits', placeholder: 'deadline_ms=50&fuel=2000000', autocomplete: 'off' });
  const bar = h('progress', { max: 1, value: 0, hidden: true, 'aria-label': 'Upload progress' });
  const stage = h('p', { class: 'stage', 'aria-live': 'polite' });
  const form = h(
    'form',
    { class: 'form', 'aria-label': 'Upload a version' },
    field('Component (.wasm)', file, 'Checked against the adapter world (imports, exports, size), then compiled.'),
    field('Limits (optional)', limits, 'Query parameters, e.g. deadline_ms=50&fuel=2000000; within the platform maximums.'),
    h('button', { type: 'submit', class: 'primary' }, 'Upload version'),
    bar,
    stage,
    errors,
    result,
  );
  const versions = pager(
    'versions',
    (cursor) => get(`/v1/adapters/${seg(id)}/versions`, { limit: 100, cursor }),
    (items) =>
      table(
        'Versions',
        [
          ['Version', (v) => `v${v.version}`],
          ['Status', (v) => [badge(v.status), v.failure ? h('div', { class: 'why' }, v.failure) : null]],
          ['Declares', declared],
          ['Imports', imports],
          ['Size', (v) => bytes(v.size_bytes)],
          ['sha256', (v) => h('code', { title: v.sha256 }, v.sha256.slice(0, 12))],
          ['Limits', (v) => (v.limits && Object.keys(v.limits).length ? json(v.limits) : 'defaults')],
          ['Uploaded', (v) => [time(v.created_at), ` by ${v.created_by}`]],
        ],
        [...items].reverse(),
        'No version yet: upload a component.',
      ),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = form.querySelector('button');
    button.disabled = true;
    replace(result);
    bar.hidden = false;
    bar.value = 0;
    stage.textContent = 'Uploading…';
    const ok = await attempt(errors, async () => {
      const [chosen] = file.files;
      if (!chosen) throw { title: 'No file', detail: 'Choose a .wasm component.' };
      const query = Object.fromEntries(new URLSearchParams(limits.value.trim()));
      const answer = await upload(withQuery(`/v1/adapters/${seg(id)}/versions`, query), chosen, (share) => {
        bar.value = share;
      });
      let version = answer.data;
      stage.textContent = answer.status === 200 ? 'The same component with the same limits: the existing version.' : 'Checked; compiling…';
      // A slow compile is answered `compiling`: follow the version until it ends.
      for (let i = 0; version.status === 'compiling' && i < 600 && ctx.alive(); i += 1) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        version = (await call('GET', `/v1/adapters/${seg(id)}/versions/${version.version}`)).data;
        stage.textContent = `Compiling… (${Math.round((i + 1) / 2)} s)`;
      }
      stage.textContent = version.status === 'ready' ? `Version ${version.version} is ready.` : `Version ${version.version}: ${version.status}`;
      replace(
        result,
        section(
          `Version ${version.version}`,
          version.status === 'failed' ? problem({ title: 'Failed to compile', detail: version.failure }) : null,
          facts([
            ['Status', badge(version.status)],
            ['Declares', declared(version)],
            ['Imports', imports(version)],
            ['Size', bytes(version.size_bytes)],
            ['sha256', h('code', {}, version.sha256)],
          ]),
          h('p', {}, 'Switch a connection to it on the connection’s page.'),
        ),
      );
      file.value = '';
      await versions.reload();
    });
    if (!ok) stage.textContent = 'Refused.';
    bar.hidden = true;
    button.disabled = false;
  });
  replace(
    view,
    h('p', { class: 'crumbs' }, h('a', { href: '#/adapters' }, 'Adapters'), ' / ', adapter.name),
    h('h1', {}, `Adapter ${adapter.name}`),
    facts([
      ['Id', h('code', {}, adapter.id)],
      ['Org', adapter.org_id ?? 'platform level'],
      ['Latest ready version', adapter.latest_version ? `v${adapter.latest_version}` : 'none'],
    ]),
    section('Upload a version', form),
    h('h2', {}, 'Versions'),
    versions,
  );
  await versions.ready;
}
