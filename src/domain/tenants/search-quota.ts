import type { Redis } from 'ioredis';
import { withTimeout } from '../../async';
import { QuotaExceededError, utcDay } from './quotas';

/**
 * Searches per tenant and UTC day, counted in Redis so every API instance
 * draws on one allowance. The check and the increment are one script, so
 * concurrent searches at the boundary can never pass the limit together.
 */
const TAKE = `
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] ~= '' and used >= tonumber(ARGV[1]) then return -used - 1 end
used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return used`;

/** A hung Redis must not hold searches: past this the search goes ahead uncounted. */
const TAKE_TIMEOUT_MS = 250;

/** Counters outlive their day by one, so "used yesterday" stays readable until the day is rolled up. */
const KEEP_SECONDS = 2 * 24 * 3600;

export class DailySearchQuota {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key(tenantId: string, day: string): string {
    return `${this.prefix}:quota:searches:${tenantId}:${day}`;
  }

  /**
   * Counts one search, or throws QuotaExceededError (429, Retry-After until
   * the next UTC midnight) when `limit` are used today. `limit` null counts
   * without limiting. Redis errors propagate: the caller decides.
   */
  async take(tenantId: string, limit: number | null, now = new Date()): Promise<number> {
    const taken = this.redis.eval(TAKE, 1, this.key(tenantId, utcDay(now)), limit === null ? '' : String(limit), KEEP_SECONDS);
    const result = Number(await withTimeout(taken, TAKE_TIMEOUT_MS, 'Redis did not answer the search quota check'));
    if (result < 0) throw new QuotaExceededError('searches_per_day', limit!, -result - 1, secondsUntilNextUtcDay(now));
    return result;
  }

  /** Returns one search taken by `take` for a search that then failed. */
  async giveBack(tenantId: string, now = new Date()): Promise<void> {
    await this.redis.decr(this.key(tenantId, utcDay(now)));
  }

  async used(tenantId: string, now = new Date()): Promise<number> {
    return Number((await this.redis.get(this.key(tenantId, utcDay(now)))) ?? 0);
  }
}

export function secondsUntilNextUtcDay(now: Date): number {
  const next = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  return Math.max(1, Math.ceil((next - now.getTime()) / 1000));
}
