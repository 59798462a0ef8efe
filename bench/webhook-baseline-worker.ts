import { Worker } from 'bullmq';
import { Agent, request } from 'undici';

/**
 * The webhook benchmark's baseline, run as a child process like a ragworks
 * worker: a bare BullMQ worker that POSTs each job's body with undici to the
 * URL the job names — no database, no signing, no per-endpoint limit, no
 * log. It says "ready" on stdout once its worker is connected and stops on
 * SIGTERM.
 *
 * Environment: BASELINE_REDIS_URL, BASELINE_PREFIX, BASELINE_QUEUE,
 * BASELINE_CONCURRENCY.
 */

const redis = new URL(process.env.BASELINE_REDIS_URL ?? 'redis://127.0.0.1:6379');
// Kept-alive connections, as many as the worker has jobs at once.
const dispatcher = new Agent({ keepAliveTimeout: 60_000 });

interface BaselineJob {
  url: string;
  id: string;
  body: string;
}

const worker = new Worker<BaselineJob>(
  process.env.BASELINE_QUEUE ?? 'baseline-webhooks',
  async (job) => {
    const response = await request(job.data.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'webhook-id': job.data.id },
      body: job.data.body,
      dispatcher,
    });
    await response.body.dump();
    if (response.statusCode < 200 || response.statusCode >= 300) throw new Error(`HTTP ${response.statusCode}`);
  },
  {
    connection: { host: redis.hostname, port: Number(redis.port || 6379), maxRetriesPerRequest: null },
    prefix: process.env.BASELINE_PREFIX,
    concurrency: Number(process.env.BASELINE_CONCURRENCY ?? 8),
  },
);
worker.on('error', (error) => process.stderr.write(`baseline worker: ${error.message}\n`));
void worker.waitUntilReady().then(() => process.stdout.write('ready\n'));

process.once('SIGTERM', () => {
  void worker
    .close()
    .then(() => dispatcher.close())
    .finally(() => process.exit(0));
});
