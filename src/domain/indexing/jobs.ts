import type { Knex } from 'knex';
import { acrossTenants, withTenant } from '../../db/tenant-scope';
import { Coalescer } from '../../coalescer';
import type { Logger } from '../../logger';
import { AppError, conflict, notFound } from '../../errors';
import { newId } from '../ids';
import { paginate, type Page, type PageRequest } from '../pagination';
import { recordEvent, type EventSink } from '../webhooks/events';
import type { DispatchIndexing, IndexingWork } from './dispatch';

export const INDEX_JOB_STATUSES = ['queued', 'processing', 'completed', 'failed', 'canceled'] as const;
export type IndexJobStatus = (typeof INDEX_JOB_STATUSES)[number];
export type ItemStatus = 'queued' | 'processing' | 'completed' | 'failed' | 'canceled';

export interface IndexJob {
  job_id: string;
  status: IndexJobStatus;
  force_reindex: boolean;
  documents_total: number;
  documents_completed: number;
  documents_failed: number;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  error: string | null;
}

export interface IndexJobDetail extends IndexJob {
  documents: Array<{ document_id: string; version: number; status: ItemStatus; error: string | null }>;
}

interface IndexJobRow {
  id: string;
  tenant_id: string;
  status: IndexJobStatus;
  force_reindex: boolean;
  documents_total: number;
  documents_completed: number;
  documents_failed: number;
  error: string | null;
  created_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
}

const iso = (value: Date | null) => (value ? value.toISOString() : null);

const toIndexJob = (row: IndexJobRow): IndexJob => ({
  job_id: row.id,
  status: row.status,
  force_reindex: row.force_reindex,
  documents_total: row.documents_total,
  documents_completed: row.documents_completed,
  documents_failed: row.documents_failed,
  created_at: row.created_at.toISOString(),
  started_at: iso(row.started_at),
  completed_at: iso(row.completed_at),
  error: row.error,
});

/** Records an index job and its per-document items inside the caller's transaction. */
export async function createIndexJobRows(
  trx: Knex.Transaction,
  tenantId: string,
  indexJobId: string,
  documents: Array<{ documentId: string; version: number; status?: ItemStatus }>,
  forceReindex: boolean,
  events: EventSink,
): Promise<void> {
  await trx('index_jobs').insert({ id: indexJobId, tenant_id: tenantId, force_reindex: forceReindex, documents_total: documents.length });
  for (let start = 0; start < documents.length; start += 500) {
    await trx('index_job_items').insert(
      documents.slice(start, start + 500).map((doc) => ({
        index_job_id: indexJobId,
        document_id: doc.documentId,
        tenant_id: tenantId,
        document_version: doc.version,
        status: doc.status ?? 'queued',
      })),
    );
  }
  await refreshIndexJob(trx, events, indexJobId);
}

export interface IndexRequestDeps {
  db: Knex;
  dispatch: DispatchIndexing;
  events: EventSink;
  logger: Logger;
}

/**
 * Asks for documents to be (re)indexed. Without `forceReindex`, a document
 * already indexed at its current version needs no work and its item is
 * completed at once.
 */
export async function requestIndexing(
  deps: IndexRequestDeps,
  tenantId: string,
  documentIds: string[],
  forceReindex: boolean,
): Promise<IndexJob> {
  const ids = [...new Set(documentIds)];
  const indexJobId = newId();
  const { job, work } = await withTenant(deps.db, tenantId, async (trx) => {
    const docs: Array<{ id: string; version: number; status: string }> = await trx('documents')
      .select('id', 'version', 'status')
      .where({ tenant_id: tenantId })
      .whereIn('id', ids)
      .forUpdate();
    if (docs.length !== ids.length) {
      const found = new Set(docs.map((doc) => doc.id));
      const error = notFound(ids.length === 1 ? 'Document' : 'Some documents');
      throw new AppError(error.status, error.code, error.message, { missing: ids.filter((id) => !found.has(id)) });
    }
    const needsWork = (doc: { status: string }) => forceReindex || doc.status !== 'indexed';
    await createIndexJobRows(
      trx,
      tenantId,
      indexJobId,
      docs.map((doc) => ({ documentId: doc.id, version: doc.version, status: needsWork(doc) ? 'queued' : 'completed' })),
      forceReindex,
      deps.events,
    );
    const pending = docs.filter(needsWork);
    if (pending.length > 0) {
      await trx('documents')
        .where({ tenant_id: tenantId })
        .whereIn('id', pending.map((doc) => doc.id))
        .update({ status: 'queued', error: null, error_code: null, last_index_job_id: indexJobId, updated_at: trx.fn.now() });
    }
    const row = await trx<IndexJobRow>('index_jobs').first('*').where({ id: indexJobId });
    return {
      job: toIndexJob(row!),
      work: pending.map((doc): IndexingWork => ({ tenantId, indexJobId, documentId: doc.id, version: doc.version })),
    };
  });
  try {
    await deps.dispatch(work);
  } catch (error) {
    deps.logger.warn({ err: error, documents: work.length }, 'indexing enqueue failed; the reconcile tick will retry it');
  }
  return job;
}

export async function getIndexJob(db: Knex, tenantId: string, indexJobId: string): Promise<IndexJobDetail> {
  return withTenant(db, tenantId, async (trx) => {
    const row = await trx<IndexJobRow>('index_jobs').first('*').where({ id: indexJobId, tenant_id: tenantId });
    if (!row) throw notFound('Index job');
    const items = await trx('index_job_items')
      .select('document_id', 'document_version as version', 'status', 'error')
      .where({ index_job_id: indexJobId })
      .orderBy('document_id')
      .limit(1000);
    return { ...toIndexJob(row), documents: items };
  });
}

export async function listIndexJobs(
  db: Knex,
  tenantId: string,
  filters: { status?: IndexJobStatus },
  page: PageRequest,
): Promise<Page<IndexJob>> {
  return withTenant(db, tenantId, (trx) => {
    const query = trx<IndexJobRow>('index_jobs').select('*').where({ tenant_id: tenantId });
    if (filters.status) query.where({ status: filters.status });
    return paginate(query, page, toIndexJob);
  });
}

/**
 * Cancels a queued or processing job: its unfinished items are canceled and
 * their documents, unless a newer job owns them, become `canceled`. Returns
 * the document ids whose queue jobs should be removed.
 */
export async function cancelIndexJob(
  db: Knex,
  events: EventSink,
  tenantId: string,
  indexJobId: string,
): Promise<{ job: IndexJob; canceled: IndexingWork[] }> {
  return withTenant(db, tenantId, async (trx) => {
    // The job's items before the job row: the indexer locks an item and then its job, so a cancel
    // arriving mid-write waits for that write instead of deadlocking with it.
    await trx('index_job_items').select('document_id').where({ index_job_id: indexJobId, tenant_id: tenantId }).forUpdate();
    // Counted afresh: the last item may have committed while its job's recount (settleIndexJob) is still to come.
    await refreshIndexJob(trx, events, indexJobId);
    const row = await trx<IndexJobRow>('index_jobs').first('*').where({ id: indexJobId, tenant_id: tenantId });
    if (!row) throw notFound('Index job');
    if (row.status !== 'queued' && row.status !== 'processing') {
      throw conflict(`The index job is already ${row.status}.`, { status: row.status });
    }
    const items: Array<{ document_id: string; document_version: number }> = await trx('index_job_items')
      .where({ index_job_id: indexJobId })
      .whereIn('status', ['queued', 'processing'])
      .update({ status: 'canceled', error: 'The index job was canceled.', updated_at: trx.fn.now() })
      .returning(['document_id', 'document_version']);
    if (items.length > 0) {
      await trx('documents')
        .where({ tenant_id: tenantId, last_index_job_id: indexJobId })
        .whereIn('id', items.map((item) => item.document_id))
        .whereIn('status', ['queued', 'processing'])
        .update({ status: 'canceled', updated_at: trx.fn.now() });
    }
    const [updated] = await trx<IndexJobRow>('index_jobs')
      .where({ id: indexJobId })
      .update({ status: 'canceled', completed_at: trx.fn.now() as unknown as Date, error: 'Canceled on request.' })
      .returning('*');
    await refreshIndexJob(trx, events, indexJobId);
    return {
      job: toIndexJob({ ...updated }),
      canceled: items.map((item) => ({ tenantId, indexJobId, documentId: item.document_id, version: item.document_version })),
    };
  });
}

/**
 * Recomputes a job's counters and status from its items. Counting instead
 * of incrementing keeps a job re-run by the queue from being counted twice;
 * the row lock serialises workers finishing items of the same job.
 */
export async function refreshIndexJob(trx: Knex.Transaction, events: EventSink, indexJobId: string): Promise<void> {
  const before = await trx<IndexJobRow>('index_jobs').first('status').where({ id: indexJobId }).forUpdate();
  await recountIndexJob(trx, events, indexJobId, before?.status);
}

/**
 * refreshIndexJob, when the job's row can be locked at once; false, having
 * done nothing, when another transaction holds it (or the job is gone).
 */
export async function refreshIndexJobUnlessBusy(trx: Knex.Transaction, events: EventSink, indexJobId: string): Promise<boolean> {
  const before = await trx<IndexJobRow>('index_jobs').first('status').where({ id: indexJobId }).forUpdate().skipLocked();
  if (!before) return false;
  await recountIndexJob(trx, events, indexJobId, before.status);
  return true;
}

/** The recount itself; the caller holds the job's row lock, taken in an earlier statement so this one sees every item committed before it. */
async function recountIndexJob(trx: Knex.Transaction, events: EventSink, indexJobId: string, statusBefore: IndexJobStatus | undefined): Promise<void> {
  const result = await trx.raw(
    `update index_jobs j
        set documents_completed = c.completed,
            documents_failed = c.failed,
            status = case
              when j.status = 'canceled' then 'canceled'
              when c.unfinished = 0 and c.failed > 0 then 'failed'
              when c.unfinished = 0 and c.completed = 0 then 'canceled'
              when c.unfinished = 0 then 'completed'
              when c.started > 0 then 'processing'
              else 'queued' end,
            started_at = case when j.started_at is null and c.started > 0 then now() else j.started_at end,
            completed_at = case
              when j.status = 'canceled' then j.completed_at
              when c.unfinished = 0 then coalesce(j.completed_at, now())
              else null end,
            error = case
              when j.status = 'canceled' then j.error
              when c.unfinished = 0 and c.failed > 0 then c.failed || ' of ' || j.documents_total || ' documents failed to index.'
              when c.unfinished = 0 and c.completed = 0 then 'Every document was deleted or superseded before it was indexed.'
              else null end
       from (select count(*) filter (where status = 'completed') as completed,
                    count(*) filter (where status = 'failed') as failed,
                    count(*) filter (where status in ('queued', 'processing')) as unfinished,
                    count(*) filter (where status <> 'queued') as started
               from index_job_items where index_job_id = ?) c
      where j.id = ?
      returning j.*`,
    [indexJobId, indexJobId],
  );
  const after: IndexJobRow | undefined = result.rows[0];
  if (!after || after.status === statusBefore) return;
  if (after.status === 'completed' || after.status === 'failed') {
    await recordEvent(trx, events, after.tenant_id, `index_job.${after.status}`, { ...toIndexJob(after) });
  }
}

/** Per database handle: the recounts of each index job, shared by the items that finish at about the same time. */
const settlers = new WeakMap<Knex, Coalescer<string>>();

/**
 * Recounts an index job (refreshIndexJob) in a transaction of its own that
 * begins after the caller's item has committed: for an item whose own
 * transaction found the job's row busy (refreshIndexJobUnlessBusy), so that
 * it never queues there. Items of one job that do so at about the same time
 * in this process share one recount. Whichever item commits last, its
 * recount — in its transaction, or after it — counts every item.
 */
export function settleIndexJob(db: Knex, events: EventSink, tenantId: string, indexJobId: string): Promise<void> {
  let settler = settlers.get(db);
  if (!settler) {
    settler = new Coalescer((key: string) => {
      const [tenant, job] = key.split(' ');
      return withTenant(db, tenant, (trx) => refreshIndexJob(trx, events, job));
    });
    settlers.set(db, settler);
  }
  return settler.after(`${tenantId} ${indexJobId}`);
}

/**
 * Index job items left unfinished and untouched for longer than
 * `stuckAfterSeconds`: candidates for the reconcile tick. Taken from the
 * items rather than the documents, so a job whose document has since moved
 * on to another job is found too; running such an item cancels it as
 * superseded, which lets its job finish.
 */
export async function findStuckIndexing(db: Knex, stuckAfterSeconds: number, limit = 1000): Promise<IndexingWork[]> {
  const rows: Array<{ tenant_id: string; index_job_id: string; document_id: string; document_version: number }> = await acrossTenants(db, (trx) =>
    trx('index_job_items')
      .select('tenant_id', 'index_job_id', 'document_id', 'document_version')
      .whereIn('status', ['queued', 'processing'])
      .where('updated_at', '<', trx.raw(`now() - make_interval(secs => ?)`, [stuckAfterSeconds]))
      .orderBy('updated_at')
      .limit(limit),
  );
  return rows.map((row) => ({ tenantId: row.tenant_id, indexJobId: row.index_job_id, documentId: row.document_id, version: row.document_version }));
}
