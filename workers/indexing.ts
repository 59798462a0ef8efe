import { INDEXING_ATTEMPTS_FOR_OTHER_ERRORS, indexingQueue, indexingRetryDelayMs } from '../queues/indexing';
import type { Platform } from '../src/platform';
import { EmbeddingError } from '../src/domain/embeddings/embedder';
import { DocumentTooComplexError } from '../src/domain/indexing/cpu-pool';
import { failIndexing, FileRejectedError, indexDocument, warmIndexingCpu } from '../src/domain/indexing/indexer';
import { defineProcessor } from './processor';

/** What the indexing processor uses of the platform. */
export type IndexingServices = Pick<Platform, 'config' | 'indexerDeps' | 'metrics'>;

export const indexingProcessor = defineProcessor<typeof indexingQueue, IndexingServices>({
  definition: indexingQueue,
  async process(payload, context) {
    const { services, signal, job } = context;
    const result = await indexDocument(services.indexerDeps(), payload, signal, (stage, done, total) => job.updateProgress({ stage, done, total }));
    if (result.outcome === 'indexed') services.metrics.documentsIndexed.inc();
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
  async onFinalFailure(payload, error, { services }) {
    await failIndexing(services.indexerDeps(), payload, error);
  },
  workerSettings: (services) => ({
    backoffStrategy: (attemptsMade: number) => indexingRetryDelayMs(attemptsMade, services.config.INDEX_RETRY_BASE_MS),
  }),
  background(services) {
    // A process that indexes starts its threads with its worker, not with its first documents.
    const warming = warmIndexingCpu(services.indexerDeps().cpu);
    return () => warming;
  },
});
