import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import readline from 'node:readline';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Webhook } from 'standardwebhooks';
import { RETENTION_DEFAULTS } from '../queues/definition';
import { queuePrefix } from '../queues/keys';
import { deleteRedisPrefix } from '../test/helpers/redis';
import { ADMIN_TOKEN, log, REDIS_URL, REPO_ROOT, startDeployment, uniqueName, type Cleanup, type Deployment } from './indexing';
import { fixed, ratio, summarize, table, type Summary } from './stats';
import { positiveIntEnv } from './settings';

/**
 * Webhook delivery measured from the outside: ragworks processes deliver
 * real events — from POST /api/documents/batch and the indexing it starts —
 * to a receiver in this process that answers 200 at once, notes when each
 * delivery arrived and checks signatures on a sample. Beside it, in the same
 * run, the baseline: bare BullMQ workers (child processes, the same
 * concurrency) POSTing each job with undici to the same kind of receiver.
 */

/** Issue 11, goal 3: ragworks' sustained rate against the raw BullMQ + undici baseline, and paced latency. */
export const WEBHOOK_GOALS = { ratio: 0.33, deliveriesPerSecond: 1_000, pacedP99Ms: 100 };

export const WEBHOOK_SETTINGS = {
  /** Documents posted in the backlog and in the burst: each gives document.created and document.indexed, each batch index_job.completed. */
  burstDocuments: positiveIntEnv('BENCH_WEBHOOK_DOCUMENTS', 750),
  burstBatchSize: 100,
  pacedBatches: positiveIntEnv('BENCH_WEBHOOK_PACED_BATCHES', 24),
  pacedBatchSize: 10,
  /** The paced phase offers this share of what one worker process sustained on its backlog. */
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
  private readonly verifiers = new Map<string, Webhook | null>();
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

  /** A path deliveries go to, and the secret they are signed with (null: unsigned, as the baseline sends them). */
  expect(path: string, secret: string | null): void {
    this.verifiers.set(path, secret === null ? null : new Webhook(secret));
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
    if (request.method !== 'POST' || verifier === undefined || typeof id !== 'string') {
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
    if (verifier && this.requests % WEBHOOK_SETTINGS.verifyEvery === 0) {
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
  /**
   * backlog: the events are stored while fan-out and delivery are paused, then released at once — the rate
   * deliveries drain at, compared with the baseline. burst: the same posted back to back while everything
   * runs, indexing included. paced: a steady rate the setup keeps up with.
   */
  phase: 'backlog' | 'burst' | 'paced';
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
  /** Backlog: release to last delivery received; the others: first event created to last delivery received. */
  seconds: number;
  deliveriesPerSecond: number;
  /** Event created_at to receipt, first receipt of each pair, ms; null for the backlog, whose events wait on purpose. */
  latency: Summary | null;
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

function eventsFor(batchSizes: readonly number[]): number {
  return batchSizes.reduce((sum, size) => sum + size * EVENTS_PER_DOCUMENT + EVENTS_PER_BATCH, 0);
}

function deliveriesFor(batchSizes: readonly number[], endpoints: number): number {
  return endpoints * eventsFor(batchSizes);
}

/** The deployment's two webhook queues, opened from here to pause and release them. */
function webhookQueues(deployment: Deployment, connection: Redis): Queue[] {
  return ['webhook-fanout', 'webhooks'].map((name) => new Queue(name, { connection, prefix: queuePrefix(deployment.env.QUEUE_PREFIX, name) }));
}

async function runPhase(deployment: Deployment, workers: number, receiver: Receiver, plan: Plan, firstDocument: number): Promise<PhaseResult> {
  const expected = deliveriesFor(plan.batchSizes, WEBHOOK_SETTINGS.endpoints);
  const from = receiver.receipts.length;
  // Every earlier phase has been fully delivered, so this phase's events are those created from now on.
  const began = Date.now();
  const started = performance.now();
  const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const queues = webhookQueues(deployment, connection);
  let released = began;
  try {
    if (plan.phase === 'backlog') await Promise.all(queues.map((queue) => queue.pause()));
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
    if (plan.phase === 'backlog') {
      // Every event is stored (the last ones with the indexing they report) and its fan-out waits.
      await waitForFanouts(deployment, workers, queues[0], eventsFor(plan.batchSizes));
      released = Date.now();
      await Promise.all(queues.map((queue) => queue.resume()));
    }
  } finally {
    await Promise.all(queues.map((queue) => queue.close()));
    connection.disconnect();
  }

  const distinct = () => new Set(receiver.receipts.slice(from).filter((r) => r.createdAt >= began).map((r) => `${r.id} ${r.path}`)).size;
  await waitForReceipts(distinct, expected, plan.phase, () => waitForWebhookWorkers(deployment, workers, 0));

  const receipts = receiver.receipts.slice(from).filter((r) => r.createdAt >= began);
  const unique = firstReceipts(receipts);
  const firstCreated = Math.min(...unique.map((r) => r.createdAt));
  const lastReceived = Math.max(...unique.map((r) => r.receivedAt));
  const seconds = (lastReceived - (plan.phase === 'backlog' ? released : firstCreated)) / 1000;
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
    latency: plan.phase === 'backlog' ? null : summarize(unique.map((r) => r.receivedAt - r.createdAt)),
  };
}

/** Waits until the fan-out queue holds `events` jobs (it is paused, so they stay). */
async function waitForFanouts(deployment: Deployment, workers: number, fanout: Queue, events: number): Promise<void> {
  const deadline = Date.now() + WEBHOOK_SETTINGS.phaseTimeoutMs;
  let lastReport = Date.now();
  for (;;) {
    const counts = await fanout.getJobCounts('wait', 'prioritized', 'delayed');
    const held = Object.values(counts).reduce((sum, count) => sum + count, 0);
    if (held >= events) return;
    if (Date.now() > deadline) throw new Error(`backlog: ${held}/${events} events within ${WEBHOOK_SETTINGS.phaseTimeoutMs} ms`);
    if (Date.now() - lastReport > 5_000) {
      lastReport = Date.now();
      log(`  ${held}/${events} events stored`);
      await waitForWebhookWorkers(deployment, workers, 0);
    }
    await sleep(50);
  }
}

/** Waits for `expected` distinct receipts, then a second more, so a delivery sent twice has the chance to show. */
async function waitForReceipts(distinct: () => number, expected: number, what: string, stillAlive: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + WEBHOOK_SETTINGS.phaseTimeoutMs;
  let lastReport = Date.now();
  for (;;) {
    const delivered = distinct();
    if (delivered >= expected) break;
    if (Date.now() > deadline) throw new Error(`${what}: ${delivered}/${expected} deliveries within ${WEBHOOK_SETTINGS.phaseTimeoutMs} ms`);
    if (Date.now() - lastReport > 5_000) {
      lastReport = Date.now();
      log(`  ${delivered}/${expected} delivered`);
      // A worker process that died would otherwise only show as the timeout, minutes later.
      await stillAlive();
    }
    await sleep(20);
  }
  await sleep(1_000);
}

function firstReceipts(receipts: readonly Receipt[]): Receipt[] {
  const firsts = new Map<string, Receipt>();
  for (const receipt of receipts) {
    const key = `${receipt.id} ${receipt.path}`;
    if (!firsts.has(key)) firsts.set(key, receipt);
  }
  return [...firsts.values()];
}

// ---------------------------------------------------------------------------
// The baseline: bare BullMQ workers POSTing with undici

export interface BaselineResult {
  workers: number;
  concurrency: number;
  jobs: number;
  delivered: number;
  /** Release to last delivery received. */
  seconds: number;
  deliveriesPerSecond: number;
}

const BASELINE_QUEUE = 'baseline-webhooks';
const ADD_SLICE = 1_000;

/** An envelope of the size and shape ragworks sends for document.created. */
function baselineEnvelope(index: number) {
  const id = randomUUID();
  return {
    id,
    body: JSON.stringify({
      id,
      data: { id: randomUUID(), tags: ['bench'], title: `Webhook benchmark document ${index}`, status: 'queued', version: 1, metadata: {} },
      type: 'document.created',
      tenant_id: randomUUID(),
      created_at: new Date().toISOString(),
    }),
  };
}

/**
 * `workers` child processes, each a BullMQ worker with ragworks' worker
 * concurrency, on a queue of their own; `jobs` jobs (spread over the same
 * number of receiver paths as ragworks' endpoints) are added in bulk while
 * the queue is paused, then released at once: the rate is jobs ÷ (last
 * receipt − release), as for ragworks' backlog.
 */
async function measureBaseline(workers: number, jobs: number, cleanup: Cleanup): Promise<BaselineResult> {
  const receiver = await Receiver.start();
  const closeReceiver = cleanup.add(`baseline receiver on port ${receiver.port}`, () => receiver.close());
  const prefix = uniqueName('rwbench');
  const dropPrefix = cleanup.add(`redis prefix ${prefix}`, () => deleteRedisPrefix(prefix, REDIS_URL));
  const children: ChildProcess[] = [];
  const stopChildren = cleanup.add('baseline workers', () => stopBaselineWorkers(children));
  const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new Queue(BASELINE_QUEUE, { connection, prefix });
  try {
    for (let index = 0; index < WEBHOOK_SETTINGS.endpoints; index += 1) receiver.expect(`/hooks/${index}`, null);
    await queue.pause();
    for (let index = 0; index < workers; index += 1) children.push(startBaselineWorker(prefix));
    await Promise.all(children.map((child) => readyLine(child)));
    for (let start = 0; start < jobs; start += ADD_SLICE) {
      await queue.addBulk(
        Array.from({ length: Math.min(ADD_SLICE, jobs - start) }, (_, offset) => {
          const index = start + offset;
          const { id, body } = baselineEnvelope(index);
          // The job options ragworks' deliveries have (attempts, retention), so BullMQ does the same bookkeeping.
          return { name: BASELINE_QUEUE, data: { url: receiver.url(`/hooks/${index % WEBHOOK_SETTINGS.endpoints}`), id, body }, opts: { attempts: 10, ...RETENTION_DEFAULTS } };
        }),
      );
    }
    const released = Date.now();
    await queue.resume();
    const distinct = () => new Set(receiver.receipts.map((r) => `${r.id} ${r.path}`)).size;
    await waitForReceipts(distinct, jobs, 'baseline', async () => {
      const dead = children.find((child) => child.exitCode !== null);
      if (dead) throw new Error(`a baseline worker exited with code ${dead.exitCode}`);
    });
    const unique = firstReceipts(receiver.receipts);
    const seconds = (Math.max(...unique.map((r) => r.receivedAt)) - released) / 1000;
    return { workers, concurrency: WEBHOOK_SETTINGS.workerConcurrency, jobs, delivered: unique.length, seconds, deliveriesPerSecond: unique.length / seconds };
  } finally {
    await queue.close();
    connection.disconnect();
    await stopChildren();
    await dropPrefix();
    await closeReceiver();
  }
}

function startBaselineWorker(prefix: string): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', 'bench/webhook-baseline-worker.ts'], {
    cwd: REPO_ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      BASELINE_REDIS_URL: REDIS_URL,
      BASELINE_PREFIX: prefix,
      BASELINE_QUEUE,
      BASELINE_CONCURRENCY: String(WEBHOOK_SETTINGS.workerConcurrency),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function readyLine(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    const errors: string[] = [];
    child.stderr!.on('data', (chunk: Buffer) => errors.push(chunk.toString('utf8')));
    const lines = readline.createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      if (line.trim() === 'ready') resolve();
    });
    child.once('exit', (code) => reject(new Error(`a baseline worker exited with code ${code} before it was ready: ${errors.join('').slice(0, 500)}`)));
  });
}

async function stopBaselineWorkers(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.splice(0).map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
          child.once('exit', () => {
            clearTimeout(kill);
            resolve();
          });
          child.kill('SIGTERM');
        }),
    ),
  );
}

// ---------------------------------------------------------------------------
// Configurations

export interface WebhookConfigResult {
  setup: string;
  workers: number;
  phases: PhaseResult[];
  /** The raw BullMQ + undici baseline with as many worker processes, measured right before this setup. */
  baseline: BaselineResult;
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
  const burst = burstBatches();
  const backlogDeliveries = deliveriesFor(burst, WEBHOOK_SETTINGS.endpoints);
  log(`  baseline: ${workers} bare BullMQ worker process${workers === 1 ? '' : 'es'} (concurrency ${WEBHOOK_SETTINGS.workerConcurrency}) POSTing ${backlogDeliveries} jobs with undici`);
  const baseline = await measureBaseline(workers, backlogDeliveries, cleanup);
  log(`  ${fixed(baseline.deliveriesPerSecond, 1)} deliveries/s`);

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
      let firstDocument = 0;
      const run = async (plan: Plan) => {
        const result = await runPhase(deployment, workers, receiver, plan, firstDocument);
        firstDocument += result.documents;
        phases.push(result);
        return result;
      };
      log(`  backlog: ${WEBHOOK_SETTINGS.burstDocuments} documents in ${burst.length} batches while fan-out and delivery are paused → ${backlogDeliveries} deliveries, released at once`);
      const backlog = await run({ phase: 'backlog', batchSizes: burst, intervalMs: 0, offeredPerSecond: null });
      log(`  ${fixed(backlog.deliveriesPerSecond, 1)} deliveries/s (${ratio(backlog.deliveriesPerSecond, baseline.deliveriesPerSecond)} the baseline)`);

      log(`  burst: the same again, posted back to back while everything runs`);
      const burstResult = await run({ phase: 'burst', batchSizes: burst, intervalMs: 0, offeredPerSecond: null });
      log(`  ${fixed(burstResult.deliveriesPerSecond, 1)} deliveries/s, p50 ${fixed(burstResult.latency?.p50, 0)} ms from event to receipt`);

      const offered = pacedOfferedPerSecond ?? backlog.deliveriesPerSecond * WEBHOOK_SETTINGS.pacedShare;
      const paced = Array.from({ length: WEBHOOK_SETTINGS.pacedBatches }, () => WEBHOOK_SETTINGS.pacedBatchSize);
      const perBatch = deliveriesFor([WEBHOOK_SETTINGS.pacedBatchSize], WEBHOOK_SETTINGS.endpoints);
      const intervalMs = (perBatch / offered) * 1000;
      log(`  paced: ${paced.length} batches of ${WEBHOOK_SETTINGS.pacedBatchSize} documents every ${fixed(intervalMs, 0)} ms → ${fixed(offered, 1)} deliveries/s offered`);
      const pacedResult = await run({ phase: 'paced', batchSizes: paced, intervalMs, offeredPerSecond: offered });
      log(`  p50 ${fixed(pacedResult.latency?.p50, 0)} ms, p99 ${fixed(pacedResult.latency?.p99, 0)} ms from event to receipt`);

      return {
        setup: deployment.description,
        workers,
        phases,
        baseline,
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

/** One web process plus 1, then 2, worker processes, each after its baseline; the paced phases all offer half of what one worker sustained. */
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

interface GoalVerdicts {
  workers: number;
  ragworksPerSecond: number;
  baselinePerSecond: number;
  ratio: number;
  ratioMet: boolean;
  rateMet: boolean;
  pacedP99Ms: number | null;
  pacedMet: boolean;
}

function goalVerdicts(config: WebhookConfigResult): GoalVerdicts {
  const backlog = config.phases.find((phase) => phase.phase === 'backlog')!;
  const paced = config.phases.find((phase) => phase.phase === 'paced');
  const share = backlog.deliveriesPerSecond / config.baseline.deliveriesPerSecond;
  const p99 = paced?.latency?.p99 ?? null;
  return {
    workers: config.workers,
    ragworksPerSecond: backlog.deliveriesPerSecond,
    baselinePerSecond: config.baseline.deliveriesPerSecond,
    ratio: share,
    ratioMet: share >= WEBHOOK_GOALS.ratio,
    rateMet: backlog.deliveriesPerSecond >= WEBHOOK_GOALS.deliveriesPerSecond,
    pacedP99Ms: p99,
    pacedMet: p99 !== null && p99 <= WEBHOOK_GOALS.pacedP99Ms,
  };
}

const verdict = (met: boolean) => (met ? 'met' : 'not met');

export function renderWebhooks(figures: WebhookFigures, section: number): string {
  const s = figures.settings;
  const out: string[] = [];
  out.push(`${section}. Webhooks: deliveries to a local receiver that answers 200 at once`);
  out.push(
    table(
      ['setup', 'ragworks deliveries/s (backlog)', 'raw BullMQ + undici deliveries/s', 'ragworks/raw', `goal ≥ ${WEBHOOK_GOALS.ratio}× and ≥ ${WEBHOOK_GOALS.deliveriesPerSecond}/s`],
      figures.configurations.map((config) => {
        const goal = goalVerdicts(config);
        return [config.setup, fixed(goal.ragworksPerSecond, 1), fixed(goal.baselinePerSecond, 1), ratio(goal.ragworksPerSecond, goal.baselinePerSecond), `${verdict(goal.ratioMet)}, ${verdict(goal.rateMet)}`];
      }),
    ),
  );
  out.push('');
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
          fixed(phase.latency?.p50, 0),
          fixed(phase.latency?.p95, 0),
          fixed(phase.latency?.p99, 0),
          fixed(phase.latency?.max, 0),
        ]),
      ),
    ),
  );
  const checked = figures.configurations.reduce((sum, config) => sum + config.signaturesChecked, 0);
  const failed = figures.configurations.flatMap((config) => config.signatureFailures);
  const unexpected = figures.configurations.flatMap((config) => config.unexpected);
  const first = figures.configurations[0] ? goalVerdicts(figures.configurations[0]) : null;
  out.push(
    `   ${s.endpoints} endpoints subscribed to every event type. Events come from POST /api/documents/batch: each document gives`,
    '   document.created and then document.indexed, each batch index_job.completed, and each event goes to every endpoint.',
    `   Backlog: ${s.burstDocuments} short documents in batches of ${s.burstBatchSize} while the webhook-fanout and webhooks queues are paused; once`,
    '   every event is stored they are resumed: deliveries/s = deliveries ÷ (last receipt − resume), fan-out included. The',
    '   baseline drains as many jobs the same way: bare BullMQ workers (child processes, the same concurrency and job options)',
    '   POST each job\'s envelope with undici to a receiver like this one — no database, no signature, no per-endpoint limit.',
    `   Burst: the same documents again, posted back to back while everything runs; deliveries/s = distinct deliveries ÷`,
    '   (last receipt − first event created), so it includes indexing the documents, whose completion is itself an event.',
    '   Its latencies are mostly time spent waiting in the backlog the burst builds.',
    `   Paced: ${s.pacedBatches} batches of ${s.pacedBatchSize} documents at a steady ${fixed(figures.pacedOfferedPerSecond, 1)} deliveries/s offered (${Math.round(s.pacedShare * 100)}% of the backlog rate of one worker`,
    '   process), the same for every setup: its latencies are event created_at → receipt at a load the setup keeps up with.',
    '   Latency counts the first receipt of each (webhook-id, endpoint).',
    `   WORKER_CONCURRENCY=${s.workerConcurrency} per worker process; WEBHOOK_ENDPOINT_CONCURRENCY=${s.endpointConcurrency ?? '2 (the default)'}; WEBHOOK_ALLOW_PRIVATE=true.`,
    `   Signatures verified with standardwebhooks on every ${s.verifyEvery}th request: ${checked} checked, ${failed.length} failed.` +
      (unexpected.length > 0 ? ` ${unexpected.length} unexpected requests.` : ''),
  );
  for (const failure of [...failed, ...unexpected].slice(0, 5)) out.push(`     ${failure}`);
  if (first) {
    out.push(
      '',
      `   Goal (issue 11, goal 3), one worker process: ragworks ≥ ${WEBHOOK_GOALS.ratio}× the raw baseline and ≥ ${WEBHOOK_GOALS.deliveriesPerSecond} deliveries/s: ${fixed(first.ragworksPerSecond, 0)}/s vs ${fixed(first.baselinePerSecond, 0)}/s = ${ratio(first.ragworksPerSecond, first.baselinePerSecond)} — ratio ${verdict(first.ratioMet)}, rate ${verdict(first.rateMet)}`,
      `   Goal, paced at half the rate ragworks sustains: event → receipt p99 ≤ ${WEBHOOK_GOALS.pacedP99Ms} ms: ${fixed(first.pacedP99Ms, 0)} ms — ${verdict(first.pacedMet)}`,
    );
  }
  return out.join('\n');
}

export function webhookFiguresJson(figures: WebhookFigures) {
  return {
    settings: figures.settings,
    goals: WEBHOOK_GOALS,
    paced_offered_per_second: figures.pacedOfferedPerSecond,
    configurations: figures.configurations.map((config) => {
      const goal = goalVerdicts(config);
      return {
        setup: config.setup,
        worker_processes: config.workers,
        signatures_checked: config.signaturesChecked,
        signature_failures: config.signatureFailures,
        unexpected_requests: config.unexpected,
        baseline: {
          worker_processes: config.baseline.workers,
          concurrency: config.baseline.concurrency,
          jobs: config.baseline.jobs,
          delivered: config.baseline.delivered,
          seconds: config.baseline.seconds,
          deliveries_per_second: config.baseline.deliveriesPerSecond,
        },
        ragworks_over_baseline: goal.ratio,
        goals_met: { ratio: goal.ratioMet, rate: goal.rateMet, paced_p99: goal.pacedMet },
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
      };
    }),
  };
}
