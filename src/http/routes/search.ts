import type { Request } from 'express';
import { z } from 'zod';
import { recordClick } from '../../domain/analytics/reports';
import { newId } from '../../domain/ids';
import { cachedSearch, type SeenInRedis } from '../../domain/search/cached-search';
import type { SearchRequest, SearchResult } from '../../domain/search/search';
import type { Platform } from '../../platform';
import type { RequestContext } from '../context';
import type { Admission, AdmissionNeeds } from '../rate-limit';
import type { Api } from '../route';
import type { Reply } from '../reply';
import { searchBody, searchQuery, searchResponseSchema } from '../schemas';

const tag = 'Search';
const auth = { scope: 'search', tenant: 'required' } as const;

/** The user a search or answer is attributed to: `user_id` in the body, else the X-User-Id header. */
export function userOf(req: Request, fromBody: string | undefined): string | null {
  const header = req.get('x-user-id')?.trim();
  const user = fromBody ?? (header && header.length <= 200 && !header.includes('\u0000') ? header : undefined);
  return user ?? null;
}

/**
 * Taken and read in the script that takes the request's rate limits: one of
 * the tenant's searches today, the tenant's cache generation and its write
 * marks (what the cache and the replica must have seen). With Redis away the
 * search goes on uncounted (searching needs only PostgreSQL, and an outage
 * must not turn into refusals), the cache answers with the last generation
 * it saw, and the primary answers what the cache does not.
 */
function searchAdmission(ctx: RequestContext, services: SearchServices): AdmissionNeeds {
  const tenant = ctx.tenant!;
  return { budgets: [services.searchQuota.budget(tenant.id, tenant.quotas.searches_per_day)], reads: indexReads(tenant.id, services) };
}

/** What a request that searches the tenant's index reads at admission: its cache generation and write marks, as far as they matter. */
export function indexReads(tenantId: string, services: Pick<Platform, 'cache' | 'config' | 'db'>): AdmissionNeeds['reads'] {
  const { cache, config } = services;
  const marksMatter = config.CACHE_ENABLED || services.db.replica !== null;
  return [...(config.CACHE_ENABLED ? [cache.generationRead(tenantId)] : []), ...(marksMatter ? [cache.writesRead(tenantId)] : [])];
}

/** The values indexReads asked for, as read: undefined when not asked, null when Redis did not answer. */
export function seenInRedis(services: Pick<Platform, 'config'>, admission: Admission): SeenInRedis {
  const values = admission.values;
  if (values === null) return { generation: services.config.CACHE_ENABLED ? null : undefined, writes: null };
  return services.config.CACHE_ENABLED ? { generation: values[0], writes: values[1] } : { writes: values[0] };
}

/**
 * Each cached answer's results as JSON, made once: the cache hands out the
 * same results to every hit, so a hit replies without serializing them again.
 */
const serializedResults = new WeakMap<SearchResult[], Buffer>();

function resultsAsJson(results: SearchResult[]): Buffer {
  let bytes = serializedResults.get(results);
  if (!bytes) {
    bytes = Buffer.from(JSON.stringify(results));
    serializedResults.set(results, bytes);
  }
  return bytes;
}

async function runSearch(services: SearchServices, ctx: RequestContext, admission: Admission, request: SearchRequest, userId: string | null): Promise<Reply> {
  const tenantId = ctx.tenant!.id;
  const response = await cachedSearch(services.cache, services.searchDeps(), tenantId, request, seenInRedis(services, admission)).catch(async (error: unknown) => {
    // A search that failed did not happen: its allowance goes back.
    for (const budget of admission.routeTaken) await services.searchQuota.giveBack(budget).catch(() => undefined);
    throw error;
  });
  const queryId = newId();
  const at = new Date().toISOString();
  services.metrics.searches.observe({ mode: request.mode }, response.took_ms / 1000);
  return {
    status: 200,
    body: { ...response, query_id: queryId },
    serialized: { results: resultsAsJson(response.results) },
    // Recorded once the reply is out, without waiting: analytics must cost the search nothing.
    afterwards: services.config.ANALYTICS_ENABLED
      ? () =>
          services.searchEvents.record({
            tenantId,
            queryId,
            query: request.query,
            mode: request.mode,
            filters: request.filters ?? {},
            resultCount: response.total_results,
            tookMs: response.took_ms,
            cached: response.cached,
            userId,
            at,
          })
      : undefined,
  };
}

/** What the search routes use of the platform, wired in by the app (src/http/app.ts). */
export type SearchServices = Pick<Platform, 'cache' | 'config' | 'db' | 'metrics' | 'searchDeps' | 'searchEvents' | 'searchQuota'>;

export function searchRoutes(api: Api, services: SearchServices): void {
  api.add({
    method: 'post', path: '/api/search', operationId: 'search', summary: 'Search by keyword, meaning, or both (hybrid, the default)', tag, auth,
    // A read sent as POST: nothing changes, so nothing to audit.
    audit: false,
    body: searchBody,
    responses: {
      200: { description: 'Ranked chunks', schema: searchResponseSchema },
      501: { description: 'Semantic or hybrid search without pgvector (`vector_search_unavailable`), or `rerank` without RERANK_URL (`rerank_unavailable`)' },
      503: { description: 'The search ran past SEARCH_STATEMENT_TIMEOUT_MS (`search_timeout`, details `timeout_ms`), or a dependency is unavailable; with `Retry-After`' },
    },
    admission: (ctx) => searchAdmission(ctx, services),
    handler: ({ body, ctx, req, admission }) => runSearch(services, ctx, admission, body, userOf(req, body.user_id)),
  });
  api.add({
    method: 'get', path: '/api/search', operationId: 'searchByQueryString', summary: 'Search with query parameters', tag, auth,
    query: searchQuery,
    responses: {
      200: { description: 'Ranked chunks', schema: searchResponseSchema },
      501: { description: 'Semantic or hybrid search without pgvector (`vector_search_unavailable`), or `rerank` without RERANK_URL (`rerank_unavailable`)' },
      503: { description: 'The search ran past SEARCH_STATEMENT_TIMEOUT_MS (`search_timeout`, details `timeout_ms`), or a dependency is unavailable; with `Retry-After`' },
    },
    admission: (ctx) => searchAdmission(ctx, services),
    handler: ({ query, ctx, req, admission }) =>
      runSearch(services, ctx, admission, {
        query: query.q,
        mode: query.mode,
        limit: query.limit,
        filters: { content_type: query.content_type, tags: query.tags, created_from: query.created_from, created_to: query.created_to },
        rerank: query.rerank,
        rerank_candidates: query.rerank_candidates,
        typo_tolerance: query.typo_tolerance,
      }, userOf(req, undefined)),
  });
  api.add({
    method: 'post', path: '/api/search/click', operationId: 'recordSearchClick', summary: 'Record a click on a search result (for click-through rate)', tag, auth,
    // Analytics, not administration.
    audit: false,
    body: z.object({ query_id: z.uuid(), document_id: z.uuid(), position: z.number().int().min(1).max(1000) }).strict(),
    responses: { 202: { description: 'Recorded (the same click twice counts once)' } },
    handler: async ({ body, ctx }) => {
      await recordClick(services.db.knex, ctx.tenant!.id, body);
      return { status: 202 };
    },
  });
}
