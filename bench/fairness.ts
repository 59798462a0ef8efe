import { performance } from 'node:perf_hooks';
import type { CorpusDocument } from './corpus';
import { createTenant, log, startDeployment, type Cleanup, type Deployment, type Tenant } from './indexing';
import { positiveIntEnv } from './settings';
import { fixed, summarize, table, type Summary } from './stats';

/**
 * Ingestion fairness seen by a client: tenant A posts a large batch; while
 * it drains, tenant B posts one document at a time and waits until it is
 * indexed — POST to `indexed` as B's client sees it, polling every few ms.
 */

export const FAIRNESS_SETTINGS = {
  backlog: positiveIntEnv('BENCH_FAIRNESS_DOCUMENTS', 2_000),
  trials: positiveIntEnv('BENCH_FAIRNESS_TRIALS', 20),
  /** POST /api/documents/batch takes at most this many. */
  postBatch: 1_000,
  pollMs: 10,
  /** Pause between trials, so they spread over the drain. */
  pauseMs: 100,
  timeoutMs: 5 * 60_000,
  goalP95Ms: 2_000,
};

export interface FairnessFigures {
  setup: string;
  backlog: number;
  /** B's POST → indexed, one per trial, in ms. */
  latencies: number[];
  summary: Summary;
  /** A's documents not yet indexed when each trial's POST went out. */
  backlogAtPost: number[];
  /** First POST of A's batch until all of it indexed. */
  drainSeconds: number;
  /** What B would have waited had it queued behind A's backlog (FIFO): A's backlog at each POST ÷ A's rate over the whole drain. */
  fifoEstimate: Summary;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Stats {
  documents: { indexed: number; failed: number; canceled: number; total: number };
}

export async function measureFairness(documents: readonly CorpusDocument[], workerConcurrency: number, cleanup: Cleanup): Promise<FairnessFigures> {
  const backlog = documents.slice(0, FAIRNESS_SETTINGS.backlog);
  log('fairness: starting PostgreSQL with 1 worker process');
  const deployment = await startDeployment({ kind: 'postgres', workers: 1, workerConcurrency }, cleanup);
  try {
    const a = deployment.tenant;
    const b = await createTenant(deployment.client);
    log(`fairness: tenant A posts ${backlog.length} documents, tenant B then posts one at a time, ${FAIRNESS_SETTINGS.trials} times`);
    const started = performance.now();
    for (let offset = 0; offset < backlog.length; offset += FAIRNESS_SETTINGS.postBatch) {
      const batch = backlog.slice(offset, offset + FAIRNESS_SETTINGS.postBatch).map((document) => ({ title: document.title, content: document.content, content_type: 'markdown' }));
      await deployment.client.expect(202, 'POST', '/api/documents/batch', { token: a.key, body: { documents: batch } });
    }
    const latencies: number[] = [];
    const backlogAtPost: number[] = [];
    for (let trial = 0; trial < FAIRNESS_SETTINGS.trials; trial += 1) {
      backlogAtPost.push(backlog.length - (await finished(deployment, a)));
      latencies.push(await postAndWait(deployment, b, trial));
      await sleep(FAIRNESS_SETTINGS.pauseMs);
    }
    const deadline = Date.now() + FAIRNESS_SETTINGS.timeoutMs;
    while ((await finished(deployment, a)) < backlog.length) {
      if (Date.now() > deadline) throw new Error("tenant A's batch did not finish indexing in time");
      await sleep(50);
    }
    const drainSeconds = (performance.now() - started) / 1000;
    const rate = backlog.length / drainSeconds;
    return {
      setup: deployment.description,
      backlog: backlog.length,
      latencies,
      summary: summarize(latencies),
      backlogAtPost,
      drainSeconds,
      fifoEstimate: summarize(backlogAtPost.map((remaining) => (remaining / rate) * 1000)),
    };
  } finally {
    await deployment.release();
  }
}

async function finished(deployment: Deployment, tenant: Tenant): Promise<number> {
  const { documents } = (await deployment.client.expect<Stats>(200, 'GET', '/api/stats', { token: tenant.key })).body;
  return documents.indexed + documents.failed + documents.canceled;
}

/** One trial: B's POST, then its document polled until indexed; ms from sending the POST. */
async function postAndWait(deployment: Deployment, tenant: Tenant, trial: number): Promise<number> {
  const started = performance.now();
  const created = await deployment.client.expect<{ id: string }>(202, 'POST', '/api/documents', {
    token: tenant.key,
    body: { title: `Trial ${trial}`, content: `Tenant B's document number ${trial}, about the tides of the northern sea.` },
  });
  const deadline = Date.now() + FAIRNESS_SETTINGS.timeoutMs;
  for (;;) {
    const document = await deployment.client.expect<{ status: string }>(200, 'GET', `/api/documents/${created.body.id}`, { token: tenant.key });
    if (document.body.status === 'indexed') return performance.now() - started;
    if (document.body.status === 'failed') throw new Error(`tenant B's document ${created.body.id} failed to index`);
    if (Date.now() > deadline) throw new Error(`tenant B's document ${created.body.id} was not indexed in time`);
    await sleep(FAIRNESS_SETTINGS.pollMs);
  }
}

export function renderFairness(figures: FairnessFigures, section: string): string {
  const { summary } = figures;
  const stillDraining = figures.backlogAtPost.filter((remaining) => remaining > 0).length;
  return [
    `${section} Fairness: tenant B's single document while tenant A's ${figures.backlog}-document batch drains (${figures.setup})`,
    table(
      ['', 'trials', 'p50', 'p95', 'max', 'mean'],
      [
        ["B's POST → indexed (ms)", String(summary.n), fixed(summary.p50, 0), fixed(summary.p95, 0), fixed(summary.max, 0), fixed(summary.mean, 0)],
        ['FIFO estimate (ms): A’s backlog at the POST ÷ A’s rate', String(figures.fifoEstimate.n), fixed(figures.fifoEstimate.p50, 0), fixed(figures.fifoEstimate.p95, 0), fixed(figures.fifoEstimate.max, 0), fixed(figures.fifoEstimate.mean, 0)],
      ],
    ),
    `   A's documents not yet indexed at B's POSTs: ${figures.backlogAtPost[0] ?? 0} at the first, ${figures.backlogAtPost.at(-1) ?? 0} at the last (${stillDraining} of ${figures.backlogAtPost.length} trials during the drain); A's batch took ${fixed(figures.drainSeconds, 1)} s.`,
    `   Goal: p95 ≤ ${FAIRNESS_SETTINGS.goalP95Ms} ms — ${summary.p95 <= FAIRNESS_SETTINGS.goalP95Ms ? 'met' : 'not met'} (${fixed(summary.p95, 0)} ms).`,
  ].join('\n');
}

export function fairnessFiguresJson(figures: FairnessFigures) {
  return {
    setup: figures.setup,
    backlog_documents: figures.backlog,
    latencies_ms: figures.latencies,
    latency_ms: figures.summary,
    backlog_at_post: figures.backlogAtPost,
    drain_seconds: figures.drainSeconds,
    fifo_estimate_ms: figures.fifoEstimate,
    goal_p95_ms: FAIRNESS_SETTINGS.goalP95Ms,
    met: figures.summary.p95 <= FAIRNESS_SETTINGS.goalP95Ms,
  };
}
