import { hashTag, type RedisClient } from '../../redis';
import { giveBackBudgets, type RefusingBudget } from '../../budgets';
import { QuotaExceededError, utcDay } from './quotas';

/** Counters outlive their day by one, so "used yesterday" stays readable until the day is rolled up. */
const KEEP_MS = 2 * 24 * 3600 * 1000;

/**
 * Searches per tenant and UTC day, counted in Redis so every API instance
 * draws on one allowance. A search takes its unit in the script that takes
 * the request's rate limits (src/budgets.ts), all or none: concurrent
 * searches at the boundary can never pass the limit together, and a search
 * refused by a rate limit spends none of the day's allowance.
 */
export class DailySearchQuota {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
  ) {}

  private key(tenantId: string, day: string): string {
    return `${this.prefix}:quota:searches:${hashTag(tenantId)}:${day}`;
  }

  /**
   * Today's allowance as a budget: refused with QuotaExceededError (429,
   * Retry-After until the next UTC midnight) when `limit` are used. `limit`
   * null counts without limiting.
   */
  budget(tenantId: string, limit: number | null, now = new Date()): RefusingBudget {
    return {
      key: this.key(tenantId, utcDay(now)),
      limit,
      windowMs: KEEP_MS,
      refusal: (used) => new QuotaExceededError('searches_per_day', limit!, used, secondsUntilNextUtcDay(now)),
    };
  }

  /** Returns the unit a search took, for a search that then failed. */
  async giveBack(budget: RefusingBudget): Promise<void> {
    await giveBackBudgets(this.redis, [budget]);
  }

  async used(tenantId: string, now = new Date()): Promise<number> {
    return Number((await this.redis.get(this.key(tenantId, utcDay(now)))) ?? 0);
  }
}

export function secondsUntilNextUtcDay(now: Date): number {
  const next = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  return Math.max(1, Math.ceil((next - now.getTime()) / 1000));
}
