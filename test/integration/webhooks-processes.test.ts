import { reconcileQueue, webhookFanoutQueue, webhooksQueue } from '../../queues';
import { WorkerRuntime } from '../../workers/runtime';
import { startStack, type TestStack } from '../helpers/harness';
import { killLeftoverProcesses, startRagworks } from '../helpers/processes';
import { waitFor } from '../helpers/wait';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver';

// Worker children take a few seconds to start, several times that on busy shared cores;
// every wait is on a condition, so the limit only matters when something is wrong.
jest.setTimeout(120_000);

interface Delivery {
  id: string;
  message_id: string;
  status: 'pending' | 'succeeded' | 'failed' | 'canceled';
  attempts: number;
}

let stack: TestStack;
const receivers: WebhookReceiver[] = [];
const runtimes: WorkerRuntime[] = [];

beforeAll(async () => {
  // No workers in this process: children, or runtimes a test starts, do the work.
  stack = await startStack({
    database: 'postgres',
    workers: false,
    env: { WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_RETRY_SCHEDULE: '0,1,1,1,1', RECONCILE_STUCK_AFTER_SECONDS: '1' },
  });
});
afterAll(async () => {
  await killLeftoverProcesses();
  for (const runtime of runtimes) await runtime.drain(5_000);
  await Promise.all(receivers.map((receiver) => receiver.close()));
  await stack?.close();
});

async function receiver(): Promise<WebhookReceiver> {
  const opened = await startWebhookReceiver();
  receivers.push(opened);
  return opened;
}

/** A tenant with one endpoint (subscribed to document.created) pointing at the receiver. */
async function tenantWithEndpoint(target: WebhookReceiver) {
  const tenant = await stack.createTenant();
  const created = await stack.as(tenant.key, 'post', '/api/admin/webhooks').send({ url: target.url('/hook'), event_types: ['document.created'] }).expect(201);
  target.secrets = [created.body.secret];
  return { ...tenant, endpointId: created.body.id as string };
}

async function postDocument(key: string, title: string): Promise<string> {
  return (await stack.as(key, 'post', '/api/documents').send({ title, content: `# ${title}\n\nA few words.` }).expect(202)).body.id;
}

async function deliveries(key: string, endpointId: string): Promise<Delivery[]> {
  return (await stack.as(key, 'get', `/api/admin/webhooks/${endpointId}/deliveries`).expect(200)).body.items;
}

function waitForSucceeded(key: string, endpointId: string): Promise<Delivery> {
  return waitFor(
    async () => {
      const items = await deliveries(key, endpointId);
      return items.length === 1 && items[0].status === 'succeeded' ? items[0] : null;
    },
    { what: 'the delivery to succeed', timeoutMs: 60_000, intervalMs: 200 },
  );
}

function startRuntime(queues: string[]): WorkerRuntime {
  const runtime = new WorkerRuntime(stack.platform, queues);
  runtimes.push(runtime);
  runtime.start();
  return runtime;
}

it('a worker killed with SIGKILL mid-delivery: another worker delivers the message, with the same webhook-id every time', async () => {
  const target = await receiver();
  // The first request is held far longer than the test takes to kill its sender.
  target.respond({ status: 200, delayMs: 20_000 });
  const tenant = await tenantWithEndpoint(target);
  const workerEnv = {
    ...stack.env,
    LOG_LEVEL: 'info',
    WORKER_QUEUES: 'webhook-fanout,webhooks',
    WORKER_LOCK_DURATION_MS: '3000',
    WORKER_STALLED_INTERVAL_MS: '1000',
  };
  await postDocument(tenant.key, 'Sent while a worker dies');

  const doomed = startRagworks('worker', workerEnv);
  await target.waitForRequests(1, { timeoutMs: 60_000 });
  expect(await doomed.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
  // Killed mid-send: nothing recorded the attempt.
  const [pending] = await deliveries(tenant.key, tenant.endpointId);
  expect(pending).toMatchObject({ status: 'pending', attempts: 0 });

  const rescuer = startRagworks('worker', workerEnv);
  const delivered = await waitForSucceeded(tenant.key, tenant.endpointId);
  expect(target.requests.length).toBeGreaterThanOrEqual(2);
  expect(target.requests.every((request) => request.verified)).toBe(true);
  expect([...new Set(target.requests.map((request) => request.webhookId))]).toEqual([delivered.message_id]);

  // The killed worker's job came back through stalled-job recovery and completed.
  const job = await stack.platform.queues.queue(webhooksQueue.name).getJob(`${delivered.message_id}-${tenant.endpointId}`);
  expect(await job?.getState()).toBe('completed');
  expect(job?.stalledCounter).toBeGreaterThanOrEqual(1);
  expect(job?.returnvalue).toMatchObject({ outcome: 'delivered', status_code: 200 });
  expect(await rescuer.stop('SIGTERM')).toEqual({ code: 0, signal: null });
});

it('reconcile re-enqueues a pending delivery whose job was lost and an event whose fan-out was never enqueued', async () => {
  const webhooks = stack.platform.queues.queue(webhooksQueue.name);
  const fanout = stack.platform.queues.queue(webhookFanoutQueue.name);
  const hourAgo = `now() - interval '1 hour'`;

  // A delivery whose job disappears from Redis after the fan-out enqueued it.
  const lostDeliveryTarget = await receiver();
  const lostDelivery = await tenantWithEndpoint(lostDeliveryTarget);
  const fanoutOnly = startRuntime([webhookFanoutQueue.name]);
  await postDocument(lostDelivery.key, 'Its delivery job is lost');
  const [pending] = await waitFor(async () => {
    const items = await deliveries(lostDelivery.key, lostDelivery.endpointId);
    return items.length === 1 ? items : null;
  }, { what: 'the fan-out to create the delivery' });
  const deliveryJobId = `${pending.message_id}-${lostDelivery.endpointId}`;
  await waitFor(async () => (await webhooks.getJob(deliveryJobId)) !== undefined, { what: 'the delivery job to be enqueued' });
  await fanoutOnly.drain(5_000);
  expect(await webhooks.remove(deliveryJobId)).toBe(1);
  expect(await stack.sql((db) => db('webhook_deliveries').where({ id: pending.id }).update({ updated_at: db.raw(hourAgo) }))).toBe(1);

  // An event whose fan-out job is lost before any worker sees it.
  const lostEventTarget = await receiver();
  const lostEvent = await tenantWithEndpoint(lostEventTarget);
  await postDocument(lostEvent.key, 'Its fan-out is lost');
  const event = await waitFor(() => stack.sql((db) => db('webhook_events').first('id', 'fanned_out_at').where({ tenant_id: lostEvent.id, type: 'document.created' })), {
    what: 'the event to be stored',
  });
  expect(event.fanned_out_at).toBeNull();
  const fanoutJobId = webhookFanoutQueue.jobId({ tenantId: lostEvent.id, eventId: event.id });
  await waitFor(async () => (await fanout.getJob(fanoutJobId)) !== undefined, { what: 'the fan-out job to be enqueued' });
  expect(await fanout.remove(fanoutJobId)).toBe(1);
  expect(await stack.sql((db) => db('webhook_events').where({ id: event.id }).update({ fanned_out_at: null, created_at: db.raw(hourAgo) }))).toBe(1);

  startRuntime([reconcileQueue.name, webhookFanoutQueue.name, webhooksQueue.name]);
  const tickJobId = await stack.platform.queues.enqueue(reconcileQueue, { tick: new Date().toISOString() });
  const reconcile = stack.platform.queues.queue(reconcileQueue.name);
  await waitFor(async () => (await (await reconcile.getJob(tickJobId))?.getState()) === 'completed', { what: 'the reconcile job to complete' });
  expect((await reconcile.getJob(tickJobId))?.returnvalue).toMatchObject({ requeued: { events: 1, deliveries: 1 } });

  const [lostDeliveryRequest] = await lostDeliveryTarget.waitForRequests(1);
  expect(lostDeliveryRequest).toMatchObject({ verified: true, webhookId: pending.message_id, eventType: 'document.created' });
  expect(await waitForSucceeded(lostDelivery.key, lostDelivery.endpointId)).toMatchObject({ id: pending.id, attempts: 1 });

  const [lostEventRequest] = await lostEventTarget.waitForRequests(1);
  expect(lostEventRequest).toMatchObject({ verified: true, webhookId: event.id, eventType: 'document.created' });
  expect(await waitForSucceeded(lostEvent.key, lostEvent.endpointId)).toMatchObject({ message_id: event.id, attempts: 1 });
  expect((await stack.sql((db) => db('webhook_events').first('fanned_out_at').where({ id: event.id }))).fanned_out_at).not.toBeNull();
  // Each receiver got its message once.
  expect(lostDeliveryTarget.requests).toHaveLength(1);
  expect(lostEventTarget.requests).toHaveLength(1);
});
