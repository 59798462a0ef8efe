import { countSearch } from '../../domain/search/counter';
import { cachedSearch } from '../../domain/search/cached-search';
import type { SearchRequest } from '../../domain/search/search';
import type { Platform } from '../../platform';
import type { RequestContext } from '../context';
import type { Api } from '../route';
import { searchBody, searchQuery, searchResponseSchema } from '../schemas';

const tag = 'Search';
const auth = { scope: 'search', tenant: 'required' } as const;

async function runSearch(platform: Platform, ctx: RequestContext, request: SearchRequest) {
  const tenantId = ctx.tenant!.id;
  const response = await cachedSearch(platform.cache, platform.searchDeps(), tenantId, request);
  platform.metrics.searches.observe({ mode: request.mode }, response.took_ms / 1000);
  countSearch(platform.redis, platform.config.QUEUE_PREFIX, tenantId);
  return { status: 200, body: response };
}

export function searchRoutes(api: Api): void {
  api.add({
    method: 'post', path: '/api/search', summary: 'Search by keyword, meaning, or both (hybrid, the default)', tag, auth,
    body: searchBody,
    responses: {
      200: { description: 'Ranked chunks', schema: searchResponseSchema },
      501: { description: 'Semantic or hybrid search without pgvector' },
    },
    handler: ({ body, ctx, platform }) => runSearch(platform, ctx, body),
  });
  api.add({
    method: 'get', path: '/api/search', summary: 'Search with query parameters', tag, auth,
    query: searchQuery,
    responses: {
      200: { description: 'Ranked chunks', schema: searchResponseSchema },
      501: { description: 'Semantic or hybrid search without pgvector' },
    },
    handler: ({ query, ctx, platform }) =>
      runSearch(platform, ctx, {
        query: query.q,
        mode: query.mode,
        limit: query.limit,
        filters: { content_type: query.content_type, tags: query.tags, created_from: query.created_from, created_to: query.created_to },
      }),
  });
}
