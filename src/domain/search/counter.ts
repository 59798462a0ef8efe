import type { Redis } from 'ioredis';

/** Searches served per tenant, counted in Redis so every API instance adds to one number (src/domain/search/record.ts adds). */
export const searchCounterKey = (prefix: string, tenantId: string) => `${prefix}:searches:${tenantId}`;

export async function searchCount(redis: Redis, prefix: string, tenantId: string): Promise<number> {
  return Number((await redis.get(searchCounterKey(prefix, tenantId))) ?? 0);
}
