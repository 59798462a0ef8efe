import type { RedisClient } from '../src/redis';
import { queuePrefix } from './keys';

/**
 * Fair shares of a queue between tenants. BullMQ OSS has no groups, so this
 * uses what it has: its wait list (FIFO, served first) and its priorities
 * (served after, lowest first, FIFO among equals), used as virtual time
 * (start-time fair queuing).
 *
 * - Fast lane. A tenant with no backlog puts its first FAST_LANE jobs on the
 *   wait list (priority 0). A tenant posting one document, or a few, waits
 *   behind the few jobs each other tenant has there — never behind anyone's
 *   backlog. It keeps small batches exactly as plain BullMQ queues them.
 * - Turns. The rest gets priorities. The queue's virtual time V is the
 *   priority of the next prioritized job to start, less one (everything at
 *   or below it has started); with none waiting, the highest priority yet
 *   given. A tenant whose last prioritized job still waits continues its own
 *   sequence; otherwise it starts again at V + 1. So a tenant's n-th waiting
 *   job has about the priority of every other tenant's n-th: backlogs are
 *   served in turn, one job each, however long any of them is.
 *
 * Both are decided by one script per tenant and enqueue; nothing is kept per
 * job and nothing is done when a job finishes. A job that comes back —
 * retried after a failure, handed back at shutdown, recovered after a stall,
 * promoted after a suspension — keeps what it was given: the wait list, or a
 * priority at or below V, so it goes ahead of newer work, as it would have
 * had it not left.
 *
 * BullMQ refuses priorities over 2,097,151 (the score must stay exact in a
 * double). Virtual time never goes back on its own, so before a reservation
 * would pass REBASE_ABOVE the script shifts every priority down by V — the
 * waiting jobs' (rescored in place, order kept), the stored priority of the
 * delayed, active and failed jobs (for when they come back) and the
 * tenants' — one pass over those jobs, about once per million jobs served
 * by turns. A backlog wider than the limit itself (a tenant with two million
 * jobs waiting) is queued FIFO at the limit beyond it.
 */

/** Jobs a tenant without a backlog may put on the wait list, ahead of every backlog. */
export const FAST_LANE = 4;
/** BullMQ's highest priority. */
export const PRIORITY_LIMIT = 2_097_151;
/** A reservation past this first shifts every priority down (see above). */
export const REBASE_ABOVE = 1_048_576;

const RESERVE = `
local prioritized, tenants, lanes, delayed, active, failed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tenant, jobPrefix = ARGV[1], ARGV[2]
local fastLane, rebaseAbove, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local jobIds = {}
for i = 6, #ARGV do jobIds[#jobIds + 1] = ARGV[i] end
local SCORE_UNIT = 0x100000000

local function split(text)
  local words = {}
  for word in string.gmatch(text or '', '%S+') do words[#words + 1] = word end
  return words
end

-- The tenant's last prioritized job, when it still waits.
local function backlog()
  local entry = split(redis.call('HGET', tenants, tenant))
  if entry[2] and redis.call('ZSCORE', prioritized, entry[2]) then return tonumber(entry[1]) end
  return nil
end

local function virtualTime()
  local head = redis.call('ZRANGE', prioritized, 0, 0, 'WITHSCORES')
  if head[2] then return math.floor(tonumber(head[2]) / SCORE_UNIT) - 1 end
  return tonumber(redis.call('HGET', tenants, '') or '0')
end

local function shiftStored(ids, shift)
  for _, jobId in ipairs(ids) do
    local key = jobPrefix .. jobId
    local priority = tonumber(redis.call('HGET', key, 'priority') or '0')
    if priority > 0 then redis.call('HSET', key, 'priority', math.max(priority - shift, 1)) end
  end
end

local function rebase(shift)
  local waiting = redis.call('ZRANGE', prioritized, 0, -1, 'WITHSCORES')
  for i = 1, #waiting, 2 do
    local jobId, score = waiting[i], tonumber(waiting[i + 1])
    redis.call('ZADD', prioritized, score - shift * SCORE_UNIT, jobId)
    redis.call('HSET', jobPrefix .. jobId, 'priority', math.floor(score / SCORE_UNIT) - shift)
  end
  shiftStored(redis.call('ZRANGE', delayed, 0, -1), shift)
  shiftStored(redis.call('LRANGE', active, 0, -1), shift)
  shiftStored(redis.call('ZRANGE', failed, 0, -1), shift)
  local entries = redis.call('HGETALL', tenants)
  for i = 1, #entries, 2 do
    local name, entry = entries[i], split(entries[i + 1])
    local last = tonumber(entry[1]) - shift
    if name == '' then redis.call('HSET', tenants, '', math.max(last, 0))
    elseif last > 0 then redis.call('HSET', tenants, name, last .. ' ' .. entry[2])
    else redis.call('HDEL', tenants, name) end
  end
end

-- The fast lane: the tenant's jobs still on the wait list (not started, not gone).
local lane, inLane = {}, {}
for _, jobId in ipairs(split(redis.call('HGET', lanes, tenant))) do
  local key = jobPrefix .. jobId
  if redis.call('EXISTS', key) == 1 and redis.call('HEXISTS', key, 'processedOn') == 0 then
    lane[#lane + 1] = jobId
    inLane[jobId] = true
  end
end
local fast = 0
if not backlog() then
  for _, jobId in ipairs(jobIds) do
    if inLane[jobId] then fast = fast + 1
    elseif #lane < fastLane then
      lane[#lane + 1] = jobId
      inLane[jobId] = true
      fast = fast + 1
    else break end
  end
end
if #lane > 0 then redis.call('HSET', lanes, tenant, table.concat(lane, ' ')) else redis.call('HDEL', lanes, tenant) end
local count = #jobIds - fast
if count == 0 then return { fast, 0 } end

local v = virtualTime()
local start = math.max(backlog() or v, v)
if start + count > rebaseAbove and v > 0 then
  rebase(v)
  v = 0
  start = math.max(backlog() or 0, 0)
end
local last = math.min(start + count, limit)
redis.call('HSET', tenants, tenant, last .. ' ' .. jobIds[#jobIds])
if last > tonumber(redis.call('HGET', tenants, '') or '0') then redis.call('HSET', tenants, '', last) end
return { fast, start + 1 }
`;

interface FairnessCommands {
  ragworksTakeTurns(...args: Array<string | number>): Promise<[number, number]>;
}

/** Where a queue's jobs go, per tenant (see above). */
export class TenantFairness {
  /** The queue's BullMQ prefix: these keys share its hash tag, so the script may touch them with the queue's own. */
  private readonly prefix: string;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
    private readonly queueName: string,
  ) {
    this.prefix = queuePrefix(prefix, queueName);
    if (!('ragworksTakeTurns' in redis)) redis.defineCommand('ragworksTakeTurns', { numberOfKeys: 6, lua: RESERVE });
  }

  /** Per tenant: its last priority and job id; under '' the highest priority given. */
  get tenantsKey(): string {
    return `${this.prefix}:fairness:${this.queueName}:tenants`;
  }

  /** Per tenant: its jobs put on the wait list that may not have started yet. */
  get lanesKey(): string {
    return `${this.prefix}:fairness:${this.queueName}:lanes`;
  }

  /** The priority of each of `jobIds`, a tenant's new jobs in the order they should run: 0 for the wait list. */
  async priorities(tenantId: string, jobIds: readonly string[]): Promise<number[]> {
    if (jobIds.length === 0) return [];
    const queueKey = `${this.prefix}:${this.queueName}`;
    const [fast, first] = await (this.redis as unknown as FairnessCommands).ragworksTakeTurns(
      `${queueKey}:prioritized`,
      this.tenantsKey,
      this.lanesKey,
      `${queueKey}:delayed`,
      `${queueKey}:active`,
      `${queueKey}:failed`,
      tenantId,
      `${queueKey}:`,
      FAST_LANE,
      REBASE_ABOVE,
      PRIORITY_LIMIT,
      ...jobIds,
    );
    return jobIds.map((_, index) => (index < fast ? 0 : Math.min(first + index - fast, PRIORITY_LIMIT)));
  }
}
