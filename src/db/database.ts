import fs from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import pg from 'pg';
import type { Logger } from '../logger';
import { redactUrl } from '../secrets';

/** int8 counts and sums come back as numbers; no value we store comes near 2^53. */
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number(value));

export type DatabaseKind = 'postgres' | 'pglite';

export interface Database {
  knex: Knex;
  kind: DatabaseKind;
  /** Where the data lives, for log lines: a URL without its password, or the PGlite directory. */
  location: string;
  /**
   * A streaming replica of the server (DATABASE_REPLICA_URL), read-only,
   * with the same role, pool and statement bounds as `knex`: the tenant-scope
   * helpers work on it unchanged (set_config is allowed in the read-only
   * transactions of a hot standby, and row-level security holds there too).
   * Which reads may use it is for src/db/replica-reads.ts to decide.
   */
  replica: Knex | null;
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
  /** Only with `databaseUrl`. */
  replicaUrl?: string;
  dataDir: string;
  poolMax: number;
  /** Where knex's own warnings go, instead of plain console lines. */
  logger: Logger;
  /** Bounds on every statement and on every open transaction left idle, in ms; 0: none. PGlite has neither. */
  statementTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
}

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (options.databaseUrl) return openPostgres(options.databaseUrl, options);
  return openPglite(path.join(options.dataDir, 'pglite'));
}

/**
 * knex by default rewrites a failed statement's message with bound values
 * inlined wherever a bare `?` is left once the bindings are numbered (on
 * PostgreSQL, jsonb's escaped `\\?` operators), and from the message they
 * reach logs, BullMQ's failedReason and dead letters: webhook secrets, key
 * hashes, whole documents. Off, the message keeps the SQL with `$n` only.
 */
const WITHOUT_VALUES_IN_ERRORS = { compileSqlOnError: false } as const;

export interface ServerConnectionOptions {
  poolMax: number;
  logger?: Logger;
  /** 0 or unset: the server's (or role's) own setting applies. */
  statementTimeoutMs?: number;
  idleInTransactionTimeoutMs?: number;
}

/**
 * The one place a knex for a PostgreSQL server is made, the application's
 * and the migrator's alike, so what holds for every connection is said once.
 */
export function connectToServer(url: string, options: ServerConnectionOptions): Knex {
  const { logger } = options;
  const knex = knexFactory({
    ...(logger
      ? {
          log: {
            warn: (message: string) => logger.warn({ component: 'knex' }, message),
            error: (message: string) => logger.error({ component: 'knex' }, message),
            deprecate: (message: string) => logger.warn({ component: 'knex' }, message),
            debug: (message: string) => logger.debug({ component: 'knex' }, message),
          },
        }
      : {}),
    client: 'pg',
    ...WITHOUT_VALUES_IN_ERRORS,
    connection: {
      connectionString: url,
      connectionTimeoutMillis: 5_000,
      // Startup parameters, so they hold from the first statement of every connection; pg sends none for 0.
      statement_timeout: options.statementTimeoutMs || undefined,
      idle_in_transaction_session_timeout: options.idleInTransactionTimeoutMs || undefined,
    },
    pool: {
      min: 0,
      max: options.poolMax,
      idleTimeoutMillis: 30_000,
      // Hour and day buckets are UTC whatever the server's own time zone.
      afterCreate: (connection: pg.Client, done: (error: Error | null, connection: pg.Client) => void) => {
        connection.query('set time zone utc', (error: Error | null) => done(error, connection));
      },
    },
    acquireConnectionTimeout: 10_000,
  });
  hideRowValuesOfErrors(knex);
  return knex;
}

function openPostgres(url: string, options: DatabaseOptions): Database {
  const knex = connectToServer(url, options);
  const replica = options.replicaUrl ? connectToServer(options.replicaUrl, options) : null;
  const healthPool = new pg.Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 2_000, query_timeout: 2_000, idleTimeoutMillis: 0 });
  healthPool.on('error', () => undefined); // a dropped idle connection is what ping() is there to notice
  return {
    knex,
    kind: 'postgres',
    location: redactUrl(url),
    replica,
    ping: async () => {
      await healthPool.query('select 1');
    },
    close: async () => {
      await Promise.all([knex.destroy(), replica?.destroy(), healthPool.end()]);
    },
  };
}

async function openPglite(dataDir: string): Promise<Database> {
  fs.mkdirSync(dataDir, { recursive: true });
  const [{ PGlite }, { vector }, { pg_trgm }, { default: ClientPgLite }] = await Promise.all([
    import('@electric-sql/pglite'),
    import('@electric-sql/pglite-pgvector'),
    import('@electric-sql/pglite/contrib/pg_trgm'),
    import('knex-pglite'),
  ]);
  const instance = await PGlite.create({ dataDir, extensions: { vector, pg_trgm } });
  // knex-pglite owns the instance: destroying knex closes it.
  const knex = knexFactory({
    client: countingClient(ClientPgLite),
    dialect: 'postgres',
    ...WITHOUT_VALUES_IN_ERRORS,
    connection: { pglite: instance },
  } as unknown as Knex.Config);
  hideRowValuesOfErrors(knex);
  return { knex, kind: 'pglite', location: dataDir, replica: null, ping: async () => undefined, close: () => knex.destroy() };
}

type ResponseProcessor = { processResponse(obj: { method?: string }, runner: unknown): unknown };
type ClientClass = new (...args: any[]) => object;

/**
 * knex-pglite names a delete's command after knex's method, `DEL`, which
 * knex's PostgreSQL client does not know as a write: a delete without
 * `returning` then answers the driver's result object instead of its row
 * count, and `count === 0` is never true. Named `delete`, both databases
 * answer a number for every delete and update.
 */
function countingClient(Client: ClientClass): ClientClass {
  return class extends (Client as new (...args: any[]) => ResponseProcessor) {
    override processResponse(obj: { method?: string }, runner: unknown): unknown {
      return super.processResponse(obj.method === 'del' ? { ...obj, method: 'delete' } : obj, runner);
    }
  };
}

/**
 * PostgreSQL's `detail` repeats the values of the row a statement failed on
 * ("Failing row contains (…)", "Key (…)=(…) already exists") unless
 * row-level security applies: for a superuser or a BYPASSRLS role, and on
 * tables without policies, it does. Loggers copy every enumerable field of
 * an error, so it stays readable by code that asks for it but out of what
 * logs and serialisers enumerate.
 */
function hideRowValuesOfErrors(knex: Knex): void {
  knex.on('query-error', (error: unknown) => {
    if (typeof error === 'object' && error !== null && Object.prototype.propertyIsEnumerable.call(error, 'detail')) {
      Object.defineProperty(error, 'detail', { enumerable: false });
    }
  });
}
