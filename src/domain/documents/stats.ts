import type { Knex } from 'knex';
import { acrossTenants, withTenant } from '../../db/tenant-scope';

export interface TenantStats {
  documents: Record<string, number> & { total: number };
  chunks: number;
  index_jobs: Record<string, number> & { total: number };
}

export interface PlatformStats {
  total_documents: number;
  indexed_documents: number;
  total_chunks: number;
  tenants: number;
  /** Searches since UTC midnight as recorded by analytics (so up to a minute behind). */
  searches_today: number;
}

async function countBy(query: Knex.QueryBuilder, column: string, states: readonly string[]): Promise<Record<string, number> & { total: number }> {
  const rows: Array<{ key: string; n: number }> = await query.select(`${column} as key`).count('* as n').groupBy(column);
  const counts = Object.fromEntries(states.map((state) => [state, 0])) as Record<string, number> & { total: number };
  counts.total = 0;
  for (const row of rows) {
    counts[row.key] = Number(row.n);
    counts.total += Number(row.n);
  }
  return counts;
}

export async function tenantStats(db: Knex, tenantId: string): Promise<TenantStats> {
  return withTenant(db, tenantId, async (trx) => {
    // One transaction runs one statement at a time: sequential, not Promise.all.
    const documents = await countBy(trx('documents').where({ tenant_id: tenantId }), 'status', ['queued', 'processing', 'indexed', 'failed', 'canceled']);
    const chunks = await trx('chunks').where({ tenant_id: tenantId }).count('* as n').first();
    const indexJobs = await countBy(trx('index_jobs').where({ tenant_id: tenantId }), 'status', ['queued', 'processing', 'completed', 'failed', 'canceled']);
    return { documents, chunks: Number(chunks?.n ?? 0), index_jobs: indexJobs };
  });
}

/** Totals over every tenant, for the operator. */
export async function platformStats(db: Knex): Promise<PlatformStats> {
  const row = await acrossTenants(db, (trx) =>
    trx
      .select(
        trx.raw('(select count(*) from documents)::int as total_documents'),
        trx.raw(`(select count(*) from documents where status = 'indexed')::int as indexed_documents`),
        trx.raw('(select count(*) from chunks)::int as total_chunks'),
        trx.raw('(select count(*) from tenants)::int as tenants'),
        trx.raw(`(select count(*) from search_events where created_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc')::int as searches_today`),
      )
      .first(),
  );
  return row as PlatformStats;
}
