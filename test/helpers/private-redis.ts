import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { Redis } from 'ioredis';
import { unusedPort } from './processes';
import { waitFor } from './wait';

/** A redis-server of this test's own on a free port: it can be hung, killed and restarted without touching the shared one. */
export class PrivateRedis {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** A new server on a free port, answering. */
  static async start(): Promise<PrivateRedis> {
    const redis = new PrivateRedis(await unusedPort());
    await redis.launch();
    return redis;
  }

  /** Starts (or, after kill(), restarts) the server on its port. */
  async launch(): Promise<void> {
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], {
      stdio: 'ignore',
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    const probe = new Redis(this.url, { maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
    probe.on('error', () => undefined);
    try {
      await waitFor(
        async () => {
          if (probe.status === 'end' || probe.status === 'wait') await probe.connect().catch(() => undefined);
          return (await probe.ping().catch(() => null)) === 'PONG';
        },
        { timeoutMs: 20_000, what: `redis-server on port ${this.port} to answer` },
      );
    } finally {
      probe.disconnect();
    }
  }

  /**
   * The commands clients sent while `work` ran, by name, as MONITOR sees
   * them: the commands a script runs inside the server are not counted,
   * nor are this method's own.
   */
  async commandsSentDuring(work: () => Promise<void>): Promise<Record<string, number>> {
    const markerClient = new Redis(this.url, { maxRetriesPerRequest: 1 });
    const marker = `end-of-work-${process.hrtime.bigint()}`;
    // MONITOR on a plain socket: ioredis's monitor() can take a command it sees for the reply to its own
    // setup ("Command queue state error") when a busy client's command lands in between.
    const monitor = net.createConnection(this.port, '127.0.0.1');
    try {
      const markerAddress = await clientAddress(markerClient);
      const sent: Record<string, number> = {};
      let resolveEnd!: () => void;
      const ended = new Promise<void>((resolve) => (resolveEnd = resolve));
      let monitoring!: () => void;
      const started = new Promise<void>((resolve) => (monitoring = resolve));
      let pending = '';
      monitor.setEncoding('utf8');
      monitor.on('data', (chunk: string) => {
        pending += chunk;
        const lines = pending.split('\r\n');
        pending = lines.pop()!;
        for (const line of lines) {
          if (line === '+OK') {
            monitoring();
            continue;
          }
          // +<time> [<db> <source>] "<command>" "<arg>"…, the source `lua` for a script's own calls.
          const entry = /^\+\S+ \[\d+ ([^\]]+)\] (.*)$/.exec(line);
          if (!entry) continue;
          const [, source, quoted] = entry;
          const args = [...quoted.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((match) => match[1]);
          const command = args[0]?.toLowerCase();
          if (!command || source === 'lua') continue;
          if (command === 'echo' && args[1] === marker) resolveEnd();
          else if (source !== markerAddress) sent[command] = (sent[command] ?? 0) + 1;
        }
      });
      monitor.write('MONITOR\r\n');
      await started;
      await work();
      await markerClient.echo(marker);
      await ended;
      return sent;
    } finally {
      monitor.destroy();
      markerClient.disconnect();
    }
  }

  /** SIGSTOP: the server keeps its connections but answers nothing, like a hung host. */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** SIGKILL: gone at once, with whatever it held (it keeps nothing on disk). */
  async kill(): Promise<void> {
    this.child?.kill('SIGKILL');
    await this.exited;
  }
}

/** The address the server sees a client's connection come from, as MONITOR reports it. */
async function clientAddress(client: Redis): Promise<string> {
  const info = String(await client.call('client', 'info'));
  return /\baddr=(\S+)/.exec(info)?.[1] ?? '';
}
