import path from 'node:path';
import type { Knex } from 'knex';
import { withTenant } from '../../db/tenant-scope';
import type { Chunk, ChunkingOptions } from '../chunking/chunker';
import type { DocumentErrorCode, DocumentRow } from '../documents/documents';
import { EmbeddingError, type Embedder } from '../embeddings/embedder';
import { newId } from '../ids';
import { CpuPool, DocumentTooComplexError, type CpuPoolOptions } from './cpu-pool';
import type { IndexingWork } from './dispatch';
import { embeddingText, type PreparedDocument } from './prepare';
import { refreshIndexJob, type ItemStatus } from './jobs';
import { recordDocumentEvent } from '../webhooks/document-events';
import type { EventSink } from '../webhooks/events';

/** The worker threads that run ./cpu-thread's tasks: chunking, and embedding with the built-in embedder. */
export type IndexingCpu = CpuPool<typeof import('./cpu-thread')>;

export function createIndexingCpu(options: Omit<CpuPoolOptions, 'entry'>): IndexingCpu {
  // The entry in the form this code runs as: .ts from source (tsx, jest), .js once compiled.
  return new CpuPool({ ...options, entry: path.join(__dirname, `cpu-thread${path.extname(__filename)}`) });
}

export interface IndexerDeps {
  db: Knex;
  events: EventSink;
  embedder: Embedder;
  cpu: IndexingCpu;
  chunking: ChunkingOptions;
  /** PostgreSQL text search configuration, e.g. `english`. */
  textSearchConfig: string;
  /** False on a PostgreSQL without pgvector: chunks are stored for keyword search only. */
  vectorSearch: boolean;
  embedBatchSize: number;
}

export type IndexOutcome =
  | { outcome: 'indexed'; chunks: number }
  | { outcome: 'skipped'; reason: string };

export type IndexProgress = (stage: 'chunking' | 'embedding' | 'storing', done: number, total: number) => void | Promise<void>;

/** Rows per INSERT: big enough to be quick, small enough to stay far from parameter and packet limits. */
const INSERT_SLICE = 100;

/**
 * Indexes one document version for one index job. Safe to run any number of
 * times: a finished item is skipped, and the document's chunks are replaced
 * in one transaction, so the end state is one set of chunks.
 */
export async function indexDocument(deps: IndexerDeps, work: IndexingWork, signal?: AbortSignal, progress?: IndexProgress): Promise<IndexOutcome> {
  const claim = await claimItem(deps, work);
  if (claim.outcome === 'skipped') return claim;
  const document = claim.document;

  await progress?.('chunking', 0, 1);
  const embedInThread = deps.vectorSearch && deps.embedder.local === 'hashing';
  const prepared = await deps.cpu.run(
    'prepareDocument',
    {
      title: document.title,
      content: document.content,
      contentType: document.content_type,
      chunking: deps.chunking,
      hashDimensions: embedInThread ? deps.embedder.dimensions : null,
    },
    signal,
  );
  const { chunks } = prepared;
  signal?.throwIfAborted();
  const embeddings = deps.vectorSearch ? await embedChunks(deps, document.title, prepared, signal, progress) : [];

  await progress?.('storing', 0, chunks.length);
  return withTenant(deps.db, work.tenantId, async (trx) => {
    // Item first, then document, then job: the order claimItem, failIndexing and cancelIndexJob lock in,
    // so two runs of the same work (or a run and a cancel) wait for each other instead of deadlocking.
    const item = await trx('index_job_items').first('status').where({ index_job_id: work.indexJobId, document_id: work.documentId }).forUpdate();
    if (item?.status !== 'processing') return { outcome: 'skipped' as const, reason: `the item is ${item?.status ?? 'gone'}` };
    const current = await lockCurrentVersion(trx, deps.events, work);
    if (current.outcome === 'skipped') return current;

    await trx('chunks').where({ document_id: work.documentId }).delete();
    for (let start = 0; start < chunks.length; start += INSERT_SLICE) {
      await insertChunks(trx, deps, work, document.title, chunks.slice(start, start + INSERT_SLICE), embeddings.slice(start, start + INSERT_SLICE));
    }
    await trx('documents').where({ id: work.documentId }).update({
      status: 'indexed',
      chunk_count: chunks.length,
      indexed_at: trx.fn.now(),
      error: null,
      error_code: null,
      updated_at: trx.fn.now(),
    });
    await setItemStatus(trx, deps.events, work, 'completed', null);
    const indexed = await trx<DocumentRow>('documents').first('*').where({ id: work.documentId });
    await recordDocumentEvent(trx, deps.events, work.tenantId, 'document.indexed', indexed!);
    return { outcome: 'indexed' as const, chunks: chunks.length };
  });
}

/**
 * Marks the work failed for good (attempts exhausted or an unrecoverable
 * error): the item and, if this job still owns it, the document.
 */
export async function failIndexing(deps: Pick<IndexerDeps, 'db' | 'events'>, work: IndexingWork, error: Error): Promise<void> {
  await withTenant(deps.db, work.tenantId, async (trx) => {
    const item = await trx('index_job_items').first('status').where({ index_job_id: work.indexJobId, document_id: work.documentId }).forUpdate();
    if (!item || (item.status !== 'queued' && item.status !== 'processing')) return;
    const [failed] = await trx<DocumentRow>('documents')
      .where({ id: work.documentId, tenant_id: work.tenantId, version: work.version, last_index_job_id: work.indexJobId })
      .update({ status: 'failed', error: error.message, error_code: errorCode(error), updated_at: trx.fn.now() })
      .returning('*');
    await setItemStatus(trx, deps.events, work, 'failed', error.message);
    if (failed) await recordDocumentEvent(trx, deps.events, work.tenantId, 'document.failed', failed);
  });
}

function errorCode(error: Error): DocumentErrorCode {
  if (error instanceof DocumentTooComplexError) return 'document_too_complex';
  if (error instanceof EmbeddingError) return 'embedding_failed';
  return 'indexing_failed';
}

/**
 * Each chunk's vector: those the built-in embedder computed in the thread,
 * or the configured embedder's, asked for in batches.
 */
async function embedChunks(
  deps: IndexerDeps,
  title: string,
  { chunks, vectors }: PreparedDocument,
  signal: AbortSignal | undefined,
  progress: IndexProgress | undefined,
): Promise<Vector[]> {
  const dimensions = deps.embedder.dimensions;
  if (vectors) return chunks.map((_, index) => vectors.subarray(index * dimensions, (index + 1) * dimensions));
  const embeddings: Vector[] = [];
  for (let start = 0; start < chunks.length; start += deps.embedBatchSize) {
    const texts = chunks.slice(start, start + deps.embedBatchSize).map((chunk) => embeddingText(title, chunk));
    embeddings.push(...(await deps.embedder.embed(texts, signal)));
    signal?.throwIfAborted();
    await progress?.('embedding', Math.min(start + deps.embedBatchSize, chunks.length), chunks.length);
  }
  return embeddings;
}

type Vector = readonly number[] | Float64Array;

type Claim = { outcome: 'claimed'; document: DocumentRow } | { outcome: 'skipped'; reason: string };

async function claimItem({ db, events }: IndexerDeps, work: IndexingWork): Promise<Claim> {
  return withTenant(db, work.tenantId, async (trx) => {
    const item = await trx('index_job_items').first('status').where({ index_job_id: work.indexJobId, document_id: work.documentId }).forUpdate();
    if (!item) return { outcome: 'skipped', reason: 'the index job no longer exists' };
    // A failed item runs again only when an operator retries its failed queue job (nothing else re-runs a
    // failed job), and that retry must redo the work rather than skip it.
    if (item.status === 'completed' || item.status === 'canceled') return { outcome: 'skipped', reason: `the item is already ${item.status}` };
    const current = await lockCurrentVersion(trx, events, work);
    if (current.outcome === 'skipped') return current;
    await trx('documents')
      .where({ id: work.documentId, last_index_job_id: work.indexJobId })
      .update({ status: 'processing', updated_at: trx.fn.now() });
    await setItemStatus(trx, events, work, 'processing', null);
    return { outcome: 'claimed', document: current.document };
  });
}

/** Locks the document; if it is gone or has moved on to a newer version, the item is canceled. */
async function lockCurrentVersion(trx: Knex.Transaction, events: EventSink, work: IndexingWork): Promise<Claim> {
  const document = await trx<DocumentRow>('documents').first('*').where({ id: work.documentId, tenant_id: work.tenantId }).forUpdate();
  if (!document) {
    await setItemStatus(trx, events, work, 'canceled', 'The document was deleted.');
    return { outcome: 'skipped', reason: 'the document was deleted' };
  }
  if (document.version !== work.version) {
    await setItemStatus(trx, events, work, 'canceled', `Superseded by version ${document.version}.`);
    return { outcome: 'skipped', reason: `superseded by version ${document.version}` };
  }
  return { outcome: 'claimed', document };
}

async function setItemStatus(trx: Knex.Transaction, events: EventSink, work: IndexingWork, status: ItemStatus, error: string | null): Promise<void> {
  await trx('index_job_items')
    .where({ index_job_id: work.indexJobId, document_id: work.documentId })
    .update({ status, error, updated_at: trx.fn.now() });
  await refreshIndexJob(trx, events, work.indexJobId);
}

async function insertChunks(
  trx: Knex.Transaction,
  deps: IndexerDeps,
  work: IndexingWork,
  title: string,
  chunks: Chunk[],
  embeddings: Vector[],
): Promise<void> {
  const records = chunks.map((chunk, index) => ({
    id: newId(),
    ordinal: chunk.ordinal,
    content: chunk.content,
    heading: chunk.heading,
    char_start: chunk.charStart,
    char_end: chunk.charEnd,
    embedding: deps.vectorSearch ? `[${embeddings[index].join(',')}]` : null,
  }));
  const config = deps.textSearchConfig;
  const vectorColumns = deps.vectorSearch ? ', embedding_model, embedding_dims, embedding' : '';
  const vectorValues = deps.vectorSearch ? ', ?, ?, c.embedding::vector' : '';
  const vectorBindings = deps.vectorSearch ? [deps.embedder.model, deps.embedder.dimensions] : [];
  await trx.raw(
    `insert into chunks (id, tenant_id, document_id, document_version, ordinal, content, heading, char_start, char_end, tsv${vectorColumns})
     select c.id, ?, ?, ?, c.ordinal, c.content, c.heading, c.char_start, c.char_end,
            setweight(to_tsvector(?::regconfig, ?), 'A')
              || setweight(to_tsvector(?::regconfig, coalesce(c.heading, '')), 'B')
              || setweight(to_tsvector(?::regconfig, c.content), 'D')${vectorValues}
       from jsonb_to_recordset(?::jsonb)
         as c(id uuid, ordinal int, content text, heading text, char_start int, char_end int, embedding text)`,
    [work.tenantId, work.documentId, work.version, config, title, config, config, ...vectorBindings, JSON.stringify(records)],
  );
}
