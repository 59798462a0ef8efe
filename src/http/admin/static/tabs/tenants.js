import { api } from '../api.js';
import { attempt, badge, field, formatNumber, h, section, table } from '../ui.js';

const TIERS = ['free', 'standard', 'enterprise', 'unlimited'];
const PAGE_SIZE = 50;
/** The page of tenants on screen, kept across refreshes of the tab. */
let currentPage = 0;
const QUOTAS = [
  ['documents', 'Documents'],
  ['storage_mb', 'Storage (MB)'],
  ['searches_per_day', 'Searches today'],
  ['answers_per_day', 'Answers today'],
  ['api_keys', 'API keys'],
  ['webhook_endpoints', 'Webhook endpoints'],
];

/** One quota as a labelled meter: used against limit, or just used when unlimited. */
function meter(name, label, quota) {
  if (quota.limit === null) return h('div', { class: 'meter' }, `${label}: ${formatNumber(quota.used)} (no limit)`);
  return h(
    'div',
    { class: 'meter' },
    h('span', {}, `${label}: ${formatNumber(quota.used)} / ${formatNumber(quota.limit)}`),
    h('meter', { min: '0', max: String(Math.max(quota.limit, 1)), value: String(Math.min(quota.used, quota.limit)), high: String(quota.limit * 0.8), 'aria-label': `${label} used` }),
  );
}

export default {
  id: 'tenants',
  title: 'Tenants',
  async render(panel, { tenants, reloadTenants, rerender }) {
    const pages = Math.max(1, Math.ceil(tenants.length / PAGE_SIZE));
    const pageIndex = Math.min(currentPage, pages - 1);
    const shown = tenants.slice(pageIndex * PAGE_SIZE, (pageIndex + 1) * PAGE_SIZE);
    // Usage is fetched for the tenants on screen only.
    const usages = await Promise.all(shown.map((tenant) => api('GET', `/api/admin/tenants/${tenant.id}/usage`).catch(() => null)));
    const rows = shown.map((tenant, index) => ({ tenant, usage: usages[index] }));
    const turnTo = (page) => {
      currentPage = page;
      rerender();
    };
    const pager =
      pages > 1
        ? h(
            'div',
            { class: 'actions' },
            h('button', { type: 'button', disabled: pageIndex === 0, onclick: () => turnTo(pageIndex - 1) }, 'Previous tenants'),
            h('span', {}, `Page ${pageIndex + 1} of ${pages}`),
            h('button', { type: 'button', disabled: pageIndex === pages - 1, onclick: () => turnTo(pageIndex + 1) }, 'Next tenants'),
          )
        : null;
    const refresh = async () => {
      await reloadTenants();
      rerender();
    };
    const tierPicker = (tenant) => {
      const select = h('select', { 'aria-label': `Tier of ${tenant.slug}` }, TIERS.map((tier) => h('option', { value: tier, selected: tier === tenant.tier }, tier)));
      select.addEventListener('change', () =>
        attempt(() => api('PATCH', `/api/admin/tenants/${tenant.id}`, { body: { tier: select.value } }), `${tenant.slug} is now on ${select.value}.`).then(refresh),
      );
      return select;
    };
    const statusAction = (tenant) => {
      const suspend = tenant.status === 'active';
      return h(
        'button',
        {
          type: 'button',
          class: suspend ? 'danger' : 'primary',
          onclick: () => {
            if (suspend && !window.confirm(`Suspend ${tenant.slug}? Its keys stop working and its jobs wait until it is resumed.`)) return;
            attempt(() => api('POST', `/api/admin/tenants/${tenant.id}/${suspend ? 'suspend' : 'resume'}`), `${tenant.slug} ${suspend ? 'suspended' : 'resumed'}.`).then(refresh);
          },
        },
        suspend ? 'Suspend' : 'Resume',
      );
    };
    panel.append(
      section(
        'Tenants',
        table(
          `${tenants.length} tenants, with their use of each quota`,
          [
            ['Tenant', ({ tenant }) => h('div', {}, h('strong', {}, tenant.name), h('div', { class: 'card-hint' }, tenant.slug))],
            ['Status', ({ tenant }) => badge(tenant.status, tenant.status === 'active' ? 'ok' : 'bad')],
            ['Tier', ({ tenant }) => tierPicker(tenant)],
            ['Usage', ({ usage }) => (usage ? h('div', { class: 'meters' }, QUOTAS.map(([name, label]) => meter(name, label, usage.quotas[name]))) : '—')],
            ['', ({ tenant }) => statusAction(tenant)],
          ],
          rows,
          { empty: 'No tenants yet: create one below or with POST /api/admin/tenants.' },
        ),
        pager,
      ),
      createForm(refresh),
    );
  },
};

function createForm(refresh) {
  const slug = h('input', { required: true, pattern: '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?', placeholder: 'acme' });
  const name = h('input', { required: true, placeholder: 'Acme Corp' });
  const tier = h('select', {}, TIERS.map((value) => h('option', { value }, value)));
  const form = h(
    'form',
    { class: 'toolbar' },
    field('Slug', slug),
    field('Name', name),
    field('Tier', tier),
    h('button', { type: 'submit', class: 'primary' }, 'Create tenant'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    attempt(() => api('POST', '/api/admin/tenants', { body: { slug: slug.value, name: name.value, tier: tier.value } }), `Tenant ${slug.value} created.`).then((created) => created && refresh());
  });
  return section('New tenant', form);
}
