import { Counter, type Registry } from 'prom-client';
import { withTimeout } from '../async';
import { BudgetTaker, giveBackBudgets, type Budget, type BudgetState, type Read, type RefusingBudget } from '../budgets';
import type { Tenant } from '../domain/tenants/tenants';
import { AppError } from '../errors';
import type { Platform } from '../platform';
import { hashTag } from '../redis';
import type { RequestContext } from './context';

/** What rate limiting uses of the platform. */
export type RateLimitServices = Pick<Platform, 'config' | 'health' | 'logger' | 'metrics' | 'redis'>;

/** The budgets a key's request draws on: its own, and its tenant's (shared by all the tenant's keys). */
type PolicyName = 'tenant' | 'key';

interface Policy extends Budget {
  name: PolicyName;
  limit: number;
}

/** What a route takes and reads beside the rate limits, in the same script. */
export interface AdmissionNeeds {
  /** Budgets of the route's own (the daily search quota); a refusal by a rate limit is answered first. */
  budgets?: RefusingBudget[];
  /** Values the route needs from Redis (the tenant's cache generation), each seeded when missing. */
  reads?: Read[];
}

/** What `admit` let through: the headers to send, and the units to give back if another limit then refuses the request. */
export interface Admission {
  headers: Record<string, string>;
  /** Rate-limit units taken; empty when nothing was taken (no limits, the operator, Redis away). */
  taken: Array<BudgetState<Policy>>;
  /** The route's own budgets that were taken: for it to give back when its work fails. */
  routeTaken: RefusingBudget[];
  /** The values of the route's reads, in order; null when Redis did not answer. */
  values: string[] | null;
}

const NOTHING_TAKEN = (headers: Record<string, string> = {}): Admission => ({ headers, taken: [], routeTaken: [], values: [] });

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
 * Redis so every API instance draws on the same budgets. Both are taken in
 * one script, all or none: a request refused by its key's limit spends
 * nothing of its tenant's, so one runaway key cannot lock out its siblings.
 * A route's own budgets and reads ride in the same script (AdmissionNeeds),
 * so a request's counting costs one round trip, and a request refused by
 * any budget spends nothing of the others.
 * The limits are the tenant's tier's, read on each request, so a tier
 * change holds at once; the counters do not depend on the tier, so a
 * tenant moved to another tier keeps what it used in the current window.
 *
 * Headers follow draft-ietf-httpapi-ratelimit-headers-11:
 * `RateLimit-Policy: "tenant";q=600;w=60, "key";q=300;w=60` and
 * `RateLimit: "tenant";r=599;t=42, "key";r=299;t=42`.
 *
 * Without Redis the limits are not enforced (searches and reads must go on
 * while Redis is away); each such request is counted as `unavailable`.
 */
export class RequestRateLimits {
  private readonly decisions: Counter<'outcome'>;
  private readonly budgets: BudgetTaker;

  constructor(private readonly services: RateLimitServices) {
    this.decisions = decisionsCounter(services.metrics.registry);
    this.budgets = new BudgetTaker(services.redis, REDIS_DEADLINE_MS);
  }

  /**
   * Counts the request against its key's and its tenant's budgets and the
   * route's own, and reads what the route needs. Returns the headers to send
   * with the response, or throws 429 `rate_limited` when a rate limit is
   * spent, else the route budget's refusal when that is. Only API keys are
   * rate limited, never the operator; a route's needs apply to everyone.
   */
  async admit(ctx: RequestContext, needs: AdmissionNeeds = {}): Promise<Admission> {
    const { config } = this.services;
    const { budgets: routeBudgets = [], reads = [] } = needs;
    const policies = config.RATE_LIMIT_ENABLED && ctx.principal?.kind === 'key' && ctx.tenant ? this.policiesFor(ctx.tenant, ctx.principal.apiKey.id) : [];
    const policyHeader: Record<string, string> =
      policies.length > 0 ? { 'RateLimit-Policy': policies.map((policy) => `"${policy.name}";q=${policy.limit};w=${config.RATE_LIMIT_WINDOW_SECONDS}`).join(', ') } : {};
    if (policies.length + routeBudgets.length + reads.length === 0) return NOTHING_TAKEN();

    const taking = await this.take([...policies, ...routeBudgets], reads);
    if (!taking) {
      if (policies.length > 0) this.decisions.inc({ outcome: 'unavailable' });
      return { headers: policyHeader, taken: [], routeTaken: [], values: null };
    }
    const states = taking.states.slice(0, policies.length) as Array<BudgetState<Policy>>;
    const headers = policies.length > 0 ? { ...policyHeader, RateLimit: remainingField(states) } : policyHeader;
    // Refused, the counters are as found: the spent ones are those at their limit. A rate limit answers first.
    const spent = taking.admitted ? [] : states.filter(isSpent);
    if (spent.length > 0) {
      this.decisions.inc({ outcome: 'limited' });
      throw this.refusal(spent, headers);
    }
    if (policies.length > 0) this.decisions.inc({ outcome: 'allowed' });
    if (!taking.admitted) {
      const refused = (taking.states.slice(policies.length) as Array<BudgetState<RefusingBudget>>).find(isSpent)!;
      throw withHeaders(refused.budget.refusal(refused.used), headers);
    }
    return { headers, taken: states, routeTaken: routeBudgets, values: taking.values };
  }

  /**
   * Gives back what `admit` took, for a request another limit then refused
   * (a quota): a refused request spends no budget of any other limit.
   * Answers the `RateLimit` header as it stands after the return; a Redis
   * that cannot take it back leaves the units spent.
   */
  async giveBack(admission: Admission): Promise<Record<string, string>> {
    if (admission.taken.length === 0) return {};
    try {
      await withTimeout(giveBackBudgets(this.services.redis, admission.taken.map((state) => state.budget)), REDIS_DEADLINE_MS);
    } catch (error) {
      this.services.logger.debug({ err: error }, 'rate-limit units not given back: Redis did not answer');
      return {};
    }
    return { RateLimit: remainingField(admission.taken.map((state) => ({ ...state, used: state.used - 1 }))) };
  }

  /** The tier's limits, leaving out those set to 0 (no limit). */
  private policiesFor(tenant: Tenant, keyId: string): Policy[] {
    const { QUEUE_PREFIX, RATE_LIMIT_TENANT, RATE_LIMIT_KEY, RATE_LIMIT_WINDOW_SECONDS } = this.services.config;
    const windowMs = RATE_LIMIT_WINDOW_SECONDS * 1000;
    const keys = rateLimitKeys(QUEUE_PREFIX, tenant.id, keyId);
    const policies: Policy[] = [
      { name: 'tenant', limit: RATE_LIMIT_TENANT[tenant.tier], windowMs, key: keys.tenant },
      { name: 'key', limit: RATE_LIMIT_KEY[tenant.tier], windowMs, key: keys.key },
    ];
    return policies.filter((policy) => policy.limit > 0);
  }

  /**
   * Takes one unit from every budget or from none, or answers null when
   * Redis is away: known down, failing the command, or not answering in time.
   */
  private async take(budgets: Budget[], reads: Read[]) {
    if (!this.services.health.isUp('redis')) return null;
    try {
      return await this.budgets.take(budgets, reads);
    } catch (error) {
      this.services.logger.debug({ err: error }, 'rate limits and quotas not enforced: Redis did not answer');
      return null;
    }
  }

  /** 429 naming the spent budget that frees up last, so one wait is enough. */
  private refusal(spent: Array<BudgetState<Policy>>, headers: Record<string, string>): AppError {
    const { RATE_LIMIT_WINDOW_SECONDS } = this.services.config;
    const exhausted = [...spent].sort((a, b) => b.resetMs - a.resetMs)[0];
    const { name, limit } = exhausted.budget;
    const retryAfter = Math.max(1, wholeSeconds(exhausted.resetMs));
    return new AppError(
      429,
      'rate_limited',
      `This ${name === 'tenant' ? 'tenant' : 'API key'} may make ${limit} requests per ${RATE_LIMIT_WINDOW_SECONDS} seconds; retry in ${retryAfter} seconds.`,
      { policy: name, limit, window_seconds: RATE_LIMIT_WINDOW_SECONDS },
      { ...headers, 'Retry-After': String(retryAfter) },
    );
  }
}

/**
 * The counters of a key's request. They name the policy and subject, not
 * the limit, so every tier counts on the same counter; both carry the
 * tenant's hash tag, so on a cluster they share a slot, and one script, with
 * the tenant's quota and cache generation.
 */
export function rateLimitKeys(prefix: string, tenantId: string, keyId: string): Record<PolicyName, string> {
  return { tenant: `${prefix}:rate-limit:tenant:${hashTag(tenantId)}`, key: `${prefix}:rate-limit:key:${hashTag(tenantId)}:${keyId}` };
}

const isSpent = (state: BudgetState): boolean => state.budget.limit !== null && state.used >= state.budget.limit;

/** A refusal that carries the rate-limit headers too, so the client sees what it has left. */
function withHeaders(error: AppError, headers: Record<string, string>): AppError {
  Object.assign(error.headers, headers);
  return error;
}

/** The `RateLimit` field: what is left of each budget and when it is whole again. */
function remainingField(states: Array<BudgetState<Policy>>): string {
  return states.map(({ budget, used, resetMs }) => `"${budget.name}";r=${Math.max(0, budget.limit - used)};t=${wholeSeconds(resetMs)}`).join(', ');
}

function wholeSeconds(ms: number): number {
  return Math.max(0, Math.ceil(ms / 1000));
}

/** Registered once per registry: an app built twice on one services shares the counter. */
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
