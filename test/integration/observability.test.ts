import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/logger';
import { requestScope } from '../../src/request-scope';
import request from 'supertest';
import { ADMIN_TOKEN, startStack, type TestStack } from '../helpers/harness';
import { killLeftoverProcesses, startRagworks, unusedPort } from '../helpers/processes';
import { waitFor } from '../helpers/wait';
import { startWebhookReceiver, type ScriptedResponse } from '../helpers/webhook-receiver';

jest.setTimeout(120_000);

interface OtlpAttribute {
  key: string;
  value: { stringValue?: string; intValue?: string | number };
}
interface OtlpSpan {
  name: string;
  traceId: string;
  spanId: string;
  /** Absent on a trace's root span. */
  parentSpanId?: string;
  kind: number;
  startTimeUnixNano: string;
  attributes: OtlpAttribute[];
  links?: Array<{ traceId: string; spanId: string }>;
}
interface OtlpExport {
  resourceSpans: Array<{
    resource: { attributes: OtlpAttribute[] };
    scopeSpans: Array<{ spans: OtlpSpan[] }>;
  }>;
}

function captureLogger(): { lines: Array<Record<string, unknown>>; logger: ReturnType<typeof createLogger> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const text of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(text));
      done();
    },
  });
  return { lines, logger: createLogger('info', sink) };
}

describe('log lines', () => {
  it('carry the request id and tenant of the request being served, and nothing of one outside it', async () => {
    const { lines, logger } = captureLogger();
    logger.info('outside');
    await requestScope.run({ requestId: 'req-42' }, async () => {
      await new Promise((resolve) => setImmediate(resolve));
      requestScope.getStore()!.tenantId = 'tenant-7';
      logger.child({ component: 'domain' }).warn('inside, after an await');
    });
    expect(lines[0]).not.toHaveProperty('request_id');
    expect(lines[1]).toMatchObject({ msg: 'inside, after an await', request_id: 'req-42', tenant_id: 'tenant-7' });
  });

  it('redact credentials and secrets', () => {
    const { lines, logger } = captureLogger();
    logger.info({ req: { headers: { authorization: 'Bearer rw_live_secret', 'x-api-key': 'rw_live_other' } }, job: { apiKey: 'k', secret: 's' } }, 'line');
    const text = JSON.stringify(lines[0]);
    expect(text).not.toContain('rw_live_secret');
    expect(text).not.toContain('rw_live_other');
    expect(lines[0]).toMatchObject({ job: { apiKey: '[redacted]', secret: '[redacted]' } });
  });

  it("redact the dashboard's session cookie and CSRF token, as pino-http logs requests and responses", () => {
    const { lines, logger } = captureLogger();
    logger.info(
      {
        req: { headers: { cookie: 'rw_admin=session-secret.mac', 'x-csrf-token': 'csrf-secret' } },
        res: { statusCode: 303, headers: { 'set-cookie': 'rw_admin=session-secret.mac; Path=/; HttpOnly; SameSite=Strict' } },
      },
      'request completed',
    );
    const text = JSON.stringify(lines[0]);
    expect(text).not.toContain('session-secret');
    expect(text).not.toContain('csrf-secret');
    expect(lines[0]).toMatchObject({ res: { statusCode: 303, headers: { 'set-cookie': '[redacted]' } } });
  });
});

describe('OpenTelemetry', () => {
  let stack: TestStack;
  let collector: http.Server;
  const exports: OtlpExport[] = [];

  beforeAll(async () => {
    // Webhooks to the test's receiver on loopback.
    stack = await startStack({ database: 'postgres', workers: false, env: { WEBHOOK_ALLOW_PRIVATE: 'true' } });
    collector = http.createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        if (req.url === '/v1/traces' && req.headers['content-type']?.includes('json')) exports.push(JSON.parse(body));
        res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
  });
  afterAll(async () => {
    await killLeftoverProcesses();
    await new Promise((resolve) => collector.close(resolve));
    await stack?.close();
  });

  it('exports traces of HTTP and PostgreSQL work to the OTLP endpoint, and log lines carry the trace id', async () => {
    const tenant = await stack.createTenant();
    const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    const web = startRagworks('web', { ...stack.env, PORT: '0', LOG_LEVEL: 'info', OTEL_EXPORTER_OTLP_ENDPOINT: endpoint });
    const listening = await web.waitForMessage('api listening', { timeoutMs: 90_000 });
    const url = String(listening.url).replace('localhost', '127.0.0.1');
    const response = await fetch(`${url}/api/documents`, { headers: { Authorization: `Bearer ${tenant.key}`, 'X-Request-Id': 'traced-request-1' } });
    expect(response.status).toBe(200);
    // Shutdown flushes what the batch processor still holds.
    expect(await web.stop('SIGTERM')).toEqual({ code: 0, signal: null });

    const spans = await waitFor(
      () => {
        const all = exports.flatMap((batch) => batch.resourceSpans.flatMap((resource) => resource.scopeSpans.flatMap((scope) => scope.spans)));
        return all.length > 0 ? all : null;
      },
      { what: 'spans at the collector' },
    );
    const serviceNames = exports.flatMap((batch) =>
      batch.resourceSpans.flatMap((resource) => resource.resource.attributes.filter((attribute) => attribute.key === 'service.name')),
    );
    expect(serviceNames.map((attribute) => attribute.value.stringValue)).toContain('ragworks');
    const serverSpan = spans.find((span) => span.name.startsWith('GET') && JSON.stringify(span.attributes).includes('/api/documents'));
    expect(serverSpan).toBeDefined();
    const databaseSpans = spans.filter((span) => span.traceId === serverSpan!.traceId && /select|pg\./i.test(span.name));
    expect(databaseSpans.length).toBeGreaterThan(0);

    const requestLine = web.logs.find((line) => line.msg === 'request completed' && JSON.stringify(line).includes('traced-request-1'));
    expect(requestLine).toBeDefined();
    expect(requestLine!.trace_id).toBe(serverSpan!.traceId);
  });

  it('samples by the standard OTEL_TRACES_SAMPLER, following a caller that sampled its trace, and never traces probes or scrapes', async () => {
    const tenant = await stack.createTenant();
    const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    // Parent-based with a ratio of 0: only a request whose caller sampled its trace is kept.
    const web = startRagworks('web', {
      ...stack.env,
      PORT: '0',
      LOG_LEVEL: 'info',
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0',
    });
    const listening = await web.waitForMessage('api listening', { timeoutMs: 90_000 });
    const url = String(listening.url).replace('localhost', '127.0.0.1');
    const auth = { Authorization: `Bearer ${tenant.key}` };
    const sampled = (traceId: string) => `00-${traceId}-${randomBytes(8).toString('hex')}-01`;
    const keptTrace = randomBytes(16).toString('hex');
    const probeTrace = randomBytes(16).toString('hex');
    expect((await fetch(`${url}/api/documents`, { headers: auth })).status).toBe(200);
    expect((await fetch(`${url}/api/documents`, { headers: { ...auth, traceparent: sampled(keptTrace) } })).status).toBe(200);
    for (const probe of ['/healthz', '/readyz', '/metrics', '/api/health']) {
      expect((await fetch(`${url}${probe}`, { headers: { traceparent: sampled(probeTrace) } })).status).toBe(200);
    }
    expect(await web.stop('SIGTERM')).toEqual({ code: 0, signal: null });

    await waitFor(() => collectedSpans().some((span) => span.traceId === keptTrace && span.name.startsWith('GET')), { what: "the sampled request's spans" });
    const ofThisProcess = collectedSpans().filter((span) => span.pid === String(web.pid));
    // Nothing else: not the request without a parent, not the probes inside a sampled trace, not the start-up's statements.
    expect([...new Set(ofThisProcess.map((span) => span.traceId))]).toEqual([keptTrace]);
  });

  /** Every span the collector has received, with the pid of the process that exported it. */
  function collectedSpans() {
    const pidOf = (resource: { attributes: OtlpAttribute[] }) => resource.attributes.find((attribute) => attribute.key === 'process.pid')?.value.intValue;
    return exports.flatMap((batch) =>
      batch.resourceSpans.flatMap((resource) => resource.scopeSpans.flatMap((scope) => scope.spans.map((span) => ({ ...span, pid: String(pidOf(resource.resource)) })))),
    );
  }
  const attribute = (span: OtlpSpan, key: string) => span.attributes.find((each) => each.key === key)?.value.stringValue;

  /**
   * A web and a worker process exporting traces to the test's collector, a tenant whose endpoint (for
   * `document.indexed`) is a fresh receiver, and one document posted; resolves once the receiver has
   * answered `failures` (in order) and then one 200, with its requests and the one it accepted.
   */
  async function traceOneDocument(workerEnv: Record<string, string>, headers: Record<string, string> = {}, failures: ScriptedResponse[] = []) {
    const target = await startWebhookReceiver();
    target.respond(...failures);
    try {
      const tenant = await stack.createTenant();
      const created = await stack.as(tenant.key, 'post', '/api/admin/webhooks').send({ url: target.url('/hook'), event_types: ['document.indexed'] }).expect(201);
      target.secrets = [created.body.secret];
      const env = { ...stack.env, LOG_LEVEL: 'info', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(collector.address() as AddressInfo).port}` };
      const web = startRagworks('web', { ...env, PORT: '0' });
      const worker = startRagworks('worker', { ...env, ...workerEnv });
      const listening = await web.waitForMessage('api listening', { timeoutMs: 90_000 });
      await worker.waitForMessage('workers started', { timeoutMs: 90_000 });
      const posted = await fetch(`${String(listening.url).replace('localhost', '127.0.0.1')}/api/documents`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${tenant.key}`, 'Content-Type': 'application/json', ...headers },
        body: JSON.stringify({ title: 'Traced', content: '# Traced\n\nOne document, followed from its POST to its webhook.' }),
      });
      expect(posted.status).toBe(202);
      const requests = await target.waitForRequests(failures.length + 1, { timeoutMs: 60_000 });
      const delivered = requests[failures.length];
      expect(delivered.json).toMatchObject({ type: 'document.indexed' });
      // Shutdown flushes what each process's batch processor still holds.
      expect(await worker.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(await web.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      return { web, worker, delivered, requests };
    } finally {
      await target.close();
    }
  }

  it('follows one document in one trace across processes: its POST, indexing in a worker, the fan-out and the delivery; receivers get no traceparent', async () => {
    const { web, worker, delivered } = await traceOneDocument({ LOG_LEVEL: 'debug' }, { 'X-Request-Id': 'traced-document-1' });
    // Our trace context stays with us unless WEBHOOK_PROPAGATE_TRACE=true.
    expect(Object.keys(delivered.headers).filter((name) => ['traceparent', 'tracestate', 'baggage'].includes(name))).toEqual([]);

    const spans = collectedSpans();
    const post = spans.find((span) => span.name.startsWith('POST') && JSON.stringify(span.attributes).includes('/api/documents'));
    expect(post).toBeDefined();
    const trace = spans.filter((span) => span.traceId === post!.traceId);
    const byProcess = new Set(trace.map((span) => span.pid));
    expect(byProcess).toEqual(new Set([String(web.pid), String(worker.pid)]));
    const names = trace.map((span) => span.name);
    // BullMQ's consumer spans of the three queues the document went through, and the POST to the receiver.
    for (const queue of ['indexing', 'webhook-fanout', 'webhooks']) expect(names.some((name) => name.includes(queue))).toBe(true);
    const delivery = trace.find((span) => span.name.startsWith('POST') && span.pid === String(worker.pid));
    expect(delivery).toBeDefined();
    expect(trace.some((span) => span.pid === String(worker.pid) && /insert|update|pg\./i.test(span.name))).toBe(true);
    // A job's log lines carry the trace they run in: here each queue's `job completed` (at debug).
    const jobLines = worker.logs.filter((line) => line.msg === 'job completed');
    expect(new Set(jobLines.map((line) => line.queue))).toEqual(new Set(['indexing', 'webhook-fanout', 'webhooks']));
    expect(jobLines.map((line) => line.trace_id)).toEqual(jobLines.map(() => post!.traceId));
  });

  it('sends our traceparent with a delivery when WEBHOOK_PROPAGATE_TRACE=true: the receiver joins the document\'s trace', async () => {
    const { delivered } = await traceOneDocument({ WEBHOOK_PROPAGATE_TRACE: 'true' });
    // W3C: version-traceid-spanid-flags.
    const [, traceId] = /^00-([0-9a-f]{32})-[0-9a-f]{16}-0[01]$/.exec(delivered.headers.traceparent ?? '') ?? [];
    expect(traceId).toBeDefined();
    const spans = exports.flatMap((batch) => batch.resourceSpans.flatMap((resource) => resource.scopeSpans.flatMap((scope) => scope.spans)));
    const post = spans.find((span) => span.traceId === traceId && span.name.startsWith('POST') && JSON.stringify(span.attributes).includes('/api/documents'));
    expect(post).toBeDefined();
  });

  it("runs a delivery's retry in a trace of its own, linked to the document's trace, and its log lines carry the new trace id", async () => {
    // The receiver fails the first attempt; the retry comes a second later (± jitter).
    const { web, worker, requests } = await traceOneDocument({ LOG_LEVEL: 'debug', WEBHOOK_RETRY_SCHEDULE: '0,1' }, {}, [{ status: 500 }]);
    expect(requests.map((request) => request.response.status)).toEqual([500, 200]);

    const spans = collectedSpans();
    const post = spans.find((span) => span.pid === String(web.pid) && span.name.startsWith('POST') && JSON.stringify(span.attributes).includes('/api/documents'));
    expect(post).toBeDefined();
    const documentTrace = spans.filter((span) => span.traceId === post!.traceId);
    const attempts = spans
      .filter((span) => span.pid === String(worker.pid) && span.name === 'process webhooks')
      .sort((a, b) => Number(BigInt(a.startTimeUnixNano) - BigInt(b.startTimeUnixNano)));
    expect(attempts).toHaveLength(2);
    const [first, retry] = attempts;
    // The first attempt is part of the document's story.
    expect(first.traceId).toBe(post!.traceId);
    // The retry is the root of a trace of its own, linked to the span that added the delivery: the document's fan-out.
    expect(retry.traceId).not.toBe(post!.traceId);
    expect(retry.parentSpanId ?? '').toBe('');
    expect(retry.links).toHaveLength(1);
    expect(retry.links![0].traceId).toBe(post!.traceId);
    const linked = documentTrace.find((span) => span.spanId === retry.links![0].spanId);
    expect(linked?.name).toBe('process webhook-fanout');
    // The retry's POST to the receiver is in the retry's trace, not the document's.
    const posts = spans.filter((span) => span.pid === String(worker.pid) && span.name.startsWith('POST') && JSON.stringify(span.attributes).includes('/hook'));
    expect(posts.filter((span) => span.traceId === post!.traceId)).toHaveLength(1);
    expect(posts.filter((span) => span.traceId === retry.traceId)).toHaveLength(1);

    // Each attempt's log lines carry the trace it ran in.
    const failed = worker.logs.filter((line) => line.msg === 'job attempt failed' && line.queue === 'webhooks');
    expect(failed.map((line) => line.trace_id)).toEqual([post!.traceId]);
    const completed = worker.logs.filter((line) => line.msg === 'job completed' && line.queue === 'webhooks');
    expect(completed.map((line) => line.trace_id)).toEqual([retry.traceId]);
  });

  it("runs each tenant's usage rollup of a scheduler tick in a trace of its own, linked to the tick's fan-out", async () => {
    const tenants = [await stack.createTenant(), await stack.createTenant()];
    const env = { ...stack.env, LOG_LEVEL: 'debug', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(collector.address() as AddressInfo).port}` };
    const worker = startRagworks('worker', { ...env, WORKER_QUEUES: 'usage' });
    await worker.waitForMessage('workers started', { timeoutMs: 90_000 });
    const scheduler = startRagworks('scheduler', { ...env, SCHEDULE_USAGE: '*/2 * * * * *' });
    const rollups = await Promise.all(
      tenants.map((tenant) =>
        worker.waitForLog((line) => line.msg === 'job completed' && String(line.job_id).startsWith(`usage-${tenant.id}-`), {
          what: `the usage rollup of tenant ${tenant.id}`,
          timeoutMs: 90_000,
        }),
      ),
    );
    // Shutdown flushes what each process's batch processor still holds.
    expect(await scheduler.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(await worker.stop('SIGTERM')).toEqual({ code: 0, signal: null });

    const spans = collectedSpans().filter((span) => span.pid === String(worker.pid));
    const jobSpan = (jobId: string) => spans.find((span) => span.name === 'process usage' && attribute(span, 'bullmq.job.id') === jobId);
    const traces = new Set<string>();
    for (const [index, line] of rollups.entries()) {
      const jobId = String(line.job_id);
      const tenantSpan = jobSpan(jobId);
      // The tick's fan-out job: the tick is the tail of both ids.
      const fanOut = jobSpan(`usage-rollup-${jobId.slice(`usage-${tenants[index].id}-`.length)}`);
      expect(tenantSpan).toBeDefined();
      expect(fanOut).toBeDefined();
      expect(tenantSpan!.traceId).not.toBe(fanOut!.traceId);
      expect(tenantSpan!.parentSpanId ?? '').toBe('');
      expect(tenantSpan!.links).toEqual([expect.objectContaining({ traceId: fanOut!.traceId, spanId: fanOut!.spanId })]);
      // The rollup's statements are in its own trace, and so are its log lines.
      expect(spans.some((span) => span.traceId === tenantSpan!.traceId && span.spanId !== tenantSpan!.spanId && /select|insert|pg\./i.test(span.name))).toBe(true);
      expect(line.trace_id).toBe(tenantSpan!.traceId);
      traces.add(tenantSpan!.traceId);
    }
    // One trace per tenant.
    expect(traces.size).toBe(tenants.length);
  });
});

describe('/metrics with METRICS_TOKEN (postgres)', () => {
  const token = 'metrics-scrape-token-0123456789';
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false, env: { METRICS_TOKEN: token } });
  });
  afterAll(async () => {
    await killLeftoverProcesses();
    await stack?.close();
  });

  it('answers only a scrape that brings the token, on the API port and on a worker METRICS_PORT', async () => {
    const api = (authorization?: string) => {
      const call = request(stack.app).get('/metrics');
      return authorization ? call.set('Authorization', authorization) : call;
    };
    expect((await api()).status).toBe(401);
    expect((await api(`Bearer ${token}x`)).status).toBe(401);
    expect((await api(`Bearer ${ADMIN_TOKEN}`)).status).toBe(401);
    const scraped = await api(`Bearer ${token}`).expect(200);
    expect(scraped.text).toContain('ragworks_queue_jobs');

    const port = await unusedPort();
    const worker = startRagworks('worker', { ...stack.env, METRICS_PORT: String(port), LOG_LEVEL: 'info' });
    try {
      await worker.waitForMessage('workers started');
      const scrape = (authorization?: string) => fetch(`http://127.0.0.1:${port}/metrics`, { headers: authorization ? { Authorization: authorization } : {} });
      const refused = await waitFor(async () => (await scrape().catch(() => null))?.status, { what: 'the worker metrics server' });
      expect(refused).toBe(401);
      const allowed = await scrape(`Bearer ${token}`);
      expect(allowed.status).toBe(200);
      expect(await allowed.text()).toContain('ragworks_job_failures_total');
      expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    } finally {
      await worker.stop();
    }
  });

  it("serves an orchestrator's probes on a worker's METRICS_PORT: liveness from its event loop, readiness from both stores", async () => {
    const port = await unusedPort();
    const worker = startRagworks('worker', { ...stack.env, METRICS_PORT: String(port), LOG_LEVEL: 'info' });
    const probe = (path: string) => fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(1_000) });
    try {
      await worker.waitForMessage('workers started');
      const live = await waitFor(async () => (await probe('/healthz').catch(() => null)) ?? null, { what: 'the worker probe server' });
      expect(live.status).toBe(200);
      expect(await live.json()).toEqual({ status: 'ok' });
      const ready = await probe('/readyz');
      expect(ready.status).toBe(200);
      expect(await ready.json()).toEqual({ status: 'ready', checks: { database: 'up', redis: 'up' } });

      // A process that cannot run its event loop (here: stopped) fails liveness, and passes again once it runs.
      worker.signal('SIGSTOP');
      await expect(probe('/healthz')).rejects.toThrow();
      worker.signal('SIGCONT');
      expect((await probe('/healthz')).status).toBe(200);
    } finally {
      worker.signal('SIGCONT');
      await worker.stop();
    }
  });
});
