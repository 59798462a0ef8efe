import { bySlot, type RedisClient } from './redis';
import type { AppError } from './errors';

/**
 * Fixed-window budgets counted in Redis, taken all or none: one script
 * checks every budget a request draws on and takes a unit from each only
 * when none is spent, so a refusal spends nothing anywhere. One round trip
 * whatever the number of budgets, and the same script reads the values the
 * request needs beside them (the tenant's cache generation); the window of
 * a budget starts with the first unit taken from it. The takings of the
 * requests served in the same turn of the event loop travel together
 * (BudgetTaker): one write and one reply for all of them, each taken in
 * turn, all or none, as if alone.
 */
export interface Budget {
  /** The Redis key of its counter. */
  key: string;
  /** Units per window; null counts without limiting. */
  limit: number | null;
  /** How long the counter lives from its first unit. */
  windowMs: number;
}

/** A budget that says how a request it refuses is answered (a quota's 429). */
export interface RefusingBudget extends Budget {
  refusal(used: number): AppError;
}

/** A value read in the same script: `seed` is stored first when the key has none. */
export interface Read {
  key: string;
  seed: string;
}

export interface BudgetState<B extends Budget = Budget> {
  budget: B;
  /** Units used in the current window: after the taking when admitted, as found when refused. */
  used: number;
  /** Milliseconds until the window ends and the budget is whole again. */
  resetMs: number;
}

export interface Taking<B extends Budget = Budget> {
  admitted: boolean;
  states: Array<BudgetState<B>>;
  /** The values read, in the order asked. */
  values: string[];
}

/**
 * Several takings, one after the other. KEYS: each taking's counters, then
 * the keys it reads. ARGV: the number of takings; for each, its number of
 * counters and of reads, the limit ('' for none) and window (ms) of each
 * counter, the seed of each key read. Answers, for each taking, admitted
 * (1/0), used and ms left per counter, then the values read.
 */
const TAKE = `
local answer = {}
local key = 1
local arg = 2
for _ = 1, tonumber(ARGV[1]) do
  local counters, reads = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1])
  arg = arg + 2
  local found = {}
  local admitted = 1
  for i = 0, counters - 1 do
    local used = tonumber(redis.call('GET', KEYS[key + i]) or '0')
    found[i] = used
    local limit = tonumber(ARGV[arg + 2 * i])
    if limit and used >= limit then admitted = 0 end
  end
  table.insert(answer, admitted)
  for i = 0, counters - 1 do
    local counter = KEYS[key + i]
    local used = found[i]
    if admitted == 1 then
      used = redis.call('INCR', counter)
      if redis.call('PTTL', counter) < 0 then redis.call('PEXPIRE', counter, ARGV[arg + 2 * i + 1]) end
    end
    table.insert(answer, used)
    table.insert(answer, redis.call('PTTL', counter))
  end
  key = key + counters
  arg = arg + 2 * counters
  for i = 0, reads - 1 do
    local value = redis.call('GET', KEYS[key + i])
    if not value then
      value = ARGV[arg + i]
      redis.call('SET', KEYS[key + i], value)
    end
    table.insert(answer, value)
  end
  key = key + reads
  arg = arg + reads
end
return answer`;

/** Returns one unit to each counter still in its window; never below zero, never a counter without expiry. */
const GIVE_BACK = `
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 0`;

const TAKE_COMMAND = 'ragworksTakeBudgets';
const GIVE_BACK_COMMAND = 'ragworksGiveBackBudgets';

type ScriptCommand = (numberOfKeys: number, ...keysThenArgs: Array<string | number>) => Promise<unknown>;
type BudgetCommands = Record<typeof TAKE_COMMAND | typeof GIVE_BACK_COMMAND, ScriptCommand>;

/** The scripts as commands of this connection: ioredis sends EVALSHA and the script itself only when Redis does not know it yet. */
function commands(redis: RedisClient): BudgetCommands {
  if (!(TAKE_COMMAND in redis)) {
    redis.defineCommand(TAKE_COMMAND, { lua: TAKE });
    redis.defineCommand(GIVE_BACK_COMMAND, { lua: GIVE_BACK });
  }
  return redis as unknown as BudgetCommands;
}

/** Takes one unit from every budget, or from none when one of them is spent, and reads `reads`. Redis errors propagate. */
export async function takeBudgets<B extends Budget>(redis: RedisClient, budgets: B[], reads: Read[] = []): Promise<Taking<B>> {
  const [taking] = await takeInTurn(redis, [{ budgets, reads }]);
  return taking as Taking<B>;
}

interface Asked {
  budgets: Budget[];
  reads: Read[];
}

/**
 * Several takings, each in turn as if alone: in one script on a single
 * server; on a cluster, in one script per slot (a taking's keys share its
 * tenant's hash tag), sent together.
 */
async function takeInTurn(redis: RedisClient, takings: Asked[]): Promise<Taking[]> {
  if (!redis.isCluster) return takeInOneScript(redis, takings);
  const groups = bySlot(redis, takings, (asked) => asked.budgets[0]?.key ?? asked.reads[0]?.key ?? '');
  const answered = await Promise.all(groups.map((group) => takeInOneScript(redis, group)));
  const byAsked = new Map(groups.flatMap((group, i) => group.map((asked, j) => [asked, answered[i][j]] as const)));
  return takings.map((asked) => byAsked.get(asked)!);
}

async function takeInOneScript(redis: RedisClient, takings: Asked[]): Promise<Taking[]> {
  const keys: string[] = [];
  const args: Array<string | number> = [takings.length];
  for (const { budgets, reads } of takings) {
    keys.push(...budgets.map((budget) => budget.key), ...reads.map((read) => read.key));
    args.push(budgets.length, reads.length, ...budgets.flatMap((budget) => [budget.limit ?? '', budget.windowMs]), ...reads.map((read) => read.seed));
  }
  const answer = (await commands(redis)[TAKE_COMMAND](keys.length, ...keys, ...args)) as Array<number | string>;
  let at = 0;
  return takings.map(({ budgets, reads }) => {
    const taking: Taking = {
      admitted: answer[at] === 1,
      states: budgets.map((budget, i) => {
        const ttl = Number(answer[at + 2 + 2 * i]);
        // A counter not yet created (refused before its first unit) has its whole window ahead.
        return { budget, used: Number(answer[at + 1 + 2 * i]), resetMs: ttl >= 0 ? ttl : budget.windowMs };
      }),
      values: answer.slice(at + 1 + 2 * budgets.length, at + 1 + 2 * budgets.length + reads.length).map(String),
    };
    at += 1 + 2 * budgets.length + reads.length;
    return taking;
  });
}

/**
 * takeBudgets for requests: the takings asked for in one turn of the event
 * loop are sent together when it ends, as one script (one write and one
 * reply for all of them), and given up together when Redis has not answered
 * within the deadline.
 */
export class BudgetTaker {
  private pending: Array<Asked & { resolve(taking: Taking): void; reject(error: unknown): void }> = [];

  constructor(
    private readonly redis: RedisClient,
    private readonly deadlineMs: number,
  ) {}

  take<B extends Budget>(budgets: B[], reads: Read[] = []): Promise<Taking<B>> {
    return new Promise((resolve, reject) => {
      if (this.pending.length === 0) setImmediate(() => this.send());
      this.pending.push({ budgets, reads, resolve: resolve as (taking: Taking) => void, reject });
    });
  }

  private send(): void {
    const batch = this.pending;
    this.pending = [];
    const fail = (error: unknown) => batch.forEach(({ reject }) => reject(error));
    const timer = setTimeout(() => fail(new Error(`Redis did not answer within ${this.deadlineMs} ms`)), this.deadlineMs);
    takeInTurn(this.redis, batch)
      .then((takings) => takings.forEach((taking, i) => batch[i].resolve(taking)), fail)
      .finally(() => clearTimeout(timer));
  }
}

/** Gives back the unit a taking took from each budget, for a request that was then refused by something else. */
export async function giveBackBudgets(redis: RedisClient, budgets: Budget[]): Promise<void> {
  if (budgets.length === 0) return;
  await commands(redis)[GIVE_BACK_COMMAND](budgets.length, ...budgets.map((budget) => budget.key));
}
