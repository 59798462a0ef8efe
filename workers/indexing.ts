import { UnrecoverableError } from 'bullmq';
import { indexingQueue } from '../queues';
import { EmbeddingError } from '../src/domain/embeddings/embedder';
import { failIndexing, indexDocument } from '../src/domain/indexing/indexer';
import { defineProcessor } from './processor';

export const indexingProcessor = defineProcessor({
  definition: indexingQueue,
  async process(payload, { platform, signal, job, logger }) {
    try {
      const result = await indexDocument(platform.indexerDeps(), payload, signal, (stage, done, total) =>
        job.updateProgress({ stage, done, total }),
      );
      if (result.outcome === 'indexed') platform.metrics.documentsIndexed.inc();
      else logger.info({ reason: result.reason }, 'indexing skipped');
      return result;
    } catch (error) {
      // A provider that refuses the input will refuse it again: do not retry.
      if (error instanceof EmbeddingError && !error.retryable) throw new UnrecoverableError(error.message);
      throw error;
    }
  },
  async onFinalFailure(payload, error, { platform }) {
    await failIndexing(platform.indexerDeps(), payload, error.message);
  },
});
