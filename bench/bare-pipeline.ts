import { performance } from 'node:perf_hooks';
import { loadConfig } from '../src/config';
import { openDatabase } from '../src/db/database';
import { migrateToLatest } from '../src/db/migrate';
import { chunkDocument } from '../src/domain/chunking/chunker';
import { createEmbedder } from '../src/domain/embeddings';
import { newId } from '../src/domain/ids';
import { chunkInsert } from '../src/domain/indexing/indexer';
import { embeddingText } from '../src/domain/indexing/prepare';
import { createLogger } from '../src/logger';
import type { CorpusDocument } from './corpus';
import { adminQuery, log, POSTGRES_ADMIN_URL, uniqueName, type Cleanup } from './indexing';

/**
 * The indexing pipeline with nothing around it, in this process: the same
 * documents stored in batches, then each one chunked (with ragworks'
 * chunker and default settings), embedded (where there are vectors) and its
 * chunks inserted with the very statement ragworks runs — no HTTP, no queue,
 * no worker threads, no claims, states, events or counters, as the tables'
 * owner (no row-level security), one autocommitted INSERT per document.
 * `concurrency` documents are in flight at once, as in one worker process.
 */

export interface BarePipelineResult {
  documents: number;
  chunks: number;
  seconds: number;
  documentsPerSecond: number;
  concurrency: number;
}

const STORE_BATCH = 100;

export async function runBarePipeline(documents: readonly CorpusDocument[], concurrency: number, cleanup: Cleanup): Promise<BarePipelineResult> {
  const database = uniqueName('rw_bench');
  const drop = cleanup.add(`database ${database}`, () => adminQuery(`drop database if exists ${database} with (force)`));
  await adminQuery(`create database ${database}`);
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${database}`;
  const config = loadConfig({ DATABASE_URL: url.toString(), LOG_LEVEL: 'error', ADMIN_TOKEN: 'bench-bare-pipeline-unused-0123456789' });
  const db = await openDatabase({ databaseUrl: url.toString(), dataDir: '', poolMax: concurrency, logger: createLogger('error'), statementTimeoutMs: 0, idleInTransactionTimeoutMs: 0 });
  const close = cleanup.add('bare pipeline database connections', () => db.close());
  try {
    const { vectorSearch } = await migrateToLatest(db, { databaseUrl: url.toString(), embeddingDimensions: config.EMBEDDINGS_DIMENSIONS });
    const embedder = createEmbedder(config);
    const settings = { textSearchConfig: config.SEARCH_TEXT_CONFIG, vectorSearch: vectorSearch.available, embedder };
    const chunking = { targetWords: config.CHUNK_TARGET_WORDS, overlapWords: config.CHUNK_OVERLAP_WORDS, minWords: config.CHUNK_MIN_WORDS, maxWords: config.CHUNK_MAX_WORDS };
    const tenantId = newId();
    await db.knex('tenants').insert({ id: tenantId, slug: `bare-${tenantId.slice(-8)}`, name: 'Bare pipeline', tier: 'unlimited' });
    log(`bare pipeline: ${documents.length} documents, ${concurrency} at a time`);

    const started = performance.now();
    const rows = documents.map((document) => ({
      id: newId(),
      tenant_id: tenantId,
      title: document.title,
      content: document.content,
      content_type: 'markdown',
      status: 'queued',
      version: 1,
      content_bytes: Buffer.byteLength(document.content),
    }));
    for (let start = 0; start < rows.length; start += STORE_BATCH) await db.knex('documents').insert(rows.slice(start, start + STORE_BATCH));
    let next = 0;
    let chunkCount = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < rows.length) {
          const row = rows[next++];
          const chunks = chunkDocument(row.content, 'markdown', chunking);
          const embeddings = settings.vectorSearch ? await embedder.embed(chunks.map((chunk) => embeddingText(row.title, chunk))) : [];
          const insert = chunkInsert(
            settings,
            tenantId,
            chunks.map((chunk, index) => ({ documentId: row.id, version: 1, title: row.title, chunk, embedding: embeddings[index] })),
          );
          await db.knex.raw(insert.sql, insert.bindings);
          chunkCount += chunks.length;
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    return { documents: rows.length, chunks: chunkCount, seconds, documentsPerSecond: rows.length / seconds, concurrency };
  } finally {
    await close();
    await drop();
  }
}
