import type { Config } from '../../config';
import type { Embedder } from './embedder';
import { createHashingEmbedder } from './hashing';
import { createOpenAiEmbedder } from './openai';

export type { Embedder } from './embedder';

/** A search is waiting for a query's embedding: fail fast rather than hold the request for minutes. */
const QUERY_TIMEOUT_MS = 5_000;
const QUERY_RETRIES = 1;

/**
 * The embedder the configuration asks for: the offline hashing one by
 * default. `queries` is for embedding search queries inside a request, with
 * a short timeout and one retry; `documents` for indexing, with the
 * configured patience.
 */
export function createEmbedder(config: Config, purpose: 'documents' | 'queries' = 'documents'): Embedder {
  if (config.EMBEDDINGS_PROVIDER === 'openai') {
    const forQueries = purpose === 'queries';
    return createOpenAiEmbedder({
      url: config.EMBEDDINGS_URL!,
      model: config.EMBEDDINGS_MODEL!,
      apiKey: config.EMBEDDINGS_API_KEY,
      dimensions: config.EMBEDDINGS_DIMENSIONS,
      batchSize: config.EMBEDDINGS_BATCH_SIZE,
      maxRetries: forQueries ? Math.min(QUERY_RETRIES, config.EMBEDDINGS_MAX_RETRIES) : config.EMBEDDINGS_MAX_RETRIES,
      timeoutMs: forQueries ? Math.min(QUERY_TIMEOUT_MS, config.EMBEDDINGS_TIMEOUT_MS) : config.EMBEDDINGS_TIMEOUT_MS,
    });
  }
  return createHashingEmbedder(config.EMBEDDINGS_DIMENSIONS);
}
