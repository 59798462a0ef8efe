import type { Knex } from 'knex';
import { badRequest } from '../errors';
import { isUuid } from './ids';

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface PageRequest {
  limit: number;
  cursor?: string;
}

/**
 * Keyset pagination over a uuid v7 `id` column, newest first. The cursor is
 * opaque to clients: the last id seen, base64url-encoded.
 */
export async function paginate<Row extends { id: string }, Item>(
  query: Knex.QueryBuilder,
  page: PageRequest,
  toItem: (row: Row) => Item,
  idColumn = 'id',
): Promise<Page<Item>> {
  if (page.cursor) query.where(idColumn, '<', decodeCursor(page.cursor));
  const rows: Row[] = await query.orderBy(idColumn, 'desc').limit(page.limit + 1);
  const hasMore = rows.length > page.limit;
  const visible = hasMore ? rows.slice(0, page.limit) : rows;
  return {
    items: visible.map(toItem),
    next_cursor: hasMore ? encodeCursor(visible[visible.length - 1].id) : null,
  };
}

export function encodeCursor(id: string): string {
  return Buffer.from(id, 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string): string {
  const id = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!isUuid(id)) throw badRequest('The cursor is not one this API issued.', { field: 'cursor' });
  return id;
}
