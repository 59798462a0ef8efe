import { z } from 'zod';
import type { Platform } from '../../platform';
import { getTenant } from '../../domain/tenants/tenants';
import { replied } from '../audit-trail';
import type { Api } from '../route';
import { safeString } from '../schemas';

const tag = 'Cache';

const tierStats = z.object({ hits: z.number(), misses: z.number(), sets: z.number(), evictions: z.number(), hit_ratio: z.number().nullable() });

/** What the cache routes use of the platform, wired in by the app (src/http/app.ts). */
export type CacheServices = Pick<Platform, 'cache' | 'db'>;

export function cacheRoutes(api: Api, services: CacheServices): void {
  api.add({
    method: 'get', path: '/api/admin/cache/stats', operationId: 'getCacheStats', summary: "This process's search cache: hits, misses, sets, evictions and hit ratio per tier", tag, auth: 'operator',
    responses: {
      200: {
        description: 'Cache statistics of the process that answered',
        schema: z.object({
          enabled: z.boolean(),
          breaker: z.object({ state: z.enum(['closed', 'open', 'half-open']), opened: z.number() }),
          l1: tierStats.extend({ size: z.number(), max: z.number() }),
          l2: tierStats,
          overall_hit_ratio: z.number().nullable(),
          single_flight_joins: z.number(),
        }),
      },
    },
    handler: async () => ({ status: 200, body: services.cache.stats() }),
  });
  api.add({
    method: 'post', path: '/api/admin/cache/invalidate', operationId: 'invalidateCache', summary: "Invalidate one tenant's cached searches, or every tenant's", tag, auth: 'operator',
    body: z.object({ tenant_id: safeString({ min: 1, max: 100 }).optional().describe('Tenant id or slug; absent: every tenant') }).strict(),
    responses: { 200: { description: 'What was invalidated', schema: z.object({ tenants: z.number().int(), generation: z.number().int().optional() }) }, 404: { description: 'No such tenant' } },
    audit: { action: 'cache.invalidate', target: ({ body }) => body?.tenant_id, targetsTenant: true, details: ({ reply }) => ({ tenants: replied(reply, 'tenants') }) },
    handler: async ({ body }) => {
      if (!body.tenant_id) return { status: 200, body: { tenants: await services.cache.invalidateAll() } };
      const tenant = await getTenant(services.db.knex, body.tenant_id);
      return { status: 200, body: { tenants: 1, generation: await services.cache.invalidate(tenant.id) } };
    },
  });
}
