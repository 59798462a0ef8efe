import type { Metrics } from './metrics';

/** Cumulative HTTP figures at one instant, summed over every route and method. */
interface HttpTotals {
  requests: number;
  clientErrors: number;
  serverErrors: number;
  /** Upper bound (seconds; Infinity for +Inf) → cumulative count, as the histogram keeps them. */
  buckets: Map<number, number>;
}

interface JobTotals {
  completed: number;
  failed: number;
}

interface Sample {
  at: number;
  http: HttpTotals;
  jobs: Map<string, JobTotals>;
}

export interface QueueThroughput {
  queue: string;
  completed: number;
  failed: number;
  completed_per_minute: number | null;
  failed_per_minute: number | null;
}

export interface MetricsSummary {
  /** How far back the figures reach: up to the window, less just after the process started. */
  window_seconds: number;
  sampled_every_seconds: number;
  http: {
    requests: number;
    request_rate_per_second: number | null;
    /** Estimated from the latency histogram's buckets, as Prometheus's histogram_quantile does. */
    p95_latency_ms: number | null;
    server_error_rate: number | null;
    client_error_rate: number | null;
  };
  /** Job outcomes recorded by this process's workers, per queue. */
  queues: QueueThroughput[];
}

export interface MetricsWindowOptions {
  intervalMs: number;
  windowMs: number;
}

const DEFAULTS: MetricsWindowOptions = { intervalMs: 10_000, windowMs: 5 * 60_000 };

/**
 * Recent rates from this process's own Prometheus registry, for the
 * dashboard: counters only ever grow, so the figures over the last minutes
 * are the difference between now and a snapshot taken then. Snapshots are
 * taken every `intervalMs` and kept for `windowMs`; Prometheus, scraping
 * every process, remains the place for the whole fleet and for history.
 */
export class MetricsWindow {
  private samples: Sample[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly options: MetricsWindowOptions;

  constructor(
    private readonly metrics: Metrics,
    options: Partial<MetricsWindowOptions> = {},
  ) {
    this.options = { ...DEFAULTS, ...options };
  }

  start(): void {
    if (this.timer) return;
    void this.record();
    this.timer = setInterval(() => void this.record(), this.options.intervalMs);
    // Sampling alone must never keep a process alive.
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Figures from the oldest snapshot inside the window up to this moment. */
  async summary(): Promise<MetricsSummary> {
    const current = await this.read();
    const baseline = this.samples.find((sample) => sample.at >= current.at - this.options.windowMs) ?? current;
    return summarize(baseline, current, this.options.intervalMs);
  }

  private async record(): Promise<void> {
    const sample = await this.read();
    this.samples = this.samples.filter((kept) => kept.at >= sample.at - this.options.windowMs);
    this.samples.push(sample);
  }

  private async read(): Promise<Sample> {
    const at = Date.now();
    const [http, jobs] = await Promise.all([this.metrics.httpDuration.get(), this.metrics.jobDuration.get()]);
    const totals: HttpTotals = { requests: 0, clientErrors: 0, serverErrors: 0, buckets: new Map() };
    for (const value of http.values) {
      if (value.metricName?.endsWith('_count')) {
        const status = Number(value.labels.status);
        totals.requests += value.value;
        if (status >= 500) totals.serverErrors += value.value;
        else if (status >= 400) totals.clientErrors += value.value;
      } else if (value.metricName?.endsWith('_bucket')) {
        // Bucket series carry `le` beside the declared labels.
        const le = (value.labels as Record<string, string | number | undefined>).le;
        const bound = le === '+Inf' ? Infinity : Number(le);
        totals.buckets.set(bound, (totals.buckets.get(bound) ?? 0) + value.value);
      }
    }
    const perQueue = new Map<string, JobTotals>();
    for (const value of jobs.values) {
      if (!value.metricName?.endsWith('_count')) continue;
      const queue = String(value.labels.queue);
      const entry = perQueue.get(queue) ?? { completed: 0, failed: 0 };
      if (value.labels.outcome === 'completed') entry.completed += value.value;
      else if (value.labels.outcome === 'failed') entry.failed += value.value;
      perQueue.set(queue, entry);
    }
    return { at, http: totals, jobs: perQueue };
  }
}

/** A counter's growth; a reset (the registry cleared) counts as no growth rather than a negative one. */
const growth = (now: number, then: number | undefined) => Math.max(0, now - (then ?? 0));

function summarize(baseline: Sample, current: Sample, intervalMs: number): MetricsSummary {
  const seconds = (current.at - baseline.at) / 1000;
  const perSecond = (count: number) => (seconds > 0 ? count / seconds : null);
  const perMinute = (count: number) => (seconds > 0 ? (count / seconds) * 60 : null);
  const share = (count: number, of: number) => (of > 0 ? count / of : null);

  const requests = growth(current.http.requests, baseline.http.requests);
  const buckets = [...current.http.buckets.entries()]
    .sort(([a], [b]) => a - b)
    .map(([bound, count]): [number, number] => [bound, growth(count, baseline.http.buckets.get(bound))]);
  const p95 = quantileFromBuckets(0.95, buckets);

  const queues = [...current.jobs.entries()]
    .map(([queue, totals]) => {
      const before = baseline.jobs.get(queue);
      const completed = growth(totals.completed, before?.completed);
      const failed = growth(totals.failed, before?.failed);
      return { queue, completed, failed, completed_per_minute: perMinute(completed), failed_per_minute: perMinute(failed) };
    })
    .sort((a, b) => a.queue.localeCompare(b.queue));

  return {
    window_seconds: seconds,
    sampled_every_seconds: intervalMs / 1000,
    http: {
      requests,
      request_rate_per_second: perSecond(requests),
      p95_latency_ms: p95 === null ? null : p95 * 1000,
      server_error_rate: share(growth(current.http.serverErrors, baseline.http.serverErrors), requests),
      client_error_rate: share(growth(current.http.clientErrors, baseline.http.clientErrors), requests),
    },
    queues,
  };
}

/**
 * The q-quantile of observations counted in cumulative buckets
 * ([upper bound, count] by ascending bound, the last +Inf), interpolated
 * linearly inside the bucket it falls in, as Prometheus's
 * histogram_quantile does: in the +Inf bucket it is the highest finite
 * bound. Null without observations.
 */
export function quantileFromBuckets(q: number, buckets: Array<[number, number]>): number | null {
  const total = buckets.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  const index = buckets.findIndex(([, count]) => count >= rank);
  const [bound, count] = buckets[index]!;
  const [lowerBound, lowerCount] = index > 0 ? buckets[index - 1]! : [0, 0];
  if (bound === Infinity) return lowerBound;
  if (count === lowerCount) return bound;
  return lowerBound + ((bound - lowerBound) * (rank - lowerCount)) / (count - lowerCount);
}
