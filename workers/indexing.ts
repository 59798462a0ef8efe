import { INDEXING_ATTEMPTS_FOR_OTHER_ERRORS, indexingQueue, indexingRetryDelayMs } from '../queues/indexing';
import { EmbeddingError } from '../src/domain/embeddings/embedder';
import { DocumentTooComplexError } from '../src/domain/indexing/cpu-pool';
import { failIndexing, FileRejectedError, indexDocument, warmIndexingCpu } from '../src/domain/indexing/indexer';
import { defineProcessor } from './processor';

export const indexingProcessor = defineProcessor({
  definition: indexingQueue,
  async process(payload, context) {
    const { platform, signal, job } = context;
    const result = await indexDocument(platform.indexerDeps(), payload, signal, (stage, done, total) => job.updateProgress({ stage, done, total }));
    if (result.outcome === 'indexed') platform.metrics.documentsIndexed.inc();
    else context.logger.info({ reason: result.reason }, 'indexing skipped');
    // The store announced its write to the cache and the replica routing itself, in the order write-marks.ts
    // explains; a run that died between its commit and that announcement left a mark whose lease ends it.
    return result;
  },
  attemptsFor(error) {
    // Trying again would burn the same CPU, read the same file, or meet the same refusal from the provider.
    if (error instanceof DocumentTooComplexError || error instanceof FileRejectedError || (error instanceof EmbeddingError && !error.retryable)) return 1;
    // Only a provider that is away gets the hour-long tail of the schedule.
    return error instanceof EmbeddingError ? Number.POSITIVE_INFINITY : INDEXING_ATTEMPTS_FOR_OTHER_ERRORS;
  },
  async onFinalFailure(payload, error, { platform }) {
    await failIndexing(platform.indexerDeps(), payload, error);
  },
  workerSettings: (platform) => ({
    backoffStrategy: (attemptsMade: number) => indexingRetryDelayMs(attemptsMade, platform.config.INDEX_RETRY_BASE_MS),
  }),
  background(platform) {
    // A process that indexes starts its threads with its worker, not with its first documents.
    const warming = warmIndexingCpu(platform.indexerDeps().cpu);
    return () => warming;
  },
});
