import { api, query } from '../api.js';
import { field, formatDate, h, section, table } from '../ui.js';

export default {
  id: 'audit',
  title: 'Audit',
  async render(panel, { tenant }) {
    const action = h('input', { placeholder: 'e.g. tenant.update' });
    const results = h('div', { 'data-testid': 'audit' });
    let cursor = null;
    const load = async (append) => {
      const page = await api('GET', `/api/admin/audit${query({ limit: 50, tenant, action: action.value, cursor: append ? cursor : undefined })}`);
      cursor = page.next_cursor;
      const rows = table(
        'Every change made by the operator or an admin key, newest first',
        [
          ['When', (row) => formatDate(row.at)],
          ['Who', (row) => (row.actor_kind === 'key' ? `key ${row.actor_id}` : row.actor_id ? `operator (session ${row.actor_id.slice(-6)})` : 'operator')],
          ['Action', (row) => row.action],
          ['Target', (row) => row.target ?? '—'],
          ['Tenant', (row) => row.tenant_id ?? '—'],
          ['Status', (row) => String(row.status ?? '—')],
          ['IP', (row) => row.ip ?? '—'],
        ],
        page.items,
        { empty: 'Nothing recorded.' },
      );
      if (append) results.append(rows);
      else results.replaceChildren(rows);
      more.hidden = !cursor;
    };
    const more = h('button', { type: 'button', hidden: true, onclick: () => load(true) }, 'Older entries');
    const form = h('form', { class: 'toolbar' }, field('Action', action), h('button', { type: 'submit' }, 'Filter'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      load(false);
    });
    panel.append(section('Audit trail', form, results, more));
    await load(false);
  },
};
