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
 * statement search() runs, alone.
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
  /** How semantic candidates were found. */
  plan: string;
}

/**
 * Opens the deployment's data in this process (after its processes have
 * stopped: PGlite allows one owner) and times each query both ways,
 * alternating, so drift affects both figures alike.
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
      }
      const searchMs: number[] = [];
      const sqlMs: number[] = [];
      let plan = mode === 'keyword' ? 'tsvector match, no vectors' : '';
      for (const [index, query] of queries.entries()) {
        const statement = await prepareSearch(deps, tenantId, request(query));
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
        if (index % 2 === 0) {
          await timeSearch();
          await timeSql();
        } else {
          await timeSql();
          await timeSearch();
        }
      }
      timings.push({ mode, search: summarize(searchMs), sql: summarize(sqlMs), plan });
    }
    return timings;
  } finally {
    await platform.close();
  }
}
