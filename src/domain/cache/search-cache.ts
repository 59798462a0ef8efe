import { hash } from 'node:crypto';
import { hashTag, scanKeys, type RedisClient } from '../../redis';
import { LRUCache } from 'lru-cache';
import { withTimeout } from '../../async';
import type { Read } from '../../budgets';
import { CircuitBreaker } from './breaker';
import { ANNOUNCE, newWriteToken, SETTLE, UNKNOWN_WRITES, WRITE_LEASE_MS } from './write-marks';

export interface CacheSettings {
  enabled: boolean;
  l1MaxItems: number;
  ttlSeconds: number;
  /** How long a cache call may wait on Redis before the in-process tier answers alone. */
  redisTimeoutMs: number;
}

export type Tier = 'l1' | 'l2';

interface TierStats {
  hits: number;
  misses: number;
  sets: number;
  evictions: number;
}

export interface CacheStats {
  enabled: boolean;
  breaker: { state: string; opened: number };
  l1: TierStats & { hit_ratio: number | null; size: number; max: number };
  l2: TierStats & { hit_ratio: number | null };
  overall_hit_ratio: number | null;
  single_flight_joins: number;
}

/** Counters the metrics exporter mirrors. */
export interface CacheObserver {
  onEvent(tier: Tier, event: keyof TierStats): void;
}

/**
 * How long an invalidation may wait on Redis. More than a read gets — a lost
 * bump leaves entries to their TTL — but bounded: a hung Redis must not hold
 * the request that changed the index (it is committed already).
 */
const INVALIDATION_TIMEOUT_MS = 1_000;

const ANNOUNCE_COMMAND = 'ragworksAnnounceWrite';
const SETTLE_COMMAND = 'ragworksSettleWrites';
type WriteScripts = Record<typeof ANNOUNCE_COMMAND | typeof SETTLE_COMMAND, (numberOfKeys: number, ...keysThenArgs: Array<string | number>) => Promise<number>>;

const ratio = (stats: TierStats) => (stats.hits + stats.misses > 0 ? stats.hits / (stats.hits + stats.misses) : null);

/**
 * Two tiers — an in-process LRU and Redis — for search results and query
 * embeddings. Every key carries the tenant and the tenant's index
 * generation; bumping the generation (one INCR) makes every older entry
 * unreachable in every process at once, because each request reads the
 * current generation from Redis: in the script that takes its rate limits
 * (`generationRead`), or here. While Redis misbehaves a circuit breaker
 * skips it, and the in-process tier answers with the last generation seen.
 */
export class SearchCache {
  private readonly l1: LRUCache<string, { value: unknown }>;
  private readonly breaker: CircuitBreaker;
  private readonly knownGenerations = new LRUCache<string, number>({ max: 100_000 });
  private readonly inFlight = new Map<string, Promise<unknown>>();
  /** Tenants whose index changed while their generation could not be bumped. */
  private readonly missedInvalidations = new Set<string>();
  /** Tenants whose write marks this process is settling. */
  private readonly settling = new Set<string>();
  private readonly tierStats: Record<Tier, TierStats> = {
    l1: { hits: 0, misses: 0, sets: 0, evictions: 0 },
    l2: { hits: 0, misses: 0, sets: 0, evictions: 0 },
  };
  private singleFlightJoins = 0;

  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly settings: CacheSettings,
    private readonly observer?: CacheObserver,
  ) {
    this.l1 = new LRUCache({
      max: settings.l1MaxItems,
      ttl: settings.ttlSeconds * 1000,
      dispose: (_value, _key, reason) => {
        if (reason === 'evict') this.count('l1', 'evictions');
      },
    });
    this.breaker = new CircuitBreaker(3, 5_000, settings.redisTimeoutMs);
  }

  private count(tier: Tier, event: keyof TierStats): void {
    this.tierStats[tier][event] += 1;
    this.observer?.onEvent(tier, event);
  }

  private generationKey(tenantId: string): string {
    return `${this.prefix}:cache:generation:${hashTag(tenantId)}`;
  }

  /** The tenant's write marks (write-marks.ts), in the generation's slot: the scripts that announce a write touch both. */
  private writesKey(tenantId: string): string {
    return `${this.prefix}:cache:writes:${hashTag(tenantId)}`;
  }

  private static hash(request: unknown): string {
    return hash('sha256', JSON.stringify(request), 'base64url');
  }

  /**
   * A tenant's first generation: time-based rather than 0. A generation key
   * lost with Redis's data (a restart without persistence, an eviction) starts
   * again far above the values it held, so entries cached under those values —
   * in Redis or in any process's memory — never become reachable again.
   */
  private static seedGeneration(): string {
    // Math.random, not crypto: nothing is secret here, and each search asks for a seed.
    return String(Date.now() * 1000 + Math.floor(Math.random() * 1000));
  }

  /** The read of a tenant's generation, for a script that reads it beside other work: the key, seeded when missing. */
  generationRead(tenantId: string): Read {
    return { key: this.generationKey(tenantId), seed: SearchCache.seedGeneration() };
  }

  /** The read of a tenant's write marks, read beside its generation (see write-marks.ts): unknown when missing. */
  writesRead(tenantId: string): Read {
    return { key: this.writesKey(tenantId), seed: UNKNOWN_WRITES };
  }

  /** The tenant's current generation, or the last one seen while Redis is away; null when neither is known. */
  async generation(tenantId: string): Promise<number | null> {
    const key = this.generationKey(tenantId);
    const current = await this.breaker.run(async () => {
      const value = await this.redis.get(key);
      if (value !== null) return value;
      await this.redis.set(key, SearchCache.seedGeneration(), 'NX');
      return this.redis.get(key);
    });
    return this.remember(tenantId, current);
  }

  /** A generation read by the caller (see generationRead), or null when Redis did not answer it: counted like a call of ours. */
  private generationFrom(tenantId: string, read: string | null): number | null {
    if (read === null) this.breaker.failed();
    else this.breaker.succeeded();
    return this.remember(tenantId, read);
  }

  private remember(tenantId: string, current: string | null | undefined): number | null {
    if (current !== undefined && current !== null) {
      const generation = Number(current);
      this.knownGenerations.set(tenantId, generation);
      return generation;
    }
    return this.knownGenerations.get(tenantId) ?? null;
  }

  /**
   * Returns the cached value for this tenant and request, or computes it —
   * once per process however many identical requests arrive together — and
   * stores it in both tiers. `generationRead` is the tenant's generation as
   * the caller read it (null: Redis did not answer); without it the
   * generation is read here.
   */
  async getOrCompute<T>(
    tenantId: string,
    namespace: string,
    request: unknown,
    compute: () => Promise<T>,
    generationRead?: string | null,
  ): Promise<{ value: T; cached: boolean }> {
    if (!this.settings.enabled) return { value: await compute(), cached: false };
    // An index change whose bump was lost: retry it; until it lands, nothing cached for the tenant is trusted.
    if (this.missedInvalidations.has(tenantId) && !(await this.invalidate(tenantId).then(() => true, () => false))) {
      return { value: await compute(), cached: false };
    }
    const generation = generationRead === undefined ? await this.generation(tenantId) : this.generationFrom(tenantId, generationRead);
    if (generation === null) return { value: await compute(), cached: false };
    const key = `${this.prefix}:cache:${namespace}:${hashTag(tenantId)}:g${generation}:${SearchCache.hash(request)}`;
    return this.lookup(key, compute);
  }

  /** Like getOrCompute for values that do not depend on the index (query embeddings): no generation in the key. */
  async getOrComputeStable<T>(tenantId: string, namespace: string, request: unknown, compute: () => Promise<T>): Promise<{ value: T; cached: boolean }> {
    if (!this.settings.enabled) return { value: await compute(), cached: false };
    return this.lookup(`${this.prefix}:cache:${namespace}:${hashTag(tenantId)}:${SearchCache.hash(request)}`, compute);
  }

  private async lookup<T>(key: string, compute: () => Promise<T>): Promise<{ value: T; cached: boolean }> {
    const local = this.l1.get(key);
    if (local) {
      this.count('l1', 'hits');
      return { value: local.value as T, cached: true };
    }
    this.count('l1', 'misses');
    const shared = await this.breaker.run(() => this.redis.get(key));
    if (shared !== undefined) {
      if (shared !== null) {
        this.count('l2', 'hits');
        const value = JSON.parse(shared) as T;
        this.l1.set(key, { value });
        this.count('l1', 'sets');
        return { value, cached: true };
      }
      this.count('l2', 'misses');
    }
    const pending = this.inFlight.get(key);
    if (pending) {
      this.singleFlightJoins += 1;
      return { value: (await pending) as T, cached: true };
    }
    const computation = compute();
    this.inFlight.set(key, computation);
    try {
      const value = await computation;
      this.l1.set(key, { value });
      this.count('l1', 'sets');
      void this.breaker.run(() => this.redis.set(key, JSON.stringify(value), 'EX', this.settings.ttlSeconds)).then((stored) => {
        if (stored !== undefined) this.count('l2', 'sets');
      });
      return { value, cached: false };
    } finally {
      this.inFlight.delete(key);
    }
  }

  /**
   * Makes every cached result of the tenant unreachable, in every process.
   * For a write bracketed by beginWrite (write-marks.ts), in the same script:
   * withdraws its token and records the primary's WAL position after it
   * (`lsn`); a write that `changed` nothing only withdraws its token.
   */
  async invalidate(tenantId: string, write: { token: string; lsn: number | null; changed: boolean } = { token: '', lsn: null, changed: true }): Promise<number> {
    try {
      const generation = await this.announce(tenantId, write);
      if (write.changed) this.missedInvalidations.delete(tenantId);
      return generation;
    } catch (error) {
      // Remembered: this tenant skips the cache here until a later bump gets through.
      if (write.changed) this.missedInvalidations.add(tenantId);
      throw error;
    }
  }

  private async announce(tenantId: string, write: { token: string; lsn: number | null; changed: boolean }): Promise<number> {
    // A missing generation is seeded first: INCR alone would restart it at 1.
    const generation = await this.withinInvalidationTimeout(
      this.scripts()[ANNOUNCE_COMMAND](2, this.generationKey(tenantId), this.writesKey(tenantId), SearchCache.seedGeneration(), write.token, write.lsn ?? '', Date.now(), write.changed ? '1' : ''),
      'the cache invalidation',
    );
    this.knownGenerations.set(tenantId, Number(generation));
    return Number(generation);
  }

  /**
   * Marks a write of the tenant as begun (write-marks.ts): until it is
   * announced (invalidate with the token answered here) or its lease ends,
   * the tenant's searches use neither the cache nor the replica. Throws when
   * Redis does not take it.
   */
  async beginWrite(tenantId: string): Promise<string> {
    const token = newWriteToken();
    const key = this.writesKey(tenantId);
    const replies = await this.withinInvalidationTimeout(
      this.redis.multi().set(key, UNKNOWN_WRITES, 'NX').append(key, ` ${token}:${Date.now() + WRITE_LEASE_MS}`).exec(),
      'the start of a write',
    );
    const error = replies?.find(([failed]) => failed)?.[0] ?? (replies ? null : new Error('the start of a write was discarded'));
    if (error) throw error;
    return token;
  }

  /**
   * Settles marks a search found unknown or holding a lapsed write, if they
   * are still as it read them (SETTLE in write-marks.ts); `lsn` is the
   * primary's WAL position read after those marks were. One at a time per
   * tenant in this process; failures are left to the next search.
   */
  settleWrites(tenantId: string, marks: string, lsn: () => Promise<number | null>): void {
    if (this.settling.has(tenantId)) return;
    this.settling.add(tenantId);
    void lsn()
      .then((position) =>
        this.withinInvalidationTimeout(
          this.scripts()[SETTLE_COMMAND](2, this.generationKey(tenantId), this.writesKey(tenantId), SearchCache.seedGeneration(), marks, position ?? '', Date.now()),
          'settling write marks',
        ),
      )
      .catch(() => undefined)
      .finally(() => this.settling.delete(tenantId));
  }

  /** A bounded wait: more than a read gets, but a hung Redis must not hold a write that is committed already. */
  private withinInvalidationTimeout<T>(work: Promise<T>, what: string): Promise<T> {
    const timeoutMs = Math.max(this.settings.redisTimeoutMs, INVALIDATION_TIMEOUT_MS);
    return withTimeout(work, timeoutMs, `Redis did not confirm ${what} within ${timeoutMs} ms`);
  }

  private scripts(): WriteScripts {
    if (!(ANNOUNCE_COMMAND in this.redis)) {
      this.redis.defineCommand(ANNOUNCE_COMMAND, { lua: ANNOUNCE });
      this.redis.defineCommand(SETTLE_COMMAND, { lua: SETTLE });
    }
    return this.redis as unknown as WriteScripts;
  }

  /** Every tenant at once: SCAN for generation keys (never KEYS; on every master of a cluster), bump each, and drop this process's tier. */
  async invalidateAll(): Promise<number> {
    let tenants = 0;
    await scanKeys(this.redis, `${this.prefix}:cache:generation:*`, async (keys) => {
      for (const key of keys) {
        await this.redis.incr(key);
        tenants += 1;
      }
    });
    this.l1.clear();
    this.knownGenerations.clear();
    return tenants;
  }

  stats(): CacheStats {
    const { l1, l2 } = this.tierStats;
    const hits = l1.hits + l2.hits;
    // Every request misses L1 before it tries L2, so L1's lookups are all of them.
    const lookups = l1.hits + l1.misses;
    return {
      enabled: this.settings.enabled,
      breaker: { state: this.breaker.state, opened: this.breaker.opened },
      l1: { ...l1, hit_ratio: ratio(l1), size: this.l1.size, max: this.settings.l1MaxItems },
      l2: { ...l2, hit_ratio: ratio(l2) },
      overall_hit_ratio: lookups > 0 ? hits / lookups : null,
      single_flight_joins: this.singleFlightJoins,
    };
  }
}
