import { ConfigError, type Config } from '../config';
import type { Logger } from '../logger';
import { openDatabase, type Database, type DatabaseOptions } from './database';
import { migrateToLatest, type MigrationOptions, type MigrationReport, type RowLevelSecurity, type VectorSupport } from './migrate';

export function databaseOptions(config: Config, logger: Logger, poolMax: number): DatabaseOptions {
  return {
    databaseUrl: config.DATABASE_URL,
    replicaUrl: config.DATABASE_REPLICA_URL,
    dataDir: config.DATA_DIR,
    poolMax,
    logger,
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
    idleInTransactionTimeoutMs: config.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  };
}

export function migrationOptions(config: Config): MigrationOptions {
  return { databaseUrl: config.DATABASE_URL, migrationDatabaseUrl: config.MIGRATION_DATABASE_URL, embeddingDimensions: config.EMBEDDINGS_DIMENSIONS };
}

/** A database a process may serve from: open, its schema up to date, with what the migration found it can do. */
export interface PreparedDatabase {
  db: Database;
  vector: VectorSupport;
  rowLevelSecurity: RowLevelSecurity;
}

/**
 * Opens the database, brings its schema up to date and says what it found:
 * searches it cannot serve, an index it cannot use. Refuses to start in
 * production on a server where row-level security does not hold.
 */
export async function prepareDatabase(config: Config, logger: Logger): Promise<PreparedDatabase> {
  const db = await openDatabase(databaseOptions(config, logger, config.DATABASE_POOL_MAX));
  try {
    const migration = await migrateToLatest(db, migrationOptions(config));
    reportMigration(migration, logger);
    if (!migration.rowLevelSecurity.enforced) {
      const problem = `row-level security does not hold: ${migration.rowLevelSecurity.reason}; connect DATABASE_URL as an application role and migrate with MIGRATION_DATABASE_URL (docs/operations.md, "Production database roles")`;
      // A server's one role serving every tenant is a laptop's setup: in production one tenant could read another's rows.
      // The embedded database has no roles to separate; it serves one process on one machine.
      if (config.NODE_ENV === 'production' && db.kind === 'postgres') throw new ConfigError(`refusing to start in production: ${problem}`);
      logger.warn(problem);
    }
    return { db, vector: migration.vectorSearch, rowLevelSecurity: migration.rowLevelSecurity };
  } catch (error) {
    await db.close().catch(() => undefined);
    throw error;
  }
}

export function reportMigration(migration: MigrationReport, logger: Logger): void {
  if (migration.applied.length > 0) logger.info({ migrations: migration.applied }, 'database migrated');
  if (!migration.vectorSearch.available) logger.warn(`semantic and hybrid search are off: ${migration.vectorSearch.reason}`);
  if (migration.rowLevelSecurity.enforced && !migration.textSearchIndex.usable) {
    logger.warn(`keyword search scans each tenant's chunks instead of using its index: ${migration.textSearchIndex.reason}`);
  }
}
