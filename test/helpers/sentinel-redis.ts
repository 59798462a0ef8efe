import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { unusedPort } from './processes';
import { waitFor } from './wait';

const SHIPPED_CONFIGURATION = path.join(__dirname, '..', '..', 'ops', 'redis', 'sentinel.conf');
export const SENTINEL_MASTER_NAME = 'mymaster';

/**
 * How quickly the Sentinels act on a dead master: seconds in production, two
 * here. Not less: a Sentinel pings each server once a second, and right after
 * a failover its link to the new master has no reply yet, so at 1 s it can
 * find the new master "down" before its first ping is answered and fail
 * over again, to the old master that was just restarted empty.
 */
const DOWN_AFTER_MS = 2_000;
const FAILOVER_TIMEOUT_MS = 10_000;

interface RedisServer {
  port: number;
  child: ChildProcess;
  exited: Promise<void>;
}

function startServer(args: string[], port: number): RedisServer {
  const child = spawn('redis-server', args, { stdio: 'ignore' });
  return { port, child, exited: new Promise((resolve) => child.once('exit', () => resolve())) };
}

/** Runs `ask` on a one-off connection to the server on `port` that gives up at the first error. */
async function askServer<T>(port: number, password: string | undefined, ask: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis({ port, host: '127.0.0.1', password, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return await ask(client);
  } finally {
    client.disconnect();
  }
}

/** True when a server on the port answers PING (with the password, for a Sentinel). */
export function redisAnswers(port: number, password?: string): Promise<boolean> {
  return askServer(port, password, async (client) => (await client.ping()) === 'PONG').catch(() => false);
}

/** The master's port as the Sentinel on `port` names it. */
function masterNamedBy(port: number, password: string): Promise<number> {
  return askServer(port, password, async (client) => {
    const [, masterPort] = (await client.call('sentinel', 'get-master-addr-by-name', SENTINEL_MASTER_NAME)) as [string, string];
    return Number(masterPort);
  });
}

/**
 * A Redis master and its replica, watched by three Sentinels each started
 * on ops/redis/sentinel.conf itself — only its port, the master's address,
 * the Sentinels' password and the failure-detection timings replaced — so
 * the shipped file is what fails over. A killed master can come back: the
 * Sentinels make it a replica of the new one, ready for the next failover.
 */
export class SentinelRedis {
  private readonly servers = new Map<number, RedisServer>();
  private readonly sentinels: RedisServer[] = [];

  private constructor(
    private readonly folder: string,
    readonly password: string,
  ) {}

  static async start(options: { password: string; replicas?: number }): Promise<SentinelRedis> {
    const fleet = new SentinelRedis(mkdtempSync(path.join(os.tmpdir(), 'ragworks-sentinel-')), options.password);
    const masterPort = await unusedPort();
    await fleet.launchServer(masterPort);
    for (let replica = 0; replica < (options.replicas ?? 1); replica += 1) {
      await fleet.launchServer(await unusedPort(), masterPort);
    }
    await fleet.waitForReplicas(masterPort, options.replicas ?? 1);
    const shipped = readFileSync(SHIPPED_CONFIGURATION, 'utf8');
    for (let index = 0; index < 3; index += 1) {
      const port = await unusedPort();
      // `localhost`, a name: the shipped file must let Sentinel resolve names (resolve-hostnames).
      const configuration = shipped
        .replace(/^port 26379$/m, `port ${port}\nbind 127.0.0.1`)
        .replace(/^sentinel monitor mymaster redis-master 6379 2$/m, `sentinel monitor ${SENTINEL_MASTER_NAME} localhost ${masterPort} 2`)
        .replace(/^sentinel down-after-milliseconds mymaster \d+$/m, `sentinel down-after-milliseconds ${SENTINEL_MASTER_NAME} ${DOWN_AFTER_MS}`)
        .replace(/^sentinel failover-timeout mymaster \d+$/m, `sentinel failover-timeout ${SENTINEL_MASTER_NAME} ${FAILOVER_TIMEOUT_MS}`)
        .replace(/^# requirepass .*$/m, `requirepass ${options.password}`);
      if (!configuration.includes(`localhost ${masterPort}`) || !configuration.includes(`down-after-milliseconds ${SENTINEL_MASTER_NAME} ${DOWN_AFTER_MS}`)) {
        throw new Error('ops/redis/sentinel.conf no longer has the lines this helper adjusts');
      }
      const file = path.join(fleet.folder, `sentinel-${index}.conf`);
      writeFileSync(file, configuration);
      fleet.sentinels.push(startServer([file, '--sentinel'], port));
    }
    for (const sentinel of fleet.sentinels) {
      await waitFor(() => redisAnswers(sentinel.port, options.password), { what: `the Sentinel on ${sentinel.port}` });
    }
    await fleet.waitForAgreement(masterPort);
    return fleet;
  }

  /** `REDIS_SENTINELS` for ragworks. */
  get addresses(): string {
    return this.sentinels.map((sentinel) => `127.0.0.1:${sentinel.port}`).join(',');
  }

  get sentinelPorts(): number[] {
    return this.sentinels.map((sentinel) => sentinel.port);
  }

  /** The environment a ragworks process needs to find the master. */
  get environment(): Record<string, string> {
    return { REDIS_SENTINELS: this.addresses, REDIS_SENTINEL_NAME: SENTINEL_MASTER_NAME, REDIS_SENTINEL_PASSWORD: this.password };
  }

  /** The master's port, as the first Sentinel that answers names it. */
  async masterPort(): Promise<number> {
    for (const sentinel of this.sentinels) {
      const port = await masterNamedBy(sentinel.port, this.password).catch(() => null);
      if (port !== null) return port;
    }
    throw new Error('no Sentinel answers');
  }

  /** A client of the current master, for a test's own checks. */
  async masterClient(): Promise<Redis> {
    const client = new Redis({ port: await this.masterPort(), host: '127.0.0.1', maxRetriesPerRequest: 1 });
    client.on('error', () => undefined);
    return client;
  }

  /**
   * `kill -9` of the current master. Resolves once every Sentinel names a
   * new master that answers as one; the old server is started again, empty
   * (it keeps nothing on disk), and the Sentinels make it a replica.
   * Returns when the failover was seen and how long it took.
   */
  async failover(): Promise<{ killedPort: number; newMasterPort: number; tookMs: number }> {
    const killedPort = await this.masterPort();
    const killed = this.servers.get(killedPort);
    if (!killed) throw new Error(`port ${killedPort} is not one of this fleet's servers`);
    const started = Date.now();
    killed.child.kill('SIGKILL');
    await killed.exited;
    this.servers.delete(killedPort);
    const newMasterPort = await waitFor(
      async () => {
        const port = await this.masterPort();
        return port !== killedPort ? port : null;
      },
      { timeoutMs: 60_000, intervalMs: 100, what: 'the Sentinels to promote a replica' },
    );
    await this.waitForAgreement(newMasterPort);
    const tookMs = Date.now() - started;
    await this.launchServer(killedPort);
    await this.waitForReplicas(newMasterPort, this.servers.size - 1);
    return { killedPort, newMasterPort, tookMs };
  }

  async stop(): Promise<void> {
    const all = [...this.servers.values(), ...this.sentinels];
    for (const server of all) server.child.kill('SIGKILL');
    await Promise.all(all.map((server) => server.exited));
    this.servers.clear();
    rmSync(this.folder, { recursive: true, force: true });
  }

  private async launchServer(port: number, replicaOf?: number): Promise<void> {
    // Its own folder: a replica's full sync writes the master's snapshot to disk, which would land in the working directory.
    const dir = path.join(this.folder, `server-${port}`);
    mkdirSync(dir, { recursive: true });
    // Known by the name the Sentinels monitor, as ops/redis/redis.conf asks: a server a Sentinel knew by both a name
    // and an address would be two replicas to it, and after a second failover it would make the new master a
    // replica of itself, then of the old master restarted empty.
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--replica-announce-ip', 'localhost'];
    if (replicaOf) args.push('--replicaof', '127.0.0.1', String(replicaOf));
    this.servers.set(port, startServer(args, port));
    await waitFor(() => redisAnswers(port), { what: `redis-server on ${port}` });
  }

  /** Until the master reports `count` replicas in sync. */
  private async waitForReplicas(masterPort: number, count: number): Promise<void> {
    await waitFor(
      () =>
        askServer(masterPort, undefined, async (client) => {
          const info = await client.info('replication');
          const online = info.split('\n').filter((line) => /^slave\d+:.*state=online/.test(line)).length;
          return /role:master/.test(info) && online >= count;
        }),
      { timeoutMs: 60_000, intervalMs: 100, what: `${count} replica(s) in sync with the master on ${masterPort}` },
    );
  }

  /** Until every Sentinel names this master. */
  private async waitForAgreement(masterPort: number): Promise<void> {
    await waitFor(
      async () => {
        const named = await Promise.all(this.sentinels.map((sentinel) => masterNamedBy(sentinel.port, this.password)));
        return named.every((port) => port === masterPort);
      },
      { timeoutMs: 60_000, intervalMs: 100, what: `every Sentinel to name the master on ${masterPort}` },
    );
  }
}
