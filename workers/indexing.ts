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
      // Also after a skip: if a run committed but died before this line, its re-run must still invalidate.
      // A failure here fails the job, which is retried and invalidates then.
      await platform.cache.invalidate(payload.tenantId);
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
