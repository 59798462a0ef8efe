import { randomBytes } from 'node:crypto';
import { AppError, dependencyUnavailable } from '../../errors';
import type { Logger } from '../../logger';

/**
 * A tenant's write marks, kept in Redis beside its cache generation, say
 * what a search may trust: `<lsn> <token>:<deadline> …`.
 *
 * - `lsn`: where the primary's WAL ended after the tenant's last announced
 *   write, in bytes (`?`: not known — never recorded, lost with Redis's
 *   data, or covering a write that was never announced). A replica that
 *   has replayed this far shows every announced write of the tenant.
 * - each `token:deadline`: a write that has begun and is not announced yet;
 *   its commit may already be visible on the primary. While one is there,
 *   the tenant's searches use neither the cache nor the replica. Its lease
 *   ends at `deadline` (ms since the epoch): a writer that died between its
 *   commit and its announcement cannot hold the tenant off the cache for
 *   good; a lapsed write is settled (SETTLE below) by the next search.
 *
 * The order of one write (TenantWrites.around), and why no search is ever
 * older than it once it is visible:
 *   1. BEGIN adds the write's token. From here every search of the tenant
 *      goes to the primary without the cache.
 *   2. The transaction commits: the primary shows it; GET /api/documents
 *      says `indexed` or 404.
 *   3. The primary's WAL position is read (at or past the commit record).
 *   4. ANNOUNCE, in one script: bump the generation (entries computed before
 *      are unreachable), raise `lsn` to the position of 3 (never lower it:
 *      writes announce out of order) and remove the token.
 * A search reads the generation and the marks in the one script that also
 * takes its rate limits, so it sees either the token (primary, no cache) or
 * the new generation with an `lsn` at or past the commit (a replica that has
 * not replayed the commit is not used, and nothing cached before it is
 * reachable). Between 1 and 2 a search may also see the state before the
 * write, which is right: the write is not visible yet.
 */

/** The marks of a tenant with none in Redis: nothing is known, so the primary serves until a write or a settle records a position. */
export const UNKNOWN_WRITES = '?';

/**
 * How long a write may stay unannounced before searches stop waiting for it.
 * Longer than any write transaction of ours (each statement is bounded by
 * DATABASE_STATEMENT_TIMEOUT_MS, idleness by DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS,
 * both a minute by default, and a write has a handful of statements); short
 * enough that a writer that died costs its tenant the cache and the replica
 * for minutes, not for good.
 */
export const WRITE_LEASE_MS = 5 * 60_000;

/** Parses the marks (first word the lsn, then token:deadline words); shared by the scripts below. */
const PARSE = `
local function parse(value)
  local lsn, writes = nil, {}
  for word in string.gmatch(value, '%S+') do
    if lsn == nil then lsn = word
    else
      local token, deadline = string.match(word, '^(.+):(%d+)$')
      table.insert(writes, { token = token, deadline = tonumber(deadline), word = word })
    end
  end
  return lsn or '?', writes
end
-- The later of a recorded lsn and a new one ('' when none): an unknown one is superseded by any position
-- read after the writes it stands for have ended.
local function later(lsn, new)
  if new == '' then return lsn end
  if lsn == '?' or tonumber(new) > tonumber(lsn) then return new end
  return lsn
end
`;

/**
 * KEYS: the generation, the marks. ARGV: a generation seed, the token ('' for
 * none), the lsn ('' for none), now (ms), '1' to bump the generation ('': a
 * write that changed nothing only withdraws its token). Bumps the
 * generation, removes the token and records the lsn; a lapsed write met on
 * the way makes the lsn unknown unless this one records a later position.
 * Answers the generation.
 */
export const ANNOUNCE = `${PARSE}
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local generation = ARGV[5] == '1' and redis.call('INCR', KEYS[1]) or redis.call('GET', KEYS[1])
local lsn, writes = parse(redis.call('GET', KEYS[2]) or '?')
local kept = {}
for _, write in ipairs(writes) do
  if write.token ~= ARGV[2] then
    if write.deadline > tonumber(ARGV[4]) then table.insert(kept, write.word) else lsn = '?' end
  end
end
table.insert(kept, 1, later(lsn, ARGV[3]))
redis.call('SET', KEYS[2], table.concat(kept, ' '))
return generation`;

/**
 * KEYS: the generation, the marks. ARGV: a generation seed, the marks as a
 * search read them, the primary's lsn now ('' without a replica), now (ms).
 * When the marks are still as read: drops lapsed writes — bumping the
 * generation, since what they changed may be cached from before — and
 * records the lsn, which is past every commit of a write whose lease has
 * ended. Answers 1 when it settled, 0 when the marks had changed meanwhile
 * (the next search looks again).
 */
export const SETTLE = `${PARSE}
if (redis.call('GET', KEYS[2]) or '?') ~= ARGV[2] then return 0 end
local lsn, writes = parse(ARGV[2])
local kept, lapsed = {}, false
for _, write in ipairs(writes) do
  if write.deadline > tonumber(ARGV[4]) then table.insert(kept, write.word) else lapsed = true end
end
if lapsed then
  redis.call('SET', KEYS[1], ARGV[1], 'NX')
  redis.call('INCR', KEYS[1])
  if ARGV[3] == '' then lsn = '?' end
end
table.insert(kept, 1, later(lsn, ARGV[3]))
redis.call('SET', KEYS[2], table.concat(kept, ' '))
return 1`;

/** A tenant's write marks as a search reads them. */
export interface WriteMarks {
  /** The marks as read, for SETTLE's compare-and-set. */
  value: string;
  /** The primary's WAL position (bytes) after the tenant's last announced write; null: not known. */
  lsn: number | null;
  /** A write has begun and is not announced: its commit may be visible, and neither cache nor replica may have it. */
  inFlight: boolean;
  /** A write's lease ended unannounced: until settled, treated like one in flight. */
  lapsed: boolean;
}

export function readWriteMarks(value: string, now = Date.now()): WriteMarks {
  const [lsn = UNKNOWN_WRITES, ...writes] = value.split(' ').filter(Boolean);
  const deadlines = writes.map((write) => Number(write.slice(write.lastIndexOf(':') + 1)));
  return {
    value,
    lsn: lsn === UNKNOWN_WRITES ? null : Number(lsn),
    inFlight: deadlines.some((deadline) => deadline > now),
    lapsed: deadlines.some((deadline) => deadline <= now),
  };
}

/** A token for one write: random, without spaces or colons. */
export function newWriteToken(): string {
  return randomBytes(9).toString('base64url');
}

/** Brackets the transactions that change what a tenant's searches return (see the order above). */
export interface SearchVisibleWrites {
  /**
   * Runs `commit` (a transaction) between BEGIN and ANNOUNCE. When BEGIN
   * cannot be written the write is refused (503 from a route, a retry for a
   * job): committing it unmarked could let a search be served from before it.
   */
  around<T>(tenantId: string, commit: () => Promise<T>): Promise<T>;
}

/** Where the marks are kept and the writes announced: the search cache (search-cache.ts). */
export interface WriteMarkStore {
  beginWrite(tenantId: string): Promise<string>;
  invalidate(tenantId: string, write: { token: string; lsn: number | null; changed: boolean }): Promise<number>;
}

export class TenantWrites implements SearchVisibleWrites {
  constructor(
    private readonly cache: WriteMarkStore,
    /** The primary's WAL position now, when a replica reads for searches; null: none does. */
    private readonly primaryLsn: (() => Promise<number>) | null,
    private readonly logger: Logger,
  ) {}

  async around<T>(tenantId: string, commit: () => Promise<T>): Promise<T> {
    let token: string;
    try {
      token = await this.cache.beginWrite(tenantId);
    } catch (error) {
      this.logger.warn({ err: error, tenant_id: tenantId }, 'could not mark a write as begun; it is refused, nothing changed');
      throw dependencyUnavailable('Redis');
    }
    let result: T;
    try {
      result = await commit();
    } catch (error) {
      // A refusal of ours (404, 409, a quota) rolled the transaction back; anything else, such as a
      // connection lost during COMMIT, may have committed, and is announced like a success.
      await this.announce(tenantId, token, !(error instanceof AppError));
      throw error;
    }
    await this.announce(tenantId, token, true);
    return result;
  }

  /**
   * The change is committed either way: an announcement that fails leaves the
   * token, so the tenant's searches stay on the primary without the cache
   * until its lease ends and a search settles it.
   */
  private async announce(tenantId: string, token: string, changed: boolean): Promise<void> {
    try {
      const lsn = changed && this.primaryLsn ? await this.primaryLsn() : null;
      await this.cache.invalidate(tenantId, { token, lsn, changed });
    } catch (error) {
      this.logger.warn({ err: error, tenant_id: tenantId }, "could not announce a write; the tenant's searches use the primary without the cache until its lease ends");
    }
  }
}
