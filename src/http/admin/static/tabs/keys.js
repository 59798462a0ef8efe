import { api, query } from '../api.js';
import { attempt, field, formatDate, formatNumber, h, section, shownOnce, table } from '../ui.js';

// The scopes the API accepts (docs/api.md, "Authentication"); the server checks them again.
const SCOPES = ['documents:read', 'documents:write', 'search', 'analytics:read', 'webhooks:manage', 'keys:manage', 'jobs:manage', 'admin'];
const DEFAULT_SCOPES = ['documents:read', 'documents:write', 'search'];
const PAGE_SIZE = 50;

export default {
  id: 'keys',
  title: 'API Keys',
  needsTenant: true,
  async render(panel, { tenant, tenantInfo }) {
    const created = h('div', { 'data-testid': 'created-key' });
    const list = h('div', { 'data-testid': 'key-list' });
    panel.append(section(`New key for ${tenantInfo?.name ?? 'this tenant'}`, createForm(tenant, created, () => showKeys(list, tenant)), created), section('Active keys', list));
    await showKeys(list, tenant);
  },
};

function createForm(tenant, created, refresh) {
  const name = h('input', { type: 'text', required: true, maxlength: '200', autocomplete: 'off' });
  const expires = h('input', { type: 'datetime-local' });
  const boxes = SCOPES.map((scope) => h('input', { type: 'checkbox', value: scope, checked: DEFAULT_SCOPES.includes(scope) }));
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create key');
  const form = h(
    'form',
    {},
    h('div', { class: 'toolbar' }, field('Name', name), field('Expires (optional, your time)', expires)),
    h('fieldset', {}, h('legend', {}, 'Scopes'), h('div', { class: 'checks' }, boxes.map((box) => h('label', {}, box, box.value)))),
    h('div', { class: 'actions' }, submit),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const scopes = boxes.filter((box) => box.checked).map((box) => box.value);
    if (scopes.length === 0) {
      created.replaceChildren(h('p', { class: 'error', role: 'alert' }, 'Pick at least one scope.'));
      return;
    }
    const body = { name: name.value.trim(), scopes, ...(expires.value ? { expires_at: new Date(expires.value).toISOString() } : {}) };
    submit.disabled = true;
    const key = await attempt(() => api('POST', '/api/admin/api-keys', { tenant, body }), 'Key created. Copy it now: it is not shown again.');
    submit.disabled = false;
    if (!key) return;
    // The secret lives only in this element: nothing keeps it, so a reload or another tab loses it for good.
    created.replaceChildren(shownOnce('API key', key.key), h('p', { class: 'card-hint' }, `${key.name}: ${key.scopes.join(', ')}. Send it as "Authorization: Bearer <key>".`));
    form.reset();
    await refresh();
  });
  return form;
}

async function showKeys(container, tenant, cursor, shown = []) {
  const page = await api('GET', `/api/admin/api-keys${query({ limit: PAGE_SIZE, cursor })}`, { tenant });
  const keys = [...shown, ...page.items];
  const revoke = async (key) => {
    if (!window.confirm(`Revoke the key "${key.name}" (${key.prefix}…)? Anything using it is refused at once; this cannot be undone.`)) return;
    const done = await attempt(() => api('DELETE', `/api/admin/api-keys/${key.id}`, { tenant }), `Key ${key.prefix}… revoked.`);
    if (done !== undefined) await showKeys(container, tenant);
  };
  container.replaceChildren(
    table(
      'Keys in use; secrets are never shown again after creation',
      [
        ['Name', (key) => key.name],
        ['Prefix', (key) => h('code', {}, `${key.prefix}…`)],
        ['Scopes', (key) => key.scopes.join(', ')],
        ['Created', (key) => formatDate(key.created_at)],
        ['Last used', (key) => (key.last_used_at ? formatDate(key.last_used_at) : 'never')],
        ['Requests', (key) => formatNumber(key.request_count)],
        ['Expires', (key) => (key.expires_at ? formatDate(key.expires_at) : 'never')],
        ['', (key) => h('button', { type: 'button', class: 'danger', 'aria-label': `Revoke ${key.name} (${key.prefix})`, onclick: () => revoke(key) }, 'Revoke…')],
      ],
      keys,
      { empty: 'No active keys.' },
    ),
    page.next_cursor ? h('button', { type: 'button', onclick: () => showKeys(container, tenant, page.next_cursor, keys) }, 'Show more') : '',
  );
}
