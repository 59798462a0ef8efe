import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { startStack, type TestStack } from '../helpers/harness';

const DASHBOARD = path.join(__dirname, '..', '..', 'ops', 'grafana', 'ragworks.json');

interface Summary {
  window_seconds: number;
  http: { requests: number; request_rate_per_second: number | null; p95_latency_ms: number | null; server_error_rate: number | null; client_error_rate: number | null };
  queues: Array<{ queue: string; completed: number; failed: number; completed_per_minute: number | null; failed_per_minute: number | null }>;
}

/** Every series name a registry exposes, histograms with their _bucket, _count and _sum. */
function exportedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const line of exposition.split('\n')) {
    const typed = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (!typed) continue;
    const [, name, type] = typed;
    names.add(name!);
    if (type === 'histogram' || type === 'summary') for (const suffix of ['_bucket', '_count', '_sum']) names.add(`${name}${suffix}`);
  }
  return names;
}

describe('GET /api/admin/metrics/summary and the Grafana dashboard (PGlite, workers in this process)', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startStack({ database: 'pglite' });
  });
  afterAll(async () => {
    await stack?.close();
  });

  const summary = async (): Promise<Summary> => (await stack.operator('get', '/api/admin/metrics/summary').expect(200)).body;

  it('is for the operator only', async () => {
    const tenant = await stack.createTenant();
    await request(stack.app).get('/api/admin/metrics/summary').expect(401);
    await stack.as(tenant.key, 'get', '/api/admin/metrics/summary').expect(403);
  });

  it('counts exactly the requests answered since the last look, with their 4xx and 5xx shares', async () => {
    const before = await summary();
    for (let i = 0; i < 3; i += 1) await request(stack.app).get('/api/no-such-route').expect(404);
    await request(stack.app).get('/api/admin/stats').expect(401);
    for (let i = 0; i < 4; i += 1) await request(stack.app).get('/healthz').expect(200);
    const after = await summary();

    // The process started moments ago, so both reach back to the same first sample.
    expect(after.window_seconds).toBeGreaterThan(before.window_seconds);
    expect(after.window_seconds).toBeLessThan(300);
    // 8 requests, and the first summary itself (answered 200).
    expect(after.http.requests - before.http.requests).toBe(9);
    const clientErrors = (s: Summary) => Math.round((s.http.client_error_rate ?? 0) * s.http.requests);
    expect(clientErrors(after) - clientErrors(before)).toBe(4);
    expect(after.http.server_error_rate).toBe(0);
    expect(after.http.request_rate_per_second).toBeCloseTo(after.http.requests / after.window_seconds);
    expect(after.http.p95_latency_ms).toBeGreaterThan(0);
  });

  it('lists every queue, and counts the jobs this process’s workers completed', async () => {
    const tenant = await stack.createTenant();
    const before = await summary();
    expect(before.queues.map((queue) => queue.queue)).toEqual(expect.arrayContaining(['analytics', 'indexing', 'reconcile', 'retention', 'usage', 'webhook-fanout', 'webhooks']));
    for (const title of ['one', 'two']) {
      const created = await stack.as(tenant.key, 'post', '/api/documents').send({ title, content: `Document ${title} about tides.` }).expect(202);
      await stack.waitForDocument(tenant.key, created.body.id);
    }
    const after = await summary();
    const indexing = (s: Summary) => s.queues.find((queue) => queue.queue === 'indexing')!;
    expect(indexing(after).completed - indexing(before).completed).toBe(2);
    expect(indexing(after).completed_per_minute).toBeCloseTo((indexing(after).completed / after.window_seconds) * 60);
  });

  it('ships a Grafana dashboard whose every query reads metrics the processes export', async () => {
    const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8'));
    expect(dashboard).toMatchObject({ title: 'ragworks', uid: expect.any(String), schemaVersion: expect.any(Number) });
    const panels = dashboard.panels.filter((panel: { type: string }) => panel.type !== 'row');
    const expressions: string[] = panels.flatMap((panel: { targets: Array<{ expr: string }> }) => panel.targets.map((target) => target.expr));
    const used = new Set(expressions.flatMap((expr) => expr.match(/\bragworks_[a-z0-9_]+/g) ?? []));
    // The list: each has a panel.
    for (const needed of [
      'ragworks_http_request_duration_seconds_count',
      'ragworks_http_request_duration_seconds_bucket',
      'ragworks_queue_jobs',
      'ragworks_queue_oldest_waiting_age_seconds',
      'ragworks_job_duration_seconds_count',
      'ragworks_job_failures_total',
      'ragworks_search_duration_seconds_bucket',
      'ragworks_cache_events_total',
      'ragworks_webhook_attempts_total',
      'ragworks_rate_limit_decisions_total',
      'ragworks_usage_drift',
    ]) {
      expect(used).toContain(needed);
    }
    // A web process and a worker together (this stack is both) export every name queried.
    const exported = exportedNames((await request(stack.app).get('/metrics').expect(200)).text);
    expect([...used].filter((name) => !exported.has(name))).toEqual([]);
    // Every panel fits Grafana's 24-column grid.
    for (const panel of dashboard.panels) expect(panel.gridPos.x + panel.gridPos.w).toBeLessThanOrEqual(24);
  });
});
