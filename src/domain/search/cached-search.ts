import type { SearchCache } from '../cache/search-cache';
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

/**
 * A search answered from the cache when an identical one ran since the
 * tenant's index last changed. `took_ms` is this request's own time.
 * `generation` is the tenant's cache generation as the caller read it
 * (SearchCache.getOrCompute).
 */
export async function cachedSearch(
  cache: SearchCache,
  deps: SearchDeps,
  tenantId: string,
  request: SearchRequest,
  generation?: string | null,
): Promise<CachedSearchResponse> {
  const started = process.hrtime.bigint();
  const compute = () => search({ ...deps, embedder: cachingEmbedder(cache, tenantId, deps.embedder) }, tenantId, request);
  const { value, cached } = await cache.getOrCompute(tenantId, 'search', normaliseRequest(request), compute, generation);
  return { ...value, query: request.query, took_ms: Number(process.hrtime.bigint() - started) / 1e6, cached };
}
