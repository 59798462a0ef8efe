import { api, query } from '../api.js';
import { attempt, badge, field, formatDate, formatNumber, formatPercent, h, section, shownOnce, table, toast } from '../ui.js';

const HEALTH_TONE = { healthy: 'ok', failing: 'warn', disabled: 'bad' };
const DELIVERY_TONE = { succeeded: 'ok', pending: 'muted', failed: 'bad', canceled: 'muted' };
const HOUR_MS = 3_600_000;

const events = (count) => `${formatNumber(count)} ${count === 1 ? 'event' : 'events'}`;

/** A datetime-local value (the browser's time zone) for an instant. */
function localInput(date) {
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 16);
}

export default {
  id: 'webhooks',
  title: 'Webhooks',
  needsTenant: true,
  async render(panel, { tenant, tenantInfo }) {
    const eventTypes = (await api('GET', '/api/admin/webhooks/event-types', { tenant })).items;
    const created = h('div', { 'data-testid': 'created-endpoint' });
    const list = h('div', { 'data-testid': 'endpoint-list' });
    const outcome = h('div', { 'data-testid': 'test-outcome', role: 'status' });
    const detail = h('div', { 'data-testid': 'endpoint-detail' });
    let selected = null;

    const refresh = async () => {
      const page = await api('GET', '/api/admin/webhooks?limit=100', { tenant });
      if (selected && !page.items.some((endpoint) => endpoint.id === selected)) selected = null;
      list.replaceChildren(endpointTable(page.items));
      const endpoint = page.items.find((item) => item.id === selected);
      if (endpoint) await showDetail(detail, tenant, endpoint);
      else detail.replaceChildren(h('p', { class: 'empty' }, 'Pick an endpoint’s “Deliveries” to see its log and replay events.'));
    };

    const sendTest = async (endpoint) => {
      outcome.replaceChildren(h('p', {}, `Sending a test to ${endpoint.url}…`));
      const delivery = await attempt(() => api('POST', `/api/admin/webhooks/${endpoint.id}/test`, { tenant }));
      if (!delivery) return outcome.replaceChildren();
      const sent = delivery.attempts[0];
      const ok = delivery.status === 'succeeded';
      outcome.replaceChildren(
        h(
          'div',
          { class: 'block' },
          h('strong', {}, ok ? 'Test delivered' : 'Test failed'),
          ' to ',
          h('code', {}, endpoint.url),
          ': ',
          badge(sent?.status_code ? `HTTP ${sent.status_code}` : 'no response', ok ? 'ok' : 'bad'),
          sent ? ` in ${formatNumber(sent.duration_ms)} ms` : '',
          sent?.error ? h('p', { class: 'error' }, sent.error) : '',
        ),
      );
      await refresh();
    };
    const toggle = async (endpoint) => {
      const enabled = !endpoint.enabled;
      await attempt(() => api('PATCH', `/api/admin/webhooks/${endpoint.id}`, { tenant, body: { enabled } }), `${endpoint.url} ${enabled ? 'enabled' : 'disabled'}.`);
      await refresh();
    };
    const remove = async (endpoint) => {
      if (!window.confirm(`Delete the endpoint ${endpoint.url} and its delivery log?`)) return;
      const done = await attempt(() => api('DELETE', `/api/admin/webhooks/${endpoint.id}`, { tenant }), 'Endpoint deleted.');
      if (done !== undefined) await refresh();
    };
    const select = async (endpoint) => {
      selected = endpoint.id;
      await showDetail(detail, tenant, endpoint);
      detail.scrollIntoView({ block: 'start' });
    };

    const endpointTable = (endpoints) =>
      table(
        'Endpoints with their health over the last 24 hours',
        [
          ['URL', (endpoint) => h('code', {}, endpoint.url)],
          ['Description', (endpoint) => endpoint.description ?? '—'],
          ['Events', (endpoint) => (endpoint.event_types.length ? endpoint.event_types.join(', ') : 'all')],
          [
            'Health',
            (endpoint) => [
              badge(endpoint.health.status, HEALTH_TONE[endpoint.health.status] ?? 'muted'),
              endpoint.disabled_reason ? h('div', { class: 'card-hint' }, endpoint.disabled_reason) : '',
              endpoint.health.consecutive_failures ? h('div', { class: 'card-hint' }, `${endpoint.health.consecutive_failures} failures in a row`) : '',
            ],
          ],
          ['Success (24 h)', (endpoint) => `${formatPercent(endpoint.health.success_rate_24h)} of ${formatNumber(endpoint.health.attempts_24h)} attempts`],
          ['Last success', (endpoint) => formatDate(endpoint.health.last_success_at)],
          ['Last failure', (endpoint) => formatDate(endpoint.health.last_failure_at)],
          [
            '',
            (endpoint) =>
              h(
                'div',
                { class: 'actions' },
                h('button', { type: 'button', class: 'primary', onclick: () => sendTest(endpoint), disabled: !endpoint.enabled }, 'Send test'),
                h('button', { type: 'button', onclick: () => toggle(endpoint) }, endpoint.enabled ? 'Disable' : 'Enable'),
                h('button', { type: 'button', onclick: () => select(endpoint) }, 'Deliveries'),
                h('button', { type: 'button', class: 'danger', onclick: () => remove(endpoint) }, 'Delete…'),
              ),
          ],
        ],
        endpoints,
        { empty: 'No endpoints yet.' },
      );

    panel.append(
      section(`New endpoint for ${tenantInfo?.name ?? 'this tenant'}`, createForm(tenant, eventTypes, created, refresh), created),
      section('Endpoints', outcome, list),
      section('Deliveries', detail),
    );
    await refresh();
  },
};

function createForm(tenant, eventTypes, created, refresh) {
  const url = h('input', { type: 'url', required: true, placeholder: 'https://hooks.example.com/ragworks', size: '40' });
  const description = h('input', { type: 'text', maxlength: '500' });
  const boxes = eventTypes.map((type) => h('input', { type: 'checkbox', value: type.type, title: type.description }));
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Add endpoint');
  const form = h(
    'form',
    {},
    h('div', { class: 'toolbar' }, field('URL', url), field('Description (optional)', description)),
    h('fieldset', {}, h('legend', {}, 'Event types (none ticked: every type)'), h('div', { class: 'checks' }, boxes.map((box) => h('label', {}, box, box.value)))),
    h('div', { class: 'actions' }, submit),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = {
      url: url.value.trim(),
      event_types: boxes.filter((box) => box.checked).map((box) => box.value),
      ...(description.value.trim() ? { description: description.value.trim() } : {}),
    };
    submit.disabled = true;
    const endpoint = await attempt(() => api('POST', '/api/admin/webhooks', { tenant, body }), 'Endpoint added. Copy its signing secret now: it is not shown again.');
    submit.disabled = false;
    if (!endpoint) return;
    created.replaceChildren(shownOnce('Signing secret', endpoint.secret), h('p', { class: 'card-hint' }, `For ${endpoint.url}: verify each request's webhook-signature with it (Standard Webhooks).`));
    form.reset();
    await refresh();
  });
  return form;
}

/** One endpoint's replay form, recent deliveries and, on demand, a delivery's attempts. */
async function showDetail(container, tenant, endpoint) {
  const deliveries = h('div', { 'data-testid': 'deliveries' });
  const attempts = h('div', { 'data-testid': 'delivery-attempts' });
  const reload = () => showDeliveries(deliveries, attempts, tenant, endpoint);
  container.replaceChildren(h('h3', {}, 'Endpoint ', h('code', {}, endpoint.url)), replayForm(tenant, endpoint, reload), deliveries, attempts);
  await reload();
}

/** Replaying is two steps: count the events in the window (a dry run), then send exactly that window. */
function replayForm(tenant, endpoint, reload) {
  const since = h('input', { type: 'datetime-local', required: true, value: localInput(new Date(Date.now() - 24 * HOUR_MS)) });
  const until = h('input', { type: 'datetime-local' });
  const count = h('button', { type: 'submit' }, 'Count events (dry run)');
  const result = h('div', { 'data-testid': 'replay-count', 'aria-live': 'polite' });
  const chosenWindow = () => ({ since: new Date(since.value).toISOString(), ...(until.value ? { until: new Date(until.value).toISOString() } : {}) });
  // A count stands only for the window it was made for.
  for (const input of [since, until]) input.addEventListener('input', () => result.replaceChildren());

  const form = h(
    'form',
    {},
    h('div', { class: 'toolbar' }, field('Replay events since (your time)', since), field('Until (optional)', until), count),
    result,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = chosenWindow();
    const dry = await attempt(() => api('POST', `/api/admin/webhooks/${endpoint.id}/replay`, { tenant, body: { ...body, dry_run: true } }));
    if (!dry) return;
    if (dry.matched === 0) {
      result.replaceChildren(h('p', {}, 'No events in this window to replay.'));
      return;
    }
    const send = h('button', { type: 'button', class: 'primary' }, `Replay ${events(dry.matched)}`);
    send.addEventListener('click', async () => {
      send.disabled = true;
      const replayed = await attempt(
        () => api('POST', `/api/admin/webhooks/${endpoint.id}/replay`, { tenant, body: { ...body, dry_run: false } }),
        (answer) => `${events(answer.enqueued)} queued for ${endpoint.url}, ${answer.per_second} per second.`,
      );
      if (!replayed) {
        send.disabled = false;
        return;
      }
      result.replaceChildren(h('p', {}, `${events(replayed.enqueued)} queued for replay.`));
      await reload();
    });
    result.replaceChildren(
      h('p', {}, `${events(dry.matched)} in this window; they would be sent again at ${dry.per_second} per second${endpoint.enabled ? '.' : ', once the endpoint is enabled.'}`),
      endpoint.enabled ? send : '',
    );
  });
  return form;
}

async function showDeliveries(container, attempts, tenant, endpoint) {
  const page = await api('GET', `/api/admin/webhooks/${endpoint.id}/deliveries${query({ limit: 20 })}`, { tenant });
  const showAttempts = async (delivery) => {
    const full = await attempt(() => api('GET', `/api/admin/webhooks/${endpoint.id}/deliveries/${delivery.id}`, { tenant }));
    if (!full) return;
    attempts.replaceChildren(
      h('h4', {}, `Attempts of ${full.event_type} (${full.origin}), message ${full.message_id}`),
      table(
        'Every attempt: when, the answer, how long it took',
        [
          ['#', (row) => String(row.attempt)],
          ['When', (row) => formatDate(row.created_at)],
          ['Outcome', (row) => badge(row.outcome, DELIVERY_TONE[row.outcome] ?? 'muted')],
          ['HTTP status', (row) => (row.status_code ? String(row.status_code) : '—')],
          ['Duration', (row) => `${formatNumber(row.duration_ms)} ms`],
          ['Error', (row) => row.error ?? '—'],
          ['Response (first 4 KB)', (row) => (row.response_body ? h('code', {}, row.response_body) : '—')],
        ],
        full.attempts,
        { empty: 'No attempt yet: the delivery is queued.' },
      ),
      h('pre', { 'aria-label': 'The event as sent', tabindex: '0' }, JSON.stringify(full.event, null, 2)),
    );
    attempts.scrollIntoView({ block: 'nearest' });
  };
  const redeliver = async (delivery) => {
    const again = await attempt(() => api('POST', `/api/admin/webhooks/${endpoint.id}/deliveries/${delivery.id}/redeliver`, { tenant }), 'Queued again with fresh attempts.');
    if (again) await showDeliveries(container, attempts, tenant, endpoint);
  };
  container.replaceChildren(
    h('div', { class: 'toolbar' }, h('button', { type: 'button', onclick: () => showDeliveries(container, attempts, tenant, endpoint).catch((error) => toast(error.message, 'error')) }, 'Refresh deliveries')),
    table(
      'The 20 newest deliveries to this endpoint',
      [
        ['Created', (delivery) => formatDate(delivery.created_at)],
        ['Event', (delivery) => delivery.event_type],
        ['Origin', (delivery) => delivery.origin],
        ['Status', (delivery) => badge(delivery.status, DELIVERY_TONE[delivery.status] ?? 'muted')],
        ['Attempts', (delivery) => formatNumber(delivery.attempts)],
        ['Last answer', (delivery) => (delivery.last_status_code ? `HTTP ${delivery.last_status_code}` : delivery.last_error ?? '—')],
        ['Next attempt', (delivery) => formatDate(delivery.next_attempt_at)],
        [
          '',
          (delivery) =>
            h(
              'div',
              { class: 'actions' },
              h('button', { type: 'button', onclick: () => showAttempts(delivery) }, 'Attempts'),
              h('button', { type: 'button', onclick: () => redeliver(delivery), disabled: !endpoint.enabled }, 'Redeliver'),
            ),
        ],
      ],
      page.items,
      { empty: 'Nothing delivered to this endpoint yet.' },
    ),
  );
}
