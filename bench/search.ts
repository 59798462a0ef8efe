import { performance } from 'node:perf_hooks';
import { loadConfig } from '../src/config';
import { prepareSearch, runStatement, search, type SearchMode, type SearchRequest } from '../src/domain/search/search';
import { createLogger } from '../src/logger';
import { createPlatform } from '../src/platform';
import type { Deployment } from './indexing';
import { summarize, type Summary } from './stats';

/**
 * Search latency measured at three depths: through the HTTP API of the
 * running processes, through search() in this process, and the SQL
 * statement search() runs, alone — beside the ranking-only form of that
 * statement, which shows what the results' text and snippets cost.
 */

export const LIMIT = 10;

export interface HttpTiming {
  mode: SearchMode;
  /** Client-side: request sent to reply parsed. */
  client: Summary;
  /** The server's own took_ms. */
  server: Summary;
  /** Queries that found at least one chunk. */
  withResults: number;
}

export async function timeHttpSearch(deployment: Deployment, queries: readonly string[], mode: SearchMode, warmup: readonly string[]): Promise<HttpTiming> {
  const ask = (query: string) =>
    deployment.client.expect<{ took_ms: number; total_results: number }>(200, 'POST', '/api/search', {
      token: deployment.tenant.key,
      body: { query, mode, limit: LIMIT },
    });
  for (const query of warmup) await ask(query);
  const client: number[] = [];
  const server: number[] = [];
  let withResults = 0;
  for (const query of queries) {
    const response = await ask(query);
    client.push(response.ms);
    server.push(response.body.took_ms);
    if (response.body.total_results > 0) withResults += 1;
  }
  return { mode, client: summarize(client), server: summarize(server), withResults };
}

export interface InProcessTiming {
  mode: SearchMode;
  /** search(): embed the query when needed, choose the plan, build the SQL, run it, shape the results. */
  search: Summary;
  /** runStatement() alone on the statement prepareSearch() built: the SQL and its driver round trip. */
  sql: Summary;
  /** runStatement() on the ranking-only form of the same statement: same candidates, order and limit; chunk ids and scores, no text or snippets. */
  ranking: Summary;
  /** How semantic candidates were found. */
  plan: string;
}

/**
 * Opens the deployment's data in this process (after its processes have
 * stopped: PGlite allows one owner) and times each query three ways —
 * search(), its statement, the statement's ranking-only form — in an order
 * that rotates from one query to the next, so drift affects all alike.
 */
export async function timeInProcess(
  deployment: Deployment,
  queries: readonly string[],
  modes: readonly SearchMode[],
  warmup: readonly string[],
): Promise<InProcessTiming[]> {
  const config = loadConfig(deployment.env);
  const platform = await createPlatform(config, createLogger('silent'));
  try {
    const deps = platform.searchDeps();
    const tenantId = deployment.tenant.id;
    const timings: InProcessTiming[] = [];
    for (const mode of modes) {
      const request = (query: string): SearchRequest => ({ query, mode, limit: LIMIT });
      for (const query of warmup) {
        await search(deps, tenantId, request(query));
        await runStatement(deps.db, tenantId, await prepareSearch(deps, tenantId, request(query)));
        await runStatement(deps.db, tenantId, await prepareSearch(deps, tenantId, request(query), 'ranking'));
      }
      const searchMs: number[] = [];
      const sqlMs: number[] = [];
      const rankingMs: number[] = [];
      let plan = mode === 'keyword' ? 'tsvector match, no vectors' : '';
      for (const [index, query] of queries.entries()) {
        const statement = await prepareSearch(deps, tenantId, request(query));
        const ranking = await prepareSearch(deps, tenantId, request(query), 'ranking');
        if (mode !== 'keyword' && !plan) {
          plan = statement.settings.some(([name]) => name === 'hnsw.ef_search') ? 'HNSW index scan' : 'exact scan (tenant below SEARCH_EXACT_SCAN_MAX_CHUNKS)';
        }
        const timeSearch = async () => {
          const started = performance.now();
          await search(deps, tenantId, request(query));
          searchMs.push(performance.now() - started);
        };
        const timeSql = async () => {
          const started = performance.now();
          await runStatement(deps.db, tenantId, statement);
          sqlMs.push(performance.now() - started);
        };
        const timeRanking = async () => {
          const started = performance.now();
          await runStatement(deps.db, tenantId, ranking);
          rankingMs.push(performance.now() - started);
        };
        const order = [timeSearch, timeSql, timeRanking];
        for (let step = 0; step < order.length; step += 1) await order[(index + step) % order.length]();
      }
      timings.push({ mode, search: summarize(searchMs), sql: summarize(sqlMs), ranking: summarize(rankingMs), plan });
    }
    return timings;
  } finally {
    await platform.close();
  }
}
