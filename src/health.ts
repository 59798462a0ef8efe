import { EventEmitter } from 'node:events';
import type { RedisClient } from './redis';
import { withTimeout } from './async';
import type { Database } from './db/database';

export type DependencyName = 'database' | 'redis';
export type DependencyState = Record<DependencyName, boolean>;

/**
 * Watches PostgreSQL and Redis and says when either comes or goes, so the
 * API can answer 503 at once and workers can pause instead of burning
 * attempts. Redis state comes from the client; the database is pinged.
 */
export class DependencyHealth extends EventEmitter<{ change: [DependencyName, boolean] }> {
  private state: DependencyState = { database: true, redis: true };
  /** Set when the process is shutting down: readiness fails from then on, whatever the stores say. */
  stopping = false;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<DependencyState> | undefined;

  constructor(
    private readonly db: Database,
    private readonly redis: RedisClient,
    private readonly intervalMs = 1_000,
  ) {
    super();
  }

  start(): void {
    this.redis.on('ready', () => this.set('redis', true));
    this.redis.on('end', () => this.set('redis', false));
    this.redis.on('close', () => this.set('redis', false));
    this.redis.on('error', () => this.set('redis', this.redis.status === 'ready'));
    this.timer = setInterval(() => void this.check(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  isUp(name: DependencyName): boolean {
    return this.state[name];
  }

  snapshot(): DependencyState {
    return { ...this.state };
  }

  /**
   * Pings both now, so the answer is never older than the question: /readyz,
   * and workers telling a database outage from a job that lost its own
   * connection. A caller arriving during a check gets that check's answer.
   */
  check(): Promise<DependencyState> {
    this.checking ??= this.ping().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  private async ping(): Promise<DependencyState> {
    const [database, redis] = await Promise.all([
      pingDatabase(this.db),
      this.redis.status === 'ready' ? withTimeout(this.redis.ping(), 1_000).then(() => true, () => false) : Promise.resolve(false),
    ]);
    this.set('database', database);
    this.set('redis', redis);
    return this.snapshot();
  }

  private set(name: DependencyName, up: boolean): void {
    if (this.state[name] === up) return;
    this.state[name] = up;
    this.emit('change', name, up);
  }
}

async function pingDatabase(db: Database): Promise<boolean> {
  try {
    await withTimeout(db.ping(), 3_000);
    return true;
  } catch {
    return false;
  }
}

/** What /readyz answers, on the API port and a worker's or scheduler's METRICS_PORT alike: both stores, checked now, and not shutting down. */
export async function readiness(health: DependencyHealth): Promise<{ status: 200 | 503; body: { status: string; checks: Record<DependencyName, 'up' | 'down'> } }> {
  const state = await health.check();
  const ready = state.database && state.redis && !health.stopping;
  const upDown = (up: boolean): 'up' | 'down' => (up ? 'up' : 'down');
  const status = health.stopping ? 'stopping' : ready ? 'ready' : 'unavailable';
  return { status: ready ? 200 : 503, body: { status, checks: { database: upDown(state.database), redis: upDown(state.redis) } } };
}
