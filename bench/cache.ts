import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { streamKey } from '../src/domain/analytics/stream';
import type { SearchMode } from '../src/domain/search/search';
import { pickQueries, type Corpus } from './corpus';
import {
  ADMIN_TOKEN,
  ApiClient,
  freePort,
  indexCorpus,
  log,
  REDIS_URL,
  spawnRagworks,
  spawnScript,
  startDeployment,
  type Cleanup,
  type Deployment,
  type IndexingResult,
  type RagworksProcess,
} from './indexing';
import { LIMIT } from './search';
import { fixed, summarize, table, type Summary } from './stats';
import { mulberry32, positiveIntEnv } from './settings';

/**
 * The search cache and analytics recording under load: autocannon drives
 * POST /api/search with a Zipf-distributed mix of queries against web
 * processes started with the settings under test (CACHE_ENABLED,
 * ANALYTICS_ENABLED), after a worker process has indexed the corpus.
 */

export const CACHE_SETTINGS = {
  distinctQueries: positiveIntEnv('BENCH_CACHE_QUERIES', 1_000),
  zipfExponent: 1.1,
  seconds: positiveIntEnv('BENCH_CACHE_SECONDS', 20),
  warmupSeconds: positiveIntEnv('BENCH_CACHE_WARMUP_SECONDS', 5),
  connections: positiveIntEnv('BENCH_CACHE_CONNECTIONS', 10),
  /** Analytics on/off: this many pairs of slices, each slice this long. */
  analyticsPairs: positiveIntEnv('BENCH_ANALYTICS_PAIRS', 20),
  analyticsSliceSeconds: positiveIntEnv('BENCH_ANALYTICS_SLICE_SECONDS', 3),
  /** Cached search beside Express's hello world: this many pairs of slices per query mix, each slice this long. */
  baselinePairs: positiveIntEnv('BENCH_BASELINE_PAIRS', 5),
  baselineSliceSeconds: positiveIntEnv('BENCH_BASELINE_SLICE_SECONDS', 3),
  workerConcurrency: positiveIntEnv('BENCH_WORKER_CONCURRENCY', 4),
  batchSize: 100,
  indexingTimeoutMs: 5 * 60_000,
  // Hybrid on PGlite needs every chunk embedded first (about two minutes here), so it runs only when asked for.
  pglite: process.env.BENCH_CACHE_PGLITE === '1',
  // Different seeds: a measured window must not replay the warm-up's sequence, which would make its first requests all hits.
  warmupSeed: 11,
  measureSeed: 1_100,
};

// ---------------------------------------------------------------------------
// The query mix

/** P(rank k) ∝ 1 / k^s for k = 1..n, as a cumulative table. */
function zipfCdf(n: number, s: number): Float64Array {
  const cdf = new Float64Array(n);
  let total = 0;
  for (let k = 0; k < n; k += 1) {
    total += 1 / Math.pow(k + 1, s);
    cdf[k] = total;
  }
  for (let k = 0; k < n; k += 1) cdf[k] /= total;
  return cdf;
}

/** A sampler of ranks (0-based) from the Zipf distribution, seeded. */
function zipfSampler(cdf: Float64Array, seed: number): () => number {
  const random = mulberry32(seed);
  return () => {
    const u = random();
    let low = 0;
    let high = cdf.length - 1;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (cdf[middle] < u) low = middle + 1;
      else high = middle;
    }
    return low;
  };
}

interface QueryMix {
  queries: string[];
  cdf: Float64Array;
  /** Share of requests that go to the 1, 10 and 100 most frequent queries. */
  topShares: Array<{ top: number; share: number }>;
}

function queryMix(corpus: Corpus): QueryMix {
  const queries = pickQueries(corpus, CACHE_SETTINGS.distinctQueries);
  if (queries.length < CACHE_SETTINGS.distinctQueries) {
    log(`the corpus gives ${queries.length} distinct heading phrases, fewer than ${CACHE_SETTINGS.distinctQueries}: using them all`);
  }
  const cdf = zipfCdf(queries.length, CACHE_SETTINGS.zipfExponent);
  const topShares = [1, 10, 100].filter((top) => top <= queries.length).map((top) => ({ top, share: cdf[top - 1] }));
  return { queries, cdf, topShares };
}

// ---------------------------------------------------------------------------
// Load

interface LoadOptions {
  url: string;
  token: string;
  mode: SearchMode;
  seconds: number;
  mix: QueryMix;
  /** Draws the rank of each request's query; shared across calls, a sequence goes on where the last call left it. */
  sample: () => number;
  /** Queries asked so far of this process, for the ideal hit ratio. */
  seen: Set<number>;
}

/** What one autocannon run saw. */
interface Window {
  seconds: number;
  /** Client-side latency of every 2xx reply, ms. */
  latencies: number[];
  /** The server's took_ms of every 2xx reply (search, or cache lookup, inside the process). */
  tookMs: number[];
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  cachedReplies: number;
  emptyReplies: number;
  /** Requests sent, and how many of them asked a query for the first time in this process. */
  drawn: number;
  firstSeen: number;
  firstError: string | null;
}

const TOOK_MS = /"took_ms":([0-9.eE+-]+)/;

/** Runs autocannon for a fixed time; each request's body carries a query drawn from the Zipf mix. */
function load(options: LoadOptions): Promise<Window> {
  // Bodies built once: the client should spend its share of the two cores sending, not serialising.
  const bodies = options.mix.queries.map((query) => JSON.stringify({ query, mode: options.mode, limit: LIMIT }));
  const latencies: number[] = [];
  const tookMs: number[] = [];
  let cachedReplies = 0;
  let emptyReplies = 0;
  let drawn = 0;
  let firstSeen = 0;
  let firstError: string | null = null;
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: options.url,
        connections: CACHE_SETTINGS.connections,
        duration: options.seconds,
        timeout: 30,
        headers: { authorization: `Bearer ${options.token}`, 'content-type': 'application/json' },
        requests: [
          {
            method: 'POST',
            path: '/api/search',
            setupRequest: (request) => {
              const rank = options.sample();
              drawn += 1;
              if (!options.seen.has(rank)) {
                options.seen.add(rank);
                firstSeen += 1;
              }
              request.body = bodies[rank];
              return request;
            },
            onResponse: (status, body) => {
              if (status !== 200) {
                firstError ??= `${status}: ${body.slice(0, 300)}`;
                return;
              }
              // Inside string values quotes are escaped, so these can only be the reply's own fields. They follow
              // the results: reading from the last of them keeps the client from scanning every result three times.
              const fields = body.slice(Math.max(0, body.lastIndexOf('"total_results":')));
              if (fields.includes('"cached":true')) cachedReplies += 1;
              if (/"total_results":0[,}]/.test(fields)) emptyReplies += 1;
              const took = TOOK_MS.exec(fields);
              if (took) tookMs.push(Number(took[1]));
            },
          },
        ],
      },
      (error, result) => {
        if (error) {
          reject(error instanceof Error ? error : new Error(String(error)));
          return;
        }
        resolve({
          seconds: result.duration,
          latencies,
          tookMs,
          ok: result['2xx'],
          non2xx: result.non2xx,
          errors: result.errors,
          timeouts: result.timeouts,
          cachedReplies,
          emptyReplies,
          drawn,
          firstSeen,
          firstError,
        });
      },
    );
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime);
    });
    instance.on('reqError', (error: unknown) => {
      firstError ??= error instanceof Error ? error.message : String(error);
    });
  });
}

/** Several windows of one setting as one. */
function merge(windows: readonly Window[]): Window {
  const sum = (field: 'seconds' | 'ok' | 'non2xx' | 'errors' | 'timeouts' | 'cachedReplies' | 'emptyReplies' | 'drawn' | 'firstSeen') =>
    windows.reduce((total, window) => total + window[field], 0);
  return {
    seconds: sum('seconds'),
    latencies: windows.flatMap((window) => window.latencies),
    tookMs: windows.flatMap((window) => window.tookMs),
    ok: sum('ok'),
    non2xx: sum('non2xx'),
    errors: sum('errors'),
    timeouts: sum('timeouts'),
    cachedReplies: sum('cachedReplies'),
    emptyReplies: sum('emptyReplies'),
    drawn: sum('drawn'),
    firstSeen: sum('firstSeen'),
    firstError: windows.find((window) => window.firstError)?.firstError ?? null,
  };
}

// ---------------------------------------------------------------------------
// Figures

export interface LoadFigures {
  label: string;
  cache: boolean;
  analytics: boolean;
  seconds: number;
  /** 2xx replies in the measured time. */
  replies: number;
  requestsPerSecond: number;
  latency: Summary;
  serverTookMs: Summary;
  /** Replies that said `cached: true`, as a share of the 2xx replies. */
  hitRatio: number;
  /** What a cache that forgot nothing would have hit: requests whose query had been asked of the process before (warm-up included). */
  idealHitRatio: number;
  emptyReplies: number;
  /** The process's own cache counters over the measured time (GET /api/admin/cache/stats, differences). */
  serverCache: { l1Hits: number; l2Hits: number; lookups: number; hitRatio: number | null } | null;
  /** Entries the analytics stream gained while this process was loaded (warm-up included), beside the requests sent then. */
  analyticsEvents: number;
  requestsSent: number;
  /** Non-2xx replies and connection errors, warm-up included. */
  failures: number;
  firstError: string | null;
}

function loadFigures(
  label: string,
  settings: { cache: boolean; analytics: boolean },
  measured: Window,
  warmup: Window,
  extra: { serverCache: LoadFigures['serverCache']; analyticsEvents: number },
): LoadFigures {
  return {
    label,
    ...settings,
    seconds: measured.seconds,
    replies: measured.ok,
    requestsPerSecond: measured.ok / measured.seconds,
    latency: summarize(measured.latencies),
    serverTookMs: summarize(measured.tookMs),
    hitRatio: measured.ok > 0 ? measured.cachedReplies / measured.ok : Number.NaN,
    idealHitRatio: measured.drawn > 0 ? 1 - measured.firstSeen / measured.drawn : Number.NaN,
    emptyReplies: measured.emptyReplies,
    serverCache: extra.serverCache,
    analyticsEvents: extra.analyticsEvents,
    requestsSent: warmup.drawn + measured.drawn,
    failures: measured.non2xx + measured.errors + warmup.non2xx + warmup.errors,
    firstError: measured.firstError ?? warmup.firstError,
  };
}

export interface AnalyticsFigures {
  pairs: number;
  sliceSeconds: number;
  on: LoadFigures;
  off: LoadFigures;
  /** Per pair of adjacent slices: (mean latency on − off) / off. */
  pairOverheads: number[];
  /** Pooled: latency increase with analytics on, relative to off; throughput lost likewise. */
  overhead: { p50: number; p95: number; p99: number; mean: number; throughputLoss: number };
  /** The mean of the pair overheads with its 95% confidence interval (Student's t): the figure the verdict rests on. */
  estimate: { mean: number; low: number; high: number };
  /** met: the whole interval is under 5%; not met: all of it above; unsettled: it straddles 5% (too much noise to say). */
  verdict: 'met' | 'not met' | 'unsettled';
}

export interface CacheSetupFigures {
  database: 'postgres' | 'pglite';
  setup: string;
  mode: SearchMode;
  indexing: IndexingResult;
  cacheOn: LoadFigures;
  cacheOff: LoadFigures;
  analytics: AnalyticsFigures | null;
  baseline: BaselineFigures | null;
}

export interface CacheFigures {
  distinctQueries: number;
  topShares: Array<{ top: number; share: number }>;
  setups: CacheSetupFigures[];
}

// ---------------------------------------------------------------------------
// Running

/** Nothing scheduled may run during a measurement (PGlite's `all` process runs the scheduler). */
const QUIET_SCHEDULES = { SCHEDULE_ANALYTICS: '0 0 1 1 *', SCHEDULE_RETENTION: '0 0 1 1 *' };

export async function runCacheBenchmark(corpus: Corpus, cleanup: Cleanup): Promise<CacheFigures> {
  const mix = queryMix(corpus);
  log(`cache: ${mix.queries.length} distinct queries, Zipf s=${CACHE_SETTINGS.zipfExponent}; the most frequent is ${fixed(mix.topShares[0].share * 100, 1)}% of requests`);
  const setups: CacheSetupFigures[] = [];
  setups.push(await runSetup('postgres', 'keyword', corpus, mix, cleanup));
  if (CACHE_SETTINGS.pglite) setups.push(await runSetup('pglite', 'hybrid', corpus, mix, cleanup));
  return { distinctQueries: mix.queries.length, topShares: mix.topShares, setups };
}

async function runSetup(kind: 'postgres' | 'pglite', mode: SearchMode, corpus: Corpus, mix: QueryMix, cleanup: Cleanup): Promise<CacheSetupFigures> {
  log(`cache: ${kind}: starting, then indexing ${corpus.documents.length} documents`);
  const deployment = await startDeployment({ kind, workers: 1, workerConcurrency: CACHE_SETTINGS.workerConcurrency, env: QUIET_SCHEDULES }, cleanup);
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1, lazyConnect: true });
  const disconnect = cleanup.add('redis client', async () => redis.disconnect());
  try {
    await redis.connect();
    const indexing = await indexCorpus(deployment, corpus.documents, {
      batchSize: CACHE_SETTINGS.batchSize,
      embeddings: kind === 'pglite',
      timeoutMs: CACHE_SETTINGS.indexingTimeoutMs,
    });
    log(`  indexed in ${fixed(indexing.totalSeconds, 1)} s; stopping the indexing processes`);
    // The worker has nothing left to do; stopped, it leaves the cores to the web process, the database and the client.
    await deployment.stopProcesses();
    const context: SetupContext = { deployment, kind, mode, mix, cleanup, redis };
    const cacheOn = await restartAndMeasure(context, 'cache on', { cache: true, analytics: true });
    const cacheOff = await restartAndMeasure(context, 'cache off', { cache: false, analytics: true });
    // PGlite has one owner, so two processes cannot serve it side by side.
    const analytics = kind === 'postgres' ? await measureAnalytics(context) : null;
    const baseline = kind === 'postgres' ? await measureAgainstHelloWorld(context) : null;
    const setup = kind === 'postgres' ? 'PostgreSQL, 1 web process (the worker that indexed is stopped)' : 'PGlite, 1 process (role all)';
    return { database: kind, setup, mode, indexing, cacheOn, cacheOff, analytics, baseline };
  } finally {
    await disconnect();
    await deployment.release();
  }
}

interface SetupContext {
  deployment: Deployment;
  kind: 'postgres' | 'pglite';
  mode: SearchMode;
  mix: QueryMix;
  cleanup: Cleanup;
  redis: Redis;
}

interface Server {
  child: RagworksProcess;
  client: ApiClient;
  stop(): Promise<void>;
}

/** A web (or all) process with the given settings on the deployment's data, ready to serve. */
async function startServer(
  context: SetupContext,
  label: string,
  settings: { cache: boolean; analytics: boolean },
  port: number,
  extraEnv: Record<string, string> = {},
): Promise<Server> {
  const role = context.kind === 'postgres' ? 'web' : 'all';
  const env = { ...context.deployment.env, ...extraEnv, PORT: String(port), CACHE_ENABLED: String(settings.cache), ANALYTICS_ENABLED: String(settings.analytics) };
  const client = new ApiClient(`http://127.0.0.1:${port}`);
  let child: RagworksProcess | null = null;
  const stop = context.cleanup.add(`${role} process (${label})`, async () => {
    await child?.stop();
    await client.close();
  });
  try {
    child = spawnRagworks(role, env, `${role} (${label})`);
    await waitForReady(client, child);
    return { child, client, stop };
  } catch (error) {
    const output = child?.output();
    await stop();
    throw new Error(`${(error as Error).message}${output ? `\n  last output:\n${output}` : ''}`);
  }
}

async function waitForReady(client: ApiClient, child: RagworksProcess): Promise<void> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (!child.running) throw new Error(`${child.role} exited before it was ready`);
    try {
      if ((await client.call('GET', '/readyz', {})).status === 200) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`${child.role} was not ready within 90 s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function loadOptions(context: SetupContext, server: Server, seconds: number, sample: () => number, seen: Set<number>): LoadOptions {
  return { url: server.client.baseUrl, token: context.deployment.tenant.key, mode: context.mode, mix: context.mix, seconds, sample, seen };
}

async function streamLength(context: SetupContext): Promise<number> {
  return context.redis.xlen(streamKey(context.deployment.env.QUEUE_PREFIX));
}

/** The XADDs are sent without waiting for Redis: give the last ones a moment to land before counting. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 100));

interface CacheStatsBody {
  l1: { hits: number; misses: number };
  l2: { hits: number };
}

async function cacheStats(server: Server): Promise<CacheStatsBody> {
  return (await server.client.expect<CacheStatsBody>(200, 'GET', '/api/admin/cache/stats', { token: ADMIN_TOKEN })).body;
}

function cacheDelta(before: CacheStatsBody, after: CacheStatsBody): LoadFigures['serverCache'] {
  const l1Hits = after.l1.hits - before.l1.hits;
  const l2Hits = after.l2.hits - before.l2.hits;
  // Every lookup tries the in-process tier first, so its hits and misses count them all.
  const lookups = l1Hits + (after.l1.misses - before.l1.misses);
  return { l1Hits, l2Hits, lookups, hitRatio: lookups > 0 ? (l1Hits + l2Hits) / lookups : null };
}

function failIfNothingAnswered(label: string, window: Window): void {
  if (window.ok === 0) throw new Error(`no search succeeded in "${label}": ${window.firstError ?? 'no reply'}`);
}

/** A fresh process with the settings (on the deployment's own port), a warm-up, then the measured window. */
async function restartAndMeasure(context: SetupContext, label: string, settings: { cache: boolean; analytics: boolean }): Promise<LoadFigures> {
  log(`cache: ${context.kind} ${context.mode}, ${label}: starting a fresh process`);
  const server = await startServer(context, label, settings, Number(context.deployment.env.PORT));
  try {
    if (settings.cache) {
      // Both tiers start empty: the Redis tier outlives the process, and an earlier run may have filled it.
      await server.client.expect(200, 'POST', '/api/admin/cache/invalidate', { token: ADMIN_TOKEN, body: { tenant_id: context.deployment.tenant.id } });
    }
    const seen = new Set<number>();
    const eventsBefore = await streamLength(context);
    log(`  warm-up ${CACHE_SETTINGS.warmupSeconds} s`);
    const warmup = await load(loadOptions(context, server, CACHE_SETTINGS.warmupSeconds, zipfSampler(context.mix.cdf, CACHE_SETTINGS.warmupSeed), seen));
    const statsBefore = await cacheStats(server);
    log(`  measuring ${CACHE_SETTINGS.seconds} s, ${CACHE_SETTINGS.connections} connections`);
    const measured = await load(loadOptions(context, server, CACHE_SETTINGS.seconds, zipfSampler(context.mix.cdf, CACHE_SETTINGS.measureSeed), seen));
    const statsAfter = await cacheStats(server);
    await settle();
    const eventsAfter = await streamLength(context);
    failIfNothingAnswered(label, measured);
    const figures = loadFigures(label, settings, measured, warmup, {
      serverCache: settings.cache ? cacheDelta(statsBefore, statsAfter) : null,
      analyticsEvents: eventsAfter - eventsBefore,
    });
    log(`  ${fixed(figures.requestsPerSecond, 0)} requests/s, p50 ${fixed(figures.latency.p50)} ms, p99 ${fixed(figures.latency.p99)} ms, cached ${fixed(figures.hitRatio * 100, 1)}%`);
    return figures;
  } finally {
    await server.stop();
  }
}

/**
 * Analytics on and off, cache off: two web processes side by side, one
 * with ANALYTICS_ENABLED=true and one with false, loaded in turn in short
 * slices (on, off, off, on, …). Whatever else the machine does then weighs
 * on both alike, which a few long runs one after the other cannot promise:
 * the overhead sought is a few percent, the drift of a shared machine more.
 * The idle process costs next to nothing while the other is loaded.
 */
async function measureAnalytics(context: SetupContext): Promise<AnalyticsFigures> {
  const { analyticsPairs: pairs, analyticsSliceSeconds: sliceSeconds } = CACHE_SETTINGS;
  log(`cache: analytics on and off, cache off: two web processes, ${pairs} pairs of ${sliceSeconds} s slices`);
  const on = await startServer(context, 'analytics on', { cache: false, analytics: true }, Number(context.deployment.env.PORT));
  try {
    const off = await startServer(context, 'analytics off', { cache: false, analytics: false }, await freePort());
    try {
      const sides = [
        { server: on, settings: { cache: false, analytics: true }, seen: new Set<number>(), slices: [] as Window[], events: 0, warmup: null as Window | null },
        { server: off, settings: { cache: false, analytics: false }, seen: new Set<number>(), slices: [] as Window[], events: 0, warmup: null as Window | null },
      ];
      // The same query sequence on both sides, each going on from slice to slice.
      for (const side of sides) {
        const before = await streamLength(context);
        side.warmup = await load(loadOptions(context, side.server, CACHE_SETTINGS.warmupSeconds, zipfSampler(context.mix.cdf, CACHE_SETTINGS.warmupSeed), side.seen));
        await settle();
        side.events += (await streamLength(context)) - before;
      }
      const samplers = sides.map(() => zipfSampler(context.mix.cdf, CACHE_SETTINGS.measureSeed));
      for (let pair = 0; pair < pairs; pair += 1) {
        const order = pair % 2 === 0 ? [0, 1] : [1, 0];
        for (const index of order) {
          const side = sides[index];
          const before = await streamLength(context);
          const window = await load(loadOptions(context, side.server, sliceSeconds, samplers[index], side.seen));
          failIfNothingAnswered(side.server.child.role, window);
          side.slices.push(window);
          await settle();
          side.events += (await streamLength(context)) - before;
        }
        log(`  pair ${pair + 1}/${pairs}: on ${fixed(sides[0].slices[pair].latencies.length / sides[0].slices[pair].seconds, 0)}/s, off ${fixed(sides[1].slices[pair].latencies.length / sides[1].slices[pair].seconds, 0)}/s`);
      }
      const [onFigures, offFigures] = sides.map((side, index) =>
        loadFigures(index === 0 ? 'analytics on' : 'analytics off', side.settings, merge(side.slices), side.warmup!, { serverCache: null, analyticsEvents: side.events }),
      );
      const mean = (values: readonly number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
      const pairOverheads = sides[0].slices.map((slice, pair) => change(mean(slice.latencies), mean(sides[1].slices[pair].latencies)));
      const overhead = {
        p50: change(onFigures.latency.p50, offFigures.latency.p50),
        p95: change(onFigures.latency.p95, offFigures.latency.p95),
        p99: change(onFigures.latency.p99, offFigures.latency.p99),
        mean: change(onFigures.latency.mean, offFigures.latency.mean),
        throughputLoss: -change(onFigures.requestsPerSecond, offFigures.requestsPerSecond),
      };
      const estimate = confidenceInterval(pairOverheads);
      const verdict = estimate.high < LIMIT_OVERHEAD ? 'met' : estimate.low > LIMIT_OVERHEAD ? 'not met' : 'unsettled';
      return { pairs, sliceSeconds, on: onFigures, off: offFigures, pairOverheads, overhead, estimate, verdict };
    } finally {
      await off.stop();
    }
  } finally {
    await on.stop();
  }
}

// ---------------------------------------------------------------------------
// Cached search beside Express's hello world

/** The goal: a cached search serves at least half the requests per second of Express's hello world. */
const BASELINE_GOAL = 0.5;

/**
 * The benchmark tenant's tier (`unlimited`) has no rate limits by default: here they are set so high that they never
 * refuse, so each search takes its budgets as a paying tenant's does. The other tiers keep their defaults.
 */
const LIMITS_THAT_NEVER_REFUSE = {
  RATE_LIMIT_TENANT: 'free=600,standard=6000,enterprise=60000,unlimited=1000000000',
  RATE_LIMIT_KEY: 'free=300,standard=3000,enterprise=30000,unlimited=1000000000',
};

export interface BaselineSide {
  requestsPerSecond: number;
  latency: Summary;
  replies: number;
  /** Share of replies that said `cached: true` (ragworks only). */
  hitRatio: number | null;
  failures: number;
  firstError: string | null;
}

export interface BaselineMix {
  label: string;
  ragworks: BaselineSide;
  helloWorld: BaselineSide;
  /** Pooled requests/s, ragworks ÷ hello world. */
  ratio: number;
  /** The same ratio per pair of adjacent slices: how much it moved during the run. */
  pairRatios: number[];
}

export interface BaselineFigures {
  pairs: number;
  sliceSeconds: number;
  mixes: BaselineMix[];
}

/** Express's hello world (bench/hello-world.ts) on a port of its own, started the way ragworks is. */
async function startHelloWorld(context: SetupContext): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let child: RagworksProcess | null = null;
  const stop = context.cleanup.add('hello world process', async () => {
    await child?.stop();
  });
  child = spawnScript(['bench/hello-world.ts'], { PORT: String(port), HOST: '127.0.0.1' }, 'hello world');
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (!child.running) throw new Error(`hello world exited before it listened: ${child.output()}`);
    if ((await fetch(url).then((response) => response.status, () => 0)) === 200) return { url, stop };
    if (Date.now() > deadline) throw new Error('hello world did not listen within 30 s');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * A cached search and Express's hello world, loaded in turn by the same
 * client over the same connections, in pairs of short slices (hello, ragworks,
 * ragworks, hello, …) so that other load on the machine weighs on both alike:
 * first one query asked again and again, then the Zipf mix.
 */
async function measureAgainstHelloWorld(context: SetupContext): Promise<BaselineFigures> {
  const { baselinePairs: pairs, baselineSliceSeconds: sliceSeconds, warmupSeconds } = CACHE_SETTINGS;
  log(`cache: cached search beside Express's hello world, ${pairs} pairs of ${sliceSeconds} s slices per query mix`);
  const server = await startServer(context, 'beside hello world', { cache: true, analytics: true }, Number(context.deployment.env.PORT), LIMITS_THAT_NEVER_REFUSE);
  try {
    const hello = await startHelloWorld(context);
    try {
      const mixes: BaselineMix[] = [];
      const samplers = [
        { label: 'one hot query', sampler: () => () => 0 },
        { label: 'Zipf mix', sampler: (seed: number) => zipfSampler(context.mix.cdf, seed) },
      ];
      for (const { label, sampler } of samplers) {
        const sides = [
          { url: server.client.baseUrl, sample: sampler(CACHE_SETTINGS.measureSeed), seen: new Set<number>(), slices: [] as Window[] },
          { url: hello.url, sample: sampler(CACHE_SETTINGS.measureSeed), seen: new Set<number>(), slices: [] as Window[] },
        ];
        const options = (side: (typeof sides)[number], seconds: number, sample = side.sample): LoadOptions => ({
          url: side.url,
          token: context.deployment.tenant.key,
          mode: context.mode,
          mix: context.mix,
          seconds,
          sample,
          seen: side.seen,
        });
        // The warm-up fills the cache (and warms both JITs) with another seed than the measured sequence.
        for (const side of sides) await load(options(side, warmupSeconds, sampler(CACHE_SETTINGS.warmupSeed)));
        for (let pair = 0; pair < pairs; pair += 1) {
          for (const index of pair % 2 === 0 ? [1, 0] : [0, 1]) {
            const window = await load(options(sides[index], sliceSeconds));
            failIfNothingAnswered(index === 0 ? 'ragworks' : 'hello world', window);
            sides[index].slices.push(window);
          }
        }
        const [ragworks, helloWorld] = sides.map((side, index) => baselineSide(merge(side.slices), index === 0));
        const pairRatios = sides[0].slices.map((slice, pair) => slice.ok / slice.seconds / (sides[1].slices[pair].ok / sides[1].slices[pair].seconds));
        const mix = { label, ragworks, helloWorld, ratio: ragworks.requestsPerSecond / helloWorld.requestsPerSecond, pairRatios };
        log(`  ${label}: ragworks ${fixed(ragworks.requestsPerSecond, 0)}/s, hello world ${fixed(helloWorld.requestsPerSecond, 0)}/s: ${fixed(mix.ratio)}×`);
        mixes.push(mix);
      }
      return { pairs, sliceSeconds, mixes };
    } finally {
      await hello.stop();
    }
  } finally {
    await server.stop();
  }
}

function baselineSide(window: Window, isRagworks: boolean): BaselineSide {
  return {
    requestsPerSecond: window.ok / window.seconds,
    latency: summarize(window.latencies),
    replies: window.ok,
    hitRatio: isRagworks && window.ok > 0 ? window.cachedReplies / window.ok : null,
    failures: window.non2xx + window.errors,
    firstError: window.firstError,
  };
}

/** The issue's bound on what recording analytics may cost a search. */
const LIMIT_OVERHEAD = 0.05;

const change = (value: number, reference: number) => (reference > 0 ? (value - reference) / reference : Number.NaN);

/** Two-sided 95% quantiles of Student's t for 1–30 degrees of freedom; beyond, the normal's. */
const T_95 = [12.71, 4.3, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.2, 2.18, 2.16, 2.14, 2.13, 2.12, 2.11, 2.1, 2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05, 2.04];

function confidenceInterval(values: readonly number[]): { mean: number; low: number; high: number } {
  const n = values.length;
  const mean = values.reduce((sum, value) => sum + value, 0) / n;
  if (n < 2) return { mean, low: Number.NaN, high: Number.NaN };
  const variance = values.reduce((sum, value) => sum + (value - mean) ** 2, 0) / (n - 1);
  const half = (T_95[n - 2] ?? 1.96) * Math.sqrt(variance / n);
  return { mean, low: mean - half, high: mean + half };
}

// ---------------------------------------------------------------------------
// Report

const percent = (value: number | null) => (value !== null && Number.isFinite(value) ? `${(value * 100).toFixed(1)}%` : '–');
const signedPercent = (value: number) => (Number.isFinite(value) ? `${value >= 0 ? '+' : ''}${(value * 100).toFixed(1)}%` : '–');

function latencyCells(summary: Summary): string[] {
  return [fixed(summary.p50), fixed(summary.p95), fixed(summary.p99), fixed(summary.mean)];
}

function ratioCell(numerator: number, denominator: number): string {
  return denominator > 0 && Number.isFinite(numerator) ? `${(numerator / denominator).toFixed(2)}×` : '–';
}

function indent(text: string, spaces: number): string {
  return text
    .split('\n')
    .map((line) => `${' '.repeat(spaces)}${line}`)
    .join('\n');
}

function loadRow(row: LoadFigures): string[] {
  return [
    row.label,
    fixed(row.requestsPerSecond, 0),
    ...latencyCells(row.latency),
    fixed(row.serverTookMs.p50),
    String(row.replies),
    percent(row.hitRatio),
    row.cache ? percent(row.idealHitRatio) : '–',
    row.serverCache ? `${row.serverCache.l1Hits} / ${row.serverCache.l2Hits}` : '–',
    `${row.analyticsEvents}/${row.requestsSent}`,
    String(row.failures),
  ];
}

const LOAD_HEADERS = ['run', 'requests/s', 'p50', 'p95', 'p99', 'mean', 'took_ms p50', 'replies', 'cached', 'ideal', 'L1 / L2 hits', 'stream events', 'failed'];

export function renderCache(figures: CacheFigures, section: number): string {
  const out: string[] = [];
  const s = CACHE_SETTINGS;
  out.push(`${section}. Search cache and analytics under load: autocannon, POST /api/search, limit ${LIMIT}`);
  out.push(
    `   ${figures.distinctQueries} distinct queries (2–4 words from the corpus's headings); each request's drawn from a Zipf distribution,`,
    `   s = ${s.zipfExponent}: ${figures.topShares.map(({ top, share }) => `the top ${top} are ${percent(share)}`).join(', ')} of requests. ${s.connections} connections, one`,
    '   autocannon client in the benchmark process, on the same two cores as the server, PostgreSQL and Redis.',
    '   Latency (ms) is client-side, every 2xx reply of the measured time; took_ms p50 is the server\'s own figure for the',
    '   search (a cache lookup when cached). cached = share of replies with `cached: true`; ideal = share of requests',
    '   whose query the process had been asked before (a cache that forgot nothing); L1 / L2 hits from GET',
    '   /api/admin/cache/stats over the measured time; stream events = analytics events added to the Redis stream',
    '   while the process was loaded / requests sent then (warm-up included); failed = non-2xx replies and errors.',
  );
  for (const setup of figures.setups) {
    out.push('');
    const title =
      setup.database === 'pglite'
        ? `PGlite (pgvector), ${setup.mode} search — ${setup.setup}`
        : `PostgreSQL, ${setup.mode} search (the machine's PostgreSQL has no pgvector) — ${setup.setup}`;
    out.push(`   ${title}; ${setup.indexing.documents} documents, ${setup.indexing.chunks} chunks, indexed in ${fixed(setup.indexing.totalSeconds, 1)} s`);
    out.push('');
    out.push(
      `   Cache on and off: a fresh process for each (CACHE_ENABLED=true/false, ANALYTICS_ENABLED=true), the cache emptied`,
      `   before the cache-on run; ${s.warmupSeconds} s warm-up, then ${s.seconds} s measured.`,
    );
    const { cacheOn, cacheOff } = setup;
    out.push(indent(table(LOAD_HEADERS, [loadRow(cacheOn), loadRow(cacheOff)]), 3));
    out.push(
      indent(
        table(
          ['on/off', 'requests/s', 'p50', 'p95', 'p99', 'mean'],
          [['', ratioCell(cacheOn.requestsPerSecond, cacheOff.requestsPerSecond), ...(['p50', 'p95', 'p99', 'mean'] as const).map((field) => ratioCell(cacheOn.latency[field], cacheOff.latency[field]))]],
        ),
        3,
      ),
    );
    for (const row of [cacheOn, cacheOff]) if (row.firstError) out.push(`   ! ${row.label}: ${row.firstError}`);

    const analytics = setup.analytics;
    if (analytics) {
      out.push('');
      out.push(
        `   Analytics recording on and off, cache off (every request searches): two web processes side by side, ANALYTICS_ENABLED`,
        `   true and false, each warmed ${s.warmupSeconds} s, then loaded in turn in ${analytics.pairs} pairs of ${analytics.sliceSeconds} s slices (on, off, off, on, …),`,
        '   so that other load on the machine weighs on both alike. Each side pools its slices.',
      );
      out.push(indent(table(LOAD_HEADERS, [loadRow(analytics.on), loadRow(analytics.off)]), 3));
      const o = analytics.overhead;
      out.push(
        indent(
          table(
            ['overhead', 'requests/s', 'p50', 'p95', 'p99', 'mean'],
            [['on vs off', signedPercent(o.throughputLoss), signedPercent(o.p50), signedPercent(o.p95), signedPercent(o.p99), signedPercent(o.mean)]],
          ),
          3,
        ),
      );
      const e = analytics.estimate;
      const verdicts = {
        met: 'met: the whole interval lies under 5%',
        'not met': 'NOT met: the whole interval lies above 5%',
        unsettled: 'not settled by this run: the interval reaches past 5%, the noise is larger than the bound',
      };
      out.push(
        '   overhead = (on − off) / off for latency; for requests/s, the share of throughput lost. Below zero is noise.',
        `   Per pair of slices (mean latency): ${analytics.pairOverheads.map(signedPercent).join(' ')}`,
        `   Their mean: ${signedPercent(e.mean)}, 95% confidence interval ${signedPercent(e.low)} to ${signedPercent(e.high)}.`,
        `   Requirement (overhead under 5%): ${verdicts[analytics.verdict]}.`,
      );
      for (const row of [analytics.on, analytics.off]) if (row.firstError) out.push(`   ! ${row.label}: ${row.firstError}`);
    }
    if (setup.baseline) out.push('', renderBaseline(setup.baseline));
  }
  return out.join('\n');
}

function renderBaseline(baseline: BaselineFigures): string {
  const out: string[] = [];
  out.push(
    "   Cached search beside Express's hello world (bench/hello-world.ts, started like ragworks: same Node, same loader), both",
    `   loaded by the same client over the same ${CACHE_SETTINGS.connections} connections in turn, ${baseline.pairs} pairs of ${baseline.sliceSeconds} s slices per query mix (hello,`,
    '   ragworks, ragworks, hello, …) after a warm-up that fills the cache. ragworks runs with the defaults (cache and analytics on),',
    '   and its tenant\'s rate limits are in force, set too high to refuse: each search takes its budgets as a paying tenant\'s does.',
  );
  const rows = baseline.mixes.flatMap((mix) => [
    [mix.label, 'ragworks', fixed(mix.ragworks.requestsPerSecond, 0), ...latencyCells(mix.ragworks.latency), percent(mix.ragworks.hitRatio), String(mix.ragworks.failures)],
    ['', 'hello world', fixed(mix.helloWorld.requestsPerSecond, 0), ...latencyCells(mix.helloWorld.latency), '–', String(mix.helloWorld.failures)],
  ]);
  out.push(indent(table(['query mix', 'server', 'requests/s', 'p50', 'p95', 'p99', 'mean', 'cached', 'failed'], rows), 3));
  for (const mix of baseline.mixes) {
    const verdict = mix.ratio >= BASELINE_GOAL ? 'met' : 'NOT met';
    out.push(
      `   ${mix.label}: ragworks / hello world = ${fixed(mix.ratio)}× requests/s (per pair: ${mix.pairRatios.map((value) => `${fixed(value)}×`).join(' ')});` +
        ` goal ≥ ${BASELINE_GOAL}×: ${verdict}.`,
    );
    for (const [name, side] of [['ragworks', mix.ragworks], ['hello world', mix.helloWorld]] as const) {
      if (side.firstError) out.push(`   ! ${mix.label}, ${name}: ${side.firstError}`);
    }
  }
  return out.join('\n');
}

function loadJson(row: LoadFigures) {
  return {
    label: row.label,
    cache: row.cache,
    analytics: row.analytics,
    seconds: row.seconds,
    replies: row.replies,
    requests_per_second: row.requestsPerSecond,
    latency_ms: row.latency,
    server_took_ms: row.serverTookMs,
    hit_ratio: row.hitRatio,
    ideal_hit_ratio: row.cache ? row.idealHitRatio : null,
    server_cache: row.serverCache,
    empty_replies: row.emptyReplies,
    analytics_events: row.analyticsEvents,
    requests_sent: row.requestsSent,
    failed: row.failures,
    first_error: row.firstError,
  };
}

function baselineSideJson(side: BaselineSide) {
  return {
    requests_per_second: side.requestsPerSecond,
    latency_ms: side.latency,
    replies: side.replies,
    hit_ratio: side.hitRatio,
    failed: side.failures,
    first_error: side.firstError,
  };
}

export function cacheFiguresJson(figures: CacheFigures) {
  const s = CACHE_SETTINGS;
  return {
    settings: {
      distinct_queries: figures.distinctQueries,
      zipf_exponent: s.zipfExponent,
      top_shares: figures.topShares,
      seconds: s.seconds,
      warmup_seconds: s.warmupSeconds,
      connections: s.connections,
      analytics_pairs: s.analyticsPairs,
      analytics_slice_seconds: s.analyticsSliceSeconds,
      baseline_pairs: s.baselinePairs,
      baseline_slice_seconds: s.baselineSliceSeconds,
      search_limit: LIMIT,
    },
    setups: figures.setups.map((setup) => ({
      database: setup.database,
      setup: setup.setup,
      mode: setup.mode,
      indexing_seconds: setup.indexing.totalSeconds,
      chunks: setup.indexing.chunks,
      cache_on: loadJson(setup.cacheOn),
      cache_off: loadJson(setup.cacheOff),
      cache_on_over_off: {
        requests_per_second: setup.cacheOn.requestsPerSecond / setup.cacheOff.requestsPerSecond,
        p50: setup.cacheOn.latency.p50 / setup.cacheOff.latency.p50,
        p95: setup.cacheOn.latency.p95 / setup.cacheOff.latency.p95,
        p99: setup.cacheOn.latency.p99 / setup.cacheOff.latency.p99,
      },
      analytics: setup.analytics
        ? {
            pairs: setup.analytics.pairs,
            slice_seconds: setup.analytics.sliceSeconds,
            on: loadJson(setup.analytics.on),
            off: loadJson(setup.analytics.off),
            overhead: {
              p50: setup.analytics.overhead.p50,
              p95: setup.analytics.overhead.p95,
              p99: setup.analytics.overhead.p99,
              mean: setup.analytics.overhead.mean,
              throughput_loss: setup.analytics.overhead.throughputLoss,
            },
            pair_overheads_mean_latency: setup.analytics.pairOverheads,
            estimate_mean_latency: setup.analytics.estimate,
            verdict_under_five_percent: setup.analytics.verdict,
          }
        : null,
      beside_hello_world: setup.baseline
        ? {
            pairs: setup.baseline.pairs,
            slice_seconds: setup.baseline.sliceSeconds,
            goal_ratio: BASELINE_GOAL,
            mixes: setup.baseline.mixes.map((mix) => ({
              label: mix.label,
              ragworks: baselineSideJson(mix.ragworks),
              hello_world: baselineSideJson(mix.helloWorld),
              ratio: mix.ratio,
              pair_ratios: mix.pairRatios,
              goal_met: mix.ratio >= BASELINE_GOAL,
            })),
          }
        : null,
    })),
  };
}
