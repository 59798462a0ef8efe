import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { SearchMode } from '../src/domain/search/search';
import { cacheFiguresJson, renderCache, runCacheBenchmark, type CacheFigures } from './cache';
import { loadCorpus, pickQueries, type Corpus } from './corpus';
import { Cleanup, indexCorpus, log, REPO_ROOT, startDeployment, stopAllChildren, type Deployment, type IndexingResult } from './indexing';
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
 * indexing and search), BENCH_ONLY=webhooks or BENCH_ONLY=cache runs one part.
 */

const DOCUMENTS = positiveIntEnv('BENCH_DOCUMENTS', 2_000);
const QUERIES = positiveIntEnv('BENCH_QUERIES', 300);
const WARMUP = 20;
const WORKER_CONCURRENCY = positiveIntEnv('BENCH_WORKER_CONCURRENCY', 4);
const BATCH_SIZE = 100;
const INDEXING_TIMEOUT_MS = 5 * 60_000;
const MODES: SearchMode[] = ['keyword', 'semantic', 'hybrid'];
const PARTS = ['indexing', 'webhooks', 'cache'] as const;
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
  const seconds = (performance.now() - began) / 1000;
  const report = render(indexingPart, cache, webhooks, seconds);
  // A run of one part does not overwrite the figures of a whole run.
  const output = path.join(os.tmpdir(), 'ragworks-bench', ONLY === null ? 'latest.json' : `latest-${ONLY}.json`);
  fs.mkdirSync(path.dirname(output), { recursive: true });
  fs.writeFileSync(output, `${JSON.stringify(figures(indexingPart, cache, webhooks, seconds), null, 2)}\n`);
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

  return { corpus, indexing, searches, queryCount: queries.length, warmupCount: warmup.length };
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

function render(indexingPart: IndexingPart | null, cache: CacheFigures | null, webhooks: WebhookFigures | null, seconds: number): string {
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
  if (webhooks) out.push(renderWebhooks(webhooks, section), '');
  out.push(`Run time ${fixed(seconds, 0)} s. Other work on this machine shows up in these figures: compare runs made under like load.`);
  return out.join('\n');
}

function renderIndexingAndSearch({ corpus, indexing, searches, queryCount, warmupCount }: IndexingPart): string {
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
      ['setup', 'documents', 'chunks', 'failed', 'accepted (s)', 'indexed (s)', 'documents/s', 'embeddings'],
      indexing.map((row) => [
        row.setup,
        String(row.documents),
        String(row.chunks),
        String(row.failed),
        fixed(row.acceptSeconds),
        fixed(row.totalSeconds),
        fixed(row.documentsPerSecond, 1),
        row.embeddings ? 'computed (offline hashing, 384 dims)' : 'none (no pgvector)',
      ]),
    ),
  );
  out.push(
    `   Batches of ${BATCH_SIZE} posted one after another; WORKER_CONCURRENCY=${WORKER_CONCURRENCY} per worker process; polled every 100 ms.`,
    '   The machine\'s PostgreSQL has no pgvector: there, chunks are split and keyword-indexed but no embeddings are computed.',
    '   PGlite has pgvector, so its figure includes embedding every chunk — but it is one process on one embedded connection.',
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
    }
    out.push(indent(table(['mode', 'layer', 'p50', 'p95', 'p99', 'mean'], rows), 3));
    out.push('');
    out.push(
      indent(
        table(
          ['mode', 'HTTP/SQL p50', 'search()/SQL p50', 'server took_ms p50', 'HTTP/took_ms p50', 'queries with results', 'semantic plan'],
          figures.http.map((http) => {
            const local = figures.inProcess.find((timing) => timing.mode === http.mode)!;
            return [
              http.mode,
              ratio(http.client.p50, local.sql.p50),
              ratio(local.search.p50, local.sql.p50),
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
  }
  return out.join('\n');
}

function indent(text: string, spaces: number): string {
  return text
    .split('\n')
    .map((line) => `${' '.repeat(spaces)}${line}`)
    .join('\n');
}

function figures(indexingPart: IndexingPart | null, cache: CacheFigures | null, webhooks: WebhookFigures | null, seconds: number) {
  return {
    generated_at: new Date().toISOString(),
    only: ONLY,
    environment: { node: process.version, cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model.trim() ?? null, platform: os.platform(), loadavg_start: LOAD_AT_START, loadavg_end: os.loadavg() },
    ...(indexingPart ? indexingFigures(indexingPart) : {}),
    cache: cache ? cacheFiguresJson(cache) : null,
    webhooks: webhooks ? webhookFiguresJson(webhooks) : null,
    run_seconds: seconds,
  };
}

function indexingFigures({ corpus, indexing, searches, queryCount, warmupCount }: IndexingPart) {
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
    })),
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
          http_over_sql_p50: http.client.p50 / local.sql.p50,
          search_over_sql_p50: local.search.p50 / local.sql.p50,
          http_over_server_took_p50: http.client.p50 / http.server.p50,
          queries_with_results: http.withResults,
          semantic_plan: local.plan,
        };
      }),
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
