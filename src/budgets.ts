import type { Redis } from 'ioredis';

/**
 * Fixed-window budgets counted in Redis, taken all or none: one script
 * checks every budget a request draws on and takes a unit from each only
 * when none is spent, so a refusal spends nothing anywhere. One round trip
 * whatever the number of budgets; the window of a budget starts with the
 * first unit taken from it.
 */
export interface Budget {
  /** The Redis key of its counter. */
  key: string;
  /** Units per window. */
  limit: number;
  windowMs: number;
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
}

/** KEYS: the counters; ARGV: limit and window (ms) of each. Answers admitted (1/0), then used and ms left per counter. */
const TAKE = `
local found = {}
local admitted = 1
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('GET', key) or '0')
  found[i] = used
  if used >= tonumber(ARGV[2 * i - 1]) then admitted = 0 end
end
local answer = { admitted }
for i, key in ipairs(KEYS) do
  local used = found[i]
  if admitted == 1 then
    used = redis.call('INCR', key)
    if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ARGV[2 * i]) end
  end
  table.insert(answer, used)
  table.insert(answer, redis.call('PTTL', key))
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
function commands(redis: Redis): BudgetCommands {
  if (!(TAKE_COMMAND in redis)) {
    redis.defineCommand(TAKE_COMMAND, { lua: TAKE });
    redis.defineCommand(GIVE_BACK_COMMAND, { lua: GIVE_BACK });
  }
  return redis as unknown as BudgetCommands;
}

/** Takes one unit from every budget, or from none when one of them is spent. Redis errors propagate. */
export async function takeBudgets<B extends Budget>(redis: Redis, budgets: B[]): Promise<Taking<B>> {
  const args = budgets.flatMap((budget) => [budget.limit, budget.windowMs]);
  const answer = (await commands(redis)[TAKE_COMMAND](budgets.length, ...budgets.map((budget) => budget.key), ...args)) as number[];
  return {
    admitted: answer[0] === 1,
    states: budgets.map((budget, i) => {
      const ttl = Number(answer[2 + 2 * i]);
      // A counter not yet created (refused before its first unit) has its whole window ahead.
      return { budget, used: Number(answer[1 + 2 * i]), resetMs: ttl >= 0 ? ttl : budget.windowMs };
    }),
  };
}

/** Gives back the unit a taking took from each budget, for a request that was then refused by something else. */
export async function giveBackBudgets(redis: Redis, budgets: Budget[]): Promise<void> {
  if (budgets.length === 0) return;
  await commands(redis)[GIVE_BACK_COMMAND](budgets.length, ...budgets.map((budget) => budget.key));
}
