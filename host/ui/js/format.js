// How values look: times, sizes, statuses, JSON (decimal strings marked), problems, pages.

import { h, replace } from './dom.js';

/** A Unix-millisecond time, in the reader's locale, with the exact UTC time as a tooltip. */
export function time(ms) {
  if (ms === null || ms === undefined) return '—';
  const date = new Date(ms);
  return h('time', { datetime: date.toISOString(), title: date.toISOString() }, date.toLocaleString());
}

/** How long ago `ms` was, in words. */
export function ago(ms) {
  if (ms === null || ms === undefined) return 'never';
  const secs = Math.round((Date.now() - ms) / 1000);
  const words =
    secs < 60 ? `${Math.max(secs, 0)} s ago` : secs < 3600 ? `${Math.round(secs / 60)} min ago` : secs < 86400 ? `${Math.round(secs / 3600)} h ago` : `${Math.round(secs / 86400)} d ago`;
  return h('time', { datetime: new Date(ms).toISOString(), title: new Date(ms).toLocaleString() }, words);
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function micros(us) {
  if (us === null || us === undefined) return '—';
  return us < 1000 ? `${us} µs` : `${(us / 1000).toFixed(1)} ms`;
}

export function seconds(secs) {
  if (secs === null || secs === undefined) return '—';
  if (secs % 3600 === 0) return `every ${secs / 3600} h`;
  if (secs % 60 === 0) return `every ${secs / 60} min`;
  return `every ${secs} s`;
}

const TONES = {
  healthy: 'good', processed: 'good', published: 'good', delivered: 'good', done: 'good', ready: 'good', active: 'good', connected: 'good', accepted: 'good', succeeded: 'good',
  degraded: 'warn', stale: 'warn', received: 'warn', pending: 'warn', running: 'warn', compiling: 'warn', ignored: 'muted', disabled: 'muted', interrupted: 'warn', disconnected: 'muted',
  failing: 'bad', error: 'bad', failed: 'bad', rejected: 'bad', dead: 'bad', adapter_error: 'bad',
};

/** A status as a coloured label (the word itself carries the meaning, not the colour). */
export function badge(status) {
  if (!status) return h('span', { class: 'badge muted' }, 'unknown');
  return h('span', { class: `badge ${TONES[status] ?? 'muted'}` }, String(status).replace(/_/g, ' '));
}

const DECIMAL = /^-?\d+(\.\d+)?$/;

/**
 * JSON, indented, as text with spans: keys, strings, numbers. A string holding a decimal is
 * marked so that a reader sees it is a string, as the contract wants.
 */
export function json(value) {
  const pre = h('pre', { class: 'json', tabindex: 0 });
  render(pre, value, 0);
  return pre;
}

function render(out, value, depth) {
  const pad = '  '.repeat(depth + 1);
  const end = '  '.repeat(depth);
  if (Array.isArray(value)) {
    if (!value.length) return out.append('[]');
    out.append('[\n');
    value.forEach((item, i) => {
      out.append(pad);
      render(out, item, depth + 1);
      out.append(i < value.length - 1 ? ',\n' : '\n');
    });
    out.append(`${end}]`);
  } else if (value && typeof value === 'object') {
    const entries = Object.entries(value);
    if (!entries.length) return out.append('{}');
    out.append('{\n');
    entries.forEach(([key, item], i) => {
      out.append(pad, h('span', { class: 'j-key' }, JSON.stringify(key)), ': ');
      render(out, item, depth + 1);
      out.append(i < entries.length - 1 ? ',\n' : '\n');
    });
    out.append(`${end}}`);
  } else if (typeof value === 'string') {
    if (DECIMAL.test(value) && value.includes('.')) {
      out.append(h('span', { class: 'j-str j-decimal', title: 'a decimal, kept as a string' }, JSON.stringify(value)));
    } else {
      out.append(h('span', { class: 'j-str' }, JSON.stringify(value)));
    }
  } else if (typeof value === 'number') {
    out.append(h('span', { class: 'j-num' }, String(value)));
  } else {
    out.append(h('span', { class: 'j-lit' }, String(value)));
  }
}

/** JSON text (as some records hold it), shown formatted; text that is not JSON as is. */
export function jsonText(text) {
  if (text === null || text === undefined || text === '') return '—';
  try {
    return json(JSON.parse(text));
  } catch {
    return h('pre', { class: 'json' }, text);
  }
}

/** An API error, as its problem+json title and detail. */
export function problem(error) {
  const title = error.title || 'Something went wrong';
  const detail = error.detail ?? error.message ?? String(error);
  return h(
    'div',
    { class: 'problem', role: 'alert' },
    h('strong', { class: 'problem-title' }, title),
    detail ? h('p', { class: 'problem-detail' }, detail) : null,
    error.status || error.requestId
      ? h('small', {}, [error.status ? `HTTP ${error.status}` : null, error.requestId ? `request ${error.requestId}` : null].filter(Boolean).join(' · '))
      : null,
  );
}

/** Runs `work` and shows its error in `slot` (cleared first); true when it succeeded. */
export async function attempt(slot, work) {
  replace(slot);
  try {
    await work();
    return true;
  } catch (error) {
    replace(slot, problem(error));
    if (!error.title) console.warn(error);
    return false;
  }
}

/**
 * A list read page by page with the API's cursors: `load(cursor)` answers a page
 * (`{items, next_cursor}`), `show(items)` makes its view.
 */
export function pager(label, load, show) {
  const view = h('div', { class: 'page-view' });
  const status = h('p', { class: 'pager-status', 'aria-live': 'polite' });
  const errors = h('div');
  const cursors = [null];
  let index = 0;
  let next = null;
  const prevButton = h('button', { type: 'button', disabled: true }, 'Previous page');
  const nextButton = h('button', { type: 'button', disabled: true }, 'Next page');
  async function go(to) {
    prevButton.disabled = nextButton.disabled = true;
    const ok = await attempt(errors, async () => {
      const page = await load(cursors[to]);
      index = to;
      next = page.next_cursor;
      if (next && cursors.length === to + 1) cursors.push(next);
      replace(view, await show(page.items));
      status.textContent = `Page ${index + 1}${next ? '' : ' (last)'} · ${page.items.length} ${label}`;
    });
    prevButton.disabled = !(ok ? index > 0 : index > 0);
    nextButton.disabled = !next;
  }
  prevButton.addEventListener('click', () => go(index - 1));
  nextButton.addEventListener('click', () => go(index + 1));
  const root = h('div', { class: 'pager' }, errors, view, h('div', { class: 'pager-nav' }, prevButton, nextButton, status));
  root.ready = go(0);
  root.reload = () => go(index);
  return root;
}

/** A Unix-millisecond time from a datetime-local input's value (local time), or undefined. */
export function fromLocalInput(value) {
  if (!value) return undefined;
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? undefined : ms;
}

/** The value a datetime-local input shows for a Unix-millisecond time. */
export function toLocalInput(ms) {
  if (ms === undefined || ms === null || ms === '') return '';
  const date = new Date(Number(ms));
  const offset = date.getTimezoneOffset() * 60000;
  return new Date(date.getTime() - offset).toISOString().slice(0, 16);
}
