import type { Knex } from 'knex';
import { withTimeout } from '../async';
import { AppError } from '../errors';
import type { Logger } from '../logger';

export type ReadTarget = 'replica' | 'primary';

/** The reads that may go to the replica: searches (never stale), analytics reports (lag allowed by contract). */
export type ReplicaRead = 'search' | 'analytics';

/** What the replica last said about itself. */
interface ReplicaState {
  /** Bytes of WAL replayed (pg_last_wal_replay_lsn() − '0/0'); null: not a standby. */
  replayed: number | null;
  /** Replay has caught up with what was received, or replayed a transaction of the last REPORT_LAG_S seconds. */
  current: boolean;
  at: number;
}

/**
 * How long one answer about the replica's replay position is believed. Replay
 * only moves forward, so an old answer is never unsafe, only pessimistic: a
 * search after a write may go to the primary when the replica has caught up
 * meanwhile. A few ms keeps that rare while a busy process asks the replica
 * at most a few hundred times a second.
 */
const STATE_TTL_MS = 5;

/** How long a replica that failed is left alone before it is asked again. */
const RETRY_AFTER_MS = 1_000;

/** How long the state query may take: a replica that hangs must not hold searches longer than this. */
const STATE_TIMEOUT_MS = 500;

/** The lag allowed to analytics reports: their rollups are made once a minute anyway (SCHEDULE_ANALYTICS). */
const REPORT_LAG_S = 60;

const STATE_SQL = `
  select (pg_last_wal_replay_lsn() - '0/0')::bigint as replayed,
         coalesce(pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()
                  or pg_last_xact_replay_timestamp() > now() - make_interval(secs => ${REPORT_LAG_S}), false) as current`;

export interface ReplicaReadsOptions {
  logger: Logger;
  /** Each read, by the server that answered it. */
  onRead(read: ReplicaRead, target: ReadTarget): void;
  /** Each time the replica failed (its state or a read), so the read went to the primary. */
  onError(): void;
}

/**
 * Chooses, read by read, between the primary and the streaming replica of
 * DATABASE_REPLICA_URL, and falls back to the primary whenever the replica
 * fails: a replica that is down, lagging or misconfigured costs the primary
 * some load, never an answer.
 */
export class ReplicaReads {
  private state: ReplicaState | undefined;
  private asking: Promise<ReplicaState | null> | undefined;
  private failedAt = Number.NEGATIVE_INFINITY;
  /** Between a failure and the next answer: one log line each way per outage, not one per read. */
  private down = false;
  private warnedNotStandby = false;

  constructor(
    readonly primary: Knex,
    readonly replica: Knex,
    private readonly options: ReplicaReadsOptions,
  ) {}

  /**
   * Runs `read` on the replica when it has replayed the primary's WAL up to
   * `lsn` (every write the read must see), else on the primary. A null `lsn`
   * (not known) means the primary.
   */
  async readAsOf<T>(kind: ReplicaRead, lsn: number | null, read: (db: Knex) => Promise<T>): Promise<T> {
    const state = lsn === null ? null : await this.currentState();
    if (state?.replayed != null && state.replayed >= lsn!) return this.onReplica(kind, read);
    return this.onPrimary(kind, read);
  }

  /** Runs `read` on the replica when it is at most a minute behind (see REPORT_LAG_S), else on the primary. */
  async readLagging<T>(kind: ReplicaRead, read: (db: Knex) => Promise<T>): Promise<T> {
    const state = await this.currentState();
    if (state?.replayed != null && state.current) return this.onReplica(kind, read);
    return this.onPrimary(kind, read);
  }

  /**
   * Where the primary's WAL ends now, in bytes: read after a commit, it is at
   * or past that commit's record, so a replica that has replayed this far
   * shows the commit. The insert position rather than pg_current_wal_lsn()
   * (written): it covers a commit not yet written, as with synchronous_commit
   * off.
   */
  async primaryLsn(): Promise<number> {
    const result = await this.primary.raw(`select (pg_current_wal_insert_lsn() - '0/0')::bigint as lsn`);
    return Number(result.rows[0].lsn);
  }

  private async onPrimary<T>(kind: ReplicaRead, read: (db: Knex) => Promise<T>): Promise<T> {
    const value = await read(this.primary);
    this.options.onRead(kind, 'primary');
    return value;
  }

  private async onReplica<T>(kind: ReplicaRead, read: (db: Knex) => Promise<T>): Promise<T> {
    let value: T;
    try {
      value = await read(this.replica);
    } catch (error) {
      // The read's own answer (a search timeout, a bad request) would be the primary's too.
      if (error instanceof AppError) throw error;
      this.failed(error, `a ${kind} read failed on the replica; it went to the primary`);
      return this.onPrimary(kind, read);
    }
    this.options.onRead(kind, 'replica');
    return value;
  }

  /** The replica's state, asked at most once per STATE_TTL_MS by one query in flight; null while it is failing. */
  private async currentState(): Promise<ReplicaState | null> {
    const now = Date.now();
    if (this.state && now - this.state.at <= STATE_TTL_MS) return this.state;
    if (now - this.failedAt < RETRY_AFTER_MS) return null;
    this.asking ??= this.askState().finally(() => {
      this.asking = undefined;
    });
    return this.asking;
  }

  private async askState(): Promise<ReplicaState | null> {
    try {
      const result = await withTimeout(this.replica.raw(STATE_SQL), STATE_TIMEOUT_MS, `the replica did not say its replay position within ${STATE_TIMEOUT_MS} ms`);
      const row = result.rows[0] as { replayed: number | null; current: boolean };
      if (row.replayed === null && !this.warnedNotStandby) {
        this.warnedNotStandby = true;
        this.options.logger.warn('DATABASE_REPLICA_URL is not a standby (it has never replayed WAL): every read goes to the primary');
      }
      this.state = { replayed: row.replayed === null ? null : Number(row.replayed), current: row.current, at: Date.now() };
      if (this.down) {
        this.down = false;
        this.options.logger.info('the replica answers again; reads may go to it');
      }
      return this.state;
    } catch (error) {
      this.failed(error, `the replica did not answer; reads go to the primary for ${RETRY_AFTER_MS} ms`);
      return null;
    }
  }

  private failed(error: unknown, message: string): void {
    this.options.onError();
    if (!this.down) this.options.logger.warn({ err: error }, message);
    this.down = true;
    this.failedAt = Date.now();
    this.state = undefined;
  }
}
