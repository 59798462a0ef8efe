import { hashTag, type RedisClient } from '../../redis';

/** Searches served per tenant, counted in Redis so every API instance adds to one number (src/domain/search/record.ts adds). */
export const searchCounterKey = (prefix: string, tenantId: string) => `${prefix}:searches:${hashTag(tenantId)}`;

export async function searchCount(redis: RedisClient, prefix: string, tenantId: string): Promise<number> {
  return Number((await redis.get(searchCounterKey(prefix, tenantId))) ?? 0);
}
