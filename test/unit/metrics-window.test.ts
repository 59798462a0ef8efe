import { Metrics } from '../../src/metrics';
import { MetricsWindow, quantileFromBuckets } from '../../src/metrics-window';

/** The dashboard's recent figures, read from a real prom-client registry. */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('quantileFromBuckets', () => {
  it('interpolates inside the bucket the rank falls in, as histogram_quantile does', () => {
    // 10 observations up to 0.1 s, 10 more up to 0.5 s: the median is the first bucket's bound.
    const buckets: Array<[number, number]> = [[0.1, 10], [0.5, 20], [Infinity, 20]];
    expect(quantileFromBuckets(0.5, buckets)).toBeCloseTo(0.1);
    expect(quantileFromBuckets(0.75, buckets)).toBeCloseTo(0.3);
    expect(quantileFromBuckets(0.25, buckets)).toBeCloseTo(0.05);
  });

  it('answers the highest finite bound when the rank is in the +Inf bucket, and null without observations', () => {
    expect(quantileFromBuckets(0.95, [[0.1, 1], [1, 1], [Infinity, 10]])).toBe(1);
    expect(quantileFromBuckets(0.95, [[0.1, 0], [Infinity, 0]])).toBeNull();
    expect(quantileFromBuckets(0.95, [])).toBeNull();
  });
});

describe('MetricsWindow', () => {
  let window: MetricsWindow | undefined;
  afterEach(() => window?.stop());

  it('reports request rate, p95 latency, 5xx and 4xx shares and jobs per minute since its first sample', async () => {
    const metrics = new Metrics();
    // Before the window starts: must not count.
    metrics.httpDuration.observe({ method: 'GET', route: '/old', status: '500' }, 9);
    window = new MetricsWindow(metrics, { intervalMs: 60_000, windowMs: 300_000 });
    window.start();
    await sleep(20);
    for (let i = 0; i < 17; i += 1) metrics.httpDuration.observe({ method: 'GET', route: '/a', status: '200' }, 0.02);
    metrics.httpDuration.observe({ method: 'POST', route: '/b', status: '404' }, 0.02);
    metrics.httpDuration.observe({ method: 'POST', route: '/b', status: '422' }, 0.02);
    metrics.httpDuration.observe({ method: 'GET', route: '/c', status: '503' }, 3);
    for (let i = 0; i < 3; i += 1) metrics.jobDuration.observe({ queue: 'indexing', outcome: 'completed' }, 0.5);
    metrics.jobDuration.observe({ queue: 'webhooks', outcome: 'failed' }, 0.5);
    await sleep(200);

    const summary = await window.summary();
    expect(summary.window_seconds).toBeGreaterThanOrEqual(0.2);
    expect(summary.window_seconds).toBeLessThan(5);
    expect(summary.http.requests).toBe(20);
    expect(summary.http.request_rate_per_second).toBeCloseTo(20 / summary.window_seconds);
    expect(summary.http.server_error_rate).toBeCloseTo(0.05);
    expect(summary.http.client_error_rate).toBeCloseTo(0.1);
    // Rank 19 of 20 lies at the top of the 10–25 ms bucket.
    expect(summary.http.p95_latency_ms).toBeCloseTo(25);
    expect(summary.queues).toEqual([
      expect.objectContaining({ queue: 'indexing', completed: 3, failed: 0 }),
      expect.objectContaining({ queue: 'webhooks', completed: 0, failed: 1 }),
    ]);
    expect(summary.queues[0]!.completed_per_minute).toBeCloseTo((3 / summary.window_seconds) * 60);
  });

  it('forgets what is older than the window', async () => {
    const metrics = new Metrics();
    window = new MetricsWindow(metrics, { intervalMs: 50, windowMs: 300 });
    window.start();
    await sleep(20);
    metrics.httpDuration.observe({ method: 'GET', route: '/a', status: '200' }, 0.02);
    expect((await window.summary()).http.requests).toBe(1);
    await sleep(600);
    const later = await window.summary();
    expect(later.http.requests).toBe(0);
    expect(later.window_seconds).toBeLessThanOrEqual(0.3);
    expect(later.http.p95_latency_ms).toBeNull();
    expect(later.http.server_error_rate).toBeNull();
  });

  it('stops sampling when stopped', async () => {
    const metrics = new Metrics();
    window = new MetricsWindow(metrics, { intervalMs: 20, windowMs: 100 });
    window.start();
    await sleep(60);
    window.stop();
    await sleep(250);
    // Every sample has aged out and no new one was taken: nothing to measure against.
    const summary = await window.summary();
    expect(summary.window_seconds).toBe(0);
    expect(summary.http.request_rate_per_second).toBeNull();
  });
});
