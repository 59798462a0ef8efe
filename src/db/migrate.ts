import type { Knex } from 'knex';
import pg from 'pg';
import { migrations } from '../../migrations';
import { connectToServer, type Database } from './database';

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
  rowLevelSecurity: RowLevelSecurity;
  textSearchIndex: TextSearchIndex;
}

/** Whether keyword search can use its GIN index under row-level security, and why not. */
export type TextSearchIndex = { usable: true } | { usable: false; reason: string };

export type VectorSupport = { available: true; version: string } | { available: false; reason: string };

/** Whether the application's role is held by the row-level security policies, and why not. */
export type RowLevelSecurity = { enforced: true; role: string } | { enforced: false; role: string; reason: string };

export interface MigrationOptions {
  databaseUrl?: string;
  /** The table owner's connection; without it DATABASE_URL migrates (and owns the tables). */
  migrationDatabaseUrl?: string;
  embeddingDimensions: number;
}

/** The role the embedded database's sessions switch to after migrating, so its policies hold as on a server. */
export const EMBEDDED_APPLICATION_ROLE = 'ragworks_app';

/**
 * Brings the schema up to date as the table owner, then grants the
 * application role (DATABASE_URL's user, when a separate migrator is
 * configured) what it needs: rows, never DDL. On a PostgreSQL server,
 * concurrent starts serialise on an advisory lock held by a dedicated
 * connection: the first migrates, the others wait and then find nothing to
 * do. PGlite serves one process, so there is nobody to wait for; its session
 * migrates as the superuser and then sets its role to an application role.
 */
export async function migrateToLatest(db: Database, options: MigrationOptions): Promise<MigrationReport> {
  const migrate = async (owner: Knex) => {
    const [, applied] = (await owner.migrate.latest({ migrationSource })) as [number, string[]];
    const vectorSearch = await ensureVectorSupport(owner, options.embeddingDimensions);
    const textSearchIndex = await ensureIndexableTextMatch(owner);
    return { applied, vectorSearch, textSearchIndex };
  };
  if (db.kind === 'pglite' || !options.databaseUrl) {
    const report = await migrate(db.knex);
    if (db.kind === 'pglite') await becomeApplicationRole(db.knex);
    return { ...report, rowLevelSecurity: await checkRowLevelSecurity(db.knex) };
  }

  const ownerUrl = options.migrationDatabaseUrl ?? options.databaseUrl;
  // A connection of its own even when the URL is the application's: building an index may take longer than any request's statement may.
  const owner = connectToServer(ownerUrl, { poolMax: 1 });
  const lockClient = new pg.Client({ connectionString: ownerUrl });
  try {
    await lockClient.connect();
    await lockClient.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_KEY.toString()]);
    const report = await migrate(owner);
    const { rows } = await db.knex.raw('select current_user as role');
    await grantApplicationRole(owner, rows[0].role);
    return { ...report, rowLevelSecurity: await checkRowLevelSecurity(db.knex) };
  } finally {
    await lockClient.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY.toString()]).catch(() => undefined);
    await lockClient.end().catch(() => undefined);
    await owner.destroy();
  }
}

/** Row access to every application table; the migration bookkeeping and the schema itself stay the owner's. */
async function grantApplicationRole(owner: Knex, role: string): Promise<void> {
  const { rows } = await owner.raw(`select current_user as owner`);
  if (rows[0].owner === role) return;
  const tables = await owner.raw(`select tablename from pg_tables where schemaname = current_schema() and tablename not like 'knex\\_%'`);
  await owner.raw('grant usage on schema ?? to ??', [await currentSchema(owner), role]);
  for (const { tablename } of tables.rows as Array<{ tablename: string }>) {
    await owner.raw('grant select, insert, update, delete on ?? to ??', [tablename, role]);
  }
}

async function currentSchema(knex: Knex): Promise<string> {
  const { rows } = await knex.raw('select current_schema() as schema');
  return rows[0].schema;
}

async function becomeApplicationRole(knex: Knex): Promise<void> {
  await knex.raw(`
    do $$ begin
      if not exists (select 1 from pg_roles where rolname = '${EMBEDDED_APPLICATION_ROLE}') then
        create role ${EMBEDDED_APPLICATION_ROLE} nologin nosuperuser nobypassrls;
      end if;
    end $$`);
  await grantApplicationRole(knex, EMBEDDED_APPLICATION_ROLE);
  await knex.raw(`set role ${EMBEDDED_APPLICATION_ROLE}`);
}

/**
 * Under row-level security PostgreSQL evaluates a query's own conditions
 * after the policies unless they are LEAKPROOF, and only then may they
 * drive an index scan. The text match `tsvector @@ tsquery`
 * (ts_match_vq) is not marked so, which turns every keyword search into a
 * scan of the tenant's chunks instead of a GIN lookup (measured: 0.3 ms →
 * 160 ms on 200,000 chunks). It has no side effects and raises no error that
 * depends on the row's value, so ragworks marks it LEAKPROOF in its own
 * database when the migrator may (superusers only); otherwise the start
 * warns, and a superuser can run the same statement once.
 */
export const LEAKPROOF_TEXT_MATCH = 'alter function pg_catalog.ts_match_vq(tsvector, tsquery) leakproof';

async function ensureIndexableTextMatch(owner: Knex): Promise<TextSearchIndex> {
  const { rows } = await owner.raw(`
    select p.proleakproof as leakproof, r.rolsuper as superuser
      from pg_proc p, pg_roles r
     where p.oid = 'pg_catalog.ts_match_vq(tsvector, tsquery)'::regprocedure and r.rolname = current_user`);
  if (rows[0].leakproof) return { usable: true };
  if (!rows[0].superuser) {
    return { usable: false, reason: `ts_match_vq is not LEAKPROOF and the migrator is no superuser; as a superuser, run once in this database: ${LEAKPROOF_TEXT_MATCH}` };
  }
  await owner.raw(LEAKPROOF_TEXT_MATCH);
  return { usable: true };
}

/** Superusers and BYPASSRLS roles skip every policy; an owner can switch them off. */
export async function checkRowLevelSecurity(knex: Knex): Promise<RowLevelSecurity> {
  const { rows } = await knex.raw(`
    select current_user as role, r.rolsuper as superuser, r.rolbypassrls as bypass,
           exists (select 1 from pg_tables where schemaname = current_schema() and tablename = 'documents' and tableowner = current_user) as owner
      from pg_roles r where r.rolname = current_user`);
  const { role, superuser, bypass, owner } = rows[0] as { role: string; superuser: boolean; bypass: boolean; owner: boolean };
  if (superuser) return { enforced: false, role, reason: `the role "${role}" is a superuser` };
  if (bypass) return { enforced: false, role, reason: `the role "${role}" has BYPASSRLS` };
  if (owner) return { enforced: false, role, reason: `the role "${role}" owns the tables and could turn the policies off` };
  return { enforced: true, role };
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
