import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { Agent, request } from 'undici';
import { deleteRedisPrefix } from '../test/helpers/redis';
import type { CorpusDocument } from './corpus';

/**
 * ragworks started the way an operator starts it — `node --import tsx
 * src/main.ts <role>` child processes — on a database and Redis prefix of
 * its own, and driven only through its HTTP API.
 */

export const REPO_ROOT = path.resolve(__dirname, '..');
export const POSTGRES_ADMIN_URL = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** The role the benchmarked processes connect as: no superuser, no owner, so the policies' cost is in the figures. */
const APPLICATION_ROLE = 'ragworks_bench_app';
export const ADMIN_TOKEN = `bench-operator-${randomBytes(16).toString('hex')}`;

export function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Cleanups that must run even when the benchmark fails or is interrupted, newest first. */
export class Cleanup {
  private readonly steps: Array<{ what: string; run: () => Promise<void> }> = [];
  private closed = false;

  /** Registers a cleanup; register before creating the thing, so nothing exists unregistered. */
  add(what: string, run: () => Promise<void>): () => Promise<void> {
    if (this.closed) throw new Error('the benchmark is stopping');
    const step = { what, run };
    this.steps.push(step);
    // Running a step early removes it, so the final sweep does not repeat it.
    return async () => {
      const index = this.steps.indexOf(step);
      if (index === -1) return;
      this.steps.splice(index, 1);
      await run();
    };
  }

  async runAll(): Promise<void> {
    this.closed = true;
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.run();
      } catch (error) {
        log(`cleanup "${step.what}" failed: ${(error as Error).message}`);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Child processes

export class RagworksProcess {
  private readonly tail: string[] = [];
  private exited = false;
  private readonly exit: Promise<void>;

  constructor(
    readonly role: string,
    private readonly child: ChildProcess,
  ) {
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) this.tail.push(line);
      if (this.tail.length > 40) this.tail.splice(0, this.tail.length - 40);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exit = new Promise((resolve) =>
      child.once('exit', () => {
        this.exited = true;
        resolve();
      }),
    );
  }

  get running(): boolean {
    return !this.exited;
  }

  /** The last lines the process wrote, for a failure message. */
  output(): string {
    return this.tail.map((line) => `    ${this.role}| ${line}`).join('\n');
  }

  /** SIGTERM, the graceful path; SIGKILL if it has not exited in time. */
  async stop(timeoutMs = 20_000): Promise<void> {
    if (this.exited) return;
    this.child.kill('SIGTERM');
    const timedOut = await Promise.race([this.exit.then(() => false), sleep(timeoutMs).then(() => true)]);
    if (timedOut && !this.exited) {
      log(`${this.role} (pid ${this.child.pid}) did not stop in ${timeoutMs} ms; killing it`);
      this.child.kill('SIGKILL');
      await this.exit;
    }
  }
}

/** Only what a process needs from the outer environment: ragworks settings come from the benchmark alone. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ['PATH', 'HOME', 'LANG', 'TMPDIR', 'TZ']) {
    const value = process.env[name];
    if (value) env[name] = value;
  }
  return env;
}

/** Every process the benchmark started, so none outlives it whatever path it ends by. */
const children = new Set<RagworksProcess>();
let spawningClosed = false;

/** Stops every child still running and refuses new ones: the last word before exit. */
export async function stopAllChildren(): Promise<void> {
  spawningClosed = true;
  await Promise.all([...children].map((child) => child.stop(5_000)));
}

export function spawnRagworks(role: string, env: Record<string, string>, label = role): RagworksProcess {
  return spawnScript(['src/main.ts', role], env, label);
}

/**
 * BENCH_CPU_PROFILE_DIR: every process the benchmark starts writes a CPU
 * profile there when it exits (`node --cpu-prof`, which NODE_OPTIONS does not take).
 */
const PROFILE_DIR = process.env.BENCH_CPU_PROFILE_DIR;
const profiling = PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`] : [];

/** A script of this repository started the way ragworks is (`node --import tsx <script> …`): the same Node and loader. */
export function spawnScript(args: string[], env: Record<string, string>, label: string): RagworksProcess {
  if (spawningClosed) throw new Error('the benchmark is stopping');
  const child = spawn(process.execPath, [...profiling, '--import', 'tsx', ...args], {
    cwd: REPO_ROOT,
    env: { ...baseEnv(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const started = new RagworksProcess(label, child);
  children.add(started);
  child.once('exit', () => children.delete(started));
  return started;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------
// HTTP

export interface ApiResponse<T> {
  status: number;
  body: T;
  /** Client-side time from sending the request to having parsed the whole reply. */
  ms: number;
}

export class ApiClient {
  // One keep-alive connection at a time for sequential requests, as a client library would hold.
  private readonly agent = new Agent({ keepAliveTimeout: 60_000, connections: 4 });

  constructor(readonly baseUrl: string) {}

  async call<T = Record<string, unknown>>(
    method: 'GET' | 'POST',
    url: string,
    options: { token?: string; body?: unknown; tenant?: string },
  ): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = {};
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    if (options.tenant) headers['x-tenant-id'] = options.tenant;
    let payload: string | undefined;
    if (options.body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(options.body);
    }
    const started = performance.now();
    const response = await request(`${this.baseUrl}${url}`, { method, headers, body: payload, dispatcher: this.agent });
    const text = await response.body.text();
    const ms = performance.now() - started;
    let body: T;
    try {
      body = (text ? JSON.parse(text) : null) as T;
    } catch {
      throw new Error(`${method} ${url}: ${response.statusCode} with a body that is not JSON: ${text.slice(0, 200)}`);
    }
    return { status: response.statusCode, body, ms };
  }

  /** Like call, but anything other than the expected status is an error. */
  async expect<T = Record<string, unknown>>(
    status: number,
    method: 'GET' | 'POST',
    url: string,
    options: { token: string; body?: unknown; tenant?: string },
  ): Promise<ApiResponse<T>> {
    const response = await this.call<T>(method, url, options);
    if (response.status !== status) {
      throw new Error(`${method} ${url} answered ${response.status}, expected ${status}: ${JSON.stringify(response.body).slice(0, 300)}`);
    }
    return response;
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

// ---------------------------------------------------------------------------
// Deployments

export interface Tenant {
  id: string;
  key: string;
}

export interface Deployment {
  kind: 'postgres' | 'pglite';
  description: string;
  client: ApiClient;
  tenant: Tenant;
  /** The environment the processes ran with: an in-process platform opened with it sees the same data. */
  env: Record<string, string>;
  /** Stops the processes; the data stays until release. */
  stopProcesses(): Promise<void>;
  /** Stops the processes if still running, then removes the database (or data directory) and the Redis keys. */
  release(): Promise<void>;
}

export interface DeploymentOptions {
  kind: 'postgres' | 'pglite';
  /** Worker processes beside the web process (postgres only; pglite runs one `all` process). */
  workers: number;
  workerConcurrency: number;
  /** Settings for every process on top of the benchmark's own, e.g. WEBHOOK_ALLOW_PRIVATE. */
  env?: Record<string, string>;
}

function commonEnv(prefix: string, port: number, workerConcurrency: number): Record<string, string> {
  return {
    NODE_ENV: 'production',
    ADMIN_TOKEN,
    REDIS_URL,
    QUEUE_PREFIX: prefix,
    HOST: '127.0.0.1',
    PORT: String(port),
    // Request logging at info would be measured too; warnings and errors still show.
    LOG_LEVEL: 'warn',
    WORKER_CONCURRENCY: String(workerConcurrency),
    // The reconcile tick would only add noise: nothing is stuck in a healthy run.
    SCHEDULE_RECONCILE: '0 0 1 1 *',
    SHUTDOWN_TIMEOUT_MS: '10000',
  };
}

/**
 * A fresh database on the machine's PostgreSQL, set up as in production: the
 * owner migrates (`migrationUrl`), the application role serves under
 * row-level security (`applicationUrl`).
 */
export async function createBenchDatabase(cleanup: Cleanup): Promise<{ migrationUrl: string; applicationUrl: string; drop: () => Promise<void> }> {
  const database = uniqueName('rw_bench');
  const drop = cleanup.add(`database ${database}`, () => adminQuery(`drop database if exists ${database} with (force)`));
  await adminQuery(`create database ${database}`);
  await adminQuery(`do $$ begin
    if not exists (select 1 from pg_roles where rolname = '${APPLICATION_ROLE}') then create role ${APPLICATION_ROLE} login nosuperuser nobypassrls; end if;
  end $$`);
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${database}`;
  const migrationUrl = url.toString();
  url.username = APPLICATION_ROLE;
  url.password = '';
  return { migrationUrl, applicationUrl: url.toString(), drop };
}

export async function startDeployment(options: DeploymentOptions, cleanup: Cleanup): Promise<Deployment> {
  const prefix = uniqueName('rwbench');
  const port = await freePort();
  const env = { ...commonEnv(prefix, port, options.workerConcurrency), ...options.env };
  const releases: Array<() => Promise<void>> = [];
  releases.push(cleanup.add(`redis prefix ${prefix}`, () => deleteRedisPrefix(prefix, REDIS_URL)));

  let description: string;
  if (options.kind === 'postgres') {
    const database = await createBenchDatabase(cleanup);
    releases.push(database.drop);
    env.MIGRATION_DATABASE_URL = database.migrationUrl;
    env.DATABASE_URL = database.applicationUrl;
    description = `PostgreSQL, 1 web + ${options.workers} worker process${options.workers === 1 ? '' : 'es'}`;
  } else {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ragworks-bench-'));
    releases.push(cleanup.add(`data directory ${dataDir}`, async () => fs.rmSync(dataDir, { recursive: true, force: true })));
    env.DATA_DIR = dataDir;
    description = 'PGlite, 1 process (role all)';
  }

  const processes: RagworksProcess[] = [];
  const stopProcesses = async () => {
    await Promise.all(processes.map((child) => child.stop()));
  };
  releases.push(cleanup.add(`processes of ${prefix}`, stopProcesses));
  const client = new ApiClient(`http://127.0.0.1:${port}`);
  releases.push(cleanup.add('http client', () => client.close()));

  const release = async () => {
    // Newest first: client, processes, then the data they used.
    for (const step of [...releases].reverse()) await step();
  };

  try {
    // The web (or all) process migrates the fresh database; workers start once it is there.
    const web = spawnRagworks(options.kind === 'postgres' ? 'web' : 'all', env);
    processes.push(web);
    await waitUntil(async () => (await client.call('GET', '/readyz', {})).status === 200, web, 90_000, 'the API to be ready');
    const tenant = await createTenant(client);
    if (options.kind === 'postgres') {
      for (let i = 0; i < options.workers; i += 1) processes.push(spawnRagworks('worker', env, `worker${i + 1}`));
    }
    const expected = options.kind === 'postgres' ? options.workers : 1;
    // Timing starts with warm workers: their start-up is not indexing.
    await waitUntil(
      async () => {
        const queues = await client.expect<Array<{ name: string; workers: number }>>(200, 'GET', '/api/admin/queues', { token: ADMIN_TOKEN });
        return (queues.body.find((queue) => queue.name === 'indexing')?.workers ?? 0) >= expected;
      },
      processes,
      90_000,
      `${expected} indexing worker(s) to connect`,
    );
    return { kind: options.kind, description, client, tenant, env, stopProcesses, release };
  } catch (error) {
    const output = processes.map((child) => child.output()).filter(Boolean).join('\n');
    await release();
    throw new Error(`${(error as Error).message}${output ? `\n  last output:\n${output}` : ''}`);
  }
}

export async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

export async function createTenant(client: ApiClient): Promise<Tenant> {
  const slug = `bench-${randomBytes(4).toString('hex')}`;
  const tenant = await client.expect<{ id: string }>(201, 'POST', '/api/admin/tenants', {
    token: ADMIN_TOKEN,
    body: { slug, name: 'Benchmark', tier: 'unlimited' },
  });
  const key = await client.expect<{ key: string }>(201, 'POST', '/api/admin/api-keys', {
    token: ADMIN_TOKEN,
    tenant: tenant.body.id,
    body: { name: 'benchmark', scopes: ['documents:read', 'documents:write', 'search'] },
  });
  return { id: tenant.body.id, key: key.body.key };
}

/** Polls until probe is true; fails early when a watched process has died. */
async function waitUntil(
  probe: () => Promise<boolean>,
  watched: RagworksProcess | RagworksProcess[],
  timeoutMs: number,
  what: string,
): Promise<void> {
  const processes = Array.isArray(watched) ? watched : [watched];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = processes.find((child) => !child.running);
    if (dead) throw new Error(`${dead.role} exited while waiting for ${what}`);
    try {
      if (await probe()) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(200);
  }
}

// ---------------------------------------------------------------------------
// Indexing throughput

export interface IndexingResult {
  setup: string;
  documents: number;
  chunks: number;
  failed: number;
  /** First POST to the last batch accepted. */
  acceptSeconds: number;
  /** First POST to every document indexed (or failed). */
  totalSeconds: number;
  documentsPerSecond: number;
  embeddings: boolean;
}

interface TenantStats {
  documents: { queued: number; processing: number; indexed: number; failed: number; canceled: number; total: number };
  chunks: number;
}

const POLL_MS = 100;

/**
 * Posts every document in batches and waits until all are indexed. The
 * clock runs from the first POST to the first poll that sees none left
 * queued or processing, so it is late by at most one poll interval.
 */
export async function indexCorpus(
  deployment: Deployment,
  documents: readonly CorpusDocument[],
  options: { batchSize: number; embeddings: boolean; timeoutMs: number },
): Promise<IndexingResult> {
  const { client, tenant } = deployment;
  const started = performance.now();
  for (let offset = 0; offset < documents.length; offset += options.batchSize) {
    const batch = documents.slice(offset, offset + options.batchSize).map((document) => ({
      title: document.title,
      content: document.content,
      content_type: 'markdown',
      metadata: { source: document.source },
    }));
    await client.expect(202, 'POST', '/api/documents/batch', { token: tenant.key, body: { documents: batch } });
  }
  const acceptSeconds = (performance.now() - started) / 1000;

  const deadline = Date.now() + options.timeoutMs;
  let lastReport = 0;
  for (;;) {
    const stats = (await client.expect<TenantStats>(200, 'GET', '/api/stats', { token: tenant.key })).body;
    const done = stats.documents.indexed + stats.documents.failed + stats.documents.canceled;
    if (stats.documents.total >= documents.length && done >= documents.length) {
      const totalSeconds = (performance.now() - started) / 1000;
      return {
        setup: deployment.description,
        documents: documents.length,
        chunks: stats.chunks,
        failed: stats.documents.failed,
        acceptSeconds,
        totalSeconds,
        documentsPerSecond: documents.length / totalSeconds,
        embeddings: options.embeddings,
      };
    }
    if (Date.now() > deadline) throw new Error(`indexing did not finish within ${options.timeoutMs} ms (${done}/${documents.length} done)`);
    if (Date.now() - lastReport > 5_000) {
      lastReport = Date.now();
      log(`  ${stats.documents.indexed}/${documents.length} indexed, ${stats.documents.failed} failed`);
    }
    await sleep(POLL_MS);
  }
}
