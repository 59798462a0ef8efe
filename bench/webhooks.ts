import http from 'node:http';
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { Webhook } from 'standardwebhooks';
import { ADMIN_TOKEN, log, startDeployment, type Cleanup, type Deployment } from './indexing';
import { fixed, summarize, table, type Summary } from './stats';
import { positiveIntEnv } from './settings';

/**
 * Webhook delivery measured from the outside: ragworks processes deliver
 * real events — from POST /api/documents/batch and the indexing it starts —
 * to a receiver in this process that answers 200 at once, notes when each
 * delivery arrived and checks signatures on a sample.
 */

export const WEBHOOK_SETTINGS = {
  /** Documents posted in the burst: each gives document.created and document.indexed, each batch index_job.completed. */
  burstDocuments: positiveIntEnv('BENCH_WEBHOOK_DOCUMENTS', 750),
  burstBatchSize: 100,
  pacedBatches: positiveIntEnv('BENCH_WEBHOOK_PACED_BATCHES', 24),
  pacedBatchSize: 10,
  /** The paced phase offers this share of what one worker process delivered in its burst. */
  pacedShare: 0.5,
  endpoints: 4,
  workerConcurrency: positiveIntEnv('BENCH_WEBHOOK_WORKER_CONCURRENCY', 8),
  /** Unset: ragworks' own default (WEBHOOK_ENDPOINT_CONCURRENCY=2). */
  endpointConcurrency: process.env.BENCH_WEBHOOK_ENDPOINT_CONCURRENCY ? positiveIntEnv('BENCH_WEBHOOK_ENDPOINT_CONCURRENCY', 2) : null,
  /** Every n-th request's signature is verified with standardwebhooks (the first included). */
  verifyEvery: 50,
  workerCounts: [1, 2],
  phaseTimeoutMs: 4 * 60_000,
};

/** Events per document (document.created, then document.indexed or document.failed) and per batch (index_job.completed or .failed). */
const EVENTS_PER_DOCUMENT = 2;
const EVENTS_PER_BATCH = 1;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// The receiver

interface Receipt {
  /** webhook-id, which is also the envelope's id. */
  id: string;
  path: string;
  type: string;
  /** The envelope's created_at, epoch ms. */
  createdAt: number;
  /** When the whole request had arrived here, epoch ms. */
  receivedAt: number;
}

class Receiver {
  readonly receipts: Receipt[] = [];
  private readonly verifiers = new Map<string, Webhook>();
  private readonly sockets = new Set<net.Socket>();
  private requests = 0;
  signaturesChecked = 0;
  readonly signatureFailures: string[] = [];
  /** Requests that were not a well-formed delivery to a known path. */
  readonly unexpected: string[] = [];

  private constructor(
    private readonly server: http.Server,
    readonly port: number,
  ) {
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    server.on('request', (request, response) => this.handle(request, response));
  }

  static async start(): Promise<Receiver> {
    const server = http.createServer({ keepAliveTimeout: 60_000 });
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
    });
    return new Receiver(server, port);
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  expect(path: string, secret: string): void {
    this.verifiers.set(path, new Webhook(secret));
  }

  private handle(request: http.IncomingMessage, response: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const receivedAt = Date.now();
      // Answered before anything else is done: the figure is ragworks', not the receiver's.
      response.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
      this.record(request, Buffer.concat(chunks).toString('utf8'), receivedAt);
    });
  }

  private record(request: http.IncomingMessage, body: string, receivedAt: number): void {
    const path = request.url ?? '';
    const verifier = this.verifiers.get(path);
    const id = request.headers['webhook-id'];
    if (request.method !== 'POST' || !verifier || typeof id !== 'string') {
      this.unexpected.push(`${request.method} ${path} webhook-id=${String(id)}`);
      return;
    }
    let envelope: { id?: unknown; type?: unknown; created_at?: unknown };
    try {
      envelope = JSON.parse(body) as typeof envelope;
    } catch {
      this.unexpected.push(`${path}: a body that is not JSON`);
      return;
    }
    const createdAt = typeof envelope.created_at === 'string' ? Date.parse(envelope.created_at) : Number.NaN;
    if (envelope.id !== id || typeof envelope.type !== 'string' || Number.isNaN(createdAt)) {
      this.unexpected.push(`${path}: envelope id ${String(envelope.id)} for webhook-id ${id}, created_at ${String(envelope.created_at)}`);
      return;
    }
    if (this.requests % WEBHOOK_SETTINGS.verifyEvery === 0) {
      this.signaturesChecked += 1;
      try {
        verifier.verify(body, {
          'webhook-id': id,
          'webhook-timestamp': String(request.headers['webhook-timestamp'] ?? ''),
          'webhook-signature': String(request.headers['webhook-signature'] ?? ''),
        });
      } catch (error) {
        this.signatureFailures.push(`${path} ${id}: ${(error as Error).message}`);
      }
    }
    this.requests += 1;
    this.receipts.push({ id, path, type: envelope.type, createdAt, receivedAt });
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------
// Phases

export interface PhaseResult {
  phase: 'burst' | 'paced';
  documents: number;
  batches: number;
  /** Endpoints × events. */
  expected: number;
  /** Distinct (webhook-id, endpoint) pairs received. */
  delivered: number;
  /** Requests beyond the first for a (webhook-id, endpoint) pair. */
  duplicates: number;
  /** Paced phase: the deliveries per second offered (events created × endpoints). */
  offeredPerSecond: number | null;
  /** First event created to last delivery received. */
  seconds: number;
  deliveriesPerSecond: number;
  /** Event created_at to receipt, first receipt of each pair, ms. */
  latency: Summary;
}

interface Plan {
  phase: PhaseResult['phase'];
  batchSizes: number[];
  /** Time between the starts of two POSTs; 0 posts back to back. */
  intervalMs: number;
  offeredPerSecond: number | null;
}

function syntheticDocument(index: number) {
  // Short real-looking text: one chunk each, so indexing stays a small share of the work.
  return {
    title: `Webhook benchmark document ${index}`,
    content: [
      `# Delivery note ${index}`,
      '',
      'Tenants subscribe HTTP endpoints to events; workers deliver them signed and retry them when a receiver fails.',
      `This document exists so that creating and indexing it emits events, number ${index} of the run.`,
      'Every delivery carries the webhook-id, webhook-timestamp and webhook-signature headers of the Standard Webhooks specification.',
    ].join('\n'),
    content_type: 'markdown',
    tags: ['bench'],
  };
}

function deliveriesFor(batchSizes: readonly number[], endpoints: number): number {
  return endpoints * batchSizes.reduce((sum, size) => sum + size * EVENTS_PER_DOCUMENT + EVENTS_PER_BATCH, 0);
}

async function runPhase(deployment: Deployment, workers: number, receiver: Receiver, plan: Plan, firstDocument: number): Promise<PhaseResult> {
  const expected = deliveriesFor(plan.batchSizes, WEBHOOK_SETTINGS.endpoints);
  const from = receiver.receipts.length;
  // Every earlier phase has been fully delivered, so this phase's events are those created from now on.
  const began = Date.now();
  const started = performance.now();
  let next = firstDocument;
  let late = 0;
  for (const [index, size] of plan.batchSizes.entries()) {
    if (plan.intervalMs > 0) {
      const wait = started + index * plan.intervalMs - performance.now();
      if (wait > 0) await sleep(wait);
      else if (index > 0) late += 1;
    }
    const documents = Array.from({ length: size }, () => syntheticDocument(next++));
    await deployment.client.expect(202, 'POST', '/api/documents/batch', { token: deployment.tenant.key, body: { documents } });
  }
  if (late > 0) log(`  ${late} POSTs started late: the offered rate was lower than planned`);

  const deadline = Date.now() + WEBHOOK_SETTINGS.phaseTimeoutMs;
  let lastReport = Date.now();
  const distinct = () => new Set(receiver.receipts.slice(from).filter((r) => r.createdAt >= began).map((r) => `${r.id} ${r.path}`)).size;
  for (;;) {
    const delivered = distinct();
    if (delivered >= expected) break;
    if (Date.now() > deadline) throw new Error(`${plan.phase}: ${delivered}/${expected} deliveries within ${WEBHOOK_SETTINGS.phaseTimeoutMs} ms`);
    if (Date.now() - lastReport > 5_000) {
      lastReport = Date.now();
      log(`  ${delivered}/${expected} delivered`);
      // A worker process that died would otherwise only show as the timeout, minutes later.
      await waitForWebhookWorkers(deployment, workers, 0);
    }
    await sleep(50);
  }
  // A short wait, so a delivery that is sent twice has the chance to show up as a duplicate.
  await sleep(1_000);

  const receipts = receiver.receipts.slice(from).filter((r) => r.createdAt >= began);
  const firsts = new Map<string, Receipt>();
  for (const receipt of receipts) {
    const key = `${receipt.id} ${receipt.path}`;
    if (!firsts.has(key)) firsts.set(key, receipt);
  }
  const unique = [...firsts.values()];
  const firstCreated = Math.min(...unique.map((r) => r.createdAt));
  const lastReceived = Math.max(...unique.map((r) => r.receivedAt));
  const seconds = (lastReceived - firstCreated) / 1000;
  return {
    phase: plan.phase,
    documents: plan.batchSizes.reduce((sum, size) => sum + size, 0),
    batches: plan.batchSizes.length,
    expected,
    delivered: unique.length,
    duplicates: receipts.length - unique.length,
    offeredPerSecond: plan.offeredPerSecond,
    seconds,
    deliveriesPerSecond: unique.length / seconds,
    latency: summarize(unique.map((r) => r.receivedAt - r.createdAt)),
  };
}

// ---------------------------------------------------------------------------
// Configurations

export interface WebhookConfigResult {
  setup: string;
  workers: number;
  phases: PhaseResult[];
  signaturesChecked: number;
  signatureFailures: string[];
  unexpected: string[];
}

export interface WebhookFigures {
  settings: typeof WEBHOOK_SETTINGS;
  /** Deliveries per second offered in every paced phase. */
  pacedOfferedPerSecond: number;
  configurations: WebhookConfigResult[];
}

function burstBatches(): number[] {
  const sizes: number[] = [];
  for (let left = WEBHOOK_SETTINGS.burstDocuments; left > 0; left -= WEBHOOK_SETTINGS.burstBatchSize) {
    sizes.push(Math.min(left, WEBHOOK_SETTINGS.burstBatchSize));
  }
  return sizes;
}

async function measureConfiguration(workers: number, pacedOfferedPerSecond: number | null, cleanup: Cleanup): Promise<WebhookConfigResult> {
  const env: Record<string, string> = { WEBHOOK_ALLOW_PRIVATE: 'true' };
  if (WEBHOOK_SETTINGS.endpointConcurrency) env.WEBHOOK_ENDPOINT_CONCURRENCY = String(WEBHOOK_SETTINGS.endpointConcurrency);
  const receiver = await Receiver.start();
  const closeReceiver = cleanup.add(`webhook receiver on port ${receiver.port}`, () => receiver.close());
  try {
    const deployment = await startDeployment({ kind: 'postgres', workers, workerConcurrency: WEBHOOK_SETTINGS.workerConcurrency, env }, cleanup);
    try {
      await waitForWebhookWorkers(deployment, workers);
      for (let index = 0; index < WEBHOOK_SETTINGS.endpoints; index += 1) {
        const path = `/hooks/${index}`;
        const created = await deployment.client.expect<{ secret: string }>(201, 'POST', '/api/admin/webhooks', {
          token: ADMIN_TOKEN,
          tenant: deployment.tenant.id,
          body: { url: receiver.url(path), description: `benchmark receiver ${index}` },
        });
        receiver.expect(path, created.body.secret);
      }

      const phases: PhaseResult[] = [];
      const burst = burstBatches();
      log(`  burst: ${WEBHOOK_SETTINGS.burstDocuments} documents in ${burst.length} batches, back to back → ${deliveriesFor(burst, WEBHOOK_SETTINGS.endpoints)} deliveries`);
      phases.push(await runPhase(deployment, workers, receiver, { phase: 'burst', batchSizes: burst, intervalMs: 0, offeredPerSecond: null }, 0));
      const burstResult = phases[0];
      log(`  ${fixed(burstResult.deliveriesPerSecond, 1)} deliveries/s, p50 ${fixed(burstResult.latency.p50, 0)} ms from event to receipt`);

      const offered = pacedOfferedPerSecond ?? burstResult.deliveriesPerSecond * WEBHOOK_SETTINGS.pacedShare;
      const paced = Array.from({ length: WEBHOOK_SETTINGS.pacedBatches }, () => WEBHOOK_SETTINGS.pacedBatchSize);
      const perBatch = deliveriesFor([WEBHOOK_SETTINGS.pacedBatchSize], WEBHOOK_SETTINGS.endpoints);
      const intervalMs = (perBatch / offered) * 1000;
      log(`  paced: ${paced.length} batches of ${WEBHOOK_SETTINGS.pacedBatchSize} documents every ${fixed(intervalMs, 0)} ms → ${fixed(offered, 1)} deliveries/s offered`);
      phases.push(
        await runPhase(deployment, workers, receiver, { phase: 'paced', batchSizes: paced, intervalMs, offeredPerSecond: offered }, WEBHOOK_SETTINGS.burstDocuments),
      );
      log(`  p50 ${fixed(phases[1].latency.p50, 0)} ms, p99 ${fixed(phases[1].latency.p99, 0)} ms from event to receipt`);

      return {
        setup: deployment.description,
        workers,
        phases,
        signaturesChecked: receiver.signaturesChecked,
        signatureFailures: receiver.signatureFailures,
        unexpected: receiver.unexpected,
      };
    } finally {
      await deployment.release();
    }
  } finally {
    await closeReceiver();
  }
}

/** Waits until both webhook queues have `expected` workers connected; `timeoutMs` 0 checks once. */
async function waitForWebhookWorkers(deployment: Deployment, expected: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const queues = await deployment.client.expect<Array<{ name: string; workers: number }>>(200, 'GET', '/api/admin/queues', { token: ADMIN_TOKEN });
    const counts = ['webhook-fanout', 'webhooks'].map((name) => queues.body.find((queue) => queue.name === name)?.workers ?? 0);
    if (counts.every((count) => count >= expected)) return;
    if (Date.now() >= deadline) throw new Error(`the webhook queues have ${counts.join(' and ')} workers, expected ${expected}`);
    await sleep(200);
  }
}

/** One web process plus 1, then 2, worker processes; the paced phases all offer half of what one worker managed. */
export async function runWebhookBenchmark(cleanup: Cleanup): Promise<WebhookFigures> {
  const configurations: WebhookConfigResult[] = [];
  let pacedOfferedPerSecond: number | null = null;
  for (const workers of WEBHOOK_SETTINGS.workerCounts) {
    log(`webhooks, PostgreSQL with ${workers} worker process${workers === 1 ? '' : 'es'}: starting`);
    const result = await measureConfiguration(workers, pacedOfferedPerSecond, cleanup);
    pacedOfferedPerSecond ??= result.phases.find((phase) => phase.phase === 'paced')!.offeredPerSecond;
    configurations.push(result);
  }
  return { settings: WEBHOOK_SETTINGS, pacedOfferedPerSecond: pacedOfferedPerSecond ?? Number.NaN, configurations };
}

// ---------------------------------------------------------------------------
// Report

export function renderWebhooks(figures: WebhookFigures, section: number): string {
  const s = figures.settings;
  const out: string[] = [];
  out.push(`${section}. Webhooks: deliveries to a local receiver that answers 200 at once`);
  out.push(
    table(
      ['setup', 'phase', 'deliveries', 'duplicates', 'offered/s', 'seconds', 'deliveries/s', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms'],
      figures.configurations.flatMap((config) =>
        config.phases.map((phase, index) => [
          index === 0 ? config.setup : '',
          phase.phase,
          `${phase.delivered}/${phase.expected}`,
          String(phase.duplicates),
          phase.offeredPerSecond === null ? 'all at once' : fixed(phase.offeredPerSecond, 1),
          fixed(phase.seconds, 1),
          fixed(phase.deliveriesPerSecond, 1),
          fixed(phase.latency.p50, 0),
          fixed(phase.latency.p95, 0),
          fixed(phase.latency.p99, 0),
          fixed(phase.latency.max, 0),
        ]),
      ),
    ),
  );
  const checked = figures.configurations.reduce((sum, config) => sum + config.signaturesChecked, 0);
  const failed = figures.configurations.flatMap((config) => config.signatureFailures);
  const unexpected = figures.configurations.flatMap((config) => config.unexpected);
  out.push(
    `   ${s.endpoints} endpoints subscribed to every event type. Events come from POST /api/documents/batch: each document gives`,
    '   document.created and then document.indexed, each batch index_job.completed, and each event goes to every endpoint.',
    `   Burst: ${s.burstDocuments} short documents in batches of ${s.burstBatchSize}, posted back to back; deliveries/s = distinct deliveries ÷`,
    '   (last receipt − first event created), so it includes indexing the documents, whose completion is itself an event.',
    '   Its latencies are mostly time spent waiting in the backlog the burst builds.',
    `   Paced: ${s.pacedBatches} batches of ${s.pacedBatchSize} documents at a steady ${fixed(figures.pacedOfferedPerSecond, 1)} deliveries/s offered (${Math.round(s.pacedShare * 100)}% of what one worker`,
    '   process delivered in its burst), the same for every setup: its latencies are event created_at → receipt at a load the',
    '   setup keeps up with. Latency counts the first receipt of each (webhook-id, endpoint).',
    `   WORKER_CONCURRENCY=${s.workerConcurrency} per worker process; WEBHOOK_ENDPOINT_CONCURRENCY=${s.endpointConcurrency ?? '2 (the default)'}; WEBHOOK_ALLOW_PRIVATE=true.`,
    `   Signatures verified with standardwebhooks on every ${s.verifyEvery}th request: ${checked} checked, ${failed.length} failed.` +
      (unexpected.length > 0 ? ` ${unexpected.length} unexpected requests.` : ''),
  );
  for (const failure of [...failed, ...unexpected].slice(0, 5)) out.push(`     ${failure}`);
  return out.join('\n');
}

export function webhookFiguresJson(figures: WebhookFigures) {
  return {
    settings: figures.settings,
    paced_offered_per_second: figures.pacedOfferedPerSecond,
    configurations: figures.configurations.map((config) => ({
      setup: config.setup,
      worker_processes: config.workers,
      signatures_checked: config.signaturesChecked,
      signature_failures: config.signatureFailures,
      unexpected_requests: config.unexpected,
      phases: config.phases.map((phase) => ({
        phase: phase.phase,
        documents: phase.documents,
        batches: phase.batches,
        expected_deliveries: phase.expected,
        delivered: phase.delivered,
        duplicates: phase.duplicates,
        offered_per_second: phase.offeredPerSecond,
        seconds: phase.seconds,
        deliveries_per_second: phase.deliveriesPerSecond,
        latency_ms: phase.latency,
      })),
    })),
  };
}
