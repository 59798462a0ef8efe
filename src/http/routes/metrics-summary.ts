import { z } from 'zod';
import type { Platform } from '../../platform';
import { QUEUE_NAMES } from '../../../queues';
import type { Api } from '../route';

const rate = z.number().nullable();

const summarySchema = z.object({
  window_seconds: z.number().describe('How far back the figures reach: 5 minutes, less just after the process started'),
  sampled_every_seconds: z.number(),
  http: z.object({
    requests: z.number().int(),
    request_rate_per_second: rate,
    p95_latency_ms: rate.describe('Estimated from the latency histogram buckets, as histogram_quantile does'),
    server_error_rate: rate.describe('Share of requests answered 5xx'),
    client_error_rate: rate.describe('Share of requests answered 4xx'),
  }),
  queues: z.array(
    z.object({
      queue: z.string(),
      completed: z.number().int(),
      failed: z.number().int(),
      completed_per_minute: rate,
      failed_per_minute: rate,
    }),
  ),
});

/** What the metrics summary routes use of the platform, wired in by the app (src/http/app.ts). */
export type MetricsSummaryServices = Pick<Platform, 'metricsWindow'>;

export function metricsSummaryRoutes(api: Api, services: MetricsSummaryServices): void {
  api.add({
    method: 'get', path: '/api/admin/metrics/summary', operationId: 'getMetricsSummary', tag: 'Operations', auth: 'operator',
    summary: "This process's request rate, p95 latency, error rates and job throughput over the last 5 minutes (Prometheus covers every process)",
    responses: { 200: { description: 'The summary; rates are null while nothing was measured', schema: summarySchema } },
    handler: async () => {
      const summary = await services.metricsWindow.summary();
      // Every queue is listed, so one that did nothing shows as zero rather than missing.
      const idle = (queue: string) => ({ queue, completed: 0, failed: 0, completed_per_minute: summary.window_seconds > 0 ? 0 : null, failed_per_minute: summary.window_seconds > 0 ? 0 : null });
      const queues = [...new Set([...QUEUE_NAMES, ...summary.queues.map((entry) => entry.queue)])]
        .sort()
        .map((queue) => summary.queues.find((entry) => entry.queue === queue) ?? idle(queue));
      return { status: 200, body: { ...summary, queues } };
    },
  });
}
