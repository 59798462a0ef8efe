import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** The machine's PostgreSQL, as an admin URL; tests create and drop their own databases on it. */
export const POSTGRES_ADMIN_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
}

export function databaseUrl(name: string, adminUrl = POSTGRES_ADMIN_URL): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** The role ragworks connects as in tests: neither superuser, owner nor BYPASSRLS, so row-level security holds. */
export const APPLICATION_ROLE = 'ragworks_test_app';

/** A table owner that is no superuser, as a production migrator role would be. */
export const OWNER_ROLE = 'ragworks_test_owner';

/** Creates a login role once per server; parallel test files may race to it. */
async function ensureRole(admin: pg.Client, role: string): Promise<void> {
  try {
    await admin.query(`do $$ begin
      if not exists (select 1 from pg_roles where rolname = '${role}') then
        create role ${role} login nosuperuser nobypassrls;
      end if;
    end $$`);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code !== '23505' && code !== '42710') throw error;
  }
}

/**
 * A new empty database on the local server (or the one `adminUrl` names);
 * drop it with the returned function. `url` connects as the owner (for
 * migrations and for tests that arrange rows past row-level security);
 * `applicationUrl` as the application role.
 */
export async function createTestDatabase(
  options: { ownedByOwnerRole?: boolean; adminUrl?: string } = {},
): Promise<{ url: string; applicationUrl: string; name: string; drop(): Promise<void> }> {
  const name = uniqueName('rw_test');
  const adminUrl = options.adminUrl ?? POSTGRES_ADMIN_URL;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await ensureRole(admin, APPLICATION_ROLE);
    if (options.ownedByOwnerRole) await ensureRole(admin, OWNER_ROLE);
    await admin.query(`create database ${name}${options.ownedByOwnerRole ? ` owner ${OWNER_ROLE}` : ''}`);
  } finally {
    await admin.end();
  }
  const asRole = (role: string) => {
    const url = new URL(databaseUrl(name, adminUrl));
    url.username = role;
    url.password = '';
    return url.toString();
  };
  return {
    name,
    url: options.ownedByOwnerRole ? asRole(OWNER_ROLE) : databaseUrl(name, adminUrl),
    applicationUrl: asRole(APPLICATION_ROLE),
    drop: async () => {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`drop database if exists ${name} with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}
