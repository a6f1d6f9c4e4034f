// Replays: re-send published events of a time range, with the guardrails said before asking,
// and the progress of a replay followed to its end.

import { get, post, seg, session } from '../api.js';
import { facts, field, h, replace, section, select, table } from '../dom.js';
import { attempt, badge, fromLocalInput, pager, time, toLocalInput } from '../format.js';

const DAY = 24 * 3600 * 1000;
const MAX_WINDOW_DAYS = 7;
const PER_HOUR = 10;

function progress(replay) {
  return facts([
    ['Status', badge(replay.status)],
    ['Range', [time(replay.from), ' to ', time(replay.to)]],
    ['Events replayed', String(replay.replayed)],
    ['Subscriber deliveries queued', String(replay.queued)],
    ['Target', replay.subscriber_id ? `subscriber ${replay.subscriber_id}` : replay.target],
    ['Requested', [time(replay.requested_at), ` by ${replay.requested_by}`]],
    ['Finished', time(replay.finished_at)],
    replay.error ? ['Error', replay.error] : null,
  ]);
}

export async function list(view, ctx) {
  const subscribers = (await get('/v1/subscribers', { limit: 1000 })).items;
  const now = Date.now();
  const errors = h('div');
  const followed = h('div', { 'aria-live': 'polite' });
  const check = h('p', { class: 'hint', 'aria-live': 'polite' });
  const from = h('input', { name: 'from', type: 'datetime-local', required: true, value: toLocalInput(now - DAY) });
  const to = h('input', { name: 'to', type: 'datetime-local', required: true, value: toLocalInput(now + 60000) });
  const target = select('target', [['all', 'the bus and every subscriber that wants them'], ['bus', 'the bus only'], ['subscribers', 'subscribers only']], 'all');
  const subscriber = select('subscriber_id', [['', 'any subscriber'], ...subscribers.map((s) => [s.id, s.url])], '');
  const platform = session.platform ? h('input', { type: 'checkbox', name: 'platform_level', id: 'replay-platform' }) : null;
  const rangeProblem = () => {
    const a = fromLocalInput(from.value);
    const b = fromLocalInput(to.value);
    if (a === undefined || b === undefined) return 'Give both ends of the range.';
    if (b <= a) return 'The end must be after the start.';
    if (b - a > MAX_WINDOW_DAYS * DAY) return `That is ${((b - a) / DAY).toFixed(1)} days: a replay covers at most ${MAX_WINDOW_DAYS} days. Split the range.`;
    return null;
  };
  const showCheck = () => {
    const why = rangeProblem();
    check.textContent = why ?? `${((fromLocalInput(to.value) - fromLocalInput(from.value)) / DAY).toFixed(2)} days: within the limit.`;
    check.className = why ? 'hint bad' : 'hint';
  };
  from.addEventListener('input', showCheck);
  to.addEventListener('input', showCheck);
  showCheck();
  const form = h(
    'form',
    { class: 'form', 'aria-label': 'Start a replay' },
    h(
      'div',
      { class: 'guardrails', role: 'note' },
      h('h3', {}, 'Before you replay'),
      h(
        'ul',
        {},
        h('li', {}, `The range covers at most ${MAX_WINDOW_DAYS} days of events (by when they were created); split longer ones.`),
        h('li', {}, `One replay runs at a time per tenant, and at most ${PER_HOUR} may start in an hour: past that the host answers 429.`),
        h('li', {}, 'Events are re-sent with their original event ids, so consumers drop the ones they already have.'),
        h('li', {}, 'Only published events are replayed; subscribers get them again whether or not they had them.'),
      ),
    ),
    field('From', from),
    field('To', to),
    check,
    field('Event type (optional)', h('input', { name: 'event_type', autocomplete: 'off', placeholder: 'deal.won' })),
    field('Send to', target),
    field('Subscriber', subscriber, 'One subscriber only (the target is then subscribers).'),
    platform ? h('div', { class: 'field check' }, platform, h('label', { for: 'replay-platform' }, 'The platform-level events (org id null) instead of the org’s')) : null,
    errors,
    h('button', { type: 'submit', class: 'primary' }, 'Start replay'),
  );
  const past = pager(
    'replays',
    (cursor) => get('/v1/replays', { limit: 20, cursor }),
    (items) =>
      table(
        'Replays',
        [
          ['Requested', (r) => time(r.requested_at)],
          ['Status', (r) => badge(r.status)],
          ['Range', (r) => [time(r.from), ' – ', time(r.to)]],
          ['Type', (r) => r.event_type ?? 'all'],
          ['Target', (r) => (r.subscriber_id ? `subscriber ${r.subscriber_id}` : r.target)],
          ['Replayed', (r) => String(r.replayed)],
          ['Queued', (r) => String(r.queued)],
          ['By', (r) => r.requested_by],
        ],
        items,
        'No replay yet.',
      ),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const why = rangeProblem();
    if (why) {
      replace(errors, h('div', { class: 'problem', role: 'alert' }, h('strong', {}, 'Not a valid range'), h('p', {}, why)));
      return;
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    await attempt(errors, async () => {
      const f = form.elements;
      const body = { from: fromLocalInput(from.value), to: fromLocalInput(to.value), target: f.target.value };
      if (f.event_type.value.trim()) body.event_type = f.event_type.value.trim();
      if (f.subscriber_id.value) {
        body.subscriber_id = f.subscriber_id.value;
        body.target = 'subscribers';
      }
      if (platform?.checked) body.platform_level = true;
      let replay = await post('/v1/replays', body);
      ctx.notify(`Replay ${replay.id} started`);
      const show = () => replace(followed, section(`Replay ${replay.id}`, h('progress', { 'aria-label': 'Replay progress', hidden: replay.status !== 'running' }), progress(replay)));
      show();
      while (replay.status === 'running' && ctx.alive()) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        replay = await get(`/v1/replays/${seg(replay.id)}`);
        show();
      }
      await past.reload();
    });
    button.disabled = false;
  });
  replace(view, h('h1', {}, 'Replays'), h('p', { class: 'lede' }, 'Re-send events you already published, for consumers that lost state.'), section('New replay', form), followed, h('h2', {}, 'Past replays'), past);
  await past.ready;
}
