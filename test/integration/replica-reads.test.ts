import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createTestDatabase, REDIS_URL, uniqueName } from '../helpers/databases';
import { ADMIN_TOKEN } from '../helpers/harness';
import { PrivatePostgres } from '../helpers/private-postgres';
import { killLeftoverProcesses, startRagworks, unusedPort, type RagworksProcess } from '../helpers/processes';
import { deleteRedisPrefix } from '../helpers/redis';
import { loadConfig } from '../../src/config';
import { deleteDocument } from '../../src/domain/documents/documents';
import { createLogger } from '../../src/logger';
import { createPlatform } from '../../src/platform';
import { waitFor } from '../helpers/wait';

// DATABASE_REPLICA_URL with real processes: a web and a worker process on a
// primary and its streaming replica. Searches go to the replica while it has
// replayed the tenant's last write, to the primary otherwise, and never answer
// from before a write the API has acknowledged — not with the replica's replay
// paused, not from the cache — and a stopped replica costs no answer.
//
// The replica is of a private cluster (initdb in a temporary folder, on a free
// loopback port), not of the machine's PostgreSQL on 5432: that server's
// pg_hba.conf has no `replication` line, so it refuses pg_basebackup and
// streaming, and changing its configuration would touch the server every
// other test shares. A private primary configured for replication, with its
// replica made by `pg_basebackup -R` and started with pg_ctl, is the same
// setup on a server of this test's own.

jest.setTimeout(240_000);

interface Hit {
  document_id: string;
}

let primary: PrivatePostgres;
let replica: PrivatePostgres;
let dropDatabase: () => Promise<void>;
let databaseName: string;
let dataDir: string;
let prefix: string;
let web: RagworksProcess;
let worker: RagworksProcess;
let baseUrl: string;
let key: string;
let tenantId: string;
let env: Record<string, string>;

async function call(method: string, route: string, token: string, body?: unknown, tenantId?: string): Promise<{ status: number; body: any }> {
  const response = await fetch(`${baseUrl}${route}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(tenantId ? { 'X-Tenant-Id': tenantId } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : {} };
}

async function search(query: string): Promise<string[]> {
  const reply = await call('POST', '/api/search', key, { query, mode: 'keyword', limit: 50 });
  if (reply.status !== 200) throw new Error(`search "${query}" answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return (reply.body.results as Hit[]).map((hit) => hit.document_id);
}

/** `ragworks_database_reads_total` of the web process, by read and target. */
async function reads(read: 'search' | 'analytics', target: 'replica' | 'primary'): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const line = text.split('\n').find((entry) => entry.startsWith(`ragworks_database_reads_total{read="${read}",target="${target}"}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

async function replicaErrors(): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const line = text.split('\n').find((entry) => entry.startsWith('ragworks_replica_errors_total '));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** Posts a document and waits until the API says it is indexed: the write is acknowledged. */
async function addDocument(title: string, content: string): Promise<string> {
  const created = await call('POST', '/api/documents', key, { title, content });
  if (created.status !== 202) throw new Error(`POST /api/documents answered ${created.status}: ${JSON.stringify(created.body)}`);
  const id: string = created.body.id;
  await waitFor(
    async () => {
      const document = await call('GET', `/api/documents/${id}`, key);
      if (document.body.status === 'failed') throw new Error(`document failed: ${document.body.error}`);
      return document.body.status === 'indexed';
    },
    { timeoutMs: 60_000, intervalMs: 20, what: `document ${id} to be indexed` },
  );
  return id;
}

/** The replica has replayed everything the primary has written so far. */
async function replicaCaughtUp(): Promise<void> {
  const [{ lsn }] = await primary.query<{ lsn: string }>('select pg_current_wal_insert_lsn()::text as lsn');
  await waitFor(async () => (await replica.query<{ done: boolean }>(`select pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn as done`))[0].done, {
    what: 'the replica to catch up',
  });
}

/** Searches (each a new query, so the cache cannot answer) until one is served by the replica; every answer must hold `expected`. */
async function searchesReachTheReplica(word: string, expected: string[]): Promise<void> {
  let round = 0;
  await waitFor(
    async () => {
      const before = await reads('search', 'replica');
      round += 1;
      // A second word that matches nothing keeps the result the same while making the query new.
      const found = await search(`${word} or nothing${round}x`);
      expect(found.sort()).toEqual([...expected].sort());
      return (await reads('search', 'replica')) > before;
    },
    { timeoutMs: 20_000, intervalMs: 20, what: 'a search served by the replica' },
  );
}

beforeAll(async () => {
  primary = await PrivatePostgres.create();
  replica = await primary.createReplica();
  // Created on the primary after the replica was made: roles and database reach it by streaming.
  const database = await createTestDatabase({ adminUrl: primary.url(), ownedByOwnerRole: true });
  dropDatabase = database.drop;
  databaseName = database.name;
  const replicaUrl = new URL(database.applicationUrl);
  replicaUrl.port = String(replica.port);
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'ragworks-replica-'));
  prefix = uniqueName('rwreplica');
  const port = await unusedPort();
  env = {
    NODE_ENV: 'test',
    ADMIN_TOKEN,
    REDIS_URL,
    QUEUE_PREFIX: prefix,
    DATA_DIR: dataDir,
    LOG_LEVEL: 'info',
    SCHEDULE_RECONCILE: '0 0 1 1 *',
    MIGRATION_DATABASE_URL: database.url,
    DATABASE_URL: database.applicationUrl,
    DATABASE_REPLICA_URL: replicaUrl.toString(),
  };
  web = startRagworks('web', { ...env, PORT: String(port), HOST: '127.0.0.1' });
  await web.waitForMessage('api listening', { timeoutMs: 120_000 });
  worker = startRagworks('worker', env);
  await worker.waitForMessage('platform ready', { timeoutMs: 120_000 });
  baseUrl = `http://127.0.0.1:${port}`;
  const slug = uniqueName('replica').replace(/_/g, '-');
  const tenant = await call('POST', '/api/admin/tenants', ADMIN_TOKEN, { slug, name: slug, tier: 'unlimited' });
  expect(tenant.status).toBe(201);
  const created = await call('POST', '/api/admin/api-keys', ADMIN_TOKEN, { name: 'replica test', scopes: ['admin'] }, tenant.body.id);
  expect(created.status).toBe(201);
  key = created.body.key;
  tenantId = tenant.body.id;
});

async function pauseReplay(): Promise<void> {
  await replica.query('select pg_wal_replay_pause()');
  await waitFor(async () => (await replica.query<{ state: string }>('select pg_get_wal_replay_pause_state() as state'))[0].state === 'paused', {
    what: 'replay to pause',
  });
}

afterAll(async () => {
  await killLeftoverProcesses();
  await replica?.destroy();
  await dropDatabase?.().catch(() => undefined);
  await primary?.destroy();
  if (prefix) await deleteRedisPrefix(prefix);
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('searches on a read replica', () => {
  const marker = `replicaword${Date.now().toString(36)}`;
  const kept: string[] = [];

  it('are served by the replica once it has replayed the tenant\'s last write', async () => {
    kept.push(await addDocument('First on both servers', `The ${marker} appears in this one.`));
    kept.push(await addDocument('Second on both servers', `Another page about ${marker}.`));
    await searchesReachTheReplica(marker, kept);
    // The replica answered as the application role: row-level security held there too (the tenant's rows, no others).
    expect(await search(marker)).toHaveLength(2);
  });

  it('never answer from before an acknowledged write, with the replica paused, cache or not', async () => {
    // Cached now, before the writes below: it must not be what answers after them.
    expect((await search(marker)).sort()).toEqual([...kept].sort());
    await pauseReplay();
    const replicaBefore = await reads('search', 'replica');

    // A search running all along, as a client polling would: once the API has said "indexed", every answer has it.
    let acknowledged = false;
    let polling = true;
    const stale: string[] = [];
    const poller = (async () => {
      while (polling) {
        const seenIndexed = acknowledged;
        const found = await search(marker);
        if (seenIndexed && found.length !== kept.length + 1) stale.push(found.join(','));
      }
    })();
    const added = await addDocument('Written while the replica is paused', `A third page naming ${marker}.`);
    acknowledged = true;
    await new Promise((resolve) => setTimeout(resolve, 300));
    polling = false;
    await poller;
    expect(stale).toEqual([]);

    expect((await search(marker)).sort()).toEqual([...kept, added].sort());
    expect((await search(`${marker} or otherwordx`)).sort()).toEqual([...kept, added].sort());

    // A delete: 204, then no search finds the document, though the replica still has it.
    const gone = kept.shift()!;
    expect((await call('DELETE', `/api/documents/${gone}`, key)).status).toBe(204);
    expect((await call('GET', `/api/documents/${gone}`, key)).status).toBe(404);
    expect((await search(marker)).sort()).toEqual([...kept, added].sort());
    expect(await search(`${marker} or anotherwordx`)).not.toContain(gone);
    // The superuser sees past row-level security: the paused replica still holds the deleted row.
    const [{ rows }] = await replica.query<{ rows: string }>(`select count(*)::text as rows from documents where id = '${gone}'`, databaseName);
    expect(rows).toBe('1');
    // Paused, the replica served none of them: every one went to the primary.
    expect(await reads('search', 'replica')).toBe(replicaBefore);

    await replica.query('select pg_wal_replay_resume()');
    kept.push(added);
    await replicaCaughtUp();
    await searchesReachTheReplica(marker, kept);
  });

  it('a write committed and not yet announced already keeps searches off the cache and the replica', async () => {
    // The bracket a write runs in (write-marks.ts), held open after the commit: this is the moment between
    // the commit becoming visible and the generation and position being recorded.
    const platform = await createPlatform(loadConfig({ ...env, LOG_LEVEL: 'silent' }), createLogger('silent'));
    try {
      // Cached before the write, and on the replica, whose replay is then paused.
      expect((await search(marker)).sort()).toEqual([...kept].sort());
      await pauseReplay();
      const gone = kept.shift()!;
      const { db, events, writes } = platform.documentDeps();
      const inTheWindow = await writes.around(tenantId, async () => {
        await deleteDocument({ db, events, writes: { around: (_tenant, commit) => commit() } }, tenantId, gone);
        // Committed: the API says so already.
        expect((await call('GET', `/api/documents/${gone}`, key)).status).toBe(404);
        return { cachedQuery: await search(marker), newQuery: await search(`${marker} or windowwordx`) };
      });
      expect(inTheWindow.cachedQuery.sort()).toEqual([...kept].sort());
      expect(inTheWindow.newQuery.sort()).toEqual([...kept].sort());
      expect((await search(marker)).sort()).toEqual([...kept].sort());
    } finally {
      await replica.query('select pg_wal_replay_resume()');
      await platform.close();
    }
    await replicaCaughtUp();
    await searchesReachTheReplica(marker, kept);
  });

  it('analytics reports read the replica when it is current', async () => {
    const before = await reads('analytics', 'replica');
    const stats = await call('GET', '/api/admin/analytics/stats?days=7', key);
    expect(stats.status).toBe(200);
    expect(await reads('analytics', 'replica')).toBe(before + 1);
  });

  it('go to the primary, and still answer, while the replica is down', async () => {
    await replica.stop('fast');
    const primaryBefore = await reads('search', 'primary');
    const errorsBefore = await replicaErrors();
    for (let round = 0; round < 5; round += 1) {
      expect((await search(`${marker} or downword${round}x`)).sort()).toEqual([...kept].sort());
    }
    expect(await reads('search', 'primary')).toBe(primaryBefore + 5);
    expect(await replicaErrors()).toBeGreaterThan(errorsBefore);
    expect((await call('GET', '/api/admin/analytics/popular', key)).status).toBe(200);
    expect(web.messages('the replica did not answer').length).toBeGreaterThan(0);

    // Writes go on meanwhile, and the replica catches up with them when it is back.
    const added = await addDocument('Written while the replica is down', `A fourth page naming ${marker}.`);
    kept.push(added);
    expect((await search(marker)).sort()).toEqual([...kept].sort());
    await replica.start();
    await replicaCaughtUp();
    await searchesReachTheReplica(marker, kept);
  });
});
