import { execFile } from 'node:child_process';
import { appendFileSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { unusedPort } from './processes';
import { waitFor } from './wait';

const run = promisify(execFile);

/**
 * The server binaries of the installed PostgreSQL: `pg_config --bindir`, or
 * the newest version under /usr/lib/postgresql (Debian's pg_config may
 * belong to the client package only).
 */
function binDir(): string {
  const versions = existsSync('/usr/lib/postgresql')
    ? readdirSync('/usr/lib/postgresql').filter((name) => /^\d+$/.test(name)).sort((a, b) => Number(b) - Number(a))
    : [];
  for (const candidate of versions.map((version) => `/usr/lib/postgresql/${version}/bin`)) {
    if (existsSync(path.join(candidate, 'initdb'))) return candidate;
  }
  throw new Error('no PostgreSQL server binaries (initdb) under /usr/lib/postgresql');
}

/** The OS user the servers run as: initdb and postgres refuse to run as root. */
const OS_USER = 'postgres';

function osUserIds(): { uid: number; gid: number } {
  const passwd = readFileSync('/etc/passwd', 'utf8').split('\n').find((line) => line.startsWith(`${OS_USER}:`));
  if (!passwd) throw new Error(`no "${OS_USER}" OS user to run PostgreSQL as`);
  const [, , uid, gid] = passwd.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/** Runs a PostgreSQL binary as the postgres OS user when this process is root, else as this user. */
async function runBinary(name: string, args: string[], timeoutMs = 120_000): Promise<string> {
  const binary = path.join(binDir(), name);
  const [file, argv] = process.getuid?.() === 0 ? ['runuser', ['-u', OS_USER, '--', binary, ...args]] : [binary, args];
  try {
    const { stdout } = await run(file, argv, { timeout: timeoutMs, env: { ...process.env, LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8' } });
    return stdout;
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${name} ${args.join(' ')} failed: ${failed.message}\n${failed.stdout ?? ''}\n${failed.stderr ?? ''}`);
  }
}

/** The pids whose parent is `pid`, from /proc. */
function childrenOf(pid: number): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        // The parent pid is the second field after the parenthesised command name.
        const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** An empty folder in the temp directory that the server's OS user owns (mode 0700, as initdb wants it). */
function ownedFolder(prefix: string): string {
  const folder = mkdtempSync(path.join(os.tmpdir(), prefix));
  if (process.getuid?.() === 0) {
    const { uid, gid } = osUserIds();
    chownSync(folder, uid, gid);
  }
  return folder;
}

export interface ClusterSettings {
  /** postgresql.conf lines added after the defaults, e.g. `{ max_connections: '50' }`. */
  settings?: Record<string, string>;
}

/**
 * A PostgreSQL cluster of a test's own, in a temporary folder on a free
 * loopback port, trusting local connections (replication included): it
 * can be stopped, restarted, killed with SIGKILL and given streaming
 * replicas without touching the machine's shared server.
 */
export class PrivatePostgres {
  private constructor(
    /** The cluster's data folder. */
    readonly dataDir: string,
    readonly port: number,
    /** The cluster this one streams from, for a replica. */
    readonly primary: PrivatePostgres | null,
  ) {}

  /** A new cluster (initdb), configured to serve streaming replicas, started. */
  static async create(options: ClusterSettings = {}): Promise<PrivatePostgres> {
    const cluster = new PrivatePostgres(ownedFolder('ragworks-pg-'), await unusedPort(), null);
    // Trust for local and loopback connections, replication included (initdb's own pg_hba.conf lines).
    await runBinary('initdb', ['-D', cluster.dataDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--no-instructions']);
    cluster.configure({
      listen_addresses: "'127.0.0.1'",
      unix_socket_directories: `'${cluster.dataDir}'`,
      wal_level: 'replica',
      max_wal_senders: '10',
      hot_standby: 'on',
      // Durability against power loss is not what these tests are about; the WAL and its order are unchanged.
      fsync: 'off',
      shared_buffers: '32MB',
      ...options.settings,
    });
    await cluster.start();
    return cluster;
  }

  /**
   * A streaming replica of this cluster (pg_basebackup -R: a hot standby
   * that connects back as `postgres`), on a port of its own, started and
   * answering read-only queries.
   */
  async createReplica(options: ClusterSettings = {}): Promise<PrivatePostgres> {
    const replica = new PrivatePostgres(ownedFolder('ragworks-pg-replica-'), await unusedPort(), this);
    await runBinary('pg_basebackup', ['-h', '127.0.0.1', '-p', String(this.port), '-U', 'postgres', '-D', replica.dataDir, '-R', '-X', 'stream', '-c', 'fast']);
    // The copied postgresql.conf names the primary's port and socket folder; later lines win.
    replica.configure({ port: String(replica.port), unix_socket_directories: `'${replica.dataDir}'`, ...options.settings });
    await replica.start();
    return replica;
  }

  /** A superuser URL of a database of this cluster. */
  url(database = 'postgres', user = 'postgres'): string {
    return `postgres://${user}@127.0.0.1:${this.port}/${database}`;
  }

  private configure(settings: Record<string, string>): void {
    const lines = Object.entries({ port: String(this.port), ...settings }).map(([name, value]) => `${name} = ${value}`);
    appendFileSync(path.join(this.dataDir, 'postgresql.conf'), `\n${lines.join('\n')}\n`);
  }

  /** Starts the server and waits until it accepts connections (a replica: read-only ones). */
  async start(): Promise<void> {
    await runBinary('pg_ctl', ['-D', this.dataDir, '-l', path.join(this.dataDir, 'server.log'), '-w', '-t', '60', 'start']);
  }

  /** Stops the server: `fast` ends sessions and checkpoints, `immediate` stops without a checkpoint (a crash to recover from). */
  async stop(mode: 'fast' | 'smart' | 'immediate' = 'fast'): Promise<void> {
    await runBinary('pg_ctl', ['-D', this.dataDir, '-m', mode, '-w', '-t', '60', 'stop']);
  }

  /** A fast restart: every session is cut, the server comes back on the same port. */
  async restart(): Promise<void> {
    await runBinary('pg_ctl', ['-D', this.dataDir, '-l', path.join(this.dataDir, 'server.log'), '-m', 'fast', '-w', '-t', '60', 'restart']);
  }

  /** The postmaster's pid, from postmaster.pid; null when no server runs. */
  postmasterPid(): number | null {
    const file = path.join(this.dataDir, 'postmaster.pid');
    if (!existsSync(file)) return null;
    const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
    try {
      process.kill(pid, 0);
      return pid;
    } catch {
      return null;
    }
  }

  /** SIGKILL to the postmaster, as a crashed host would; its backends notice and exit. start() recovers it. */
  async kill(): Promise<void> {
    const pid = this.postmasterPid();
    if (pid === null) return;
    const backends = childrenOf(pid);
    process.kill(pid, 'SIGKILL');
    await waitFor(() => this.postmasterPid() === null, { timeoutMs: 20_000, what: `postmaster ${pid} to die` });
    // Backends outlive a killed postmaster briefly; a new one refuses to start while they hold its shared memory.
    await waitFor(() => backends.every((backend) => !existsSync(`/proc/${backend}`)), { timeoutMs: 20_000, what: "the killed server's backends to exit" });
  }

  /** Runs one statement as the superuser; answers its rows. */
  async query<Row = Record<string, unknown>>(sql: string, database = 'postgres'): Promise<Row[]> {
    const client = new pg.Client({ connectionString: this.url(database), connectionTimeoutMillis: 5_000 });
    await client.connect();
    try {
      return (await client.query(sql)).rows as Row[];
    } finally {
      await client.end();
    }
  }

  /** The server's log so far, for failure messages. */
  log(): string {
    const file = path.join(this.dataDir, 'server.log');
    return existsSync(file) ? readFileSync(file, 'utf8') : '';
  }

  /** Stops the server however it is (or kills it when it will not stop) and deletes its folder. */
  async destroy(): Promise<void> {
    if (this.postmasterPid() !== null) await this.stop('immediate').catch(() => this.kill());
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
