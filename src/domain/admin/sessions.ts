import type { Knex } from 'knex';
import { newId } from '../ids';

/** Opens a dashboard session; its id goes into a signed cookie. */
export async function openSession(db: Knex, options: { hours: number; ip: string | null; userAgent: string | null }): Promise<string> {
  const id = newId();
  await db('admin_sessions').insert({
    id,
    ip: options.ip,
    user_agent: options.userAgent?.slice(0, 500) ?? null,
    expires_at: new Date(Date.now() + options.hours * 3_600_000),
  });
  return id;
}

/** True while the session is neither expired nor ended. */
export async function isLiveSession(db: Knex, id: string): Promise<boolean> {
  const row = await db('admin_sessions').first('id').where({ id }).whereNull('revoked_at').where('expires_at', '>', db.fn.now());
  return row !== undefined;
}

export async function endSession(db: Knex, id: string): Promise<void> {
  await db('admin_sessions').where({ id }).whereNull('revoked_at').update({ revoked_at: db.fn.now() });
}
