import type { Knex } from 'knex';
import type { SearchCache } from '../cache/search-cache';
import { readWriteMarks, type WriteMarks } from '../cache/write-marks';
import type { Embedder } from '../embeddings/embedder';
import { search, type SearchDeps, type SearchRequest, type SearchResponse } from './search';

export interface CachedSearchResponse extends SearchResponse {
  cached: boolean;
}

/** What makes two searches the same: whitespace runs and tag order do not. */
export function normaliseRequest(request: SearchRequest) {
  return {
    query: request.query.trim().replace(/\s+/g, ' '),
    mode: request.mode,
    limit: request.limit,
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
 * the tenant's last write, else from the primary. `took_ms` is this
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
  const marks = seen.writes == null ? null : readWriteMarks(seen.writes);
  if (marks?.lapsed) cache.settleWrites(tenantId, marks.value, () => deps.replica?.primaryLsn() ?? Promise.resolve(null));
  const compute = () => searchWhereCurrent(cache, deps, tenantId, request, marks);
  // A write in flight may be visible on the primary already, and no cached answer has it.
  const { value, cached } =
    marks?.inFlight || marks?.lapsed
      ? { value: await compute(), cached: false }
      : await cache.getOrCompute(tenantId, 'search', normaliseRequest(request), compute, seen.generation);
  return { ...value, query: request.query, took_ms: Number(process.hrtime.bigint() - started) / 1e6, cached };
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
