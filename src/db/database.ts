import fs from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import pg from 'pg';
import type { Logger } from '../logger';

/** int8 counts and sums come back as numbers; no value we store comes near 2^53. */
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number(value));

export type DatabaseKind = 'postgres' | 'pglite';

export interface Database {
  knex: Knex;
  kind: DatabaseKind;
  /** Where the data lives, for log lines: a URL without its password, or the PGlite directory. */
  location: string;
  /**
   * Resolves when the database answers. On a server it uses a connection of
   * its own, so a saturated pool is not mistaken for an outage; the embedded
   * database lives in this process and cannot be unreachable.
   */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  databaseUrl?: string;
  dataDir: string;
  poolMax: number;
  /** Where knex's own warnings go, instead of plain console lines. */
  logger: Logger;
}

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (options.databaseUrl) return openPostgres(options.databaseUrl, options.poolMax, options.logger);
  return openPglite(path.join(options.dataDir, 'pglite'));
}

function openPostgres(url: string, poolMax: number, logger: Logger): Database {
  const knex = knexFactory({
    log: {
      warn: (message: string) => logger.warn({ component: 'knex' }, message),
      error: (message: string) => logger.error({ component: 'knex' }, message),
      deprecate: (message: string) => logger.warn({ component: 'knex' }, message),
      debug: (message: string) => logger.debug({ component: 'knex' }, message),
    },
    client: 'pg',
    connection: { connectionString: url, connectionTimeoutMillis: 5_000 },
    pool: {
      min: 0,
      max: poolMax,
      idleTimeoutMillis: 30_000,
      // Hour and day buckets are UTC whatever the server's own time zone.
      afterCreate: (connection: pg.Client, done: (error: Error | null, connection: pg.Client) => void) => {
        connection.query('set time zone utc', (error: Error | null) => done(error, connection));
      },
    },
    acquireConnectionTimeout: 10_000,
  });
  const healthPool = new pg.Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 2_000, query_timeout: 2_000, idleTimeoutMillis: 0 });
  healthPool.on('error', () => undefined); // a dropped idle connection is what ping() is there to notice
  return {
    knex,
    kind: 'postgres',
    location: redactUrl(url),
    ping: async () => {
      await healthPool.query('select 1');
    },
    close: async () => {
      await Promise.all([knex.destroy(), healthPool.end()]);
    },
  };
}

async function openPglite(dataDir: string): Promise<Database> {
  fs.mkdirSync(dataDir, { recursive: true });
  const [{ PGlite }, { vector }, { default: ClientPgLite }] = await Promise.all([
    import('@electric-sql/pglite'),
    import('@electric-sql/pglite-pgvector'),
    import('knex-pglite'),
  ]);
  const instance = await PGlite.create({ dataDir, extensions: { vector } });
  // knex-pglite owns the instance: destroying knex closes it.
  const knex = knexFactory({ client: ClientPgLite, dialect: 'postgres', connection: { pglite: instance } } as unknown as Knex.Config);
  return { knex, kind: 'pglite', location: dataDir, ping: async () => undefined, close: () => knex.destroy() };
}

export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparseable URL)';
  }
}
