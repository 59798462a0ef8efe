import { z } from 'zod';
import { queueOverview } from '../../../queues/queue-health';
import { readiness, type DependencyState } from '../../health';
import type { Platform } from '../../platform';
import { isOperatorRequest } from '../auth';
import type { Api } from '../route';

const tag = 'Operations';
const upDown = (up: boolean) => (up ? 'up' : 'down');

export function healthRoutes(api: Api): void {
  api.add({
    method: 'get', path: '/healthz', operationId: 'getLiveness', summary: 'Liveness: the process answers; checks nothing', tag, auth: 'public',
    responses: { 200: { description: 'Alive', schema: z.object({ status: z.literal('ok') }) } },
    handler: async () => ({ status: 200, body: { status: 'ok' } }),
  });
  api.add({
    method: 'get', path: '/readyz', operationId: 'getReadiness', summary: 'Readiness: PostgreSQL and Redis answer', tag, auth: 'public',
    responses: {
      200: { description: 'Ready', schema: z.object({ status: z.string(), checks: z.object({ database: z.string(), redis: z.string() }) }) },
      503: { description: 'A dependency is down' },
    },
    handler: ({ platform }) => readiness(platform.health),
  });
  api.add({
    method: 'get', path: '/api/health', operationId: 'getHealth', summary: 'Health: up or down per service; with operator credentials, versions, queues and workers too', tag, auth: 'public',
    responses: { 200: { description: 'Health' } },
    handler: async ({ platform, req }) => ({
      status: 200,
      body: (await isOperatorRequest(platform, req)) ? await describeHealth(platform) : healthStatus(platform, platform.health.snapshot()),
    }),
  });
}

/**
 * What anyone may know: up or down per service, from the health monitor's
 * last look (it checks every second), so an anonymous call costs no I/O.
 * "degraded" when PostgreSQL or Redis is down. A server without pgvector is
 * a configuration, not a fault: it is reported, not counted as degraded.
 */
function healthStatus(platform: Platform, state: DependencyState) {
  return {
    status: state.database && state.redis ? 'healthy' : 'degraded',
    services: {
      database: { status: upDown(state.database) },
      redis: { status: upDown(state.redis) },
      vector_search: { status: platform.vector.available ? 'available' : 'unavailable' },
      queues: { status: upDown(state.redis) },
    },
  };
}

/** The operator's view: checked now, with versions, queue depths and workers. */
async function describeHealth(platform: Platform) {
  const state = await platform.health.check();
  const queues = state.redis ? await queueOverview(platform.queues).catch(() => null) : null;
  const { status, services } = healthStatus(platform, state);
  return {
    status,
    version: platform.version,
    uptime_seconds: Math.round((Date.now() - platform.startedAt.getTime()) / 1000),
    services: {
      database: { ...services.database, kind: platform.db.kind },
      redis: services.redis,
      vector_search: platform.vector.available
        ? { status: 'available', extension: 'vector', version: platform.vector.version, embedding_model: platform.embedder.model, dimensions: platform.embedder.dimensions }
        : { status: 'unavailable', extension: 'vector', reason: platform.vector.reason, keyword_search: 'available' },
      queues: queues
        ? { status: 'up', queues: Object.fromEntries(queues.map((queue) => [queue.name, { ...queue.counts, workers: queue.workers, is_paused: queue.is_paused }])) }
        : { status: 'unknown' },
    },
  };
}
