import type { Knex } from 'knex';
import type { SearchCache } from '../cache/search-cache';
import { readWriteMarks, type WriteMarks } from '../cache/write-marks';
import type { Embedder } from '../embeddings/embedder';
import { AppError } from '../../errors';
import { RerankError } from './reranker';
import { search, SEARCH_LIMITS, type SearchDeps, type SearchRequest, type SearchResponse, type SearchResult } from './search';

export interface CachedSearchResponse extends SearchResponse {
  cached: boolean;
  /** Whether the results are in the reranker's order: false when not asked for, or when the reranker failed. */
  reranked: boolean;
}

/** What makes two searches the same: whitespace runs and tag order do not. */
export function normaliseRequest(request: SearchRequest) {
  return {
    query: request.query.trim().replace(/\s+/g, ' '),
    mode: request.mode,
    limit: request.limit,
    typo_tolerance: request.typo_tolerance !== false,
    filters: {
      content_type: request.filters?.content_type ?? null,
      tags: [...new Set(request.filters?.tags ?? [])].sort(),
      created_from: request.filters?.created_from ?? null,
      created_to: request.filters?.created_to ?? null,
    },
  };
}

/** The query embedder with its answers cached per tenant: embedding the same query twice costs one call. */
function cachingEmbedder(cache: SearchCache, tenantId: string, embedder: Embedder): Embedder {
  return {
    model: embedder.model,
    dimensions: embedder.dimensions,
    embed: async (texts, signal) =>
      (await cache.getOrComputeStable(tenantId, `embedding:${embedder.model}`, texts, () => embedder.embed(texts, signal))).value,
  };
}

/** What the caller read from Redis for the search, each undefined when not asked, null when Redis did not answer. */
export interface SeenInRedis {
  /** The tenant's cache generation (SearchCache.generationRead). */
  generation?: string | null;
  /** The tenant's write marks (SearchCache.writesRead). */
  writes?: string | null;
}

/**
 * A search answered from the cache when an identical one ran since the
 * tenant's index last changed, else from the replica when it has replayed
 * the tenant's last write, else from the primary; with `rerank`, its best
 * candidates reordered by the reranker (reranked). `took_ms` is this
 * request's own time.
 */
export async function cachedSearch(
  cache: SearchCache,
  deps: SearchDeps,
  tenantId: string,
  request: SearchRequest,
  seen: SeenInRedis = {},
): Promise<CachedSearchResponse> {
  const started = process.hrtime.bigint();
  const response = request.rerank ? await reranked(cache, deps, tenantId, request, seen) : { ...(await retrieved(cache, deps, tenantId, request, seen)), reranked: false };
  return { ...response, query: request.query, took_ms: Number(process.hrtime.bigint() - started) / 1e6 };
}

/** The search as ranked by the database (and fusion), through the cache. */
async function retrieved(cache: SearchCache, deps: SearchDeps, tenantId: string, request: SearchRequest, seen: SeenInRedis): Promise<SearchResponse & { cached: boolean }> {
  const marks = seen.writes == null ? null : readWriteMarks(seen.writes);
  if (marks?.lapsed) cache.settleWrites(tenantId, marks.value, () => deps.replica?.primaryLsn() ?? Promise.resolve(null));
  const { value, cached } = await cachedUnderGeneration(cache, tenantId, 'search', normaliseRequest(request), () => searchWhereCurrent(cache, deps, tenantId, request, marks), seen);
  return { ...value, cached };
}

/**
 * A value that depends on the tenant's index (a search, an answer from its
 * passages), through the cache under the tenant's index generation — except
 * while a write is in flight or not yet settled: what is computed then may
 * see it already, and no cached value does.
 */
export async function cachedUnderGeneration<T>(
  cache: SearchCache,
  tenantId: string,
  namespace: string,
  request: unknown,
  compute: () => Promise<T>,
  seen: SeenInRedis,
): Promise<{ value: T; cached: boolean }> {
  const marks = seen.writes == null ? null : readWriteMarks(seen.writes);
  if (marks?.inFlight || marks?.lapsed) return { value: await compute(), cached: false };
  return cache.getOrCompute(tenantId, namespace, request, compute, seen.generation);
}

/**
 * The best `rerank_candidates` as retrieved (cached by the tenant's index
 * generation like any search, so never stale), reordered by the reranker's
 * scores (cached by query, passages and model: they depend on nothing
 * else), the first `limit` of them with the reranker's score. A reranker
 * that fails costs the order, not the answer: the retrieved order, with
 * `reranked: false`, and nothing cached for it.
 */
async function reranked(cache: SearchCache, deps: SearchDeps, tenantId: string, request: SearchRequest, seen: SeenInRedis): Promise<SearchResponse & { cached: boolean; reranked: boolean }> {
  const { reranker } = deps;
  if (!reranker) {
    throw new AppError(501, 'rerank_unavailable', 'Reranking needs a rerank endpoint: set RERANK_URL and RERANK_MODEL, or search without "rerank".', {
      settings: ['RERANK_URL', 'RERANK_MODEL'],
    });
  }
  const candidates = Math.max(request.limit, request.rerank_candidates ?? SEARCH_LIMITS.defaultRerankCandidates);
  const pool = await retrieved(cache, deps, tenantId, { ...request, rerank: false, rerank_candidates: undefined, limit: candidates }, seen);
  const passages = pool.results.map(rerankPassage);
  let scored: { value: number[]; cached: boolean };
  try {
    // The words the candidates were found with: corrected, when the typo pass corrected them.
    const query = pool.did_you_mean ?? normaliseRequest(request).query;
    scored = await cache.getOrComputeStable(tenantId, `rerank:${reranker.model}`, { query, passages }, () => reranker.score(query, passages));
  } catch (error) {
    if (!(error instanceof RerankError)) throw error;
    return { ...pool, results: pool.results.slice(0, request.limit), total_results: Math.min(pool.results.length, request.limit), reranked: false };
  }
  const scores = scored.value;
  // Ties keep the retrieved order.
  const order = pool.results.map((_, index) => index).sort((a, b) => scores[b] - scores[a] || a - b);
  const results = order.slice(0, request.limit).map((index) => ({ ...pool.results[index], score: scores[index] }));
  return { ...pool, results, total_results: results.length, cached: pool.cached && scored.cached, reranked: true };
}

/** What the reranker reads of a result: its document's title, its heading and its text. */
function rerankPassage(result: SearchResult): string {
  return [result.title, result.heading, result.content].filter(Boolean).join('\n\n');
}

/**
 * Runs the search where it sees every write announced for the tenant: on the
 * replica when its replay has reached the marks' position, else (marks not
 * read, not known, a write in flight) on the primary.
 */
function searchWhereCurrent(cache: SearchCache, deps: SearchDeps, tenantId: string, request: SearchRequest, marks: WriteMarks | null): Promise<SearchResponse> {
  const run = (db: Knex) => search({ ...deps, db, embedder: cachingEmbedder(cache, tenantId, deps.embedder) }, tenantId, request);
  const { replica } = deps;
  if (!replica) return run(deps.db);
  const settled = marks !== null && !marks.inFlight && !marks.lapsed;
  // Unknown (new to the replica, or lost with Redis's data): recorded now, so the next searches may use the replica.
  if (settled && marks.lsn === null) cache.settleWrites(tenantId, marks.value, () => replica.primaryLsn());
  return replica.readAsOf('search', settled ? marks.lsn : null, run);
}
