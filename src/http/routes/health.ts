import { z } from 'zod';
import { queueOverview } from '../../../queues/queue-health';
import { readiness, type DependencyState } from '../../health';
import type { Platform } from '../../platform';
import { isOperatorRequest } from '../auth';
import type { Api } from '../route';

const tag = 'Operations';
const upDown = (up: boolean) => (up ? 'up' : 'down');

/** What the health routes use of the platform, wired in by the app (src/http/app.ts). */
export type HealthServices = Pick<Platform, 'config' | 'db' | 'embedder' | 'health' | 'queues' | 'startedAt' | 'vector' | 'version'>;

export function healthRoutes(api: Api, services: HealthServices): void {
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
    handler: () => readiness(services.health),
  });
  api.add({
    method: 'get', path: '/api/health', operationId: 'getHealth', summary: 'Health: up or down per service; with operator credentials, versions, queues and workers too', tag, auth: 'public',
    responses: { 200: { description: 'Health' } },
    handler: async ({ req }) => ({
      status: 200,
      body: (await isOperatorRequest(services, req)) ? await describeHealth(services) : healthStatus(services, services.health.snapshot()),
    }),
  });
}

/**
 * What anyone may know: up or down per service, from the health monitor's
 * last look (it checks every second), so an anonymous call costs no I/O.
 * "degraded" when PostgreSQL or Redis is down. A server without pgvector is
 * a configuration, not a fault: it is reported, not counted as degraded.
 */
function healthStatus(services: HealthServices, state: DependencyState) {
  return {
    status: state.database && state.redis ? 'healthy' : 'degraded',
    services: {
      database: { status: upDown(state.database) },
      redis: { status: upDown(state.redis) },
      vector_search: { status: services.vector.available ? 'available' : 'unavailable' },
      queues: { status: upDown(state.redis) },
    },
  };
}

/** The operator's view: checked now, with versions, queue depths and workers. */
async function describeHealth(services: HealthServices) {
  const state = await services.health.check();
  const queues = state.redis ? await queueOverview(services.queues).catch(() => null) : null;
  const { status, services: dependencies } = healthStatus(services, state);
  return {
    status,
    version: services.version,
    uptime_seconds: Math.round((Date.now() - services.startedAt.getTime()) / 1000),
    services: {
      database: { ...dependencies.database, kind: services.db.kind },
      redis: dependencies.redis,
      vector_search: services.vector.available
        ? { status: 'available', extension: 'vector', version: services.vector.version, embedding_model: services.embedder.model, dimensions: services.embedder.dimensions }
        : { status: 'unavailable', extension: 'vector', reason: services.vector.reason, keyword_search: 'available' },
      queues: queues
        ? { status: 'up', queues: Object.fromEntries(queues.map((queue) => [queue.name, { ...queue.counts, workers: queue.workers, is_paused: queue.is_paused }])) }
        : { status: 'unknown' },
    },
  };
}
