import { api, query } from '../api.js';
import { badge, card, formatDate, formatNumber, formatPercent, h, section, table } from '../ui.js';

const tone = (status) => ({ up: 'ok', available: 'ok', healthy: 'ok', degraded: 'warn', unavailable: 'warn', down: 'bad', unknown: 'muted' })[status] ?? 'muted';

/** Webhooks are healthy while their queue holds no failed deliveries and nothing waits long. */
function webhookStatus(queues) {
  const deliveries = queues?.webhooks;
  if (!deliveries) return 'unknown';
  return deliveries.failed > 0 ? 'degraded' : 'up';
}

export default {
  id: 'overview',
  title: 'Overview',
  async render(panel, { tenant, tenantInfo }) {
    const [health, stats, cache, activity, tenantStats, usage] = await Promise.all([
      api('GET', '/api/health'),
      api('GET', '/api/admin/stats'),
      api('GET', '/api/admin/cache/stats'),
      api('GET', `/api/admin/audit${query({ limit: 10, tenant })}`).catch(() => ({ items: [] })),
      tenant ? api('GET', '/api/stats', { tenant }) : null,
      tenant ? api('GET', '/api/admin/usage', { tenant }) : null,
    ]);
    const services = health.services;
    const queues = services.queues.queues;
    panel.append(
      section(
        'Health',
        h(
          'div',
          { class: 'badges', 'data-testid': 'health' },
          badge(`Database: ${services.database.status}`, tone(services.database.status)),
          badge(`Redis: ${services.redis.status}`, tone(services.redis.status)),
          badge(`Vector search: ${services.vector_search.status}`, tone(services.vector_search.status)),
          badge(`Webhooks: ${webhookStatus(queues)}`, tone(webhookStatus(queues))),
          badge(`Queues: ${services.queues.status}`, tone(services.queues.status)),
        ),
      ),
      h(
        'div',
        { class: 'cards', 'data-testid': 'cards' },
        tenantStats
          ? card('Documents', formatNumber(tenantStats.documents.total), `${tenantInfo?.name ?? 'this tenant'}; ${formatNumber(tenantStats.documents.indexed)} indexed`)
          : card('Documents', formatNumber(stats.total_documents), `${formatNumber(stats.indexed_documents)} indexed, ${formatNumber(stats.tenants)} tenants`),
        usage
          ? card('Searches today', formatNumber(usage.quotas.searches_per_day.used), usage.quotas.searches_per_day.limit === null ? 'no daily limit' : `of ${formatNumber(usage.quotas.searches_per_day.limit)} allowed`)
          : card('Searches today', formatNumber(stats.searches_today), 'all tenants, UTC day'),
        card('Active jobs', formatNumber(stats.active_jobs), `${formatNumber(stats.pending_jobs)} waiting`),
        card('Failed jobs', formatNumber(stats.failed_jobs), 'kept for 7 days'),
        card('Cache hit ratio', formatPercent(cache.overall_hit_ratio), 'this process'),
      ),
      section(
        'Recent activity',
        table(
          'The latest changes from the audit trail',
          [
            ['When', (row) => formatDate(row.at)],
            ['Who', (row) => (row.actor_kind === 'key' ? `key ${row.actor_id}` : 'operator')],
            ['Action', (row) => row.action],
            ['Target', (row) => row.target ?? '—'],
            ['Status', (row) => String(row.status ?? '—')],
          ],
          activity.items,
          { empty: 'No changes recorded yet.' },
        ),
      ),
    );
  },
};
