import { chaosProblems, formatReport, runChaos } from '../chaos/chaos';

/**
 * The short chaos run: the whole fleet (two web processes behind HAProxy,
 * three workers, two schedulers, Sentinel Redis, PostgreSQL) under load
 * while each fault lands once — a worker killed, the Redis master killed,
 * PostgreSQL restarted, the web processes restarted one at a time. The
 * long one is `npm run chaos`.
 */

jest.setTimeout(900_000);

it('loses nothing accepted and shows clients only the documented 503s while each fault lands once', async () => {
  const seed = Number(process.env.CHAOS_SEED ?? 20261204);
  const report = await runChaos({ durationMs: 75_000, rounds: 1, seed, poisonDocuments: 1, log: (line) => process.stdout.write(`chaos: ${line}\n`) });
  process.stdout.write(`${formatReport(report)}\n`);
  expect(report.faults.map((fault) => fault.kind).sort()).toEqual(['kill-worker', 'postgres-restart', 'redis-failover', 'web-rolling-restart']);
  expect(report.indexing.documents).toBeGreaterThan(50);
  expect(report.webhooks.events).toBeGreaterThan(100);
  expect(chaosProblems(report)).toEqual([]);
});
