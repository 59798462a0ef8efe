import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Queue } from 'bullmq';
import { Cluster, Redis } from 'ioredis';
import { QUEUE_NAMES, queuePrefix } from '../../queues';
import { createTestDatabase, uniqueName } from '../helpers/databases';
import { ADMIN_TOKEN } from '../helpers/harness';
import { killLeftoverProcesses, startRagworks, unusedPort } from '../helpers/processes';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver';
import { waitFor } from '../helpers/wait';

/**
 * A real Redis Cluster of three masters on loopback, with a password, made
 * by `redis-cli --cluster create`; ragworks web and worker processes given
 * two of its nodes (the third is found) and REDIS_URL only for the
 * password. A document goes through indexing, search (then the cache) and a
 * signed webhook delivery, and the keys are where they should be: each
 * queue in a slot of its own, the queues over several masters, and each
 * tenant's keys in one slot.
 */

jest.setTimeout(180_000);

const PASSWORD = 'cluster-secret-for-tests';
const folder = mkdtempSync(path.join(os.tmpdir(), 'ragworks-cluster-'));
const servers: ChildProcess[] = [];
let ports: number[] = [];
let receiver: WebhookReceiver;

async function clusterState(port: number): Promise<string | null> {
  const client = new Redis({ port, host: '127.0.0.1', password: PASSWORD, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return /cluster_state:(\w+)/.exec(String(await client.call('cluster', 'info')))?.[1] ?? null;
  } catch {
    return null;
  } finally {
    client.disconnect();
  }
}

beforeAll(async () => {
  receiver = await startWebhookReceiver();
  ports = [await unusedPort(), await unusedPort(), await unusedPort()];
  for (const port of ports) {
    // The bus port is given rather than left at port + 10000, which may be taken or past 65535.
    const busPort = await unusedPort();
    const child = spawn(
      'redis-server',
      [
        '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-port', String(busPort),
        '--cluster-config-file', path.join(folder, `nodes-${port}.conf`), '--dir', folder,
        '--save', '', '--appendonly', 'no', '--requirepass', PASSWORD, '--masterauth', PASSWORD,
      ],
      { stdio: 'ignore' },
    );
    servers.push(child);
  }
  for (const port of ports) await waitFor(async () => (await clusterState(port)) !== null, { what: `the node on ${port}` });
  await promisify(execFile)('redis-cli', ['-a', PASSWORD, '--no-auth-warning', '--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes']);
  for (const port of ports) await waitFor(async () => (await clusterState(port)) === 'ok', { what: `cluster_state:ok on ${port}`, timeoutMs: 30_000 });
});

afterAll(async () => {
  await killLeftoverProcesses();
  await receiver?.close();
  await Promise.all(servers.map((child) => new Promise((resolve) => (child.exitCode !== null ? resolve(null) : (child.once('exit', resolve), child.kill('SIGKILL'))))));
  rmSync(folder, { recursive: true, force: true });
});

/** Every key under the prefix, with the master that holds it. */
async function keysByMaster(cluster: Cluster, prefix: string): Promise<Map<string, string>> {
  const held = new Map<string, string>();
  for (const master of cluster.nodes('master')) {
    let cursor = '0';
    do {
      const [next, keys] = await master.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) held.set(key, `${master.options.host}:${master.options.port}`);
    } while (cursor !== '0');
  }
  return held;
}

it('indexes, searches (then from the cache) and delivers a signed webhook on a three-master cluster, with queues spread and each tenant in one slot', async () => {
  const database = await createTestDatabase({ ownedByOwnerRole: true });
  const port = await unusedPort();
  const prefix = uniqueName('rwcluster');
  const env = {
    ADMIN_TOKEN,
    REDIS_CLUSTER_NODES: ports.slice(0, 2).map((node) => `127.0.0.1:${node}`).join(','),
    // Only the password counts: the host is not one of the nodes.
    REDIS_URL: `redis://:${PASSWORD}@unused.invalid:6379`,
    QUEUE_PREFIX: prefix,
    MIGRATION_DATABASE_URL: database.url,
    DATABASE_URL: database.applicationUrl,
    DATA_DIR: folder,
    WEBHOOK_ALLOW_PRIVATE: 'true',
    LOG_LEVEL: 'info',
  };
  const cluster = new Cluster([{ host: '127.0.0.1', port: ports[2] }], { redisOptions: { password: PASSWORD } });
  const indexing = new Queue('indexing', { connection: cluster, prefix: queuePrefix(prefix, 'indexing') });
  try {
    const web = startRagworks('web', { ...env, PORT: String(port) });
    const worker = startRagworks('worker', env);
    await web.waitForMessage('api listening', { timeoutMs: 90_000 });
    await worker.waitForMessage('workers started', { timeoutMs: 90_000 });
    // Ready means PostgreSQL and Redis answer: here, the cluster.
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
    const api = async (method: string, route: string, token: string, body?: unknown, tenantId?: string) => {
      const response = await fetch(`http://127.0.0.1:${port}${route}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(tenantId ? { 'X-Tenant-Id': tenantId } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: response.status, body: (await response.json().catch(() => null)) as Record<string, any> };
    };

    const tenant = await api('POST', '/api/admin/tenants', ADMIN_TOKEN, { slug: uniqueName('cluster').replace(/_/g, '-'), name: 'Cluster', tier: 'free' });
    expect(tenant.status).toBe(201);
    const tenantId = tenant.body.id as string;
    const created = await api('POST', '/api/admin/api-keys', ADMIN_TOKEN, { name: 'cluster key', scopes: ['admin'] }, tenantId);
    expect(created.status).toBe(201);
    const key = created.body.key as string;
    const endpoint = await api('POST', '/api/admin/webhooks', key, { url: receiver.url('/hook'), event_types: ['document.indexed'] });
    expect(endpoint.status).toBe(201);
    receiver.secrets = [endpoint.body.secret];
    // The key-change channel (pub/sub) is heard through the cluster: keys are verified from memory.
    await web.waitForMessage('API keys are verified from memory: the change channel is heard', { timeoutMs: 10_000 });

    const posted = await api('POST', '/api/documents', key, { title: 'Sharded', content: 'Sixteen thousand three hundred eighty four hash slots over three masters.' });
    expect(posted.status).toBe(202);
    const documentId = posted.body.id as string;
    await waitFor(async () => ((await api('GET', `/api/documents/${documentId}`, key)).body.status === 'indexed' ? true : null), {
      what: 'the document to be indexed',
      timeoutMs: 60_000,
    });
    // The generation is bumped as the index job finishes: searching after it lets the second search find the first's answer.
    await waitFor(async () => ((await indexing.getJobCounts('completed')).completed >= 1 ? true : null), { what: 'the indexing job to complete' });

    const query = { query: 'hash slots masters', mode: 'keyword' };
    const first = await api('POST', '/api/search', key, query);
    expect(first.status).toBe(200);
    expect(first.body.cached).toBe(false);
    expect(first.body.results.map((result: { document_id: string }) => result.document_id)).toContain(documentId);
    const second = await api('POST', '/api/search', key, query);
    expect(second).toMatchObject({ status: 200, body: { cached: true } });
    expect(second.body.results).toEqual(first.body.results);
    // Both searches counted by the day's quota, taken in the tenant's slot as each was admitted.
    expect((await api('GET', '/api/stats', key)).body.searches).toBe(2);

    const [delivery] = await receiver.waitForRequests(1, { timeoutMs: 60_000, filter: (request) => request.eventType === 'document.indexed' });
    expect(delivery.verified).toBe(true);
    expect(delivery.json).toMatchObject({ type: 'document.indexed' });

    const held = await keysByMaster(cluster, prefix);
    // Each queue's keys in one slot; the queues used here on more than one master.
    const mastersOfQueues = new Set<string>();
    for (const name of QUEUE_NAMES) {
      const own = [...held.keys()].filter((each) => each.startsWith(`${queuePrefix(prefix, name)}:`));
      if (name === 'indexing' || name === 'webhooks' || name === 'webhook-fanout') expect(own.length).toBeGreaterThan(0);
      if (own.length === 0) continue;
      const slots = new Set(await Promise.all(own.map(async (each) => Number(await cluster.cluster('KEYSLOT', each)))));
      expect(slots.size).toBe(1);
      for (const each of own) mastersOfQueues.add(held.get(each)!);
    }
    expect(mastersOfQueues.size).toBeGreaterThan(1);
    // The tenant's keys — cache, rate limits, quota — all in the slot of its tag.
    const tenantKeys = [...held.keys()].filter((each) => each.includes(`{${tenantId}}`));
    for (const part of ['cache:generation:', 'cache:search:', 'rate-limit:tenant:', 'rate-limit:key:', 'quota:searches:']) {
      expect(tenantKeys.some((each) => each.startsWith(`${prefix}:${part}`))).toBe(true);
    }
    const tenantSlots = new Set(await Promise.all(tenantKeys.map(async (each) => Number(await cluster.cluster('KEYSLOT', each)))));
    expect([...tenantSlots]).toEqual([Number(await cluster.cluster('KEYSLOT', `{${tenantId}}`))]);
    expect(new Set(tenantKeys.map((each) => held.get(each))).size).toBe(1);

    expect(await worker.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(await web.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  } finally {
    await indexing.close();
    cluster.disconnect();
    await database.drop();
  }
});
