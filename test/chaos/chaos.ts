import knex, { type Knex } from 'knex';
import { Redis } from 'ioredis';
import { mulberry32 } from '../../bench/settings';
import { DOCUMENT_LIMITS } from '../../src/domain/documents/documents';
import { countersByDay, COUNTERS } from '../../src/domain/usage/counters';
import { withTenant } from '../../src/db/tenant-scope';
import { QUEUE_NAMES, QueueRegistry } from '../../queues';
import { createTestDatabase, uniqueName } from '../helpers/databases';
import { checkIndexedOnce, HttpApi, SteadyLoad, type IndexingCheck, type LoadReport } from '../helpers/fleet';
import { ADMIN_TOKEN } from '../helpers/harness';
import { startHaproxy, type RunningHaproxy } from '../helpers/haproxy';
import { PrivatePostgres } from '../helpers/private-postgres';
import { killLeftoverProcesses, startRagworks, unusedPort, type RagworksProcess } from '../helpers/processes';
import { SentinelRedis } from '../helpers/sentinel-redis';
import { waitFor } from '../helpers/wait';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver';

/**
 * The fleet of the chaos suite — two web processes behind ops/haproxy,
 * three workers, two schedulers, Redis behind Sentinel, a PostgreSQL of its
 * own — under a steady load while faults land on a seeded schedule, and
 * the checks that say whether anything accepted was lost.
 */

export type FaultKind = 'kill-worker' | 'redis-failover' | 'postgres-restart' | 'web-rolling-restart';
export const FAULT_KINDS: readonly FaultKind[] = ['kill-worker', 'redis-failover', 'postgres-restart', 'web-rolling-restart'];

export interface ChaosOptions {
  /** How long the load runs; faults land inside it. */
  durationMs: number;
  seed: number;
  /** Every kind of fault this many times, in an order and at times drawn from the seed. */
  rounds: number;
  /** Documents no worker can finish in time: they must end as dead letters, and be the only ones. */
  poisonDocuments: number;
  log?: (line: string) => void;
}

export interface InjectedFault {
  kind: FaultKind;
  atMs: number;
  tookMs: number;
  detail: string;
  /** 503s (and unanswered requests) among requests started from the fault until 10 s after it was over (or the next fault). */
  unavailable?: number;
  /** Those 503s by where they came from: an error code of ours, or `not-json` (the proxy's own page). */
  unavailableBy?: Record<string, number>;
  longestUnavailableMs?: number;
}

/** How long after a fault is over its effects still count as its own. */
const AFTERMATH_MS = 10_000;

export interface ChaosReport {
  seed: number;
  durationMs: number;
  faults: InjectedFault[];
  load: Omit<LoadReport, 'unexpected'> & { unexpected: number; unexpectedSample: unknown[] };
  indexing: IndexingCheck;
  poison: { posted: number; failed: number };
  webhooks: { events: number; receivers: number; undelivered: number; duplicates: number; unverified: number };
  /** For a few undelivered events: what PostgreSQL says of the event and its delivery to the receiver that lacks it. */
  undeliveredSample: unknown[];
  usage: { matches: boolean; rollup: Record<string, number>; recount: Record<string, number> };
  /** Searches answered 200 by the API during the load, beside `usage.rollup.searches` (which also counts none of the checks' own). */
  searchesAnswered: number;
  stuckActiveJobs: number;
  deadLetters: { total: number; notPoison: number };
  /** Processes that exited on their own, or uncleanly when asked to stop: not the ones the schedule killed. */
  crashedProcesses: string[];
  settleMs: number;
}

/**
 * When each fault lands: every kind `rounds` times, shuffled, in equal
 * slots of the run (the first and last tenth kept quiet, so the load is
 * steady before and the fleet has the end to recover in), each at a drawn
 * point of its slot.
 */
export function faultSchedule(options: Pick<ChaosOptions, 'durationMs' | 'seed' | 'rounds'>): Array<{ kind: FaultKind; atMs: number }> {
  const random = mulberry32(options.seed);
  const kinds = Array.from({ length: options.rounds }, () => [...FAULT_KINDS]).flat();
  for (let index = kinds.length - 1; index > 0; index -= 1) {
    const other = Math.floor(random() * (index + 1));
    [kinds[index], kinds[other]] = [kinds[other], kinds[index]];
  }
  const start = options.durationMs * 0.1;
  const slot = (options.durationMs * 0.8) / kinds.length;
  return kinds.map((kind, index) => ({ kind, atMs: Math.round(start + slot * index + random() * slot * 0.5) }));
}

const WORKERS = 3;
const WEBS = 2;
const SCHEDULERS = 2;
const SENTINEL_PASSWORD = 'chaos-sentinel-secret';
const SUBSCRIBED_EVENTS = ['document.created', 'document.indexed'];

/** The processes of the fleet, restarted the way a supervisor would after a kill. */
class Fleet {
  webs: RagworksProcess[] = [];
  webPorts: number[] = [];
  workers: RagworksProcess[] = [];
  schedulers: RagworksProcess[] = [];
  /** Everything ever started, for the final check that none crashed on its own. */
  readonly started: RagworksProcess[] = [];
  readonly killed = new Set<RagworksProcess>();

  constructor(private readonly env: Record<string, string>) {}

  async start(): Promise<void> {
    this.webPorts = await Promise.all(Array.from({ length: WEBS }, () => unusedPort()));
    this.webs = this.webPorts.map((port) => this.spawn('web', { PORT: String(port) }));
    this.workers = Array.from({ length: WORKERS }, () => this.spawn('worker'));
    this.schedulers = Array.from({ length: SCHEDULERS }, () => this.spawn('scheduler'));
    await Promise.all([
      ...this.webs.map((web) => web.waitForMessage('api listening', { timeoutMs: 120_000 })),
      ...this.workers.map((worker) => worker.waitForMessage('workers started', { timeoutMs: 120_000 })),
      ...this.schedulers.map((scheduler) => scheduler.waitForMessage('schedule started', { timeoutMs: 120_000 })),
    ]);
  }

  spawn(role: string, extra: Record<string, string> = {}): RagworksProcess {
    const child = startRagworks(role, { ...this.env, ...extra });
    this.started.push(child);
    return child;
  }

  /** Stops every process still running (SIGTERM) and names those that ended badly without being killed on purpose. */
  async stop(): Promise<string[]> {
    const stopped = await Promise.all(
      [...this.webs, ...this.workers, ...this.schedulers].map(async (child) => {
        const exit = await child.stop('SIGTERM', 60_000).catch(() => child.stop('SIGKILL'));
        return { child, exit };
      }),
    );
    const crashed: string[] = [];
    for (const child of this.started) {
      if (this.killed.has(child)) continue;
      const exit = stopped.find((entry) => entry.child === child)?.exit ?? (await child.exited);
      if (exit.code !== 0) crashed.push(`${child.role} pid ${child.pid} exited ${JSON.stringify(exit)}: ${child.stderr.slice(-3).join(' | ')}`);
    }
    return crashed;
  }
}

/**
 * A document as large as allowed, made of nothing but one-letter headings:
 * the costliest markdown per byte for the chunker (about 1.5 s on an idle
 * core, several times the deadline below), while an ordinary document takes
 * milliseconds.
 */
function poisonDocument(n: number): { title: string; content: string } {
  const unit = '# h\n';
  return { title: `Poison ${n}`, content: unit.repeat(Math.floor((DOCUMENT_LIMITS.contentBytes - 1024) / unit.length)) };
}

/**
 * Starts the fleet, runs the load with faults on the seed's schedule,
 * lets the fleet settle, checks, and tears it all down.
 */
export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const log = options.log ?? (() => undefined);
  const postgres = await PrivatePostgres.create({ settings: { max_connections: '200' } });
  const redis = await SentinelRedis.start({ password: SENTINEL_PASSWORD });
  const receivers: WebhookReceiver[] = [await startWebhookReceiver(), await startWebhookReceiver()];
  const database = await createTestDatabase({ ownedByOwnerRole: true, adminUrl: postgres.url() });
  const prefix = uniqueName('rwchaos');
  const env: Record<string, string> = {
    NODE_ENV: 'production',
    ADMIN_TOKEN,
    ...redis.environment,
    QUEUE_PREFIX: prefix,
    MIGRATION_DATABASE_URL: database.url,
    DATABASE_URL: database.applicationUrl,
    DATABASE_POOL_MAX: '8',
    LOG_LEVEL: 'info',
    WEBHOOK_ALLOW_PRIVATE: 'true',
    WEBHOOK_RETRY_SCHEDULE: '0,1,2,3,5,8,13,21,34,55',
    INDEX_DOCUMENT_TIMEOUT_MS: '1000',
    SCHEDULE_RECONCILE: '*/5 * * * * *',
    RECONCILE_STUCK_AFTER_SECONDS: '20',
    SCHEDULE_ANALYTICS: '*/5 * * * * *',
    SCHEDULE_USAGE: '*/10 * * * * *',
    // The web processes are behind the proxy on this host: its X-Forwarded-For is theirs to trust.
    TRUST_PROXY: 'loopback',
    // Above the proxy's 2 failed checks 2 s apart: a stopping web process is out of rotation before it closes.
    SHUTDOWN_DELAY_MS: '5000',
  };
  const fleet = new Fleet(env);
  let proxy: RunningHaproxy | undefined;
  const monitor = new Redis({ ...redisMonitorOptions(redis), lazyConnect: true });
  monitor.on('error', () => undefined);
  const app: Knex = knex({ client: 'pg', connection: database.url, pool: { min: 0, max: 2 } });
  try {
    log(`fleet: PostgreSQL on ${postgres.port}, Sentinels ${redis.addresses}, ${WEBS} web, ${WORKERS} workers, ${SCHEDULERS} schedulers`);
    await fleet.start();
    proxy = await startHaproxy(fleet.webPorts);
    const api = new HttpApi(proxy.httpsUrl, { dispatcher: proxy.dispatcher });
    await waitFor(async () => (await api.call('GET', '/readyz', ADMIN_TOKEN)).status === 200, { what: 'the proxy to route to a ready web process', timeoutMs: 30_000 });
    const tenant = await api.createTenant('chaos');
    const endpointIds: string[] = [];
    for (const receiver of receivers) {
      const endpoint = await api.call('POST', '/api/admin/webhooks', tenant.key, { url: receiver.url('/hook'), event_types: SUBSCRIBED_EVENTS });
      if (endpoint.status !== 201) throw new Error(`subscribing a receiver answered ${endpoint.status}: ${JSON.stringify(endpoint.body)}`);
      receiver.secrets = [endpoint.body.secret as string];
      endpointIds.push(endpoint.body.id as string);
    }

    const load = new SteadyLoad(api, tenant.key, { writers: 2, searchers: 2, pauseMs: 50, label: 'chaos' });
    const schedule = faultSchedule(options);
    log(`schedule (seed ${options.seed}): ${schedule.map((fault) => `${fault.kind}@${(fault.atMs / 1000).toFixed(1)}s`).join(', ')}`);
    const started = Date.now();
    load.start();
    const poison: string[] = [];
    const faults: InjectedFault[] = [];
    const random = mulberry32(options.seed ^ 0x5eed);
    for (const planned of schedule) {
      await sleepUntil(started + planned.atMs);
      if (poison.length < options.poisonDocuments) {
        const posted = await api.call('POST', '/api/documents', tenant.key, poisonDocument(poison.length));
        if (posted.status === 202) poison.push(posted.body.id as string);
      }
      const faultStarted = Date.now();
      const detail = await inject(planned.kind, { fleet, proxy, redis, postgres, random });
      faults.push({ kind: planned.kind, atMs: faultStarted - started, tookMs: Date.now() - faultStarted, detail });
      log(`${((faultStarted - started) / 1000).toFixed(1)}s ${planned.kind}: ${detail} (${Date.now() - faultStarted} ms)`);
    }
    await sleepUntil(started + options.durationMs);
    await load.stop();
    const loadReport = load.report();
    for (const [index, fault] of faults.entries()) {
      // Until the aftermath is over or the next fault lands, whichever is first: no 503 counts twice.
      const next = faults[index + 1]?.atMs ?? Number.POSITIVE_INFINITY;
      const during = load.report({ from: started + fault.atMs, to: started + Math.min(fault.atMs + fault.tookMs + AFTERMATH_MS, next) });
      fault.unavailable = during.unavailable;
      fault.unavailableBy = during.unavailableBy;
      fault.longestUnavailableMs = during.longestUnavailableMs;
    }
    log(`load stopped: ${loadReport.requests} requests ${JSON.stringify(loadReport.byStatus)}, ${loadReport.accepted} documents accepted`);

    // Settling: everything accepted reaches its end state.
    const settleStarted = Date.now();
    const poisonIds = new Set(poison);
    const documents = [...load.accepted.keys()].filter((id) => !poisonIds.has(id));
    let indexing = await checkIndexedOnce(database.url, documents);
    await waitFor(
      async () => {
        indexing = await checkIndexedOnce(database.url, documents);
        return indexing.indexed === documents.length;
      },
      { what: 'every accepted document to be indexed', timeoutMs: 180_000, intervalMs: 1_000 },
    ).catch(() => undefined);
    const poisonFailed = await waitFor(
      async () => {
        const states = await Promise.all(poison.map(async (id) => (await api.call('GET', `/api/documents/${id}`, tenant.key)).body.status));
        return states.every((status) => status === 'failed') ? states.length : null;
      },
      { what: 'the poison documents to fail', timeoutMs: 120_000, intervalMs: 1_000 },
    ).catch(() => 0);
    const events = await subscribedEvents(app, tenant.id);
    const webhookFigures = () => deliveryFigures(events, receivers);
    // Up to the park backstop and then some: a wake-up lost with a killed worker is made up by the sweeper within a
    // lease (test/unit/endpoint-slots.test.ts), but a parked list lost in a Redis failover leaves only the backstop
    // (PARK_BACKSTOP_MS, 5 min) to move its delivery on.
    await waitFor(() => webhookFigures().undelivered === 0, { what: 'every event delivered to every receiver', timeoutMs: 360_000, intervalMs: 1_000 }).catch(() => undefined);
    const settledAt = Date.now();
    const settleMs = settledAt - settleStarted;
    log(`settled in ${settleMs} ms`);

    await monitor.connect();
    const registry = new QueueRegistry(monitor, prefix);
    const stuckActiveJobs = await countStuckActive(registry, 60_000);
    await registry.close();

    // A rollup that began after everything settled, compared with a recount of the same day.
    const usage = await waitFor(() => usageAgainstRecount(app, tenant.id, new Date(settledAt)), {
      what: 'a usage rollup after the fleet settled',
      timeoutMs: 60_000,
      intervalMs: 1_000,
    });

    const deadLetters = (await api.call('GET', '/api/admin/dead-letters?limit=100', ADMIN_TOKEN)).body.items as Array<{ queue: string; payload: { documentId?: string } }>;
    const notPoison = deadLetters.filter((letter) => !(letter.queue === 'indexing' && letter.payload.documentId && poisonIds.has(letter.payload.documentId)));
    const crashedProcesses = await fleet.stop();

    return {
      seed: options.seed,
      durationMs: options.durationMs,
      faults,
      load: { ...loadReport, unexpected: loadReport.unexpected.length, unexpectedSample: loadReport.unexpected.slice(0, 5) },
      indexing,
      poison: { posted: poison.length, failed: poisonFailed },
      webhooks: webhookFigures(),
      undeliveredSample: await undeliveredSample(app, tenant.id, missingDeliveries(events, receivers, endpointIds).slice(0, 5)),
      usage,
      searchesAnswered: load.outcomes.filter((outcome) => outcome.kind === 'search' && outcome.status === 200).length,
      stuckActiveJobs,
      deadLetters: { total: deadLetters.length, notPoison: notPoison.length },
      crashedProcesses,
      settleMs,
    };
  } finally {
    await killLeftoverProcesses();
    await proxy?.stop();
    monitor.disconnect();
    await app.destroy();
    await Promise.all(receivers.map((receiver) => receiver.close()));
    await redis.stop();
    await postgres.destroy();
  }
}

/** Options for a connection of the checks' own to the current master, through the Sentinels. */
function redisMonitorOptions(redis: SentinelRedis) {
  return {
    sentinels: redis.sentinelPorts.map((port) => ({ host: '127.0.0.1', port })),
    name: redis.environment.REDIS_SENTINEL_NAME,
    sentinelPassword: redis.password,
    maxRetriesPerRequest: 3,
  };
}

async function inject(kind: FaultKind, context: { fleet: Fleet; proxy: RunningHaproxy; redis: SentinelRedis; postgres: PrivatePostgres; random: () => number }): Promise<string> {
  const { fleet, proxy, redis, postgres, random } = context;
  switch (kind) {
    case 'kill-worker': {
      const index = Math.floor(random() * fleet.workers.length);
      const victim = fleet.workers[index];
      fleet.killed.add(victim);
      victim.signal('SIGKILL');
      await victim.waitForExit();
      // As a supervisor would: a new process in its place, a moment later.
      await sleep(1_000);
      const replacement = fleet.spawn('worker');
      fleet.workers[index] = replacement;
      await replacement.waitForMessage('workers started', { timeoutMs: 120_000 });
      return `worker pid ${victim.pid} killed, pid ${replacement.pid} started`;
    }
    case 'redis-failover': {
      const failover = await redis.failover();
      return `master ${failover.killedPort} killed, ${failover.newMasterPort} promoted in ${failover.tookMs} ms`;
    }
    case 'postgres-restart': {
      await postgres.restart();
      return 'PostgreSQL restarted (fast shutdown)';
    }
    case 'web-rolling-restart': {
      // As an operator or an orchestrator would: the next process is stopped only once the proxy
      // sends requests to the one that replaced the last. Each stopping process fails /readyz first
      // (SHUTDOWN_DELAY_MS) and serves until the proxy has taken it out.
      for (let index = 0; index < fleet.webs.length; index += 1) {
        const old = fleet.webs[index];
        const exit = await old.stop('SIGTERM', 60_000);
        const replacement = fleet.spawn('web', { PORT: String(fleet.webPorts[index]) });
        fleet.webs[index] = replacement;
        await replacement.waitForMessage('api listening', { timeoutMs: 120_000 });
        if (exit.code !== 0) return `web pid ${old.pid} exited with ${JSON.stringify(exit)}`;
        await waitFor(async () => (await proxy.serverStates())[`web${index + 1}`] === 'UP', { what: `the proxy to route to web${index + 1} again`, timeoutMs: 60_000 });
      }
      return `${fleet.webs.length} web processes replaced one at a time`;
    }
  }
}

/** The subscribed events stored for the tenant: what every receiver must have been sent. */
async function subscribedEvents(db: Knex, tenantId: string): Promise<string[]> {
  return withTenant(db, tenantId, async (trx) => (await trx('webhook_events').whereIn('type', SUBSCRIBED_EVENTS).select('id')).map((row: { id: string }) => row.id));
}

/** The (event, endpoint) pairs whose receiver never acknowledged the event. */
function missingDeliveries(events: string[], receivers: WebhookReceiver[], endpointIds: string[]): Array<{ eventId: string; endpointId: string }> {
  return receivers.flatMap((receiver, index) => {
    const seen = new Set(receiver.requests.filter((request) => request.verified && request.response.status < 300).map((request) => request.webhookId));
    return events.filter((id) => !seen.has(id)).map((eventId) => ({ eventId, endpointId: endpointIds[index] }));
  });
}

async function undeliveredSample(db: Knex, tenantId: string, missing: Array<{ eventId: string; endpointId: string }>): Promise<unknown[]> {
  return withTenant(db, tenantId, async (trx) =>
    Promise.all(
      missing.map(async ({ eventId, endpointId }) => ({
        event: await trx('webhook_events').where({ id: eventId }).first('id', 'type', 'created_at', 'fanned_out_at'),
        delivery: await trx('webhook_deliveries').where({ event_id: eventId, endpoint_id: endpointId }).first('id', 'status', 'attempts', 'last_status_code', 'last_error', 'next_attempt_at', 'updated_at'),
      })),
    ),
  );
}

function deliveryFigures(events: string[], receivers: WebhookReceiver[]) {
  let undelivered = 0;
  let duplicates = 0;
  let unverified = 0;
  for (const receiver of receivers) {
    const seen = new Map<string, number>();
    for (const request of receiver.requests) {
      if (!request.verified) unverified += 1;
      else if (request.webhookId && request.response.status < 300) seen.set(request.webhookId, (seen.get(request.webhookId) ?? 0) + 1);
    }
    for (const id of events) {
      const times = seen.get(id) ?? 0;
      if (times === 0) undelivered += 1;
      else duplicates += times - 1;
    }
  }
  return { events: events.length, receivers: receivers.length, undelivered, duplicates, unverified };
}

/** Jobs a worker has held for longer than `olderThanMs`: nothing should be, after the fleet settled. */
async function countStuckActive(registry: QueueRegistry, olderThanMs: number): Promise<number> {
  let stuck = 0;
  for (const name of QUEUE_NAMES) {
    const active = await registry.queue(name).getJobs(['active']);
    stuck += active.filter((job) => job.processedOn !== undefined && Date.now() - job.processedOn > olderThanMs).length;
  }
  return stuck;
}

/** Today's usage row, once computed after `after`, beside a recount of the same day from the raw rows. */
async function usageAgainstRecount(db: Knex, tenantId: string, after: Date): Promise<ChaosReport['usage'] | null> {
  return withTenant(db, tenantId, async (trx) => {
    const row = await trx('usage_daily').where({ tenant_id: tenantId }).orderBy('day', 'desc').first();
    if (!row || new Date(row.computed_at) <= after) return null;
    const day = typeof row.day === 'string' ? row.day : (row.day as Date).toISOString().slice(0, 10);
    const recount = (await countersByDay(trx, tenantId, day, day)).get(day)!;
    const rollup = Object.fromEntries(COUNTERS.map((counter) => [counter, Number(row[counter])]));
    return { matches: COUNTERS.every((counter) => rollup[counter] === recount[counter]), rollup, recount: { ...recount } };
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function sleepUntil(time: number): Promise<void> {
  return sleep(Math.max(0, time - Date.now()));
}

/** What makes a run fail: anything accepted and lost, anything a client saw beyond the documented 503s. Empty when it passed. */
export function chaosProblems(report: ChaosReport): string[] {
  const problems: string[] = [];
  const { load, indexing, webhooks } = report;
  if (load.unexpected > 0) problems.push(`${load.unexpected} answers other than 2xx or the API's own 503s, e.g. ${JSON.stringify(load.unexpectedSample)}`);
  if (indexing.indexed !== indexing.documents) problems.push(`${indexing.documents - indexing.indexed} of ${indexing.documents} accepted documents not indexed ${JSON.stringify(indexing.byStatus)}`);
  if (indexing.missing.length > 0) problems.push(`${indexing.missing.length} accepted documents missing`);
  if (indexing.notExactlyOnce.length > 0) problems.push(`${indexing.notExactlyOnce.length} documents without exactly one chunk set`);
  if (indexing.indexedEventsTwice.length > 0) problems.push(`${indexing.indexedEventsTwice.length} documents indexed twice`);
  if (report.poison.failed !== report.poison.posted) problems.push(`${report.poison.posted - report.poison.failed} poison documents not failed`);
  if (report.deadLetters.notPoison > 0) problems.push(`${report.deadLetters.notPoison} dead letters that are not the injected poison`);
  if (webhooks.undelivered > 0) problems.push(`${webhooks.undelivered} event deliveries never reached their receiver, e.g. ${JSON.stringify(report.undeliveredSample)}`);
  if (webhooks.unverified > 0) problems.push(`${webhooks.unverified} webhook requests failed signature verification`);
  if (!report.usage.matches) problems.push(`usage rollup ${JSON.stringify(report.usage.rollup)} differs from the recount ${JSON.stringify(report.usage.recount)}`);
  if (report.stuckActiveJobs > 0) problems.push(`${report.stuckActiveJobs} jobs stuck in active`);
  if (report.crashedProcesses.length > 0) problems.push(`processes ended on their own: ${report.crashedProcesses.join('; ')}`);
  return problems;
}

/** The report as the figures a reader checks first. */
export function formatReport(report: ChaosReport): string {
  const lines = [
    `chaos run: seed ${report.seed}, ${(report.durationMs / 1000).toFixed(0)} s of load, ${report.faults.length} faults`,
    ...report.faults.map(
      (fault) =>
        `  ${(fault.atMs / 1000).toFixed(1).padStart(6)} s  ${fault.kind.padEnd(20)} ${fault.detail} (${fault.tookMs} ms); 503s ${fault.unavailable} ${JSON.stringify(fault.unavailableBy)}, longest ${fault.longestUnavailableMs} ms`,
    ),
    `requests: ${report.load.requests} ${JSON.stringify(report.load.byStatus)}; documented 503s and unanswered: ${report.load.unavailable}, longest window ${report.load.longestUnavailableMs} ms; unexpected answers: ${report.load.unexpected}`,
    `documents: ${report.indexing.documents} accepted, ${report.indexing.indexed} indexed, ${report.indexing.notExactlyOnce.length} not exactly one chunk set, ${report.indexing.indexedEventsTwice.length} indexed twice, ${report.indexing.missing.length} missing`,
    `poison: ${report.poison.posted} posted, ${report.poison.failed} failed; dead letters: ${report.deadLetters.total}, of them not poison: ${report.deadLetters.notPoison}`,
    `webhooks: ${report.webhooks.events} events x ${report.webhooks.receivers} receivers, undelivered ${report.webhooks.undelivered}, duplicates (same webhook-id) ${report.webhooks.duplicates}, unverified ${report.webhooks.unverified}`,
    `usage: rollup ${report.usage.matches ? 'equals' : 'DIFFERS FROM'} the recount ${JSON.stringify(report.usage.rollup)}; searches answered 200: ${report.searchesAnswered}`,
    `jobs stuck in active: ${report.stuckActiveJobs}; processes ended on their own: ${report.crashedProcesses.length}; settled in ${(report.settleMs / 1000).toFixed(1)} s`,
  ];
  return lines.join('\n');
}
