import { z } from 'zod';
import type { Platform } from '../../platform';
import { getDelivery, listDeliveries, redeliver, replay, sendTest } from '../../domain/webhooks/deliveries';
import { createEndpoint, deleteEndpoint, getEndpoint, listEndpoints, rotateSecret, updateEndpoint } from '../../domain/webhooks/endpoints';
import { EVENT_TYPE_NAMES, EVENT_TYPES } from '../../domain/webhooks/event-types';
import { replied, repliedId } from '../audit-trail';
import type { Api } from '../route';
import { idParams, listQuery, safeString } from '../schemas';

const tag = 'Webhooks';
const auth = { scope: 'webhooks:manage', tenant: 'required' } as const;

const eventType = z.enum(EVENT_TYPE_NAMES);
const webhookUrl = z.url({ protocol: /^https?$/ }).max(2048);
const isoDateTime = z.iso.datetime({ offset: true });

const endpointInput = z
  .object({
    url: webhookUrl,
    description: safeString({ max: 500 }).nullable().optional(),
    event_types: z.array(eventType).max(EVENT_TYPE_NAMES.length).optional().describe('Empty or absent: every event type'),
    enabled: z.boolean().optional(),
  })
  .strict();
const endpointPatch = endpointInput.partial().strict().refine((value) => Object.keys(value).length > 0, 'must change at least one field');

const endpointSchema = z.object({
  id: z.uuid(),
  url: z.string(),
  description: z.string().nullable(),
  event_types: z.array(eventType),
  enabled: z.boolean(),
  disabled_reason: z.string().nullable(),
  disabled_at: z.string().nullable(),
  health: z.object({
    status: z.enum(['healthy', 'failing', 'disabled']),
    consecutive_failures: z.number().int(),
    failing_since: z.string().nullable(),
    last_success_at: z.string().nullable(),
    last_failure_at: z.string().nullable(),
    success_rate_24h: z.number().nullable(),
    attempts_24h: z.number().int(),
  }),
  previous_secret_expires_at: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
});
const endpointWithSecret = endpointSchema.extend({ secret: z.string().describe('The signing secret (whsec_…). Shown only in this response.') });

const deliveryStatus = z.enum(['pending', 'succeeded', 'failed', 'canceled']);
const deliverySchema = z.object({
  id: z.uuid(),
  message_id: z.uuid().describe('The event id, sent as webhook-id: the same for every attempt and redelivery'),
  endpoint_id: z.uuid(),
  event_type: eventType,
  origin: z.enum(['event', 'redelivery', 'replay', 'test']),
  status: deliveryStatus,
  attempts: z.number().int(),
  last_status_code: z.number().int().nullable(),
  last_error: z.string().nullable(),
  next_attempt_at: z.string().nullable(),
  delivered_at: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
});
const deliveryDetail = deliverySchema.extend({
  event: z.unknown().describe('The envelope as sent: {id, type, created_at, tenant_id, data}'),
  attempts: z.array(
    z.object({
      id: z.uuid(),
      attempt: z.number().int(),
      outcome: z.enum(['succeeded', 'failed']),
      status_code: z.number().int().nullable(),
      duration_ms: z.number().int(),
      error: z.string().nullable(),
      response_body: z.string().nullable().describe('The first 4 KB of the response'),
      created_at: z.string(),
    }),
  ),
});
const deliveryParams = z.object({ id: z.uuid(), delivery_id: z.uuid() });

/** What the webhooks routes use of the platform, wired in by the app (src/http/app.ts). */
export type WebhooksServices = Pick<Platform, 'config' | 'db' | 'deliveryDeps' | 'endpointSettings' | 'enqueueDeliveries' | 'metrics'>;

export function webhookRoutes(api: Api, services: WebhooksServices): void {
  // Before /:id, which would otherwise take "event-types" for an id.
  api.add({
    method: 'get', path: '/api/admin/webhooks/event-types', operationId: 'listWebhookEventTypes', summary: 'Every event type an endpoint can subscribe to', tag,
    auth: { scope: 'webhooks:manage', tenant: 'optional' },
    responses: { 200: { description: 'Event types', schema: z.object({ items: z.array(z.object({ type: eventType, description: z.string() })) }) } },
    handler: async () => ({
      status: 200,
      body: { items: Object.entries(EVENT_TYPES).map(([type, description]) => ({ type, description })) },
    }),
  });
  api.add({
    method: 'post', path: '/api/admin/webhooks', operationId: 'createWebhook', summary: 'Add an endpoint (its signing secret is shown only here)', tag, auth,
    body: endpointInput,
    responses: { 201: { description: 'The endpoint, with its secret', schema: endpointWithSecret }, 403: { description: 'Endpoint quota reached' } },
    // Not the URL: one can carry credentials in its query or user part.
    audit: { action: 'webhook.create', target: repliedId, details: ({ body }) => body && { event_types: body.event_types ?? [] } },
    handler: async ({ body, ctx }) => {
      const { endpoint, secret } = await createEndpoint(services.db.knex, ctx.tenant!.id, body, services.endpointSettings(), ctx.tenant!.quotas);
      return { status: 201, body: { ...endpoint, secret } };
    },
  });
  api.add({
    method: 'get', path: '/api/admin/webhooks', operationId: 'listWebhooks', summary: 'List endpoints with their health', tag, auth,
    query: listQuery,
    responses: { 200: { description: 'A page of endpoints', schema: z.object({ items: z.array(endpointSchema), next_cursor: z.string().nullable() }) } },
    handler: async ({ query, ctx }) => ({ status: 200, body: await listEndpoints(services.db.knex, ctx.tenant!.id, query) }),
  });
  api.add({
    method: 'get', path: '/api/admin/webhooks/:id', operationId: 'getWebhook', summary: 'An endpoint with its health', tag, auth,
    params: idParams,
    responses: { 200: { description: 'The endpoint', schema: endpointSchema }, 404: { description: 'No such endpoint' } },
    handler: async ({ params, ctx }) => ({ status: 200, body: await getEndpoint(services.db.knex, ctx.tenant!.id, params.id) }),
  });
  api.add({
    method: 'patch', path: '/api/admin/webhooks/:id', operationId: 'updateWebhook', summary: 'Change an endpoint; `enabled: true` re-enables a disabled one', tag, auth,
    params: idParams, body: endpointPatch,
    responses: { 200: { description: 'The endpoint', schema: endpointSchema }, 404: { description: 'No such endpoint' } },
    audit: { action: 'webhook.update', details: ({ body }) => (body?.enabled !== undefined ? { enabled: body.enabled } : undefined) },
    handler: async ({ params, body, ctx }) => ({
      status: 200,
      body: await updateEndpoint(services.db.knex, ctx.tenant!.id, params.id, body, services.endpointSettings()),
    }),
  });
  api.add({
    method: 'delete', path: '/api/admin/webhooks/:id', operationId: 'deleteWebhook', summary: 'Delete an endpoint and its delivery log', tag, auth,
    params: idParams,
    responses: { 204: { description: 'Deleted' }, 404: { description: 'No such endpoint' } },
    audit: { action: 'webhook.delete' },
    handler: async ({ params, ctx }) => {
      await deleteEndpoint(services.db.knex, ctx.tenant!.id, params.id);
      return { status: 204 };
    },
  });
  api.add({
    method: 'post', path: '/api/admin/webhooks/:id/rotate-secret', operationId: 'rotateWebhookSecret', summary: 'New signing secret; the old one keeps signing beside it for 24 hours', tag, auth,
    params: idParams,
    responses: {
      200: { description: 'The endpoint, with its new secret', schema: endpointWithSecret },
      404: { description: 'No such endpoint' },
      409: { description: 'Rotated less than 24 hours ago; details.rotate_again_at says when it is allowed again' },
    },
    audit: { action: 'webhook.rotate_secret' },
    handler: async ({ params, ctx }) => {
      const { endpoint, secret } = await rotateSecret(services.db.knex, ctx.tenant!.id, params.id);
      return { status: 200, body: { ...endpoint, secret } };
    },
  });
  api.add({
    method: 'post', path: '/api/admin/webhooks/:id/test', operationId: 'testWebhook', summary: 'Send a webhook.test event now and return the attempt', tag, auth,
    params: idParams,
    responses: {
      200: { description: 'The delivery with its one attempt (status succeeded or failed)', schema: deliveryDetail },
      404: { description: 'No such endpoint' },
      409: { description: 'The endpoint is disabled' },
    },
    audit: { action: 'webhook.test' },
    handler: async ({ params, ctx }) => {
      const delivery = await sendTest(services.deliveryDeps(), ctx.tenant!.id, params.id);
      const attempt = delivery.attempts[0];
      if (attempt) {
        const outcome = attempt.outcome === 'succeeded' ? 'delivered' : 'given_up';
        services.metrics.webhookAttempts.inc({ outcome });
        services.metrics.webhookAttemptDuration.observe({ outcome }, attempt.duration_ms / 1000);
      }
      return { status: 200, body: delivery };
    },
  });
  api.add({
    method: 'get', path: '/api/admin/webhooks/:id/deliveries', operationId: 'listWebhookDeliveries', summary: 'The delivery log, newest first', tag, auth,
    params: idParams,
    query: listQuery.extend({
      outcome: deliveryStatus.optional(),
      event_type: eventType.optional(),
      since: isoDateTime.optional(),
      until: isoDateTime.optional(),
    }),
    responses: { 200: { description: 'A page of deliveries', schema: z.object({ items: z.array(deliverySchema), next_cursor: z.string().nullable() }) } },
    handler: async ({ params, query, ctx }) => {
      const { limit, cursor, outcome, ...filters } = query;
      return {
        status: 200,
        body: await listDeliveries(services.db.knex, ctx.tenant!.id, params.id, { ...filters, status: outcome }, { limit, cursor }),
      };
    },
  });
  api.add({
    method: 'get', path: '/api/admin/webhooks/:id/deliveries/:delivery_id', operationId: 'getWebhookDelivery', summary: 'One delivery with the event and every attempt', tag, auth,
    params: deliveryParams,
    responses: { 200: { description: 'The delivery', schema: deliveryDetail }, 404: { description: 'No such delivery' } },
    handler: async ({ params, ctx }) => ({
      status: 200,
      body: await getDelivery(services.db.knex, ctx.tenant!.id, params.id, params.delivery_id),
    }),
  });
  api.add({
    method: 'post', path: '/api/admin/webhooks/:id/deliveries/:delivery_id/redeliver', operationId: 'redeliverWebhookDelivery', summary: 'Send the same message again, with fresh attempts', tag, auth,
    params: deliveryParams,
    responses: { 202: { description: 'The new delivery', schema: deliverySchema }, 404: { description: 'No such delivery' }, 409: { description: 'The endpoint is disabled' } },
    audit: {
      action: 'webhook.redeliver',
      target: ({ params }) => params?.delivery_id,
      details: ({ params, reply }) => ({ endpoint_id: params?.id, new_delivery_id: replied(reply, 'id') }),
    },
    handler: async ({ params, ctx }) => {
      const { delivery, work } = await redeliver(services.db.knex, ctx.tenant!.id, params.id, params.delivery_id);
      await services.enqueueDeliveries([work]);
      return { status: 202, body: delivery };
    },
  });
  api.add({
    method: 'post', path: '/api/admin/webhooks/:id/replay', operationId: 'replayWebhookEvents', summary: 'Re-send past events in a time window, paced; dry_run counts them', tag, auth,
    params: idParams,
    body: z
      .object({
        since: isoDateTime,
        until: isoDateTime.optional(),
        event_types: z.array(eventType).max(EVENT_TYPE_NAMES.length).optional(),
        dry_run: z.boolean().default(false),
      })
      .strict(),
    responses: {
      200: { description: 'How many events matched and were enqueued', schema: z.object({ matched: z.number().int(), enqueued: z.number().int(), per_second: z.number() }) },
      404: { description: 'No such endpoint' },
      409: { description: 'The endpoint is disabled' },
    },
    audit: {
      action: 'webhook.replay',
      details: ({ body, reply }) => ({
        since: body?.since, until: body?.until, event_types: body?.event_types, dry_run: body?.dry_run,
        matched: replied(reply, 'matched'), enqueued: replied(reply, 'enqueued'),
      }),
    },
    handler: async ({ params, body, ctx }) => {
      const perSecond = services.config.WEBHOOK_REPLAY_PER_SECOND;
      const spacingMs = 1000 / perSecond;
      const { matched, work } = await replay(services.db.knex, ctx.tenant!.id, params.id, body, { spacingMs });
      await services.enqueueDeliveries(work, spacingMs);
      return { status: 200, body: { matched, enqueued: work.length, per_second: perSecond } };
    },
  });
}
