import type { Redis } from 'ioredis';

/** Searches served per tenant, counted in Redis so every API instance adds to one number. */
const key = (prefix: string, tenantId: string) => `${prefix}:searches:${tenantId}`;

export function countSearch(redis: Redis, prefix: string, tenantId: string): void {
  // Counting must never slow or fail a search.
  redis.incr(key(prefix, tenantId)).catch(() => undefined);
}

export async function searchCount(redis: Redis, prefix: string, tenantId: string): Promise<number> {
  return Number((await redis.get(key(prefix, tenantId))) ?? 0);
}
