import type { Redis } from 'ioredis';

/**
 * A per-endpoint limit on deliveries in flight, shared by every worker
 * through Redis: one slow receiver holds at most `limit` worker slots, and
 * the others' deliveries keep flowing. Each slot expires on its own, so a
 * worker that dies cannot hold one for ever.
 */
const ACQUIRE = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0`;

export class EndpointSlots {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly limit: number,
  ) {}

  private key(endpointId: string): string {
    return `${this.prefix}:webhook-slots:${endpointId}`;
  }

  /** Takes a slot for up to `holdMs`; false when the endpoint already has `limit` deliveries in flight. */
  async acquire(endpointId: string, token: string, holdMs: number): Promise<boolean> {
    const now = Date.now();
    const taken = await this.redis.eval(ACQUIRE, 1, this.key(endpointId), now, now + holdMs, this.limit, token, holdMs * 2);
    return taken === 1;
  }

  async release(endpointId: string, token: string): Promise<void> {
    await this.redis.zrem(this.key(endpointId), token);
  }
}
