import type { Request } from 'express';
import { z } from 'zod';
import { recordClick } from '../../domain/analytics/reports';
import { recordSearchEvent } from '../../domain/analytics/stream';
import { newId } from '../../domain/ids';
import { countSearch } from '../../domain/search/counter';
import { QuotaExceededError } from '../../domain/tenants/quotas';
import { cachedSearch } from '../../domain/search/cached-search';
import type { SearchRequest } from '../../domain/search/search';
import type { Platform } from '../../platform';
import type { RequestContext } from '../context';
import type { Api } from '../route';
import { searchBody, searchQuery, searchResponseSchema } from '../schemas';

const tag = 'Search';
const auth = { scope: 'search', tenant: 'required' } as const;

/** The user a search is attributed to: `user_id` in the body, else the X-User-Id header. */
function userOf(req: Request, fromBody: string | undefined): string | null {
  const header = req.get('x-user-id')?.trim();
  const user = fromBody ?? (header && header.length <= 200 && !header.includes('\u0000') ? header : undefined);
  return user ?? null;
}

/**
 * Takes one search from the tenant's daily allowance. With Redis away the
 * search is let through uncounted: searching needs only PostgreSQL, and an
 * outage must not turn into refusals.
 */
async function takeDailySearch(platform: Platform, ctx: RequestContext, at: Date): Promise<boolean> {
  try {
    await platform.searchQuota.take(ctx.tenant!.id, ctx.tenant!.quotas.searches_per_day, at);
    return true;
  } catch (error) {
    if (error instanceof QuotaExceededError) throw error;
    // Debug, not warn: every search would log it while the outage lasts, and /readyz already says Redis is down.
    platform.logger.debug({ err: error, tenant_id: ctx.tenant!.id }, 'daily search quota not checked: Redis is unavailable');
    return false;
  }
}

async function runSearch(platform: Platform, ctx: RequestContext, request: SearchRequest, userId: string | null) {
  const tenantId = ctx.tenant!.id;
  const at = new Date();
  const counted = await takeDailySearch(platform, ctx, at);
  const response = await cachedSearch(platform.cache, platform.searchDeps(), tenantId, request).catch(async (error: unknown) => {
    // A search that failed did not happen: its allowance goes back.
    if (counted) await platform.searchQuota.giveBack(tenantId, at).catch(() => undefined);
    throw error;
  });
  const queryId = newId();
  platform.metrics.searches.observe({ mode: request.mode }, response.took_ms / 1000);
  countSearch(platform.redis, platform.config.QUEUE_PREFIX, tenantId);
  if (platform.config.ANALYTICS_ENABLED) {
    // Recorded without waiting: analytics must cost the search nothing.
    recordSearchEvent(
      platform.redis,
      platform.config.QUEUE_PREFIX,
      {
        tenantId,
        queryId,
        query: request.query,
        mode: request.mode,
        filters: request.filters ?? {},
        resultCount: response.total_results,
        tookMs: response.took_ms,
        cached: response.cached,
        userId,
        at: new Date().toISOString(),
      },
      () => platform.metrics.analyticsDropped.inc(),
    );
  }
  return { status: 200, body: { ...response, query_id: queryId } };
}

export function searchRoutes(api: Api): void {
  api.add({
    method: 'post', path: '/api/search', operationId: 'search', summary: 'Search by keyword, meaning, or both (hybrid, the default)', tag, auth,
    // A read sent as POST: nothing changes, so nothing to audit.
    audit: false,
    body: searchBody,
    responses: {
      200: { description: 'Ranked chunks', schema: searchResponseSchema },
      501: { description: 'Semantic or hybrid search without pgvector' },
      503: { description: 'The search ran past SEARCH_STATEMENT_TIMEOUT_MS (`search_timeout`, details `timeout_ms`), or a dependency is unavailable; with `Retry-After`' },
    },
    handler: ({ body, ctx, platform, req }) => runSearch(platform, ctx, body, userOf(req, body.user_id)),
  });
  api.add({
    method: 'get', path: '/api/search', operationId: 'searchByQueryString', summary: 'Search with query parameters', tag, auth,
    query: searchQuery,
    responses: {
      200: { description: 'Ranked chunks', schema: searchResponseSchema },
      501: { description: 'Semantic or hybrid search without pgvector' },
      503: { description: 'The search ran past SEARCH_STATEMENT_TIMEOUT_MS (`search_timeout`, details `timeout_ms`), or a dependency is unavailable; with `Retry-After`' },
    },
    handler: ({ query, ctx, platform, req }) =>
      runSearch(platform, ctx, {
        query: query.q,
        mode: query.mode,
        limit: query.limit,
        filters: { content_type: query.content_type, tags: query.tags, created_from: query.created_from, created_to: query.created_to },
      }, userOf(req, undefined)),
  });
  api.add({
    method: 'post', path: '/api/search/click', operationId: 'recordSearchClick', summary: 'Record a click on a search result (for click-through rate)', tag, auth,
    // Analytics, not administration.
    audit: false,
    body: z.object({ query_id: z.uuid(), document_id: z.uuid(), position: z.number().int().min(1).max(1000) }).strict(),
    responses: { 202: { description: 'Recorded (the same click twice counts once)' } },
    handler: async ({ body, ctx, platform }) => {
      await recordClick(platform.db.knex, ctx.tenant!.id, body);
      return { status: 202 };
    },
  });
}
