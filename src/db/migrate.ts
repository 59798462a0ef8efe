import type { Knex } from 'knex';
import pg from 'pg';
import { migrations } from '../../migrations';
import type { Database } from './database';

/** Arbitrary constant shared by every ragworks process: "ragworks" in ASCII. */
const MIGRATION_LOCK_KEY = 0x7261677770726b73n;

const migrationSource: Knex.MigrationSource<(typeof migrations)[number]> = {
  getMigrations: async () => [...migrations],
  getMigrationName: (entry) => entry.name,
  getMigration: async (entry) => entry.migration,
};

export interface MigrationReport {
  applied: string[];
  vectorSearch: VectorSupport;
}

export type VectorSupport = { available: true; version: string } | { available: false; reason: string };

/**
 * Brings the schema up to date. On a PostgreSQL server, concurrent starts
 * serialise on an advisory lock held by a dedicated connection: the first
 * migrates, the others wait and then find nothing to do. PGlite serves one
 * process, so there is nobody to wait for.
 */
export async function migrateToLatest(db: Database, options: { databaseUrl?: string; embeddingDimensions: number }): Promise<MigrationReport> {
  const run = async (): Promise<MigrationReport> => {
    const [, applied] = (await db.knex.migrate.latest({ migrationSource })) as [number, string[]];
    const vectorSearch = await ensureVectorSupport(db.knex, options.embeddingDimensions);
    return { applied, vectorSearch };
  };
  if (db.kind === 'pglite' || !options.databaseUrl) return run();

  const lockClient = new pg.Client({ connectionString: options.databaseUrl });
  await lockClient.connect();
  try {
    await lockClient.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_KEY.toString()]);
    return await run();
  } finally {
    await lockClient.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY.toString()]).catch(() => undefined);
    await lockClient.end();
  }
}

/**
 * Adds the embedding column and its HNSW index when pgvector can be had.
 * Kept out of the numbered migrations so that a server which gains the
 * extension later gets vector search on its next start. The column is
 * dimensionless so models of any size can coexist; the index covers the
 * configured dimension through a cast, and queries use the same cast.
 */
export async function ensureVectorSupport(knex: Knex, dimensions: number): Promise<VectorSupport> {
  const available = await knex.raw(`select default_version from pg_available_extensions where name = 'vector'`);
  if (available.rows.length === 0) {
    return { available: false, reason: 'the PostgreSQL extension "vector" (pgvector) is not installed on this server' };
  }
  try {
    await knex.raw('create extension if not exists vector');
  } catch (error) {
    return { available: false, reason: `the extension "vector" could not be created: ${(error as Error).message}` };
  }
  await knex.raw('alter table chunks add column if not exists embedding vector');
  const dims = Math.trunc(dimensions);
  await knex.raw(
    `create index if not exists chunks_embedding_hnsw_${dims} on chunks using hnsw ((embedding::vector(${dims})) vector_cosine_ops) where embedding_dims = ${dims}`,
  );
  const version = await knex.raw(`select extversion from pg_extension where extname = 'vector'`);
  return { available: true, version: String(version.rows[0].extversion) };
}
