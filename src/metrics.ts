import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { sameSecret } from './same-secret';

export interface QueueSnapshot {
  name: string;
  counts: Record<string, number>;
  oldestWaitingAgeSeconds: number;
}

/**
 * Every Prometheus metric ragworks exports, on one registry per process.
 * Queue gauges are read from Redis when scraped, not kept up to date.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly httpDuration = new Histogram({
    name: 'ragworks_http_request_duration_seconds',
    help: 'HTTP request latency by method, route and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  readonly jobDuration = new Histogram({
    name: 'ragworks_job_duration_seconds',
    help: 'Job processing time by queue and outcome',
    labelNames: ['queue', 'outcome'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });

  readonly jobFailures = new Counter({
    name: 'ragworks_job_failures_total',
    help: 'Job attempts that failed, by queue and whether the job will be retried',
    labelNames: ['queue', 'final'] as const,
    registers: [this.registry],
  });

  readonly documentsIndexed = new Counter({
    name: 'ragworks_documents_indexed_total',
    help: 'Document versions indexed',
    registers: [this.registry],
  });

  readonly searches = new Histogram({
    name: 'ragworks_search_duration_seconds',
    help: 'Search time inside the server by mode',
    labelNames: ['mode'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });

  readonly databaseReads = new Counter({
    name: 'ragworks_database_reads_total',
    help: 'Reads that may go to the read replica, by kind (search: searches not answered from the cache; analytics: reports) and by the server that answered (replica, primary)',
    labelNames: ['read', 'target'] as const,
    registers: [this.registry],
  });

  readonly replicaErrors = new Counter({
    name: 'ragworks_replica_errors_total',
    help: 'Times the read replica failed (did not say its replay position, or failed a read) and reads went to the primary instead',
    registers: [this.registry],
  });

  readonly reranks = new Counter({
    name: 'ragworks_rerank_requests_total',
    help: 'Calls to the rerank endpoint by outcome (reranked; failed: the search answered in its original order)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly answers = new Counter({
    name: 'ragworks_answers_total',
    help: 'Answers by outcome (answered; cached: from the cache; failed: the model failed; canceled: the client went away)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly answerTokens = new Counter({
    name: 'ragworks_answer_tokens_total',
    help: 'Model tokens spent on answers, by kind (prompt, completion)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly analyticsDropped = new Counter({
    name: 'ragworks_analytics_events_dropped_total',
    help: 'Search events not recorded because Redis refused them (the searches themselves answered)',
    registers: [this.registry],
  });

  readonly analyticsAggregated = new Counter({
    name: 'ragworks_analytics_events_aggregated_total',
    help: 'Search events moved from the stream into PostgreSQL',
    registers: [this.registry],
  });

  readonly retentionDeleted = new Counter({
    name: 'ragworks_retention_deleted_rows_total',
    help: 'Rows deleted by the retention job, by table',
    labelNames: ['table'] as const,
    registers: [this.registry],
  });

  readonly cacheEvents = new Counter({
    name: 'ragworks_cache_events_total',
    help: 'Search cache hits, misses, sets and evictions per tier (l1: in-process, l2: Redis)',
    labelNames: ['tier', 'event'] as const,
    registers: [this.registry],
  });

  readonly webhookAttempts = new Counter({
    name: 'ragworks_webhook_attempts_total',
    help: 'Webhook delivery attempts by outcome: delivered, retry, gone (410), given_up',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly webhookAttemptDuration = new Histogram({
    name: 'ragworks_webhook_attempt_duration_seconds',
    help: 'Time from sending a webhook to its response (or failure)',
    labelNames: ['outcome'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30],
    registers: [this.registry],
  });

  readonly webhookEndpointsDisabled = new Counter({
    name: 'ragworks_webhook_endpoints_disabled_total',
    help: 'Endpoints disabled automatically (410 Gone, or failing for WEBHOOK_DISABLE_AFTER_HOURS)',
    registers: [this.registry],
  });

  constructor(readQueueSnapshots?: () => Promise<QueueSnapshot[]>) {
    collectDefaultMetrics({ register: this.registry, prefix: 'ragworks_process_' });
    if (!readQueueSnapshots) return;
    const readQueues = oneReadPerScrape(readQueueSnapshots);
    new Gauge({
      name: 'ragworks_queue_jobs',
      help: 'Jobs per queue and state',
      labelNames: ['queue', 'state'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const queue of await readQueues().catch(() => [])) {
          for (const [state, count] of Object.entries(queue.counts)) this.set({ queue: queue.name, state }, count);
        }
      },
    });
    new Gauge({
      name: 'ragworks_webhook_backlog',
      help: 'Webhook deliveries waiting, delayed for retry, or being sent',
      registers: [this.registry],
      async collect() {
        const queue = (await readQueues().catch(() => [])).find((snapshot) => snapshot.name === 'webhooks');
        this.set(queue ? (queue.counts.waiting ?? 0) + (queue.counts.delayed ?? 0) + (queue.counts.active ?? 0) + (queue.counts.prioritized ?? 0) : 0);
      },
    });
    new Gauge({
      name: 'ragworks_queue_oldest_waiting_age_seconds',
      help: 'Age of the oldest job waiting in each queue (0 when none waits)',
      labelNames: ['queue'] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const queue of await readQueues().catch(() => [])) this.set({ queue: queue.name }, queue.oldestWaitingAgeSeconds);
      },
    });
  }
}

/**
 * A scrape collects every gauge at once (prom-client starts each collect in
 * the same turn), so the queue gauges share the read in flight instead of
 * each reading every queue; the next scrape reads afresh.
 */
function oneReadPerScrape<T>(read: () => Promise<T>): () => Promise<T> {
  let inFlight: Promise<T> | undefined;
  return () => {
    inFlight ??= read().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };
}

/**
 * Whether a scrape may read the metrics: always when no METRICS_TOKEN is
 * set, else only with `Authorization: Bearer <token>` (compared in constant
 * time).
 */
export function scrapeAllowed(authorization: string | undefined, token: string | undefined): boolean {
  if (!token) return true;
  const [scheme, presented] = (authorization ?? '').split(/\s+/, 2);
  if (!/^bearer$/i.test(scheme) || !presented) return false;
  return sameSecret(presented, token);
}
