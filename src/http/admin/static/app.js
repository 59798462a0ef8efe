import { api } from './api.js';
import { clear, h, toast } from './ui.js';
import overview from './tabs/overview.js';
import analytics from './tabs/analytics.js';
import webhooks from './tabs/webhooks.js';
import keys from './tabs/keys.js';
import jobs from './tabs/jobs.js';
import metrics from './tabs/metrics.js';
import tenantsTab from './tabs/tenants.js';
import audit from './tabs/audit.js';

// Each tab: { id, title, needsTenant?, render(panel, context) → optional cleanup }.
const TABS = [overview, analytics, webhooks, keys, jobs, metrics, tenantsTab, audit];
const TENANT_KEY = 'ragworks.admin.tenant';

const tablist = document.getElementById('tabs');
const panels = document.getElementById('panels');
const picker = document.getElementById('tenant-picker');
let current = null;
let cleanup = null;
let tenants = [];
/** Counts calls of show(): a render that finishes after a newer one started is stale. */
let shown = 0;

const context = () => ({
  tenant: picker.value,
  tenantInfo: tenants.find((tenant) => tenant.id === picker.value) ?? null,
  tenants,
  reloadTenants,
  rerender: () => show(current, false),
});

const buttons = TABS.map((tab) =>
  h('button', { role: 'tab', id: `tab-${tab.id}`, 'aria-controls': `panel-${tab.id}`, 'aria-selected': 'false', tabindex: '-1', onclick: () => show(tab.id, true) }, tab.title),
);
tablist.append(...buttons);
const sections = TABS.map((tab) => h('section', { role: 'tabpanel', id: `panel-${tab.id}`, 'aria-labelledby': `tab-${tab.id}`, tabindex: '0', hidden: true }));
panels.append(...sections);

// The WAI-ARIA tabs pattern: arrow keys, Home and End move between tabs.
tablist.addEventListener('keydown', (event) => {
  const index = buttons.indexOf(document.activeElement);
  if (index < 0) return;
  const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: buttons.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  const next = (moves[event.key] + buttons.length) % buttons.length;
  show(TABS[next].id, true);
  buttons[next].focus();
});

async function show(id, pushHash) {
  const mine = ++shown;
  const index = Math.max(0, TABS.findIndex((tab) => tab.id === id));
  const tab = TABS[index];
  current = tab.id;
  if (pushHash && window.location.hash !== `#${tab.id}`) history.replaceState(null, '', `#${tab.id}`);
  buttons.forEach((button, i) => {
    button.setAttribute('aria-selected', String(i === index));
    button.tabIndex = i === index ? 0 : -1;
  });
  sections.forEach((panel, i) => (panel.hidden = i !== index));
  if (typeof cleanup === 'function') cleanup();
  cleanup = null;
  const panel = clear(sections[index]);
  panel.append(h('h2', { class: 'panel-title' }, tab.title));
  if (tab.needsTenant && !picker.value) {
    panel.append(h('p', { class: 'empty' }, 'Pick a tenant above to see this section.'));
    return;
  }
  // Each render draws into its own view, so one that finishes after a newer one started can be dropped whole.
  const view = h('div', { class: 'view' });
  panel.append(view);
  try {
    const stop = await tab.render(view, context());
    // Another tab (or this one again) was opened while this render loaded: drop it, and stop what it started (pollers).
    if (mine !== shown) {
      if (typeof stop === 'function') stop();
      view.remove();
      return;
    }
    cleanup = stop;
  } catch (error) {
    if (mine === shown) view.append(h('p', { class: 'error', role: 'alert' }, `Could not load: ${error.message}`));
    else view.remove();
  }
}

/** Every tenant, page by page (at most MAX_TENANT_PAGES × 100: a picker for more would want a search box). */
const MAX_TENANT_PAGES = 50;

async function reloadTenants() {
  const all = [];
  let cursor = null;
  for (let pages = 0; pages < MAX_TENANT_PAGES; pages++) {
    const page = await api('GET', `/api/admin/tenants?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    all.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  tenants = all;
  const chosen = picker.value || localStorage.getItem(TENANT_KEY) || '';
  picker.replaceChildren(h('option', { value: '' }, 'All tenants'), ...tenants.map((tenant) => h('option', { value: tenant.id }, `${tenant.name} (${tenant.slug})`)));
  picker.value = tenants.some((tenant) => tenant.id === chosen) ? chosen : '';
}

picker.addEventListener('change', () => {
  localStorage.setItem(TENANT_KEY, picker.value);
  show(current, false);
});
window.addEventListener('hashchange', () => show(window.location.hash.slice(1), false));

reloadTenants()
  .catch((error) => toast(`Could not list tenants: ${error.message}`, 'error'))
  .finally(() => show(window.location.hash.slice(1) || TABS[0].id, true));
