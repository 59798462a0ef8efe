import { createTestDatabase, uniqueName } from '../helpers/databases';
import { checkIndexedOnce, HttpApi, SteadyLoad } from '../helpers/fleet';
import { ADMIN_TOKEN } from '../helpers/harness';
import { killLeftoverProcesses, startRagworks, unusedPort, type RagworksProcess } from '../helpers/processes';
import { SentinelRedis } from '../helpers/sentinel-redis';
import { waitFor } from '../helpers/wait';

/**
 * A real Redis master and replica watched by three real Sentinels, each
 * started on ops/redis/sentinel.conf itself, and ragworks finding the master
 * through them with the Sentinels' password — then losing it to `kill -9`.
 */

jest.setTimeout(180_000);

const SENTINEL_PASSWORD = 'sentinel-secret-for-tests';
let redis: SentinelRedis;

beforeAll(async () => {
  redis = await SentinelRedis.start({ password: SENTINEL_PASSWORD });
});

afterAll(async () => {
  await killLeftoverProcesses();
  await redis?.stop();
});

async function fleetEnvironment(): Promise<{ env: Record<string, string>; ownerUrl: string; drop(): Promise<void> }> {
  const database = await createTestDatabase({ ownedByOwnerRole: true });
  return {
    env: {
      NODE_ENV: 'production',
      ADMIN_TOKEN,
      ...redis.environment,
      QUEUE_PREFIX: uniqueName('rwsentinel'),
      MIGRATION_DATABASE_URL: database.url,
      DATABASE_URL: database.applicationUrl,
      LOG_LEVEL: 'debug',
    },
    ownerUrl: database.url,
    drop: () => database.drop(),
  };
}

it('web and worker find the master through the Sentinels with their password; a wrong one is refused at start', async () => {
  const fleet = await fleetEnvironment();
  const port = await unusedPort();
  try {
    const refused = startRagworks('web', { ...fleet.env, PORT: String(port), REDIS_SENTINEL_PASSWORD: 'not-the-password' });
    expect((await refused.waitForExit()).code).toBe(1);
    expect(refused.stderr.join('\n')).toContain(`sentinels ${redis.addresses} (master "mymaster")`);

    const web = startRagworks('web', { ...fleet.env, PORT: String(port) });
    const worker = startRagworks('worker', fleet.env);
    await web.waitForMessage('api listening', { timeoutMs: 90_000 });
    await worker.waitForMessage('workers started', { timeoutMs: 90_000 });
    const api = new HttpApi(`http://127.0.0.1:${port}`);
    const tenant = await api.createTenant('sentinel');
    const posted = await api.call('POST', '/api/documents', tenant.key, { title: 'Through Sentinel', content: 'Queued on the master the Sentinels name.' });
    expect(posted.status).toBe(202);
    const indexed = await waitFor(async () => {
      const document = await api.call('GET', `/api/documents/${posted.body.id as string}`, tenant.key);
      return document.body.status === 'indexed' ? document.body : null;
    }, { what: 'the document to be indexed', timeoutMs: 60_000 });
    expect(indexed).toMatchObject({ status: 'indexed' });
    expect(await worker.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(await web.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  } finally {
    await fleet.drop();
  }
});

it('kill -9 of the master under load: every accepted document indexed exactly once, workers go on without a restart, 503s only while it fails over', async () => {
  const fleet = await fleetEnvironment();
  const port = await unusedPort();
  // Reconcile often: a job the old master took but never passed to its replica is found again from the database.
  const env = { ...fleet.env, SCHEDULE_RECONCILE: '*/2 * * * * *', RECONCILE_STUCK_AFTER_SECONDS: '5' };
  try {
    const web = startRagworks('web', { ...env, PORT: String(port) });
    const workers: RagworksProcess[] = [startRagworks('worker', env), startRagworks('worker', env)];
    const scheduler = startRagworks('scheduler', env);
    await web.waitForMessage('api listening', { timeoutMs: 90_000 });
    for (const worker of workers) await worker.waitForMessage('workers started', { timeoutMs: 90_000 });
    await scheduler.waitForMessage('schedule started', { timeoutMs: 90_000 });
    const workerPids = workers.map((worker) => worker.pid);

    const api = new HttpApi(`http://127.0.0.1:${port}`);
    const tenant = await api.createTenant('failover');
    const load = new SteadyLoad(api, tenant.key, { writers: 3, searchers: 2, pauseMs: 20, label: 'failover' });
    load.start();
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const failover = await redis.failover();
    const afterFailover = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    await load.stop();

    const report = load.report();
    expect(report.accepted).toBeGreaterThan(20);
    // Written after the new master took over, and accepted: the fleet works on it.
    expect(load.outcomes.some((outcome) => outcome.kind === 'write' && outcome.status === 202 && outcome.startedAt > afterFailover)).toBe(true);
    expect(report.unexpected).toEqual([]);
    // Unavailable at most while the Sentinels notice and promote (about down-after + election), with a margin.
    expect(report.longestUnavailableMs).toBeLessThan(failover.tookMs + 10_000);

    const ids = [...load.accepted.keys()];
    let last: unknown;
    const settled = await waitFor(
      async () => {
        const check = await checkIndexedOnce(fleet.ownerUrl, ids);
        last = check;
        return check.indexed === ids.length ? check : null;
      },
      { what: 'every accepted document to be indexed', timeoutMs: 90_000, intervalMs: 500 },
    ).catch((error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify(last, (_name, value: unknown) => (Array.isArray(value) && value.length > 5 ? [...value.slice(0, 5), `… ${value.length} in all`] : value))}\n${workers.map((worker) => worker.describe()).join('\n')}\n${scheduler.describe()}`);
    });
    expect(settled).toMatchObject({ missing: [], notExactlyOnce: [], indexedEventsTwice: [] });

    // The same worker processes did the work after the failover: nothing restarted them.
    expect(workers.map((worker) => worker.pid)).toEqual(workerPids);
    expect(workers.every((worker) => worker.running)).toBe(true);
    const completedAfter = workers.flatMap((worker) => worker.messages('job completed')).filter((line) => Date.parse(String(line.time)) > afterFailover);
    expect(completedAfter.length).toBeGreaterThan(0);
    // And a document written now is indexed promptly by them, not by a reconcile pass alone.
    const late = await api.call('POST', '/api/documents', tenant.key, { title: 'After', content: 'Written once the fleet settled.' });
    expect(late.status).toBe(202);
    await waitFor(async () => (await api.call('GET', `/api/documents/${late.body.id as string}`, tenant.key)).body.status === 'indexed', {
      what: 'a new document to be indexed on the new master',
      timeoutMs: 20_000,
    });

    for (const child of [...workers, scheduler, web]) expect(await child.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    process.stdout.write(
      `sentinel failover: took ${failover.tookMs} ms; ${report.requests} requests ${JSON.stringify(report.byStatus)}; longest unavailable ${report.longestUnavailableMs} ms; ${ids.length} documents indexed exactly once\n`,
    );
  } finally {
    await fleet.drop();
  }
});
