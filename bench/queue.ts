import { performance } from 'node:perf_hooks';
import { Queue, Worker, type ConnectionOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { defineQueue, RETENTION_DEFAULTS, type QueueDefinition } from '../queues/definition';
import { queuePrefix } from '../queues/keys';
import { loadConfig } from '../src/config';
import { createLogger } from '../src/logger';
import { createPlatform, type Platform } from '../src/platform';
import { redisOptions } from '../src/redis';
import { defineProcessor, type Processor } from '../workers/processor';
import { WorkerRuntime } from '../workers/runtime';
import { deleteRedisPrefix } from '../test/helpers/redis';
import { createBenchDatabase, log, REDIS_URL, uniqueName, type Cleanup } from './indexing';
import { positiveIntEnv } from './settings';
import { fixed, ratio, summarize, table, type Summary } from './stats';

/**
 * The cost of ragworks' worker runtime around a job, against a raw BullMQ
 * worker: both run a processor that does nothing, in this process, on the
 * same Redis, with the same concurrency, worker options and job options,
 * over the same jobs added in bulk beforehand. Rounds alternate which goes
 * first, so drift on a shared machine weighs on both alike.
 */

export const QUEUE_SETTINGS = {
  jobs: positiveIntEnv('BENCH_QUEUE_JOBS', 10_000),
  rounds: positiveIntEnv('BENCH_QUEUE_ROUNDS', 6),
  concurrency: positiveIntEnv('BENCH_QUEUE_CONCURRENCY', 4),
  timeoutMs: 5 * 60_000,
};

export interface QueueFigures {
  jobs: number;
  concurrency: number;
  rounds: Array<{ order: Kind[]; raw: number; runtime: number; rawCpuUs: number; runtimeCpuUs: number }>;
  /** Jobs/s over the rounds. */
  raw: Summary;
  runtime: Summary;
  /** runtime / raw of each round: each pair ran back to back, so drift over the run cancels out. */
  ratios: Summary;
  /**
   * The geometric mean of the rounds' ratios: half the rounds run the raw
   * worker first, half the runtime, so whatever favours the first (or the
   * second) of a pair weighs on both alike. The verdict's figure.
   */
  ratio: number;
}

type Kind = 'raw' | 'runtime';

const ADD_SLICE = 1_000;
const POLL_MS = 20;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const payload = z.object({ n: z.number().int() });

function noopQueue(name: string): QueueDefinition<typeof payload> {
  return defineQueue({ name, payload, jobOptions: { attempts: 3, backoff: { type: 'exponential', delay: 1_000 }, ...RETENTION_DEFAULTS }, jobId: (data) => `noop-${data.n}` });
}

export async function runQueueBenchmark(cleanup: Cleanup): Promise<QueueFigures> {
  const prefix = uniqueName('rwbench');
  cleanup.add(`redis prefix ${prefix}`, () => deleteRedisPrefix(prefix, REDIS_URL));
  const database = await createBenchDatabase(cleanup);
  // The runtime needs a platform (its database answers health checks and would keep dead letters); no job touches it.
  const config = loadConfig({
    NODE_ENV: 'production',
    REDIS_URL,
    QUEUE_PREFIX: prefix,
    MIGRATION_DATABASE_URL: database.migrationUrl,
    DATABASE_URL: database.applicationUrl,
    LOG_LEVEL: 'error',
    ADMIN_TOKEN: 'bench-queue-unused-token-0123456789',
  });
  const platform = await createPlatform(config, createLogger(config.LOG_LEVEL));
  const closePlatform = cleanup.add('queue benchmark platform', () => platform.close());
  const producer = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const closeProducer = cleanup.add('queue benchmark producer', async () => producer.disconnect());
  try {
    // Unmeasured: the first jobs of a process run through cold code paths and connections.
    await measure('raw', 'noop-warmup-raw', platform, producer);
    await measure('runtime', 'noop-warmup-runtime', platform, producer);
    const rounds: QueueFigures['rounds'] = [];
    // An even number of rounds, so each order runs as often.
    const count = QUEUE_SETTINGS.rounds + (QUEUE_SETTINGS.rounds % 2);
    for (let round = 0; round < count; round += 1) {
      const order: Kind[] = round % 2 === 0 ? ['raw', 'runtime'] : ['runtime', 'raw'];
      const figures = { order, raw: 0, runtime: 0, rawCpuUs: 0, runtimeCpuUs: 0 };
      for (const kind of order) {
        const measured = await measure(kind, `noop-${kind}-${round}`, platform, producer);
        figures[kind] = measured.jobsPerSecond;
        figures[kind === 'raw' ? 'rawCpuUs' : 'runtimeCpuUs'] = measured.cpuUsPerJob;
        log(`  queue round ${round + 1}: ${kind} ${fixed(measured.jobsPerSecond, 0)} jobs/s, ${fixed(measured.cpuUsPerJob, 0)} µs of CPU per job`);
      }
      rounds.push(figures);
    }
    return {
      jobs: QUEUE_SETTINGS.jobs,
      concurrency: QUEUE_SETTINGS.concurrency,
      rounds,
      raw: summarize(rounds.map((round) => round.raw)),
      runtime: summarize(rounds.map((round) => round.runtime)),
      ratios: summarize(rounds.map((round) => round.runtime / round.raw)),
      ratio: Math.exp(rounds.reduce((sum, round) => sum + Math.log(round.runtime / round.raw), 0) / rounds.length),
    };
  } finally {
    await closeProducer();
    await closePlatform();
  }
}

/**
 * Adds the jobs, then times one worker from its start until the queue holds
 * none waiting or active; with this process's CPU time meanwhile (the worker's,
 * and the polling's, alike for both kinds).
 */
async function measure(kind: Kind, name: string, platform: Platform, producer: Redis): Promise<{ jobsPerSecond: number; cpuUsPerJob: number }> {
  const { config } = platform;
  const definition = noopQueue(name);
  const queue = new Queue(name, { connection: producer, prefix: queuePrefix(config.QUEUE_PREFIX, name), defaultJobOptions: definition.jobOptions });
  try {
    for (let start = 0; start < QUEUE_SETTINGS.jobs; start += ADD_SLICE) {
      const slice = Array.from({ length: Math.min(ADD_SLICE, QUEUE_SETTINGS.jobs - start) }, (_, index) => ({ n: start + index }));
      await queue.addBulk(slice.map((data) => ({ name, data, opts: { jobId: definition.jobId(data) } })));
    }
    const started = performance.now();
    const cpu = process.cpuUsage();
    const stop = kind === 'raw' ? startRaw(definition, platform) : startRuntime(definition, platform);
    const deadline = Date.now() + QUEUE_SETTINGS.timeoutMs;
    for (;;) {
      const counts = await queue.getJobCounts('wait', 'active', 'prioritized', 'delayed', 'failed');
      if (counts.failed > 0) throw new Error(`${counts.failed} no-op job(s) failed under the ${kind} worker`);
      if (counts.wait + counts.active + counts.prioritized + counts.delayed === 0) break;
      if (Date.now() > deadline) throw new Error(`the ${kind} worker did not finish ${QUEUE_SETTINGS.jobs} no-op jobs in time`);
      await sleep(POLL_MS);
    }
    const seconds = (performance.now() - started) / 1000;
    const used = process.cpuUsage(cpu);
    await stop();
    return { jobsPerSecond: QUEUE_SETTINGS.jobs / seconds, cpuUsPerJob: (used.user + used.system) / QUEUE_SETTINGS.jobs };
  } finally {
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
  }
}

/** A BullMQ worker as its documentation shows one, with the options the runtime gives its own. */
function startRaw(definition: QueueDefinition, platform: Platform): () => Promise<void> {
  const { config } = platform;
  const worker = new Worker(definition.name, async () => undefined, {
    connection: redisOptions(config, 'worker') as ConnectionOptions,
    prefix: queuePrefix(config.QUEUE_PREFIX, definition.name),
    concurrency: QUEUE_SETTINGS.concurrency,
    lockDuration: config.WORKER_LOCK_DURATION_MS,
    stalledInterval: config.WORKER_STALLED_INTERVAL_MS,
  });
  worker.on('error', () => undefined);
  return () => worker.close();
}

function startRuntime(definition: QueueDefinition, platform: Platform): () => Promise<void> {
  const processor: Processor = defineProcessor({ definition, process: async () => undefined });
  const runtime = new WorkerRuntime(
    { ...platform, config: { ...platform.config, WORKER_CONCURRENCY: QUEUE_SETTINGS.concurrency, WORKER_CONCURRENCY_PER_QUEUE: {} } },
    [definition.name],
    [processor],
  );
  runtime.start();
  return async () => {
    await runtime.drain(10_000);
  };
}

export function renderQueue(figures: QueueFigures, section: number): string {
  const out: string[] = [];
  out.push(`${section}. Queue overhead: ${figures.jobs} no-op jobs added in bulk, then drained by one worker (concurrency ${figures.concurrency})`);
  out.push(
    table(
      ['round', 'first', 'raw BullMQ (jobs/s)', 'WorkerRuntime (jobs/s)', 'runtime/raw', 'CPU µs/job raw', 'CPU µs/job runtime'],
      figures.rounds.map((round, index) => [
        String(index + 1),
        round.order[0],
        fixed(round.raw, 0),
        fixed(round.runtime, 0),
        ratio(round.runtime, round.raw),
        fixed(round.rawCpuUs, 0),
        fixed(round.runtimeCpuUs, 0),
      ]),
    ),
  );
  out.push('');
  out.push(
    table(
      ['worker', 'median jobs/s', 'min', 'max'],
      [
        ['raw BullMQ Worker, no-op processor', fixed(figures.raw.p50, 0), fixed(figures.raw.min, 0), fixed(figures.raw.max, 0)],
        ['WorkerRuntime, no-op processor', fixed(figures.runtime.p50, 0), fixed(figures.runtime.min, 0), fixed(figures.runtime.max, 0)],
      ],
    ),
  );
  const verdict = figures.ratio >= 0.9 ? 'met' : 'not met';
  out.push(
    `   WorkerRuntime / raw BullMQ: ${fixed(figures.ratio)}×, the geometric mean of the rounds' ratios (they range ${fixed(figures.ratios.min)}×–${fixed(figures.ratios.max)}×); goal ≥ 0.90× — ${verdict}.`,
    "   Each round runs both workers back to back on the same number of jobs; rounds alternate which goes first. CPU µs/job is this process's CPU time",
    '   (the worker, its Redis client, the polling) per job: the cost of a job in the process, less sensitive to other load than jobs/s.',
  );
  return out.join('\n');
}

export function queueFiguresJson(figures: QueueFigures) {
  return {
    jobs: figures.jobs,
    concurrency: figures.concurrency,
    rounds: figures.rounds,
    raw_jobs_per_second: figures.raw,
    runtime_jobs_per_second: figures.runtime,
    runtime_over_raw_per_round: figures.ratios,
    runtime_over_raw: figures.ratio,
    met: figures.ratio >= 0.9,
  };
}
