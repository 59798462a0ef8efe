import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';

/** The repository root: children run `src/main.ts` from here, as `npm start` does. */
const ROOT = path.resolve(__dirname, '../..');

/** One pino line from a child's stdout; `raw` keeps the text for lines that are not JSON. */
export interface LogLine {
  level?: number;
  msg?: string;
  raw: string;
  [field: string]: unknown;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface LogWaiter {
  predicate: (line: LogLine) => boolean;
  resolve: (line: LogLine) => void;
}

/** How a process is started: from the sources with tsx (`npm start`), or from a build (the image). */
export interface Launch {
  cwd: string;
  /** Node's arguments before the role. */
  args: string[];
}

const FROM_SOURCES: Launch = { cwd: ROOT, args: ['--import', 'tsx', 'src/main.ts'] };

/**
 * A ragworks process started the way production starts it
 * (`node --import tsx src/main.ts <role>`, or `node src/main.js <role>` in
 * a build), with its output kept line by line.
 */
export class RagworksProcess {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly logs: LogLine[] = [];
  /** Settles once the process has exited and its output has been read to the end. */
  readonly exited: Promise<Exit>;
  private exit: Exit | undefined;
  private readonly waiters = new Set<LogWaiter>();
  private readonly child: ChildProcess;

  constructor(
    readonly role: string,
    env: Record<string, string>,
    launch: Launch = FROM_SOURCES,
  ) {
    this.child = spawn(process.execPath, [...launch.args, role], {
      cwd: launch.cwd,
      env: { ...baseEnvironment(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const outClosed = readLines(this.child.stdout!, (text) => this.onStdout(text));
    const errClosed = readLines(this.child.stderr!, (text) => this.stderr.push(text));
    const processClosed = new Promise<Exit>((resolve) => {
      this.child.once('close', (code, signal) => resolve({ code, signal }));
      // A spawn failure (no node binary) reports no exit code; show it as one.
      this.child.once('error', (error) => {
        this.stderr.push(`spawn failed: ${error.message}`);
        resolve({ code: -1, signal: null });
      });
    });
    this.exited = Promise.all([processClosed, outClosed, errClosed]).then(([exit]) => {
      this.exit = exit;
      live.delete(this);
      return exit;
    });
    live.add(this);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  /** Log lines (parsed pino JSON) whose `msg` matches. */
  messages(match: string | RegExp): LogLine[] {
    return this.logs.filter((line) => typeof line.msg === 'string' && (typeof match === 'string' ? line.msg.includes(match) : match.test(line.msg)));
  }

  /**
   * Resolves with the first log line (already seen or still to come) that
   * matches; rejects if the process exits first or the time runs out, with
   * its output in the message so a failure explains itself.
   */
  waitForLog(predicate: (line: LogLine) => boolean, options: { timeoutMs?: number; what?: string } = {}): Promise<LogLine> {
    const seen = this.logs.find(predicate);
    if (seen) return Promise.resolve(seen);
    const what = options.what ?? 'a log line';
    return new Promise<LogLine>((resolve, reject) => {
      const waiter: LogWaiter = {
        predicate,
        resolve: (line) => {
          cleanup();
          resolve(line);
        },
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`Timed out waiting for ${what} from ${this.describe()}`));
      }, options.timeoutMs ?? 60_000);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      this.waiters.add(waiter);
      void this.exited.then((exit) => {
        if (!this.waiters.has(waiter)) return;
        cleanup();
        reject(new Error(`${this.role} exited (code ${exit.code}, signal ${exit.signal}) before ${what}: ${this.describe()}`));
      });
    });
  }

  /** Waits for a log line whose `msg` contains (or matches) the text. */
  waitForMessage(match: string | RegExp, options: { timeoutMs?: number } = {}): Promise<LogLine> {
    const test = (msg: string) => (typeof match === 'string' ? msg.includes(match) : match.test(msg));
    return this.waitForLog((line) => typeof line.msg === 'string' && test(line.msg), { ...options, what: `log "${String(match)}"` });
  }

  /** Sends a signal if the process still runs. */
  signal(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal);
  }

  /** Waits for the exit, failing with the process's output if it takes too long. */
  async waitForExit(timeoutMs = 60_000): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.role} did not exit within ${timeoutMs} ms: ${this.describe()}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends a signal and waits for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 60_000): Promise<Exit> {
    this.signal(signal);
    return this.waitForExit(timeoutMs);
  }

  /** A short account of the process for failure messages. */
  describe(): string {
    const tail = (lines: string[]) => lines.slice(-15).join('\n  ');
    return `${this.role} (pid ${this.pid})\n stdout:\n  ${tail(this.stdout)}\n stderr:\n  ${tail(this.stderr)}`;
  }

  private onStdout(text: string): void {
    this.stdout.push(text);
    let line: LogLine;
    try {
      const parsed: unknown = JSON.parse(text);
      line = typeof parsed === 'object' && parsed !== null ? { ...(parsed as Record<string, unknown>), raw: text } : { raw: text };
    } catch {
      line = { raw: text };
    }
    this.logs.push(line);
    for (const waiter of [...this.waiters]) {
      if (waiter.predicate(line)) waiter.resolve(line);
    }
  }
}

/** Every process started here that has not exited yet. */
const live = new Set<RagworksProcess>();

/** Starts `src/main.ts <role>` with only the given environment (plus PATH and HOME). */
export function startRagworks(role: string, env: Record<string, string>): RagworksProcess {
  return new RagworksProcess(role, env);
}

/** Starts `node src/main.js <role>` in a build made by scripts/build.ts, as the container image does. */
export function startBuiltRagworks(buildDir: string, role: string, env: Record<string, string>): RagworksProcess {
  return new RagworksProcess(role, env, { cwd: buildDir, args: ['src/main.js'] });
}

/** Kills (SIGKILL) every process still running and waits for them; for afterAll. */
export async function killLeftoverProcesses(): Promise<void> {
  const leftovers = [...live];
  for (const child of leftovers) child.signal('SIGKILL');
  await Promise.all(leftovers.map((child) => child.exited));
}

/**
 * Children get a clean environment: nothing from the test runner (NODE_ENV,
 * NODE_OPTIONS, a developer's DATABASE_URL) leaks into what they configure.
 */
function baseEnvironment(): Record<string, string> {
  const keep = ['PATH', 'HOME', 'TMPDIR', 'LANG', 'TZ'];
  return Object.fromEntries(keep.filter((name) => process.env[name] !== undefined).map((name) => [name, process.env[name] as string]));
}

function readLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): Promise<void> {
  const lines = readline.createInterface({ input: stream, crlfDelay: Infinity });
  lines.on('line', (line) => {
    if (line.length > 0) onLine(line);
  });
  return new Promise((resolve) => lines.once('close', () => resolve()));
}

/** A TCP port nothing listens on right now (bound and released by the OS). */
export async function unusedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves true when a TCP connection to the port is refused. */
export function connectionRefused(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
}
