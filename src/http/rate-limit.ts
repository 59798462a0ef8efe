import { Counter, type Registry } from 'prom-client';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { withTimeout } from '../async';
import type { Tenant } from '../domain/tenants/tenants';
import { AppError } from '../errors';
import type { Platform } from '../platform';
import type { RequestContext } from './context';

/** The budgets a key's request draws on: its own, and its tenant's (shared by all the tenant's keys). */
type PolicyName = 'tenant' | 'key';

interface Policy {
  name: PolicyName;
  /** Requests per window; the tier's number from RATE_LIMIT_TENANT or RATE_LIMIT_KEY. */
  limit: number;
  /** Whose counter: the tenant's id or the key's id. */
  subject: string;
}

interface Consumed {
  policy: Policy;
  result: RateLimiterRes;
  limited: boolean;
}

const DECISIONS_METRIC = 'ragworks_rate_limit_decisions_total';

/**
 * How long a request waits on Redis for its counters before going on
 * unlimited: far above a healthy round trip, short enough that a Redis
 * that hangs (rather than drops the connection) does not hold every
 * request until the health check notices.
 */
const REDIS_DEADLINE_MS = 250;

/**
 * Per-tenant and per-key request limits over a fixed window, counted in
 * Redis so every API instance draws on the same budgets. The limits are
 * the tenant's tier's, read on each request, so a tier change holds at
 * once; the counters do not depend on the tier, so a tenant moved to
 * another tier keeps what it used in the current window.
 *
 * Headers follow draft-ietf-httpapi-ratelimit-headers-11:
 * `RateLimit-Policy: "tenant";q=600;w=60, "key";q=300;w=60` and
 * `RateLimit: "tenant";r=599;t=42, "key";r=299;t=42`.
 *
 * Without Redis the limits are not enforced (searches and reads must go on
 * while Redis is away); each such request is counted as `unavailable`.
 */
export class RequestRateLimits {
  /** One limiter per policy and number of requests: RateLimiterRedis fixes its limit when built. */
  private readonly limiters = new Map<string, RateLimiterRedis>();
  private readonly decisions: Counter<'outcome'>;

  constructor(private readonly platform: Platform) {
    this.decisions = decisionsCounter(platform.metrics.registry);
  }

  /**
   * Counts the request against its key's and its tenant's budgets. Returns
   * the headers to send with the response, or throws 429 `rate_limited`
   * when a budget is spent. Only API keys are limited, never the operator.
   */
  async admit(ctx: RequestContext): Promise<Record<string, string>> {
    const { config } = this.platform;
    if (!config.RATE_LIMIT_ENABLED || ctx.principal?.kind !== 'key' || !ctx.tenant) return {};
    const policies = this.policiesFor(ctx.tenant, ctx.principal.apiKey.id);
    if (policies.length === 0) return {};
    const policyHeader = { 'RateLimit-Policy': policies.map((policy) => `"${policy.name}";q=${policy.limit};w=${config.RATE_LIMIT_WINDOW_SECONDS}`).join(', ') };

    const consumed = await this.consume(policies);
    if (!consumed) {
      this.decisions.inc({ outcome: 'unavailable' });
      return policyHeader;
    }

    const headers = {
      ...policyHeader,
      RateLimit: consumed.map(({ policy, result }) => `"${policy.name}";r=${result.remainingPoints};t=${wholeSeconds(result.msBeforeNext)}`).join(', '),
    };
    const exhausted = consumed.filter((entry) => entry.limited).sort((a, b) => b.result.msBeforeNext - a.result.msBeforeNext)[0];
    if (!exhausted) {
      this.decisions.inc({ outcome: 'allowed' });
      return headers;
    }
    this.decisions.inc({ outcome: 'limited' });
    const retryAfter = Math.max(1, wholeSeconds(exhausted.result.msBeforeNext));
    const { name, limit } = exhausted.policy;
    throw new AppError(
      429,
      'rate_limited',
      `This ${name === 'tenant' ? 'tenant' : 'API key'} may make ${limit} requests per ${config.RATE_LIMIT_WINDOW_SECONDS} seconds; retry in ${retryAfter} seconds.`,
      { policy: name, limit, window_seconds: config.RATE_LIMIT_WINDOW_SECONDS },
      { ...headers, 'Retry-After': String(retryAfter) },
    );
  }

  /** The tier's limits, leaving out those set to 0 (no limit). */
  private policiesFor(tenant: Tenant, keyId: string): Policy[] {
    const { RATE_LIMIT_TENANT, RATE_LIMIT_KEY } = this.platform.config;
    const policies: Policy[] = [
      { name: 'tenant', limit: RATE_LIMIT_TENANT[tenant.tier], subject: tenant.id },
      { name: 'key', limit: RATE_LIMIT_KEY[tenant.tier], subject: keyId },
    ];
    return policies.filter((policy) => policy.limit > 0);
  }

  /**
   * Takes one request from every budget, or answers null when Redis is
   * away: known down, failing the command, or not answering in time.
   */
  private async consume(policies: Policy[]): Promise<Consumed[] | null> {
    if (!this.platform.health.isUp('redis')) return null;
    try {
      const taking = Promise.all(
        policies.map(async (policy) => {
          try {
            return { policy, result: await this.limiter(policy).consume(policy.subject), limited: false };
          } catch (rejection) {
            // rate-limiter-flexible rejects with a RateLimiterRes when the budget is spent, with an Error when the store fails.
            if (rejection instanceof RateLimiterRes) return { policy, result: rejection, limited: true };
            throw rejection;
          }
        }),
      );
      return await withTimeout(taking, REDIS_DEADLINE_MS);
    } catch (error) {
      this.platform.logger.debug({ err: error }, 'rate limits not enforced: Redis did not answer');
      return null;
    }
  }

  private limiter(policy: Policy): RateLimiterRedis {
    const id = `${policy.name}:${policy.limit}`;
    let limiter = this.limiters.get(id);
    if (!limiter) {
      const { QUEUE_PREFIX, RATE_LIMIT_WINDOW_SECONDS } = this.platform.config;
      limiter = new RateLimiterRedis({
        storeClient: this.platform.redis,
        // The key names the policy and subject, not the limit, so every tier counts on the same counter.
        keyPrefix: `${QUEUE_PREFIX}:rate-limit:${policy.name}`,
        points: policy.limit,
        duration: RATE_LIMIT_WINDOW_SECONDS,
        // Fail at once rather than wait on a connection that is being re-established.
        rejectIfRedisNotReady: true,
      });
      this.limiters.set(id, limiter);
    }
    return limiter;
  }
}

function wholeSeconds(ms: number): number {
  return Math.max(0, Math.ceil(ms / 1000));
}

/** Registered once per registry: an app built twice on one platform shares the counter. */
function decisionsCounter(registry: Registry): Counter<'outcome'> {
  const existing = registry.getSingleMetric(DECISIONS_METRIC);
  if (existing) return existing as Counter<'outcome'>;
  return new Counter({
    name: DECISIONS_METRIC,
    help: 'Rate-limit decisions on API-key requests: allowed, limited (429), or unavailable (Redis did not answer; let through)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
}
