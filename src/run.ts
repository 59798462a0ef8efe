import type http from 'node:http';
import { QUEUE_NAMES } from '../queues';
import { resolveAdminToken } from './admin-token';
import { withTimeout } from './async';
import { ConfigError, loadConfig, selectedQueues, type Config } from './config';
import { createLogger, type Logger } from './logger';
import { openDatabase } from './db/database';
import { migrateToLatest } from './db/migrate';
import { databaseOptions, migrationOptions, reportMigration } from './db/prepare';
import { readiness } from './health';
import { scrapeAllowed } from './metrics';
import { createPlatform, type Platform } from './platform';
import { RedisUnreachableError } from './redis';
import { closeServer, listen, type Stop } from './roles/serve';

export const ROLES = ['web', 'worker', 'scheduler', 'all', 'migrate'] as const;
export type Role = (typeof ROLES)[number];

/** Stops the process with one line on stderr and a non-zero code. */
function die(message: string, code = 1): never {
  process.stderr.write(`ragworks: ${message}\n`);
  process.exit(code);
}

export async function run(roleArgument: string, telemetry: { shutdown(): Promise<void> }): Promise<void> {
  if (!(ROLES as readonly string[]).includes(roleArgument)) die(`unknown role "${roleArgument}" (use one of ${ROLES.join(', ')})`, 2);
  const role = roleArgument as Role;

  let config: Config;
  try {
    config = loadConfig();
    if (role !== 'all' && role !== 'migrate' && !config.DATABASE_URL) {
      throw new ConfigError(
        `Invalid configuration: DATABASE_URL is required for role "${role}": the embedded database serves a single process, so run role "all" or point DATABASE_URL at PostgreSQL`,
      );
    }
    if (role === 'worker' || role === 'all') selectedQueues(config, QUEUE_NAMES);
  } catch (error) {
    if (error instanceof ConfigError) die(error.message, 2);
    throw error;
  }

  const logger = createLogger(config.LOG_LEVEL).child({ role });
  config = resolveAdminToken(config, logger);
  if (role === 'migrate') return migrateAndExit(config, logger, telemetry);

  let platform: Platform;
  try {
    platform = await createPlatform(config, logger);
  } catch (error) {
    if (error instanceof RedisUnreachableError) die(error.message);
    if (error instanceof ConfigError) die(error.message, 2);
    die(`could not start: ${(error as Error).message}`);
  }
  logger.info({ database: platform.db.location, kind: platform.db.kind, vector_search: platform.vector.available }, 'platform ready');

  let stops: Stop[];
  try {
    stops = await startRole(role, platform, logger);
  } catch (error) {
    await platform.close().catch(() => undefined);
    die(`could not start: ${(error as Error).message}`);
  }
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const deadline = exitDeadlineMs(config);
    const timer = setTimeout(() => die(`shutdown took longer than ${deadline} ms; exiting`), deadline);
    timer.unref();
    try {
      platform.health.stopping = true;
      if (config.SHUTDOWN_DELAY_MS > 0 && (role === 'web' || role === 'all')) {
        // Still serving: the load balancer sees /readyz fail and stops sending before the listener closes.
        logger.info({ delay_ms: config.SHUTDOWN_DELAY_MS }, 'not ready any more; serving until the load balancer has noticed');
        await new Promise((resolve) => setTimeout(resolve, config.SHUTDOWN_DELAY_MS));
      }
      await Promise.all(stops.map((stop) => stop()));
      // Work handed back at the drain deadline may still hold a database connection;
      // its transaction dies with the process, and another worker redoes the job.
      await withTimeout(platform.close(), config.SHUTDOWN_TIMEOUT_MS).catch((error) =>
        logger.warn({ err: error }, 'connections still busy at exit; their work was handed back'),
      );
      await telemetry.shutdown();
      logger.info('stopped');
      process.exit(0);
    } catch (error) {
      logger.error({ err: error }, 'shutdown failed');
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

/**
 * How long a process may take after SIGTERM before it exits anyway: the
 * web's readiness delay (SHUTDOWN_DELAY_MS), then intake stops and work
 * drains side by side, each within SHUTDOWN_TIMEOUT_MS; closing the pools
 * gets as long again. An orchestrator's grace period must be longer
 * (ops/k8s, docker-compose.yml), or it kills what is handing back.
 */
export function exitDeadlineMs(config: Pick<Config, 'SHUTDOWN_TIMEOUT_MS' | 'SHUTDOWN_DELAY_MS'>): number {
  return config.SHUTDOWN_DELAY_MS + config.SHUTDOWN_TIMEOUT_MS * 2 + 5_000;
}

/** Brings the schema up to date without Redis, queues or workers, and exits. */
async function migrateAndExit(config: Config, logger: Logger, telemetry: { shutdown(): Promise<void> }): Promise<never> {
  try {
    const db = await openDatabase(databaseOptions(config, logger, 2));
    try {
      const report = await migrateToLatest(db, migrationOptions(config));
      reportMigration(report, logger);
      logger.info({ vector_search: report.vectorSearch.available }, 'migrations are up to date');
    } finally {
      await db.close();
    }
  } catch (error) {
    die(`could not migrate: ${(error as Error).message}`);
  }
  await telemetry.shutdown();
  process.exit(0);
}

/**
 * Starts what the role runs; returns how to stop each part (they stop side
 * by side, pools after). Each part is loaded only when its role runs it: a
 * web process loads no job processor, a worker none of the HTTP API
 * (test/unit/architecture.test.ts).
 */
async function startRole(role: Role, platform: Platform, logger: Logger): Promise<Stop[]> {
  const { config } = platform;
  const stops: Stop[] = [];
  const runs = (part: 'web' | 'worker' | 'scheduler') => role === part || role === 'all';

  // Required here, not imported at the top: a module is loaded only by the role that runs it.
  /* eslint-disable @typescript-eslint/no-require-imports */
  if (runs('scheduler')) stops.push((require('./roles/scheduler') as typeof import('./roles/scheduler')).startScheduler(platform));
  if (runs('web')) stops.push(await (require('./roles/web') as typeof import('./roles/web')).startWeb(platform, logger));
  else if (config.METRICS_PORT !== undefined) {
    const server = await listen(metricsOnly(platform), config.METRICS_PORT, config.HOST);
    stops.push(() => closeServer(server, 1_000));
  }
  if (runs('worker')) stops.push((require('./roles/worker') as typeof import('./roles/worker')).startWorkers(platform, logger));
  /* eslint-enable @typescript-eslint/no-require-imports */
  return stops;
}

/**
 * A worker's or scheduler's port (METRICS_PORT): /metrics, and the probes an
 * orchestrator needs: /healthz answers from the event loop, so a loop
 * blocked for longer than the probe's timeout fails it; /readyz checks both
 * stores.
 */
function metricsOnly(platform: Platform): http.RequestListener {
  return (req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    if (req.url === '/readyz') {
      readiness(platform.health).then(
        ({ status, body }) => res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body)),
        () => res.writeHead(503).end(),
      );
      return;
    }
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    if (!scrapeAllowed(req.headers.authorization, platform.config.METRICS_TOKEN)) {
      res.writeHead(401, { 'WWW-Authenticate': 'Bearer realm="ragworks metrics"' }).end();
      return;
    }
    platform.metrics.registry.metrics().then(
      (body) => res.writeHead(200, { 'Content-Type': platform.metrics.registry.contentType }).end(body),
      () => res.writeHead(500).end(),
    );
  };
}
