import path from 'node:path';
import type { Knex } from 'knex';
import { withLiterals } from '../../db/literal';
import { queryAsTenant, withTenant } from '../../db/tenant-scope';
import { DEFAULT_CHUNKING, type Chunk, type ChunkingOptions } from '../chunking/chunker';
import type { DocumentErrorCode, DocumentRow } from '../documents/documents';
import { EmbeddingError, type Embedder } from '../embeddings/embedder';
import { newId } from '../ids';
import { CpuPool, DocumentTooComplexError, type CpuPoolOptions } from './cpu-pool';
import type { IndexingWork } from './dispatch';
import { embeddingText, type PreparedDocument } from './prepare';
import { isBinaryKind, readFileBytes } from '../files/files';
import type { BinaryKind, ExtractionLimits, FileErrorCode } from '../files/extract';
import { refreshIndexJob, refreshIndexJobUnlessBusy, settleIndexJob, type ItemStatus } from './jobs';
import { recordDocumentEvent, recordDocumentEvents } from '../webhooks/document-events';
import { rememberTerms } from '../search/vocabulary';
import { Batcher, type Settled } from '../../batcher';
import { onePer } from '../../one-per';
import type { EventSink } from '../webhooks/events';
import type { SearchVisibleWrites } from '../cache/write-marks';

/** The worker threads that run ./cpu-thread's tasks: chunking, and embedding with the built-in embedder. */
export type IndexingCpu = CpuPool<typeof import('./cpu-thread')>;

export function createIndexingCpu(options: Omit<CpuPoolOptions, 'entry'>): IndexingCpu {
  // The entry in the form this code runs as: .ts from source (tsx, jest), .js once compiled.
  return new CpuPool({ ...options, entry: path.join(__dirname, `cpu-thread${path.extname(__filename)}`) });
}

/** Starts the indexing threads and loads the chunker in each, before the first document needs them. */
export function warmIndexingCpu(cpu: IndexingCpu): Promise<void> {
  return cpu.warm('prepareDocument', { title: '', content: '', contentType: 'text', chunking: DEFAULT_CHUNKING, hashDimensions: null });
}

export interface IndexerDeps {
  db: Knex;
  /** Brackets each store transaction: the cache and the replica must not serve from before it once it is visible. */
  writes: SearchVisibleWrites;
  events: EventSink;
  embedder: Embedder;
  cpu: IndexingCpu;
  chunking: ChunkingOptions;
  /** PostgreSQL text search configuration, e.g. `english`. */
  textSearchConfig: string;
  /** False on a PostgreSQL without pgvector: chunks are stored for keyword search only. */
  vectorSearch: boolean;
  embedBatchSize: number;
  /** Bounds on an uploaded PDF or DOCX (UPLOAD_MAX_PAGES, UPLOAD_MAX_EXPANDED_BYTES). */
  fileLimits: ExtractionLimits;
}

/** An uploaded file that gives no text to index (encrypted, corrupt, a bomb, a scan): reading it again would give the same. */
export class FileRejectedError extends Error {
  override readonly name = 'FileRejectedError';

  constructor(
    readonly code: FileErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

export type IndexOutcome =
  | { outcome: 'indexed'; chunks: number }
  | { outcome: 'skipped'; reason: string };

/** Progress of the one step that can take long between database writes: asking an embeddings provider, batch by batch. */
export type IndexProgress = (stage: 'embedding', done: number, total: number) => void | Promise<void>;

/** Rows per INSERT: big enough to be quick, small enough to stay far from parameter and packet limits. */
const INSERT_SLICE = 100;

/**
 * Indexes one document version for one index job. Safe to run any number of
 * times: a finished item is skipped, and the document's chunks are replaced
 * in one transaction, so the end state is one set of chunks.
 */
export async function indexDocument(deps: IndexerDeps, work: IndexingWork, signal?: AbortSignal, progress?: IndexProgress): Promise<IndexOutcome> {
  const { outcome, counted } = await claimPrepareAndStore(deps, work, signal, progress);
  // Also after a skip: a run that committed its item but died before counting it left the job to its re-run.
  if (!counted) await settleIndexJob(deps.db, deps.events, work.tenantId, work.indexJobId);
  return outcome;
}

/** The outcome, and whether the index job was recounted in the transaction that stored it. */
type Stored = { outcome: IndexOutcome; counted: boolean };

async function claimPrepareAndStore(deps: IndexerDeps, work: IndexingWork, signal?: AbortSignal, progress?: IndexProgress): Promise<Stored> {
  const claim = await claimItem(deps, work);
  if (claim.outcome === 'skipped') return { outcome: claim, counted: false };
  const document = claim.document;

  const embedInThread = deps.vectorSearch && deps.embedder.local === 'hashing';
  const common = { title: document.title, chunking: deps.chunking, hashDimensions: embedInThread ? deps.embedder.dimensions : null };
  const prepared = isBinaryKind(document.content_type)
    ? await prepareFile(deps, work, document.content_type, common, signal)
    : await deps.cpu.run('prepareDocument', { ...common, content: document.content, contentType: document.content_type }, signal);
  signal?.throwIfAborted();
  const embeddings = deps.vectorSearch ? await embedChunks(deps, document.title, prepared, signal, progress) : [];
  return storeChunks(deps, work, document.title, prepared.chunks, embeddings);
}

/** An uploaded PDF or DOCX: its original read from the database, its text extracted and prepared in a thread. */
async function prepareFile(
  deps: IndexerDeps,
  work: IndexingWork,
  kind: BinaryKind,
  common: { title: string; chunking: ChunkingOptions; hashDimensions: number | null },
  signal: AbortSignal | undefined,
): Promise<PreparedDocument> {
  const bytes = await readFileBytes(deps.db, work.tenantId, work.documentId);
  const result = await deps.cpu.run('prepareFile', { ...common, kind, bytes, limits: deps.fileLimits }, signal);
  if (!result.ok) throw new FileRejectedError(result.code, result.message);
  return result.prepared;
}

/** One document's chunks, ready to be stored for its work. */
interface StoreRequest {
  deps: IndexerDeps;
  work: IndexingWork;
  title: string;
  chunks: Chunk[];
  embeddings: Vector[];
}

/**
 * The documents of one tenant that a process has prepared at about the same
 * time are stored together, in one transaction (group commit): under load a
 * transaction's fixed round trips — scope, the event's lookup, the index
 * job's recount, commit — are paid once for several documents, not each.
 */
const storeBatches = onePer((_db: Knex) => new Batcher<StoreRequest, Stored>((tenantId, requests) => storeTogetherOrAlone(tenantId, requests)));

function storeChunks(deps: IndexerDeps, work: IndexingWork, title: string, chunks: Chunk[], embeddings: Vector[]): Promise<Stored> {
  return storeBatches(deps.db).submit(work.tenantId, { deps, work, title, chunks, embeddings });
}

/**
 * A batch that fails as a whole (one of its documents changed under it, a
 * deadlock with an operator's cancel) is stored again document by document,
 * so each document's outcome is its own.
 */
async function storeTogetherOrAlone(tenantId: string, requests: StoreRequest[]): Promise<Array<Settled<Stored>>> {
  if (requests.length > 1) {
    try {
      const stored = await storeTogether(requests[0].deps, tenantId, requests);
      return stored.map((value) => ({ ok: true, value }));
    } catch {
      // Each alone below: the error, if it was one document's, comes back to that document's job.
    }
  }
  return Promise.all(
    requests.map(async (request): Promise<Settled<Stored>> => {
      try {
        return { ok: true, value: (await storeTogether(request.deps, tenantId, [request]))[0] };
      } catch (error) {
        return { ok: false, error };
      }
    }),
  );
}

/**
 * Marks the items completed and their documents indexed, for those still
 * current and processing, and replaces those documents' chunks with the
 * rows of `insert` that belong to them; answers the documents it marked.
 * The scalar subquery locks the items before the documents are read, found
 * by their keys alone (see claimItem); the delete finishes before the
 * insert reads its count, and a row this statement deleted no longer holds
 * its (document, ordinal).
 */
function markAndStore(insert: { sql: string; bindings: Knex.RawBinding[] }): string {
  return `
  with wanted as (
    select * from jsonb_to_recordset(?::jsonb) as w(index_job_id uuid, document_id uuid, version int, chunk_count int)
  ), item as (
    select i.index_job_id, i.document_id, i.status from index_job_items i
      join wanted w on w.index_job_id = i.index_job_id and w.document_id = i.document_id
     order by i.index_job_id, i.document_id
       for update of i
  ), document as (
    select d.id, d.tenant_id, d.version from documents d
     where d.id in (select document_id from wanted) and (select count(*) from item) > 0
     order by d.id
       for update
  ), current as (
    select w.* from wanted w
      join document d on d.id = w.document_id and d.tenant_id = ? and d.version = w.version
      join item i on i.index_job_id = w.index_job_id and i.document_id = w.document_id and i.status = 'processing'
  ), completed as (
    update index_job_items i set status = 'completed', error = null, updated_at = now()
      from current c
     where i.index_job_id = c.index_job_id and i.document_id = c.document_id
  ), marked as (
    update documents d
       set status = 'indexed', chunk_count = c.chunk_count, indexed_at = now(), error = null, error_code = null, updated_at = now()
      from current c
     where d.id = c.document_id
    returning d.*
  ), cleared as (
    delete from chunks where document_id in (select id from marked) returning 1
  ), inserted as (
    ${insert.sql}
     where c.document_id in (select id from marked) and (select count(*) from cleared) >= 0
  )
  select * from marked`;
}

/**
 * Replaces each document's chunks, marks it indexed and its item
 * completed, stores their `document.indexed` events and recounts their
 * index jobs, in one transaction: the same statements for one document as
 * for many (one more per INSERT_SLICE chunks beyond the first). Every
 * document of a batch ends at its index job's row; a job whose row another
 * transaction holds is not waited for, but recounted after the commit
 * (settleIndexJob). The transaction is bracketed by the tenant's write
 * marks (write-marks.ts), so once it is visible no search is served from
 * the cache or a replica that predates it.
 */
async function storeTogether(deps: IndexerDeps, tenantId: string, requests: StoreRequest[]): Promise<Stored[]> {
  return deps.writes.around(tenantId, () => withTenant(deps.db, tenantId, async (trx) => {
    // Items first, then documents, then jobs, each in key order: the order claimItem, failIndexing and
    // cancelIndexJob lock in, so two runs of the same work (or a run and a cancel) wait for each other
    // instead of deadlocking.
    const wanted = requests.map(({ work, chunks }) => ({ index_job_id: work.indexJobId, document_id: work.documentId, version: work.version, chunk_count: chunks.length }));
    const rows = requests.flatMap(({ work, title, chunks, embeddings }) =>
      chunks.map((chunk, index) => ({ documentId: work.documentId, version: work.version, title, chunk, embedding: embeddings[index] })),
    );
    const firstInsert = chunkInsert(deps, tenantId, rows.slice(0, INSERT_SLICE));
    const marked = await trx.raw(markAndStore(firstInsert), [JSON.stringify(wanted), tenantId, ...firstInsert.bindings]);
    const indexed = new Map<string, DocumentRow>(marked.rows.map((row: DocumentRow) => [row.id, row]));
    const isStored = ({ documentId, version }: { documentId: string; version: number }) => indexed.get(documentId)?.version === version;

    const outcomes = new Map<StoreRequest, Stored>();
    for (const request of requests) {
      const { work } = request;
      if (isStored(work)) continue;
      // Canceled, finished by another run, deleted or superseded meanwhile: the item says which, the document how.
      const item = await trx('index_job_items').first('status').where({ index_job_id: work.indexJobId, document_id: work.documentId });
      if (item?.status !== 'processing') {
        outcomes.set(request, { outcome: { outcome: 'skipped', reason: `the item is ${item?.status ?? 'gone'}` }, counted: false });
        continue;
      }
      const current = await lockCurrentVersion(trx, deps.events, work);
      if (current.outcome === 'skipped') outcomes.set(request, { outcome: current, counted: true });
      else throw new Error('the document changed while its chunks were being replaced');
    }

    const rest = rows.slice(INSERT_SLICE).filter(isStored);
    for (let start = 0; start < rest.length; start += INSERT_SLICE) {
      const insert = chunkInsert(deps, tenantId, rest.slice(start, start + INSERT_SLICE));
      await trx.raw(insert.sql, insert.bindings);
    }
    const storing = requests.filter((request) => !outcomes.has(request));
    await recordDocumentEvents(trx, deps.events, tenantId, 'document.indexed', storing.map(({ work }) => indexed.get(work.documentId)!));

    const countedJobs = new Map<string, boolean>();
    for (const indexJobId of [...new Set(storing.map(({ work }) => work.indexJobId))].sort()) {
      countedJobs.set(indexJobId, await refreshIndexJobUnlessBusy(trx, deps.events, indexJobId));
    }
    await rememberTerms(trx, tenantId, storing.map(({ work }) => work.documentId));
    return requests.map(
      (request) => outcomes.get(request) ?? { outcome: { outcome: 'indexed', chunks: request.chunks.length }, counted: countedJobs.get(request.work.indexJobId)! },
    );
  }));
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
  if (error instanceof FileRejectedError) return error.code;
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

/** The usual claim, for an item still queued for the current version; see claimItem. */
const CLAIM_QUEUED_ITEM = `
  with item as (
    select status from index_job_items where index_job_id = ? and document_id = ? for update
  ), document as (
    select d.* from documents d
     where d.id = ? and (select count(*) from item) > 0
     for update
  ), claimable as (
    select d.id from document d, item i where d.tenant_id = ? and d.version = ? and i.status = 'queued'
  ), claimed_document as (
    update documents set status = 'processing', updated_at = now()
     where id = ? and last_index_job_id = ? and exists (select 1 from claimable)
  ), claimed_item as (
    update index_job_items set status = 'processing', error = null, updated_at = now()
     where index_job_id = ? and document_id = ? and exists (select 1 from claimable)
    returning document_id
  ), started_job as (
    update index_jobs set status = 'processing', started_at = coalesce(started_at, now())
     where id = ? and status = 'queued' and exists (select 1 from claimed_item)
  )
  select d.*, exists (select 1 from claimable) as claimed from document d`;

/**
 * Marks the item and its document `processing` and returns the document.
 * The usual case — an item still queued for the current version — is one
 * statement in one round trip, its own transaction; a re-run, an operator's
 * retry of a failed item, a deleted or superseded document take the longer
 * way. Item, then document, then job, as everywhere: the scalar subquery
 * locks the item before the document is read. The document is found by its
 * key alone and its tenant checked after: with the tenant beside the key, a
 * planner without statistics yet (a new table's first batches, before
 * autoanalyze) may walk all the tenant's documents for each one.
 */
async function claimItem({ db, events }: IndexerDeps, work: IndexingWork): Promise<Claim> {
  const { tenantId, indexJobId, documentId, version } = work;
  const [row] = await queryAsTenant<DocumentRow & { claimed: boolean }>(
    db,
    tenantId,
    withLiterals(CLAIM_QUEUED_ITEM, [indexJobId, documentId, documentId, tenantId, version, documentId, indexJobId, indexJobId, documentId, indexJobId]),
  );
  if (row?.claimed) {
    const { claimed: _claimed, ...document } = row;
    return { outcome: 'claimed', document };
  }
  return withTenant(db, tenantId, (trx) => claimSlowly(trx, events, work));
}

async function claimSlowly(trx: Knex.Transaction, events: EventSink, work: IndexingWork): Promise<Claim> {
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

/** What the INSERT of chunks depends on. */
export type ChunkInsertSettings = Pick<IndexerDeps, 'textSearchConfig' | 'vectorSearch' | 'embedder'>;

/** One chunk to insert, with the document version it belongs to. */
export interface ChunkRow {
  documentId: string;
  version: number;
  /** The document's title, weighted first in the chunk's text search vector. */
  title: string;
  chunk: Chunk;
  embedding?: Vector;
}

/**
 * One INSERT of chunks, of one document or several: the rows travel as one
 * JSON parameter; the text search vectors are computed in the database.
 * What storeTogether runs, and the benchmark's bare pipeline too.
 */
export function chunkInsert(settings: ChunkInsertSettings, tenantId: string, rows: readonly ChunkRow[]): { sql: string; bindings: Knex.RawBinding[] } {
  const records = rows.map(({ documentId, version, title, chunk, embedding }) => ({
    id: newId(),
    document_id: documentId,
    document_version: version,
    title,
    ordinal: chunk.ordinal,
    content: chunk.content,
    heading: chunk.heading,
    char_start: chunk.charStart,
    char_end: chunk.charEnd,
    embedding: settings.vectorSearch ? `[${embedding!.join(',')}]` : null,
    page: chunk.page ?? null,
  }));
  const config = settings.textSearchConfig;
  const vectorColumns = settings.vectorSearch ? ', embedding_model, embedding_dims, embedding' : '';
  const vectorValues = settings.vectorSearch ? ', ?, ?, c.embedding::vector' : '';
  const vectorBindings = settings.vectorSearch ? [settings.embedder.model, settings.embedder.dimensions] : [];
  return {
    sql: `insert into chunks (id, tenant_id, document_id, document_version, ordinal, content, heading, char_start, char_end, page, tsv${vectorColumns})
     select c.id, ?, c.document_id, c.document_version, c.ordinal, c.content, c.heading, c.char_start, c.char_end, c.page,
            setweight(to_tsvector(?::regconfig, c.title), 'A')
              || setweight(to_tsvector(?::regconfig, coalesce(c.heading, '')), 'B')
              || setweight(to_tsvector(?::regconfig, c.content), 'D')${vectorValues}
       from jsonb_to_recordset(?::jsonb)
         as c(id uuid, document_id uuid, document_version int, title text, ordinal int, content text, heading text, char_start int, char_end int, page int, embedding text)`,
    bindings: [tenantId, config, config, config, ...vectorBindings, JSON.stringify(records)],
  };
}
