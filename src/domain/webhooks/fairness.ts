import { bySlot, hashTag, type RedisClient } from '../../redis';

/**
 * Per-endpoint concurrency without polling, shared by every worker through
 * Redis. An endpoint has `limit` slots. A delivery runs only while it holds
 * one; a delivery that finds them all taken is *parked* — its job waits in
 * BullMQ's delayed set with a long backstop delay, its id in the endpoint's
 * parked list — and the delivery that frees a slot hands it to the
 * longest-parked one, whose job the caller then promotes. Nothing looks for
 * a free slot on a timer: a slot changes hands when an attempt ends, as in
 * BullMQ Pro's groups.
 *
 * Keys, per endpoint: `webhook-slots:{<endpoint>}` (sorted set: holder job
 * id → lease expiry, ms) and `webhook-parked:{<endpoint>}` (sorted set: job
 * id → when it was parked), one hash tag per endpoint so that the scripts,
 * which touch one endpoint's keys, run on a Redis Cluster too; and
 * `webhook-parked-endpoints` (set of endpoints that may have parked jobs),
 * which the sweeper walks. The scripts leave that set alone — on a cluster
 * it lives in another slot — so the invariant "an endpoint with parked jobs
 * is in the set" is kept around them: whoever parks adds the endpoint after
 * its script, and only the sweeper takes one out, then looks again and puts
 * it back if a job was parked meanwhile.
 *
 * Leases bound every slot: a holder that dies (a killed worker, a lost
 * promotion) frees its slot when the lease runs out, and the next grant —
 * any acquire or release at that endpoint, or the sweeper — hands it on.
 * A job given a slot whose promotion was lost is still delayed by the
 * backstop; the sweeper promotes it when its lease lapses, and it asks for a
 * slot again.
 */

/*
 * Holders are job ids. A parked entry is `<job id>:<delivery id>` (a BullMQ
 * job id cannot contain ':'), so whoever hands a slot on knows which
 * delivery it woke and can read it ahead.
 */

/** Drops expired holders, then gives free slots to the longest-parked jobs; returns the parked entries woken. */
const GRANT = `
local function grant(holders, parked, now, limit, lease, holdTtl)
  local woken = {}
  local free = limit - redis.call('ZCARD', holders)
  if free > 0 then
    local popped = redis.call('ZPOPMIN', parked, free)
    for i = 1, #popped, 2 do
      redis.call('ZADD', holders, now + lease, string.match(popped[i], '^[^:]+'))
      woken[#woken + 1] = popped[i]
    end
    if #woken > 0 then redis.call('PEXPIRE', holders, holdTtl) end
  end
  return woken
end
`;

/**
 * Admission of new deliveries, before their jobs are added: a slot for each
 * while the endpoint has free ones and nobody is parked, otherwise parked in
 * arrival order. KEYS: holders and parked of each endpoint. ARGV: now,
 * limit, wait lease, holders' ttl, parked ttl, then per endpoint the number
 * of deliveries and, for each, its job id and delivery id. Returns 1 (runs
 * now) or 0 (parked) per delivery, in order.
 */
const ADMIT = `
local now, limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local holdTtl, parkTtl = ARGV[4], ARGV[5]
local answer = {}
local a = 6
for k = 1, #KEYS, 2 do
  local holders, parked = KEYS[k], KEYS[k + 1]
  local n = tonumber(ARGV[a])
  a = a + 1
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  for i = 1, n do
    local id, entry = ARGV[a], ARGV[a] .. ':' .. ARGV[a + 1]
    a = a + 2
    if redis.call('ZSCORE', holders, id) then
      answer[#answer + 1] = 1
    elseif redis.call('ZSCORE', parked, entry) then
      answer[#answer + 1] = 0
    elseif redis.call('ZCARD', holders) < limit and redis.call('EXISTS', parked) == 0 then
      redis.call('ZADD', holders, now + lease, id)
      redis.call('PEXPIRE', holders, holdTtl)
      answer[#answer + 1] = 1
    else
      -- A thousandth of a millisecond apart: the order of this call is kept among entries parked in the same millisecond.
      redis.call('ZADD', parked, now + i / 1000, entry)
      redis.call('PEXPIRE', parked, parkTtl)
      answer[#answer + 1] = 0
    end
  end
end
return answer`;

/**
 * A delivery about to send: it keeps (or takes) a slot, or it is parked —
 * keeping its place if it was parked before. Free slots left over are
 * handed to parked jobs. KEYS: holders, parked. ARGV: now, limit, run
 * lease, wait lease, holders' ttl, parked ttl, job id, delivery id.
 * Returns {1 held | 0 parked, parked entries woken...}.
 */
const ACQUIRE = `${GRANT}
local holders, parked = KEYS[1], KEYS[2]
local now, limit, runLease, waitLease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local holdTtl, parkTtl, id = ARGV[5], ARGV[6], ARGV[7]
local entry = id .. ':' .. ARGV[8]
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
local held = 0
if redis.call('ZSCORE', holders, id) or redis.call('ZCARD', holders) < limit then
  redis.call('ZADD', holders, now + runLease, id)
  redis.call('PEXPIRE', holders, holdTtl)
  redis.call('ZREM', parked, entry)
  held = 1
else
  if redis.call('ZADD', parked, 'NX', now, entry) == 1 then redis.call('PEXPIRE', parked, parkTtl) end
end
local answer = grant(holders, parked, now, limit, waitLease, holdTtl)
table.insert(answer, 1, held)
return answer`;

/**
 * A delivery's attempt is over (or it never needed its slot): its slot, and
 * its place among the parked if it has one, are given up, and the slot goes
 * to the longest-parked job. With an empty job id it only hands on slots
 * whose leases ran out (the sweeper). KEYS: holders, parked. ARGV: now,
 * limit, wait lease, holders' ttl, job id, delivery id. Returns {1 while
 * jobs are parked or slots held | 0, the number of holders whose leases ran
 * out, their job ids..., parked entries woken...}.
 */
const RELEASE = `${GRANT}
local now, limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[5] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[5])
  redis.call('ZREM', KEYS[2], ARGV[5] .. ':' .. ARGV[6])
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local answer = grant(KEYS[1], KEYS[2], now, limit, lease, ARGV[4])
local watched = (redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 1) and 1 or 0
for i = #expired, 1, -1 do table.insert(answer, 1, expired[i]) end
table.insert(answer, 1, #expired)
table.insert(answer, 1, watched)
return answer`;

const COMMANDS = { admit: 'ragworksSlotsAdmit', acquire: 'ragworksSlotsAcquire', release: 'ragworksSlotsRelease' } as const;
type ScriptCommand = (numberOfKeys: number, ...keysThenArgs: Array<string | number>) => Promise<unknown>;
type SlotCommands = Record<(typeof COMMANDS)[keyof typeof COMMANDS], ScriptCommand>;

/** The scripts as commands of this connection: ioredis sends EVALSHA, and the script only when Redis does not know it yet. */
function commands(redis: RedisClient): SlotCommands {
  if (!(COMMANDS.admit in redis)) {
    redis.defineCommand(COMMANDS.admit, { lua: ADMIT });
    redis.defineCommand(COMMANDS.acquire, { lua: ACQUIRE });
    redis.defineCommand(COMMANDS.release, { lua: RELEASE });
  }
  return redis as unknown as SlotCommands;
}

export interface SlotTimings {
  /** How long a slot is held by a delivery that is sending: past it, the holder is taken for dead. */
  runLeaseMs: number;
  /** How long a slot is kept for a delivery that was given it but has not started yet. */
  waitLeaseMs: number;
  /** How long a parked job waits at most before it looks again by itself; only a backstop. */
  parkBackstopMs: number;
}

/** A delivery as the slots know it: its endpoint, its job and itself. */
export interface SlotClaim {
  endpointId: string;
  jobId: string;
  deliveryId: string;
}

/** A parked delivery given a slot: its job is to be promoted. */
export interface Woken {
  jobId: string;
  deliveryId: string;
}

const woken = (entries: readonly string[]): Woken[] =>
  entries.map((entry) => {
    const split = entry.indexOf(':');
    return { jobId: entry.slice(0, split), deliveryId: entry.slice(split + 1) };
  });

export class EndpointSlots {
  private readonly scripts: SlotCommands;

  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly limit: number,
    readonly timings: SlotTimings,
  ) {
    this.scripts = commands(redis);
  }

  private holdersKey(endpointId: string): string {
    return `${this.prefix}:webhook-slots:${hashTag(endpointId)}`;
  }

  private parkedKey(endpointId: string): string {
    return `${this.prefix}:webhook-parked:${hashTag(endpointId)}`;
  }

  private get registryKey(): string {
    return `${this.prefix}:webhook-parked-endpoints`;
  }

  private get holdTtl(): number {
    return 2 * Math.max(this.timings.runLeaseMs, this.timings.waitLeaseMs);
  }

  private get parkTtl(): number {
    return 2 * this.timings.parkBackstopMs;
  }

  /**
   * Decides for new deliveries, in one round trip, which run now (a slot is
   * kept for them) and which are parked. Returns the claims in each group,
   * in the order given.
   */
  async admit(claims: readonly SlotClaim[]): Promise<{ admitted: SlotClaim[]; parked: SlotClaim[] }> {
    if (claims.length === 0) return { admitted: [], parked: [] };
    const byEndpoint = new Map<string, SlotClaim[]>();
    for (const claim of claims) {
      const group = byEndpoint.get(claim.endpointId);
      if (group) group.push(claim);
      else byEndpoint.set(claim.endpointId, [claim]);
    }
    const now = Date.now();
    // One script on a single server; on a cluster, one per slot of endpoints.
    const answers = await Promise.all(
      bySlot(this.redis, [...byEndpoint], ([endpointId]) => this.holdersKey(endpointId)).map(async (endpoints) => {
        const keys = endpoints.flatMap(([endpointId]) => [this.holdersKey(endpointId), this.parkedKey(endpointId)]);
        const args = endpoints.flatMap(([, group]) => [group.length, ...group.flatMap((claim) => [claim.jobId, claim.deliveryId])]);
        const answer = (await this.scripts[COMMANDS.admit](keys.length, ...keys, now, this.limit, this.timings.waitLeaseMs, this.holdTtl, this.parkTtl, ...args)) as number[];
        return endpoints.flatMap(([, group]) => group).map((claim, index) => ({ claim, runs: answer[index] === 1 }));
      }),
    );
    const admitted = answers.flat().filter((each) => each.runs).map((each) => each.claim);
    const parked = answers.flat().filter((each) => !each.runs).map((each) => each.claim);
    await this.noteParked(new Set(parked.map((claim) => claim.endpointId)));
    return { admitted, parked };
  }

  /** After a script parked jobs: their endpoints join the set the sweeper walks (see above). */
  private async noteParked(endpointIds: ReadonlySet<string>): Promise<void> {
    if (endpointIds.size > 0) await this.redis.sadd(this.registryKey, ...endpointIds);
  }

  /**
   * For a delivery about to send: `held` when it has a slot (for the run
   * lease), otherwise it has been parked. `woken`: parked deliveries given
   * a slot that was free, for the caller to promote.
   */
  async acquire(claim: SlotClaim): Promise<{ held: boolean; woken: Woken[] }> {
    const { runLeaseMs, waitLeaseMs } = this.timings;
    const keys = [this.holdersKey(claim.endpointId), this.parkedKey(claim.endpointId)];
    const [held, ...entries] = (await this.scripts[COMMANDS.acquire](
      keys.length,
      ...keys,
      Date.now(),
      this.limit,
      runLeaseMs,
      waitLeaseMs,
      this.holdTtl,
      this.parkTtl,
      claim.jobId,
      claim.deliveryId,
    )) as [number, ...string[]];
    if (held !== 1) await this.noteParked(new Set([claim.endpointId]));
    return { held: held === 1, woken: woken(entries) };
  }

  /** Frees the delivery's slot and its place among the parked, if it has them; returns the parked deliveries given a slot, for the caller to promote. */
  async release(claim: SlotClaim): Promise<Woken[]> {
    return woken((await this.releaseAt(claim.endpointId, claim.jobId, claim.deliveryId)).entries);
  }

  private async releaseAt(endpointId: string, jobId: string, deliveryId: string): Promise<{ watched: boolean; lapsed: string[]; entries: string[] }> {
    const keys = [this.holdersKey(endpointId), this.parkedKey(endpointId)];
    const [watched, lapsedCount, ...rest] = (await this.scripts[COMMANDS.release](
      keys.length,
      ...keys,
      Date.now(),
      this.limit,
      this.timings.waitLeaseMs,
      this.holdTtl,
      jobId,
      deliveryId,
    )) as [number, number, ...string[]];
    return { watched: watched === 1, lapsed: rest.slice(0, lapsedCount), entries: rest.slice(lapsedCount) };
  }

  /** Which of these parked jobs have been given a slot meanwhile (to promote them when their wake-up may have missed them). */
  async granted(claims: readonly SlotClaim[]): Promise<SlotClaim[]> {
    if (claims.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const claim of claims) pipeline.zscore(this.holdersKey(claim.endpointId), claim.jobId);
    const results = (await pipeline.exec()) ?? [];
    return claims.filter((_, index) => {
      const [error, score] = results[index] ?? [null, null];
      if (error) throw error;
      return score !== null;
    });
  }

  /**
   * Hands on the slots whose holders' leases ran out, at every endpoint with
   * parked jobs or held slots: for wake-ups that were lost. Returns the jobs
   * to promote: those given a slot now, and those whose lease ran out — a
   * job given a slot whose promotion was lost (its waker was killed between
   * the two) is still delayed by the park backstop, and promoting it now
   * makes it ask again; promoting a holder that is running or gone is a
   * no-op.
   */
  async sweep(): Promise<Array<{ endpointId: string; woken: Woken[]; lapsed: string[] }>> {
    const endpoints = await this.redis.smembers(this.registryKey);
    const swept = await Promise.all(
      endpoints.map(async (endpointId) => {
        const { watched, lapsed, entries } = await this.releaseAt(endpointId, '', '');
        if (!watched) await this.forgetUnlessWatched(endpointId);
        return { endpointId, woken: woken(entries), lapsed };
      }),
    );
    return swept.filter((entry) => entry.woken.length > 0 || entry.lapsed.length > 0);
  }

  /**
   * Takes an endpoint without parked jobs or held slots out of the
   * sweeper's set, then looks again: a job parked meanwhile, whose endpoint
   * was added before the removal, puts it back. (One parked after the look
   * adds it itself.)
   */
  private async forgetUnlessWatched(endpointId: string): Promise<void> {
    await this.redis.srem(this.registryKey, endpointId);
    if ((await this.redis.exists(this.parkedKey(endpointId))) === 1) await this.redis.sadd(this.registryKey, endpointId);
  }

  /** The jobs holding a slot at the endpoint now and those parked, in order: for tests and operators. */
  async state(endpointId: string): Promise<{ holders: string[]; parked: string[] }> {
    const [holders, parked] = await Promise.all([
      this.redis.zrangebyscore(this.holdersKey(endpointId), String(Date.now()), '+inf'),
      this.redis.zrange(this.parkedKey(endpointId), '0', '-1'),
    ]);
    return { holders, parked: woken(parked).map((entry) => entry.jobId) };
  }
}

/** How long a slot given to a delivery that has not started yet is kept for it. */
const WAIT_LEASE_MS = 30_000;
/** How long a parked delivery waits at most; wake-ups and the sweeper make it the exception. */
const PARK_BACKSTOP_MS = 5 * 60_000;

/**
 * The leases for a given WEBHOOK_TIMEOUT_MS: a sending delivery's outlasts
 * its deadline, and a slot given to a delivery outlasts that by ten seconds,
 * so one that starts within them holds it for a whole attempt without
 * asking again.
 */
export function slotTimings(timeoutMs: number): SlotTimings {
  const runLeaseMs = timeoutMs + 5_000;
  return { runLeaseMs, waitLeaseMs: Math.max(WAIT_LEASE_MS, runLeaseMs + 10_000), parkBackstopMs: PARK_BACKSTOP_MS };
}
