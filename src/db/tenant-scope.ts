import type { Knex } from 'knex';

/**
 * Row-level security reads the tenant a transaction acts for from
 * `app.tenant_id`; with nothing set, every tenant-owned table is empty.
 * These two helpers are the only places that set it, always with
 * `set_config(…, true)` so the setting dies with the transaction and never
 * leaks to the next user of a pooled connection.
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

/**
 * Runs `work` in a transaction that sees every tenant's rows. Only for
 * maintenance that is cross-tenant by nature (authentication by key hash,
 * sweeps, retention, operator totals); keep every use greppable.
 */
export function acrossTenants<T>(db: Knex, work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  return openScope(db, ALL_TENANTS, work);
}
