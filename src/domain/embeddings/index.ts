import type { Config } from '../../config';
import type { Embedder } from './embedder';
import { createHashingEmbedder } from './hashing';
import { createOpenAiEmbedder } from './openai';

export type { Embedder } from './embedder';

/** The embedder the configuration asks for: the offline hashing one by default. */
export function createEmbedder(config: Config): Embedder {
  if (config.EMBEDDINGS_PROVIDER === 'openai') {
    return createOpenAiEmbedder({
      url: config.EMBEDDINGS_URL!,
      model: config.EMBEDDINGS_MODEL!,
      apiKey: config.EMBEDDINGS_API_KEY,
      dimensions: config.EMBEDDINGS_DIMENSIONS,
      batchSize: config.EMBEDDINGS_BATCH_SIZE,
      maxRetries: config.EMBEDDINGS_MAX_RETRIES,
      timeoutMs: config.EMBEDDINGS_TIMEOUT_MS,
    });
  }
  return createHashingEmbedder(config.EMBEDDINGS_DIMENSIONS);
}
