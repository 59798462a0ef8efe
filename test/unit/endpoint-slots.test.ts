import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { QueueRegistry, webhooksQueue } from '../../queues';
import { enqueueDeliveries, promoteDeliveries } from '../../queues/webhooks';
import type { DeliveryWork } from '../../src/domain/webhooks/delivery-model';
import { EndpointSlots } from '../../src/domain/webhooks/fairness';
import { REDIS_URL, uniqueName } from '../helpers/databases';
import { deleteRedisPrefix } from '../helpers/redis';

// The endpoint slots of docs/webhooks.md on the real Redis, with real BullMQ
// jobs: a parked delivery handed a slot by a worker that dies before
// promoting it must not wait for the 5-minute park backstop.

const prefix = uniqueName('rwslots');
const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
const queues = new QueueRegistry(redis, prefix);
const LEASE_MS = 300;
// One slot per endpoint, leases of 300 ms, the backstop as in production.
const slots = new EndpointSlots(redis, prefix, 1, { runLeaseMs: LEASE_MS, waitLeaseMs: LEASE_MS, parkBackstopMs: 5 * 60_000 });

afterAll(async () => {
  await queues.close();
  await deleteRedisPrefix(prefix);
  redis.disconnect();
});

const delivery = (endpointId: string): DeliveryWork => ({ tenantId: randomUUID(), deliveryId: randomUUID(), eventId: randomUUID(), endpointId, origin: 'event' });
const claimOf = (work: DeliveryWork) => ({ endpointId: work.endpointId, jobId: webhooksQueue.jobId(work), deliveryId: work.deliveryId });
const stateOf = (work: DeliveryWork) => queues.queue(webhooksQueue.name).getJobState(webhooksQueue.jobId(work));

describe('endpoint slots', () => {
  it('the sweeper promotes a parked delivery whose wake-up was lost once the slot it was given lapses, and not before', async () => {
    const endpointId = randomUUID();
    const [first, second] = [delivery(endpointId), delivery(endpointId)];
    await enqueueDeliveries(queues, slots, [first, second], { attempts: 3 });
    expect([await stateOf(first), await stateOf(second)]).toEqual(['waiting', 'delayed']);

    // The first delivery's attempt ends: its slot goes to the second, and its worker dies before promoting it.
    expect((await slots.release(claimOf(first))).map((woken) => woken.jobId)).toEqual([webhooksQueue.jobId(second)]);
    expect(await slots.state(endpointId)).toEqual({ holders: [webhooksQueue.jobId(second)], parked: [] });

    // While the slot is kept for it, the sweeper leaves it alone.
    expect(await slots.sweep()).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, LEASE_MS + 50));
    const swept = await slots.sweep();
    expect(swept).toEqual([{ endpointId, woken: [], lapsed: [webhooksQueue.jobId(second)] }]);
    await promoteDeliveries(queues.queue(webhooksQueue.name), swept[0].lapsed);
    expect(await stateOf(second)).toBe('waiting');

    // Nothing held or parked any more: the endpoint leaves the sweeper's set.
    expect(await slots.sweep()).toEqual([]);
    expect(await redis.sismember(`${prefix}:webhook-parked-endpoints`, endpointId)).toBe(0);
  });

  it('a lost wake-up at an endpoint with more parked deliveries: the lapsed one is promoted and the next one given the slot', async () => {
    const endpointId = randomUUID();
    const works = [delivery(endpointId), delivery(endpointId), delivery(endpointId)];
    await enqueueDeliveries(queues, slots, works, { attempts: 3 });
    await slots.release(claimOf(works[0]));
    await new Promise((resolve) => setTimeout(resolve, LEASE_MS + 50));
    expect(await slots.sweep()).toEqual([
      { endpointId, woken: [{ jobId: webhooksQueue.jobId(works[2]), deliveryId: works[2].deliveryId }], lapsed: [webhooksQueue.jobId(works[1])] },
    ]);
  });
});
