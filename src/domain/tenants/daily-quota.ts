import { hashTag, type RedisClient } from '../../redis';
import { giveBackBudgets, type RefusingBudget } from '../../budgets';
import { QuotaExceededError, utcDay } from './quotas';

/** Counters outlive their day by one, so "used yesterday" stays readable until the day is rolled up. */
const KEEP_MS = 2 * 24 * 3600 * 1000;

/** The quotas counted per UTC day, and what their Redis counters are named after. */
const DAILY_QUOTAS = { searches_per_day: 'searches', answers_per_day: 'answers' } as const;
export type DailyQuotaName = keyof typeof DAILY_QUOTAS;

/**
 * Searches or answers per tenant and UTC day, counted in Redis so every API
 * instance draws on one allowance. A request takes its unit in the script
 * that takes its rate limits (src/budgets.ts), all or none: concurrent
 * requests at the boundary can never pass the limit together, and one
 * refused by a rate limit spends none of the day's allowance.
 */
export class DailyQuota {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly quota: DailyQuotaName,
  ) {}

  private key(tenantId: string, day: string): string {
    return `${this.prefix}:quota:${DAILY_QUOTAS[this.quota]}:${hashTag(tenantId)}:${day}`;
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
      refusal: (used) => new QuotaExceededError(this.quota, limit!, used, secondsUntilNextUtcDay(now)),
    };
  }

  /** Returns the unit a request took, for a request that then failed. */
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
