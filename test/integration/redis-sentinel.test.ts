import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { createTestDatabase, uniqueName } from '../helpers/databases';
import { ADMIN_TOKEN } from '../helpers/harness';
import { killLeftoverProcesses, startRagworks, unusedPort } from '../helpers/processes';
import { waitFor } from '../helpers/wait';

/**
 * A real Redis master watched by three real Sentinels, each started on
 * ops/redis/sentinel.conf itself (only its port, the master's address and
 * password, and the quorum timings replaced), and ragworks finding the
 * master through them with the Sentinels' password.
 */

jest.setTimeout(120_000);

const REPO = path.join(__dirname, '..', '..');
const SENTINEL_PASSWORD = 'sentinel-secret-for-tests';
const folder = mkdtempSync(path.join(os.tmpdir(), 'ragworks-sentinel-'));
const servers: ChildProcess[] = [];

function startRedis(args: string[]): ChildProcess {
  const child = spawn('redis-server', args, { stdio: 'ignore' });
  servers.push(child);
  return child;
}

async function answers(port: number, password?: string): Promise<boolean> {
  const client = new Redis({ port, host: '127.0.0.1', password, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

let sentinelPorts: number[] = [];

beforeAll(async () => {
  const masterPort = await unusedPort();
  startRedis(['--port', String(masterPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  await waitFor(() => answers(masterPort), { what: 'the Redis master' });

  const shipped = readFileSync(path.join(REPO, 'ops/redis/sentinel.conf'), 'utf8');
  sentinelPorts = [await unusedPort(), await unusedPort(), await unusedPort()];
  for (const [index, port] of sentinelPorts.entries()) {
    // `localhost`, a name: the shipped file must let Sentinel resolve names (resolve-hostnames).
    const configuration = shipped
      .replace(/^port 26379$/m, `port ${port}\nbind 127.0.0.1`)
      .replace(/^sentinel monitor mymaster redis-master 6379 2$/m, `sentinel monitor mymaster localhost ${masterPort} 2`)
      .replace(/^# requirepass .*$/m, `requirepass ${SENTINEL_PASSWORD}`);
    expect(configuration).toContain(`localhost ${masterPort}`);
    const file = path.join(folder, `sentinel-${index}.conf`);
    writeFileSync(file, configuration);
    startRedis([file, '--sentinel']);
  }
  for (const port of sentinelPorts) await waitFor(() => answers(port, SENTINEL_PASSWORD), { what: `the Sentinel on ${port}` });
});

afterAll(async () => {
  await killLeftoverProcesses();
  await Promise.all(servers.map((child) => new Promise((resolve) => (child.exitCode !== null ? resolve(null) : (child.once('exit', resolve), child.kill('SIGKILL'))))));
  rmSync(folder, { recursive: true, force: true });
});

it('web and worker find the master through the Sentinels with their password; a wrong one is refused at start', async () => {
  const database = await createTestDatabase({ ownedByOwnerRole: true });
  const port = await unusedPort();
  const sentinels = sentinelPorts.map((sentinel) => `127.0.0.1:${sentinel}`).join(',');
  const env = {
    NODE_ENV: 'production',
    ADMIN_TOKEN,
    REDIS_SENTINELS: sentinels,
    REDIS_SENTINEL_NAME: 'mymaster',
    REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD,
    QUEUE_PREFIX: uniqueName('rwsentinel'),
    MIGRATION_DATABASE_URL: database.url,
    DATABASE_URL: database.applicationUrl,
    DATA_DIR: folder,
    LOG_LEVEL: 'info',
  };
  try {
    const refused = startRagworks('web', { ...env, PORT: String(port), REDIS_SENTINEL_PASSWORD: 'not-the-password' });
    expect((await refused.waitForExit()).code).toBe(1);
    expect(refused.stderr.join('\n')).toContain(`sentinels ${sentinels} (master "mymaster")`);

    const web = startRagworks('web', { ...env, PORT: String(port) });
    const worker = startRagworks('worker', env);
    await web.waitForMessage('api listening', { timeoutMs: 90_000 });
    await worker.waitForMessage('workers started', { timeoutMs: 90_000 });
    const api = (method: string, route: string, token: string, body?: unknown, tenantId?: string) =>
      fetch(`http://127.0.0.1:${port}${route}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(tenantId ? { 'X-Tenant-Id': tenantId } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    const tenant = (await (await api('POST', '/api/admin/tenants', ADMIN_TOKEN, { slug: uniqueName('sentinel').replace(/_/g, '-'), name: 'Sentinel', tier: 'unlimited' })).json()) as { id: string };
    const created = await api('POST', '/api/admin/api-keys', ADMIN_TOKEN, { name: 'sentinel key', scopes: ['admin'] }, tenant.id);
    expect(created.status).toBe(201);
    const { key } = (await created.json()) as { key: string };
    const posted = await api('POST', '/api/documents', key, { title: 'Through Sentinel', content: 'Queued on the master the Sentinels name.' });
    expect(posted.status).toBe(202);
    const { id } = (await posted.json()) as { id: string };
    const indexed = await waitFor(async () => {
      const document = (await (await api('GET', `/api/documents/${id}`, key)).json()) as { status: string };
      return document.status === 'indexed' ? document : null;
    }, { what: 'the document to be indexed', timeoutMs: 60_000 });
    expect(indexed).toMatchObject({ status: 'indexed' });
    expect(await worker.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(await web.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  } finally {
    await database.drop();
  }
});
