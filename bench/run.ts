import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { concurrencyOf, indexingQueue } from '../queues';
import { loadConfig } from '../src/config';
import type { SearchMode } from '../src/domain/search/search';
import { runBarePipeline, type BarePipelineResult } from './bare-pipeline';
import { cacheFiguresJson, renderCache, runCacheBenchmark, type CacheFigures } from './cache';
import { loadCorpus, pickQueries, type Corpus } from './corpus';
import { fairnessFiguresJson, measureFairness, renderFairness, type FairnessFigures } from './fairness';
import { Cleanup, indexCorpus, log, REPO_ROOT, startDeployment, stopAllChildren, type Deployment, type IndexingResult } from './indexing';
import { queueFiguresJson, renderQueue, runQueueBenchmark, type QueueFigures } from './queue';
import { LIMIT, timeHttpSearch, timeInProcess, type HttpTiming, type InProcessTiming } from './search';
import { fixed, ratio, table, type Summary } from './stats';
import { renderWebhooks, runWebhookBenchmark, webhookFiguresJson, type WebhookFigures } from './webhooks';
import { positiveIntEnv } from './settings';

/**
 * `npm run bench`: indexing throughput end to end and search latency by
 * layer, on README files from node_modules, then webhook delivery
 * throughput and latency, and the search cache and analytics recording
 * under load. Progress goes to stderr, the report to stdout, the figures as
 * JSON to a file under the temp directory. BENCH_ONLY=indexing (corpus,
 * indexing, its baselines and fairness, and search), BENCH_ONLY=webhooks,
 * BENCH_ONLY=cache or BENCH_ONLY=queue (worker runtime overhead) runs one part.
 */

const DOCUMENTS = positiveIntEnv('BENCH_DOCUMENTS', 2_000);
const QUERIES = positiveIntEnv('BENCH_QUERIES', 300);
const WARMUP = 20;
/** Documents in flight per worker process (and in the bare pipeline): the indexing queue's default unless set. */
const WORKER_CONCURRENCY = positiveIntEnv('BENCH_WORKER_CONCURRENCY', concurrencyOf(indexingQueue, loadConfig({})));
const BATCH_SIZE = 100;
const INDEXING_TIMEOUT_MS = 5 * 60_000;
const MODES: SearchMode[] = ['keyword', 'semantic', 'hybrid'];
const PARTS = ['indexing', 'webhooks', 'cache', 'queue'] as const;
type Part = (typeof PARTS)[number];
const ONLY = onlyPart(process.env.BENCH_ONLY);

function onlyPart(value: string | undefined): Part | null {
  if (!value) return null;
  if (!(PARTS as readonly string[]).includes(value)) throw new Error(`BENCH_ONLY must be one of ${PARTS.join(', ')}`);
  return value as Part;
}

interface SearchFigures {
  database: 'postgres' | 'pglite';
  setup: string;
  http: HttpTiming[];
  inProcess: InProcessTiming[];
}

/** Corpus, indexing and search: the search runs on the data the indexing runs leave. */
interface IndexingPart {
  corpus: Corpus;
  indexing: IndexingResult[];
  /** The same documents through the bare in-process pipeline, measured between the two PostgreSQL setups. */
  bare: BarePipelineResult;
  fairness: FairnessFigures;
  searches: SearchFigures[];
  queryCount: number;
  warmupCount: number;
}

async function main(cleanup: Cleanup): Promise<void> {
  const began = performance.now();
  const runs = (part: Part) => ONLY === null || ONLY === part;
  const corpus = runs('indexing') || runs('cache') ? readCorpus() : null;
  const indexingPart = runs('indexing') ? await measureIndexingAndSearch(corpus!, cleanup) : null;
  const cache = runs('cache') ? await runCacheBenchmark(corpus!, cleanup) : null;
  const webhooks = runs('webhooks') ? await runWebhookBenchmark(cleanup) : null;
  const queue = runs('queue') ? await runQueueBenchmark(cleanup) : null;
  const seconds = (performance.now() - began) / 1000;
  const report = render(indexingPart, cache, webhooks, queue, seconds);
  // A run of one part does not overwrite the figures of a whole run.
  const output = path.join(os.tmpdir(), 'ragworks-bench', ONLY === null ? 'latest.json' : `latest-${ONLY}.json`);
  fs.mkdirSync(path.dirname(output), { recursive: true });
  fs.writeFileSync(output, `${JSON.stringify(figures(indexingPart, cache, webhooks, queue, seconds), null, 2)}\n`);
  process.stdout.write(`${report}\n\nFigures as JSON: ${output}\n`);
}

/** The corpus the indexing and cache parts share. */
function readCorpus(): Corpus {
  log(`reading the corpus under ${path.join(REPO_ROOT, 'node_modules')}`);
  const corpus = loadCorpus({ root: path.join(REPO_ROOT, 'node_modules'), target: DOCUMENTS, minBytes: 500, maxBytes: 200 * 1024 });
  if (corpus.documents.length === 0) throw new Error('no README files found under node_modules: run npm ci first');
  return corpus;
}

async function measureIndexingAndSearch(corpus: Corpus, cleanup: Cleanup): Promise<IndexingPart> {
  const phrases = pickQueries(corpus, QUERIES + WARMUP);
  const warmup = phrases.slice(0, WARMUP);
  const queries = phrases.slice(WARMUP);
  log(`${corpus.documents.length} documents, ${queries.length} queries (+${warmup.length} warm-up)`);

  const indexing: IndexingResult[] = [];
  const searches: SearchFigures[] = [];

  // PostgreSQL, one worker process.
  {
    log('PostgreSQL with 1 worker process: starting');
    const deployment = await startDeployment({ kind: 'postgres', workers: 1, workerConcurrency: WORKER_CONCURRENCY }, cleanup);
    try {
      log('PostgreSQL with 1 worker process: indexing');
      indexing.push(await indexCorpus(deployment, corpus.documents, { batchSize: BATCH_SIZE, embeddings: false, timeoutMs: INDEXING_TIMEOUT_MS }));
      log(`  ${fixed(indexing.at(-1)!.documentsPerSecond, 1)} documents/s`);
    } finally {
      await deployment.release();
    }
  }

  // The baseline both PostgreSQL setups are divided by, measured between them.
  const bare = await runBarePipeline(corpus.documents, WORKER_CONCURRENCY, cleanup);
  log(`  ${fixed(bare.documentsPerSecond, 1)} documents/s`);

  // PostgreSQL, two worker processes; then keyword search on what they indexed.
  {
    log('PostgreSQL with 2 worker processes: starting');
    const deployment = await startDeployment({ kind: 'postgres', workers: 2, workerConcurrency: WORKER_CONCURRENCY }, cleanup);
    try {
      log('PostgreSQL with 2 worker processes: indexing');
      indexing.push(await indexCorpus(deployment, corpus.documents, { batchSize: BATCH_SIZE, embeddings: false, timeoutMs: INDEXING_TIMEOUT_MS }));
      log(`  ${fixed(indexing.at(-1)!.documentsPerSecond, 1)} documents/s`);
      searches.push(await measureSearch(deployment, ['keyword'], queries, warmup));
    } finally {
      await deployment.release();
    }
  }

  // PGlite, one process, with embeddings; then all three modes.
  {
    log('PGlite (role all): starting');
    const deployment = await startDeployment({ kind: 'pglite', workers: 1, workerConcurrency: WORKER_CONCURRENCY }, cleanup);
    try {
      log('PGlite (role all): indexing, with embeddings');
      indexing.push(await indexCorpus(deployment, corpus.documents, { batchSize: BATCH_SIZE, embeddings: true, timeoutMs: INDEXING_TIMEOUT_MS }));
      log(`  ${fixed(indexing.at(-1)!.documentsPerSecond, 1)} documents/s`);
      searches.push(await measureSearch(deployment, MODES, queries, warmup));
    } finally {
      await deployment.release();
    }
  }

  const fairness = await measureFairness(corpus.documents, WORKER_CONCURRENCY, cleanup);
  return { corpus, indexing, bare, fairness, searches, queryCount: queries.length, warmupCount: warmup.length };
}

async function measureSearch(deployment: Deployment, modes: SearchMode[], queries: string[], warmup: string[]): Promise<SearchFigures> {
  const http: HttpTiming[] = [];
  for (const mode of modes) {
    log(`${deployment.kind}: ${queries.length} ${mode} searches over HTTP`);
    http.push(await timeHttpSearch(deployment, queries, mode, warmup));
  }
  // The in-process figures need the data to themselves: PGlite has a single owner,
  // and on PostgreSQL idle processes would still share the two cores.
  await deployment.stopProcesses();
  log(`${deployment.kind}: the same searches in process (search() and SQL alone)`);
  const inProcess = await timeInProcess(deployment, queries, modes, warmup);
  return { database: deployment.kind, setup: deployment.description, http, inProcess };
}

// ---------------------------------------------------------------------------
// Report

const LOAD_AT_START = os.loadavg();

function environmentLine(): string {
  const cpus = os.cpus();
  const load = (values: number[]) => values.map((value) => value.toFixed(2)).join(' ');
  return `Node ${process.version}, ${cpus.length} × ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${os.platform()} ${os.release()}; load average ${load(LOAD_AT_START)} at start, ${load(os.loadavg())} at end`;
}

function latencyCells(summary: Summary): string[] {
  return [fixed(summary.p50), fixed(summary.p95), fixed(summary.p99), fixed(summary.mean)];
}

function render(indexingPart: IndexingPart | null, cache: CacheFigures | null, webhooks: WebhookFigures | null, queue: QueueFigures | null, seconds: number): string {
  const out: string[] = [];
  out.push(`ragworks benchmark — ${new Date().toISOString()}${ONLY ? ` (BENCH_ONLY=${ONLY})` : ''}`);
  out.push(environmentLine());
  out.push('');
  // Sections 1–3 are the indexing part's; the others follow in the order they ran.
  let section = 1;
  if (indexingPart) {
    out.push(renderIndexingAndSearch(indexingPart), '');
    section = 4;
  }
  if (cache) {
    out.push(renderCache(cache, section), '');
    section += 1;
  }
  if (webhooks) {
    out.push(renderWebhooks(webhooks, section), '');
    section += 1;
  }
  if (queue) out.push(renderQueue(queue, section), '');
  out.push(`Run time ${fixed(seconds, 0)} s. Other work on this machine shows up in these figures: compare runs made under like load.`);
  return out.join('\n');
}

function renderIndexingAndSearch({ corpus, indexing, bare, fairness, searches, queryCount, warmupCount }: IndexingPart): string {
  const out: string[] = [];
  out.push('1. Corpus: README files under node_modules');
  out.push(
    table(
      ['documents', 'total MB', 'average words', 'README files found', 'distinct, 500 B–200 KB', 'split at headings'],
      [[String(corpus.documents.length), fixed(corpus.totalBytes / 1e6), fixed(corpus.averageWords, 0), String(corpus.filesFound), String(corpus.filesUsed), String(corpus.filesSplit)]],
    ),
  );
  if (corpus.filesSplit > 0) {
    out.push(
      `   There are fewer distinct READMEs than ${DOCUMENTS}, so the ${corpus.filesSplit} largest were split at their level 1–3`,
      '   headings, one document per section (sections under 500 B joined to the next): the same real text, in more documents.',
    );
  }
  out.push('');

  out.push('2. Indexing end to end: first POST /api/documents/batch → every document `indexed`');
  out.push(
    table(
      ['setup', 'documents', 'chunks', 'failed', 'accepted (s)', 'indexed (s)', 'documents/s', 'vs bare', 'embeddings'],
      [
        ...indexing.map((row) => [
          row.setup,
          String(row.documents),
          String(row.chunks),
          String(row.failed),
          fixed(row.acceptSeconds),
          fixed(row.totalSeconds),
          fixed(row.documentsPerSecond, 1),
          row.embeddings ? '–' : ratio(row.documentsPerSecond, bare.documentsPerSecond),
          row.embeddings ? 'computed (offline hashing, 384 dims)' : 'none (no pgvector)',
        ]),
        [`bare pipeline, in process (${bare.concurrency} at a time)`, String(bare.documents), String(bare.chunks), '0', '–', fixed(bare.seconds), fixed(bare.documentsPerSecond, 1), '1.00×', 'none (no pgvector)'],
      ],
    ),
  );
  const [one, two] = indexing;
  out.push(
    `   Batches of ${BATCH_SIZE} posted one after another; WORKER_CONCURRENCY=${WORKER_CONCURRENCY} per worker process; polled every 100 ms.`,
    '   The machine\'s PostgreSQL has no pgvector: there, chunks are split and keyword-indexed but no embeddings are computed.',
    '   PGlite has pgvector, so its figure includes embedding every chunk — but it is one process on one embedded connection.',
    '   Bare pipeline: the same documents stored in batches, then chunked and their chunks inserted with ragworks\' own statement,',
    '   in this process, on a fresh PostgreSQL database, measured between the two PostgreSQL setups (see bench/README.md).',
    `   2 worker processes / 1: ${ratio(two.documentsPerSecond, one.documentsPerSecond)} (goal ≥ 1.00×) — ${two.documentsPerSecond >= one.documentsPerSecond ? 'met' : 'not met'}.`,
    `   ragworks / bare pipeline: ${ratio(one.documentsPerSecond, bare.documentsPerSecond)} with 1 worker process, ${ratio(two.documentsPerSecond, bare.documentsPerSecond)} with 2 (goal ≥ 0.80×) — ${Math.max(one.documentsPerSecond, two.documentsPerSecond) >= 0.8 * bare.documentsPerSecond ? 'met' : 'not met'}.`,
    '',
    renderFairness(fairness, '2b.'),
    '',
  );

  out.push(`3. Search latency (ms): ${queryCount} queries of 2–4 words from the corpus's headings, limit ${LIMIT}, one at a time, after ${warmupCount} warm-up queries`);
  out.push(
    '   HTTP = POST /api/search timed by the client; search() = the same call in process; SQL = the statement search() runs, alone.',
    '   HTTP is measured while the processes run; search() and SQL afterwards, in this process, on the same data. took_ms is',
    "   search() timed inside the server during the HTTP run: HTTP/took_ms is the HTTP layers' share measured at one time.",
  );
  for (const figures of searches) {
    out.push('');
    out.push(`   ${figures.database === 'pglite' ? 'PGlite (pgvector)' : 'PostgreSQL (no pgvector: keyword only)'} — ${figures.setup}`);
    const rows: string[][] = [];
    for (const http of figures.http) {
      const local = figures.inProcess.find((timing) => timing.mode === http.mode)!;
      rows.push([http.mode, 'HTTP', ...latencyCells(http.client)]);
      rows.push(['', 'search()', ...latencyCells(local.search)]);
      rows.push(['', 'SQL', ...latencyCells(local.sql)]);
      rows.push(['', 'ranking-only SQL', ...latencyCells(local.ranking)]);
    }
    out.push(indent(table(['mode', 'layer', 'p50', 'p95', 'p99', 'mean'], rows), 3));
    out.push('');
    out.push(
      indent(
        table(
          ['mode', 'HTTP/SQL p50', 'search()/SQL p50', 'SQL/ranking-only p50', 'server took_ms p50', 'HTTP/took_ms p50', 'queries with results', 'semantic plan'],
          figures.http.map((http) => {
            const local = figures.inProcess.find((timing) => timing.mode === http.mode)!;
            return [
              http.mode,
              ratio(http.client.p50, local.sql.p50),
              ratio(local.search.p50, local.sql.p50),
              ratio(local.sql.p50, local.ranking.p50),
              fixed(http.server.p50),
              ratio(http.client.p50, http.server.p50),
              `${http.withResults}/${http.client.n}`,
              local.plan,
            ];
          }),
        ),
        3,
      ),
    );
    const goal = keywordGoal(figures);
    if (goal) out.push('', ...renderKeywordGoal(goal).map((line) => `   ${line}`));
  }
  return out.join('\n');
}

/** The bound of issue 11, goal 2: uncached keyword search over HTTP within this factor of its SQL statement, at p50. */
const KEYWORD_HTTP_OVER_SQL_GOAL = 1.2;

/**
 * Keyword search on PostgreSQL against its goal. HTTP/SQL splits into
 * HTTP/took_ms (the request path around search: authentication, limits,
 * cache, route, JSON, socket) and took_ms/SQL (the search inside the server
 * over its bare statement); SQL/ranking-only is what the returned rows' text
 * and snippets add to the ranking.
 */
function keywordGoal(figures: SearchFigures) {
  const http = figures.http.find((timing) => timing.mode === 'keyword');
  const local = figures.inProcess.find((timing) => timing.mode === 'keyword');
  if (figures.database !== 'postgres' || !http || !local) return null;
  return {
    documents: DOCUMENTS,
    bound: KEYWORD_HTTP_OVER_SQL_GOAL,
    http_p50_ms: http.client.p50,
    sql_p50_ms: local.sql.p50,
    ranking_only_sql_p50_ms: local.ranking.p50,
    server_took_p50_ms: http.server.p50,
    http_over_sql_p50: http.client.p50 / local.sql.p50,
    met: http.client.p50 / local.sql.p50 <= KEYWORD_HTTP_OVER_SQL_GOAL,
    http_over_server_took_p50: http.client.p50 / http.server.p50,
    server_took_over_sql_p50: http.server.p50 / local.sql.p50,
    sql_over_ranking_only_p50: local.sql.p50 / local.ranking.p50,
  };
}

function renderKeywordGoal(goal: NonNullable<ReturnType<typeof keywordGoal>>): string[] {
  const atSize = goal.documents === 2_000 ? '' : ` (stated at 2,000 documents; this run has ${goal.documents})`;
  return [
    `Goal, uncached keyword search: HTTP p50 ≤ ${goal.bound}× SQL p50${atSize}: ${fixed(goal.http_p50_ms)} / ${fixed(goal.sql_p50_ms)} ms = ${ratio(goal.http_p50_ms, goal.sql_p50_ms)} — ${goal.met ? 'met' : 'not met'}`,
    `  = HTTP/took_ms ${ratio(goal.http_p50_ms, goal.server_took_p50_ms)} (the request path around the search) × took_ms/SQL ${ratio(goal.server_took_p50_ms, goal.sql_p50_ms)} (the search over its statement)`,
    `  SQL/ranking-only p50 ${ratio(goal.sql_p50_ms, goal.ranking_only_sql_p50_ms)} (${fixed(goal.sql_p50_ms)} / ${fixed(goal.ranking_only_sql_p50_ms)} ms): what the ${LIMIT} returned rows' text and snippets add to ranking the candidates`,
  ];
}

function indent(text: string, spaces: number): string {
  return text
    .split('\n')
    .map((line) => `${' '.repeat(spaces)}${line}`)
    .join('\n');
}

function figures(indexingPart: IndexingPart | null, cache: CacheFigures | null, webhooks: WebhookFigures | null, queue: QueueFigures | null, seconds: number) {
  return {
    generated_at: new Date().toISOString(),
    only: ONLY,
    environment: { node: process.version, cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model.trim() ?? null, platform: os.platform(), loadavg_start: LOAD_AT_START, loadavg_end: os.loadavg() },
    ...(indexingPart ? indexingFigures(indexingPart) : {}),
    cache: cache ? cacheFiguresJson(cache) : null,
    webhooks: webhooks ? webhookFiguresJson(webhooks) : null,
    queue: queue ? queueFiguresJson(queue) : null,
    run_seconds: seconds,
  };
}

function indexingFigures({ corpus, indexing, bare, fairness, searches, queryCount, warmupCount }: IndexingPart) {
  return {
    settings: { documents: DOCUMENTS, queries: queryCount, warmup_queries: warmupCount, batch_size: BATCH_SIZE, worker_concurrency: WORKER_CONCURRENCY, search_limit: LIMIT },
    corpus: {
      documents: corpus.documents.length,
      total_bytes: corpus.totalBytes,
      average_words: corpus.averageWords,
      readme_files_found: corpus.filesFound,
      readme_files_used: corpus.filesUsed,
      readme_files_split: corpus.filesSplit,
    },
    indexing: indexing.map((row) => ({
      setup: row.setup,
      documents: row.documents,
      chunks: row.chunks,
      failed: row.failed,
      accept_seconds: row.acceptSeconds,
      total_seconds: row.totalSeconds,
      documents_per_second: row.documentsPerSecond,
      embeddings: row.embeddings,
      over_bare_pipeline: row.embeddings ? null : row.documentsPerSecond / bare.documentsPerSecond,
    })),
    bare_pipeline: {
      documents: bare.documents,
      chunks: bare.chunks,
      seconds: bare.seconds,
      documents_per_second: bare.documentsPerSecond,
      concurrency: bare.concurrency,
    },
    two_workers_over_one: indexing[1].documentsPerSecond / indexing[0].documentsPerSecond,
    fairness: fairnessFiguresJson(fairness),
    search: searches.map((figures) => ({
      database: figures.database,
      setup: figures.setup,
      modes: figures.http.map((http) => {
        const local = figures.inProcess.find((timing) => timing.mode === http.mode)!;
        return {
          mode: http.mode,
          http_ms: http.client,
          server_took_ms: http.server,
          search_ms: local.search,
          sql_ms: local.sql,
          ranking_only_sql_ms: local.ranking,
          http_over_sql_p50: http.client.p50 / local.sql.p50,
          search_over_sql_p50: local.search.p50 / local.sql.p50,
          sql_over_ranking_only_p50: local.sql.p50 / local.ranking.p50,
          http_over_server_took_p50: http.client.p50 / http.server.p50,
          queries_with_results: http.withResults,
          semantic_plan: local.plan,
        };
      }),
      keyword_goal: keywordGoal(figures),
    })),
  };
}

// ---------------------------------------------------------------------------

const cleanup = new Cleanup();
let finishing: Promise<never> | undefined;

/** One way out, however the run ends: children stopped first (so none writes to Redis after its keys go), then the rest. */
function finish(code: number): Promise<never> {
  finishing ??= (async () => {
    await stopAllChildren();
    await cleanup.runAll();
    process.exit(code);
  })();
  return finishing;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (finishing) return;
    log(`${signal}: cleaning up`);
    void finish(130);
  });
}

main(cleanup).then(
  () => finish(0),
  (error: unknown) => {
    if (!finishing) log(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    return finish(1);
  },
);
