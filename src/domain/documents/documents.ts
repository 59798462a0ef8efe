import type { Knex } from 'knex';
import type { SearchVisibleWrites } from '../cache/write-marks';
import type { Logger } from '../../logger';
import { AppError, conflict, isUniqueViolation, notFound } from '../../errors';
import type { ContentType } from '../chunking/chunker';
import { FILE_ERROR_CODES, type BinaryKind } from '../files/extract';
import { newId } from '../ids';
import { withTenant } from '../../db/tenant-scope';
import { assertDocumentCapacity, type Quotas } from '../tenants/quotas';
import { createIndexJobRows, refreshIndexJob } from '../indexing/jobs';
import type { DispatchIndexing, IndexingWork } from '../indexing/dispatch';
import { paginate, type Page, type PageRequest } from '../pagination';
import { recordDocumentEvent, recordDocumentEvents } from '../webhooks/document-events';
import type { EventSink } from '../webhooks/events';

/** What a document posted as JSON text may be. */
export const TEXT_CONTENT_TYPES = ['markdown', 'text', 'code', 'html'] as const satisfies readonly ContentType[];
/** Every kind of document: uploaded PDFs and DOCX files too, their text extracted on the workers. */
export const CONTENT_TYPES = [...TEXT_CONTENT_TYPES, 'pdf', 'docx'] as const satisfies readonly DocumentContentType[];
export type DocumentContentType = ContentType | BinaryKind;
export const DOCUMENT_STATUSES = ['queued', 'processing', 'indexed', 'failed', 'canceled'] as const;
export type DocumentStatus = (typeof DOCUMENT_STATUSES)[number];
/** Why a document failed, for machines (`error` says it for people); null unless it failed. */
export const DOCUMENT_ERROR_CODES = ['document_too_complex', 'embedding_failed', 'indexing_failed', ...FILE_ERROR_CODES] as const;
export type DocumentErrorCode = (typeof DOCUMENT_ERROR_CODES)[number];

export const DOCUMENT_LIMITS = {
  contentBytes: 5 * 1024 * 1024,
  titleChars: 500,
  tags: 50,
  tagChars: 100,
  batch: 1000,
} as const;

export interface DocumentInput {
  title: string;
  content: string;
  content_type?: DocumentContentType;
  tags?: string[];
  metadata?: Record<string, unknown>;
  source_url?: string | null;
  external_id?: string | null;
  /** The uploaded original, kept beside the document; its size is what the storage quota counts. */
  file?: { filename: string; mediaType: string; data: Buffer };
}

export interface DocumentChanges {
  title?: string;
  content?: string;
  tags?: string[];
  metadata?: Record<string, unknown>;
}

export interface DocumentSummary {
  id: string;
  title: string;
  content_type: DocumentContentType;
  tags: string[];
  metadata: Record<string, unknown>;
  source_url: string | null;
  external_id: string | null;
  status: DocumentStatus;
  version: number;
  chunk_count: number;
  content_bytes: number;
  error: string | null;
  error_code: DocumentErrorCode | null;
  job_id: string | null;
  indexed_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface DocumentDetail extends DocumentSummary {
  content: string;
}

export interface DocumentRow {
  id: string;
  tenant_id: string;
  title: string;
  content: string;
  content_type: DocumentContentType;
  tags: string[];
  metadata: Record<string, unknown>;
  source_url: string | null;
  external_id: string | null;
  status: DocumentStatus;
  version: number;
  chunk_count: number;
  content_bytes: number;
  error: string | null;
  error_code: DocumentErrorCode | null;
  last_index_job_id: string | null;
  indexed_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

const SUMMARY_COLUMNS = [
  'id', 'title', 'content_type', 'tags', 'metadata', 'source_url', 'external_id', 'status', 'version',
  'chunk_count', 'content_bytes', 'error', 'error_code', 'last_index_job_id', 'indexed_at', 'created_at', 'updated_at',
] as const;

type SummaryRow = Omit<DocumentRow, 'content' | 'tenant_id'>;

function toSummary(row: SummaryRow): DocumentSummary {
  return {
    id: row.id,
    title: row.title,
    content_type: row.content_type,
    tags: row.tags,
    metadata: row.metadata,
    source_url: row.source_url,
    external_id: row.external_id,
    status: row.status,
    version: row.version,
    chunk_count: row.chunk_count,
    content_bytes: row.content_bytes,
    error: row.error,
    error_code: row.error_code,
    job_id: row.last_index_job_id,
    indexed_at: row.indexed_at ? row.indexed_at.toISOString() : null,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}

export interface DocumentDeps {
  db: Knex;
  dispatch: DispatchIndexing;
  events: EventSink;
  logger: Logger;
  /** Brackets the transactions that change search results: the cache and the replica must not serve from before them. */
  writes: SearchVisibleWrites;
}

/**
 * Stores documents as `queued` together with one index job for all of them,
 * then hands them to the indexing queue. If that hand-off fails the
 * documents stay queued and the reconcile tick picks them up: an accepted
 * document is never lost.
 */
export async function createDocuments(deps: DocumentDeps, tenantId: string, inputs: DocumentInput[], quotas: Quotas): Promise<DocumentSummary[]> {
  const indexJobId = newId();
  const rows = inputs.map((input) => ({
    id: newId(),
    tenant_id: tenantId,
    title: input.title,
    content: input.content,
    content_type: input.content_type ?? 'markdown',
    tags: dedupe(input.tags ?? []),
    metadata: input.metadata ?? {},
    source_url: input.source_url ?? null,
    external_id: input.external_id ?? null,
    status: 'queued' as const,
    version: 1,
    content_bytes: input.file ? input.file.data.length : Buffer.byteLength(input.content, 'utf8'),
    last_index_job_id: indexJobId,
  }));
  const files = inputs.flatMap((input, index) =>
    input.file
      ? [{ document_id: rows[index].id, tenant_id: tenantId, filename: input.file.filename, media_type: input.file.mediaType, size_bytes: input.file.data.length, data: input.file.data }]
      : [],
  );
  assertUniqueExternalIds(rows);
  const inserted = await withTenant(deps.db, tenantId, async (trx) => {
    await assertDocumentCapacity(trx, tenantId, quotas, { documents: rows.length, bytes: rows.reduce((sum, row) => sum + row.content_bytes, 0) });
    try {
      const created: SummaryRow[] = [];
      // Insert in slices: a 1000-document batch of large texts would exceed one statement's parameter limit.
      for (const slice of chunked(rows, 200)) {
        created.push(...(await trx<DocumentRow>('documents').insert(slice).returning([...SUMMARY_COLUMNS])));
      }
      for (const file of files) await trx('document_files').insert(file);
      await createIndexJobRows(trx, tenantId, indexJobId, created.map((row) => ({ documentId: row.id, version: row.version })), false, deps.events);
      await recordDocumentEvents(trx, deps.events, tenantId, 'document.created', created);
      return created;
    } catch (error) {
      if (isUniqueViolation(error, 'documents_external_id_unique')) {
        throw conflict('A document with this external_id already exists.', { field: 'external_id' });
      }
      throw error;
    }
  });
  await dispatchAfterCommit(deps, inserted.map((row) => ({ tenantId, indexJobId, documentId: row.id, version: row.version })));
  return inserted.map(toSummary);
}

export async function getDocument(db: Knex, tenantId: string, documentId: string): Promise<DocumentDetail> {
  const row = await withTenant(db, tenantId, (trx) => trx<DocumentRow>('documents').first('*').where({ id: documentId, tenant_id: tenantId }));
  if (!row) throw notFound('Document');
  return { ...toSummary(row), content: row.content };
}

export interface DocumentFilters {
  content_type?: DocumentContentType;
  tag?: string;
  status?: DocumentStatus;
}

export async function listDocuments(db: Knex, tenantId: string, filters: DocumentFilters, page: PageRequest): Promise<Page<DocumentSummary>> {
  return withTenant(db, tenantId, (trx) => {
    const query = trx<DocumentRow>('documents').select([...SUMMARY_COLUMNS]).where({ tenant_id: tenantId });
    if (filters.content_type) query.where({ content_type: filters.content_type });
    if (filters.status) query.where({ status: filters.status });
    if (filters.tag) query.whereRaw('tags @> ?::text[]', [[filters.tag]]);
    return paginate(query, page, toSummary);
  });
}

/**
 * Applies changes. A new title or content is a new version that is
 * re-indexed (`reindexed: true`); tags and metadata apply at once.
 */
export async function updateDocument(
  deps: DocumentDeps,
  tenantId: string,
  documentId: string,
  changes: DocumentChanges,
  quotas: Quotas,
): Promise<{ document: DocumentSummary; reindexed: boolean }> {
  // Title, tags and metadata are in results and filters at once, a new version's chunks later (indexing announces those).
  const result = await deps.writes.around(tenantId, () => withTenant(deps.db, tenantId, async (trx) => {
    const current = await trx<DocumentRow>('documents').first('*').where({ id: documentId, tenant_id: tenantId }).forUpdate();
    if (!current) throw notFound('Document');
    // Its text is its file's (extracted, or as uploaded): another text would no longer be that file's.
    if (changes.content !== undefined && (await trx('document_files').first('document_id').where({ tenant_id: tenantId, document_id: documentId }))) {
      throw conflict('The content of an uploaded document is its file: upload the new file as a new document instead.', { field: 'content' });
    }
    const reindex =
      (changes.content !== undefined && changes.content !== current.content) ||
      (changes.title !== undefined && changes.title !== current.title);
    const update: Record<string, unknown> = { updated_at: trx.fn.now() };
    if (changes.title !== undefined) update.title = changes.title;
    if (changes.tags !== undefined) update.tags = dedupe(changes.tags);
    if (changes.metadata !== undefined) update.metadata = changes.metadata;
    if (changes.content !== undefined) {
      update.content = changes.content;
      update.content_bytes = Buffer.byteLength(changes.content, 'utf8');
      await assertDocumentCapacity(trx, tenantId, quotas, { documents: 0, bytes: Number(update.content_bytes) - current.content_bytes });
    }
    let indexJobId: string | null = null;
    if (reindex) {
      indexJobId = newId();
      Object.assign(update, { version: current.version + 1, status: 'queued', error: null, error_code: null, last_index_job_id: indexJobId });
      await createIndexJobRows(trx, tenantId, indexJobId, [{ documentId, version: current.version + 1 }], false, deps.events);
    }
    const [row] = await trx<DocumentRow>('documents').where({ id: documentId }).update(update).returning([...SUMMARY_COLUMNS]);
    return { row, indexJobId };
  }));
  if (result.indexJobId) {
    await dispatchAfterCommit(deps, [{ tenantId, indexJobId: result.indexJobId, documentId, version: result.row.version }]);
  }
  return { document: toSummary(result.row), reindexed: result.indexJobId !== null };
}

/** Deletes a document and its chunks; pending indexing of it is canceled. */
export async function deleteDocument({ db, events, writes }: Pick<DocumentDeps, 'db' | 'events' | 'writes'>, tenantId: string, documentId: string): Promise<void> {
  await writes.around(tenantId, () => withTenant(db, tenantId, async (trx) => {
    // Unfinished items before the document: the order the indexer locks in, so a delete during
    // indexing waits for it instead of deadlocking with it.
    const pending: Array<{ index_job_id: string }> = await trx('index_job_items')
      .select('index_job_id')
      .where({ document_id: documentId, tenant_id: tenantId })
      .whereIn('status', ['queued', 'processing'])
      .orderBy('index_job_id')
      .forUpdate();
    const [deleted] = await trx<DocumentRow>('documents').where({ id: documentId, tenant_id: tenantId }).delete().returning('*');
    if (!deleted) throw notFound('Document');
    await recordDocumentEvent(trx, events, tenantId, 'document.deleted', deleted);
    if (pending.length === 0) return;
    await trx('index_job_items')
      .where({ document_id: documentId, tenant_id: tenantId })
      .whereIn('index_job_id', pending.map((item) => item.index_job_id))
      .update({ status: 'canceled', error: 'The document was deleted.', updated_at: trx.fn.now() });
    // A job left with nothing unfinished is done; without this it would stay `queued` for good.
    for (const item of pending) await refreshIndexJob(trx, events, item.index_job_id);
  }));
}

async function dispatchAfterCommit(deps: DocumentDeps, work: IndexingWork[]): Promise<void> {
  try {
    await deps.dispatch(work);
  } catch (error) {
    deps.logger.warn({ err: error, documents: work.length }, 'indexing enqueue failed; the reconcile tick will retry it');
  }
}

function assertUniqueExternalIds(rows: Array<{ external_id: string | null }>): void {
  const seen = new Set<string>();
  for (const row of rows) {
    if (row.external_id === null) continue;
    if (seen.has(row.external_id)) {
      throw new AppError(400, 'validation_failed', 'Two documents in the batch share an external_id.', { external_id: row.external_id });
    }
    seen.add(row.external_id);
  }
}

const dedupe = (tags: string[]): string[] => [...new Set(tags)];

function chunked<T>(items: T[], size: number): T[][] {
  const slices: T[][] = [];
  for (let start = 0; start < items.length; start += size) slices.push(items.slice(start, start + size));
  return slices;
}
