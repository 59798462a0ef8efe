import { api } from '../api.js';
import { card, formatNumber, formatPercent, h, section, table } from '../ui.js';

// The server samples its metrics every 10 s; polling faster would show nothing new.
const POLL_MS = 10_000;

const fixed = (value, digits, unit) => (value === null || value === undefined ? '—' : `${Number(value).toFixed(digits)}${unit}`);

/** A scrape_configs entry for this very server, as Prometheus wants it. */
function scrapeConfig() {
  const { protocol, host } = window.location;
  return [
    'scrape_configs:',
    '  - job_name: ragworks',
    '    metrics_path: /metrics',
    `    scheme: ${protocol.replace(':', '')}`,
    '    scrape_interval: 15s',
    '    static_configs:',
    `      - targets: ['${host}']        # every web process`,
    "      - targets: ['worker-1:9464']  # workers and schedulers serve /metrics on METRICS_PORT",
  ].join('\n');
}

export default {
  id: 'metrics',
  title: 'Metrics',
  async render(panel) {
    const figures = h('div', { class: 'cards', 'data-testid': 'metrics-cards' });
    const queues = h('div', { 'data-testid': 'metrics-queues' });
    const scope = h('p', { class: 'card-hint', 'data-testid': 'metrics-window' });
    const refreshButton = h('button', { type: 'button' }, 'Refresh now');
    panel.append(
      h('div', { class: 'toolbar' }, refreshButton),
      scope,
      figures,
      section('Queue throughput', queues),
      section(
        'Scraping with Prometheus',
        h('p', {}, 'These figures come from this one process. For the whole fleet and for history, scrape ', h('code', {}, '/metrics'), ' of every process with Prometheus:'),
        h('pre', { 'aria-label': 'Prometheus scrape configuration', tabindex: '0' }, scrapeConfig()),
        h(
          'p',
          {},
          'Then import ',
          h('code', {}, 'ops/grafana/ragworks.json'),
          ' in Grafana (Dashboards → New → Import) and pick your Prometheus data source: request rate, p95 latency, errors, queues, jobs, search, cache, webhooks, rate limits and usage drift.',
        ),
      ),
    );

    const load = async () => {
      const summary = await api('GET', '/api/admin/metrics/summary');
      const { http } = summary;
      scope.textContent =
        summary.window_seconds > 0
          ? `This process, over the last ${formatNumber(Math.round(summary.window_seconds))} s (up to 5 minutes, sampled every ${summary.sampled_every_seconds} s). Prometheus covers every process.`
          : 'This process has only just started: the figures appear after its first samples.';
      const perMinute = summary.queues.reduce((sum, queue) => sum + (queue.completed_per_minute ?? 0), 0);
      figures.replaceChildren(
        card('Request rate', fixed(http.request_rate_per_second, 2, ' req/s'), `${formatNumber(http.requests)} requests`),
        card('p95 latency', fixed(http.p95_latency_ms, 1, ' ms'), 'from the latency histogram'),
        card('Server errors', formatPercent(http.server_error_rate), '5xx share of requests'),
        card('Client errors', formatPercent(http.client_error_rate), '4xx share of requests'),
        card('Jobs completed', fixed(perMinute, 1, ' /min'), 'by this process’s workers'),
      );
      queues.replaceChildren(
        h('p', { class: 'card-hint' }, 'Jobs finished by workers in this process. A web-only process runs no jobs; its workers report through Prometheus.'),
        table(
          'Completed and failed jobs per minute, per queue',
          [
            ['Queue', (queue) => queue.queue],
            ['Completed / min', (queue) => fixed(queue.completed_per_minute, 1, '')],
            ['Failed / min', (queue) => fixed(queue.failed_per_minute, 1, '')],
            ['Completed', (queue) => formatNumber(queue.completed)],
            ['Failed', (queue) => formatNumber(queue.failed)],
          ],
          summary.queues,
        ),
      );
    };
    refreshButton.addEventListener('click', () => load().catch((error) => (scope.textContent = `Could not load: ${error.message}`)));
    await load();
    const timer = setInterval(() => load().catch(() => undefined), POLL_MS);
    return () => clearInterval(timer);
  },
};
