import type { Knex } from 'knex';
import { sqlLiteral } from './literal';

/**
 * Row-level security reads the tenant a transaction acts for from
 * `app.tenant_id`; with nothing set, every tenant-owned table is empty.
 * The helpers of this module are the only places that set it, always with
 * `set_config(…, true)` so the setting dies with the transaction (an
 * explicit one, or the implicit one of a query string) and never leaks to
 * the next user of a pooled connection.
 */

/** Marks the scope a transaction was opened with, so nested calls for the same tenant reuse it. */
const scopeOf = new WeakMap<Knex.Transaction, string>();
const ALL_TENANTS = '*';

function isTransaction(db: Knex): db is Knex.Transaction {
  return (db as Knex.Transaction).isTransaction === true;
}

function openScope<T>(db: Knex, scope: string, work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  if (isTransaction(db)) {
    const current = scopeOf.get(db);
    if (current === scope) return work(db);
    // A savepoint cannot undo set_config on release, so a second scope inside a transaction would leak out of it.
    if (current !== undefined) throw new Error(`a transaction scoped to ${current} cannot switch to ${scope}`);
  }
  return db.transaction(async (trx) => {
    await trx.raw(`select set_config('app.tenant_id', ?, true), set_config('app.all_tenants', ?, true)`, [
      scope === ALL_TENANTS ? '' : scope,
      scope === ALL_TENANTS ? 'on' : '',
    ]);
    scopeOf.set(trx, scope);
    return work(trx);
  });
}

/** Runs `work` in a transaction that sees and writes only `tenantId`'s rows. */
export function withTenant<T>(db: Knex, tenantId: string, work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  return openScope(db, tenantId, work);
}

/** What a raw connection of either database answers to a query string of several statements. */
interface SimpleQueryConnection {
  /** The embedded PGlite: `exec` runs a string of statements. */
  exec?(text: string): Promise<Array<{ rows: unknown[] }>>;
  /** node-postgres: a query without values goes by the simple protocol and answers one result per statement. */
  query?(text: string): Promise<Array<{ rows: unknown[] }> | { rows: unknown[] }>;
}

/**
 * Runs one read-only statement acting for `tenantId`, with `settings`, in a
 * single round trip: one query string of two statements, sent by the simple
 * protocol — `select set_config(…, true), …` for the scope and each setting,
 * then `sql`. PostgreSQL runs such a string as one implicit transaction, so
 * the scope and the settings hold for `sql` and end with it, like those of a
 * withTenant transaction, without BEGIN, COMMIT and a round trip per setting.
 * Each statement of the string starts its own statement_timeout (PostgreSQL
 * 13 and later), so a `statement_timeout` among the settings bounds `sql`.
 *
 * The simple protocol has no parameters: `sql` carries its values as
 * literals (see literal.ts), and the text goes to the driver directly, past
 * knex, which would read a `?` inside a literal as a placeholder.
 */
export async function queryAsTenant<Row>(db: Knex, tenantId: string, sql: string, settings: ReadonlyArray<readonly [string, string]> = []): Promise<Row[]> {
  // Inside a transaction the settings would last until its end, not this statement's.
  if (isTransaction(db)) throw new Error('queryAsTenant runs in an implicit transaction of its own, not inside another');
  const scope: Array<readonly [string, string]> = [['app.tenant_id', tenantId], ['app.all_tenants', ''], ...settings];
  const text = `select ${scope.map(([name, value]) => `set_config(${sqlLiteral(name)}, ${sqlLiteral(value)}, true)`).join(', ')};\n${sql}`;
  const connection: SimpleQueryConnection = await db.client.acquireConnection();
  try {
    const results = connection.exec ? await connection.exec(text) : await connection.query!(text);
    if (!Array.isArray(results) || results.length !== 2) throw new Error('queryAsTenant runs exactly one statement');
    return results[1].rows as Row[];
  } finally {
    await db.client.releaseConnection(connection);
  }
}

/**
 * Runs `work` in a transaction that sees every tenant's rows. Only for
 * maintenance that is cross-tenant by nature (authentication by key hash,
 * sweeps, retention, operator totals); keep every use greppable.
 */
export function acrossTenants<T>(db: Knex, work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  return openScope(db, ALL_TENANTS, work);
}
