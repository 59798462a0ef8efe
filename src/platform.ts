import type { Knex } from 'knex';
import { queueSnapshots } from '../queues/queue-health';
import { enqueueDeliveries } from '../queues/webhooks';
import { QueueRegistry } from '../queues';
import { eventFanout, indexingDispatch, indexingWithdrawal } from '../queues/domain-ports';
import type { Config } from './config';
import { queueTelemetry } from './telemetry';
import type { Database } from './db/database';
import type { RowLevelSecurity, VectorSupport } from './db/migrate';
import { prepareDatabase, type PreparedDatabase } from './db/prepare';
import { KeyUsageRecorder } from './domain/apikeys/apikeys';
import { ApiKeyCache } from './domain/apikeys/key-cache';
import { KeyChanges } from './domain/apikeys/key-changes';
import { createEmbedder, type Embedder } from './domain/embeddings';
import type { DispatchIndexing } from './domain/indexing/dispatch';
import { createIndexingCpu, type IndexerDeps } from './domain/indexing/indexer';
import type { DocumentDeps } from './domain/documents/documents';
import type { SearchDeps } from './domain/search/search';
import { createReranker } from './domain/search/reranker';
import { createConfiguredChatModel, type ChatModel } from './domain/answers/chat-model';
import type { DeliveryDeps, DeliveryWork } from './domain/webhooks/deliveries';
import type { EndpointSettings } from './domain/webhooks/endpoints';
import type { EventSink } from './domain/webhooks/events';
import { EndpointSlots, slotTimings } from './domain/webhooks/fairness';
import { SearchCache } from './domain/cache/search-cache';
import { TenantWrites } from './domain/cache/write-marks';
import { ReplicaReads } from './db/replica-reads';
import { SearchEventRecorder } from './domain/analytics/recorder';
import { DailyQuota } from './domain/tenants/daily-quota';
import { SuspensionHold } from './domain/tenants/suspension';
import { DependencyHealth } from './health';
import type { Logger } from './logger';
import { Metrics } from './metrics';
import { registerUsageMetrics } from './domain/usage/metrics';
import { registerCacheMetrics } from './domain/cache/metrics';
import { MetricsWindow } from './metrics-window';
import { connectRedis, createRedisClient, type RedisClient } from './redis';

/**
 * The long-lived resources a process holds, built once at start and handed
 * to routes, processors and the scheduler.
 */
export interface Platform {
  config: Config;
  logger: Logger;
  db: Database;
  vector: VectorSupport;
  rowLevelSecurity: RowLevelSecurity;
  /** Producer connection: fails fast while Redis is away. */
  redis: RedisClient;
  queues: QueueRegistry;
  embedder: Embedder;
  health: DependencyHealth;
  metrics: Metrics;
  /** The last minutes of this process's metrics, for the dashboard. */
  metricsWindow: MetricsWindow;
  keyUsage: KeyUsageRecorder;
  /** API keys verified once and kept in process. */
  apiKeys: ApiKeyCache;
  /** Announces changes to keys and tenants to every process's `apiKeys`. */
  keyChanges: KeyChanges;
  dispatchIndexing: DispatchIndexing;
  /** Removes queued indexing jobs that are no longer wanted; a running one notices its item is canceled. */
  withdrawIndexing: DispatchIndexing;
  /** Enqueues the fan-out of committed events. */
  events: EventSink;
  /** Per-endpoint limit on webhook deliveries in flight. */
  endpointSlots: EndpointSlots;
  /** Search results and query embeddings, in process and in Redis. */
  cache: SearchCache;
  /** Each tenant's searches today: the one live count of searches, which the daily quota limits. */
  searchQuota: DailyQuota;
  answerQuota: DailyQuota;
  /** Puts served searches' events on the analytics stream, after the replies. */
  searchEvents: SearchEventRecorder;
  /** Holds a suspended tenant's jobs and releases them when it is resumed. */
  suspension: SuspensionHold;
  /** Queues deliveries with one attempt per WEBHOOK_RETRY_SCHEDULE entry; `spacingMs` paces them (replays). */
  enqueueDeliveries(work: DeliveryWork[], spacingMs?: number): Promise<void>;
  startedAt: Date;
  version: string;
  searchDeps(): SearchDeps;
  /** LLM_URL's chat model; null: none configured (POST /api/answer answers 501). */
  chatModel: ChatModel | null;
  /**
   * Runs a read whose contract tolerates lag — analytics reports, made from
   * rollups a minute behind anyway — on the replica when it is at most a
   * minute behind, else on the primary.
   */
  reportRead<T>(read: (db: Knex) => Promise<T>): Promise<T>;
  indexerDeps(): IndexerDeps;
  documentDeps(): DocumentDeps;
  deliveryDeps(): DeliveryDeps;
  endpointSettings(): EndpointSettings;
  close(): Promise<void>;
}

export const VERSION: string = require('../package.json').version;

/**
 * Connects to Redis (failing with one clear line when it cannot), opens the
 * database and brings its schema up to date.
 */
export async function createPlatform(config: Config, logger: Logger): Promise<Platform> {
  const redis = await connectRedis(config, 'producer');
  redis.on('error', (error) => logger.debug({ err: error }, 'redis connection error'));
  try {
    return assemble(config, logger, redis, await prepareDatabase(config, logger));
  } catch (error) {
    redis.disconnect();
    throw error;
  }
}

function assemble(config: Config, logger: Logger, redis: RedisClient, { db, vector, rowLevelSecurity }: PreparedDatabase): Platform {
  const queues = new QueueRegistry(redis, config.QUEUE_PREFIX, queueTelemetry(config));
  const embedder = createEmbedder(config);
  // Threads start with the first document indexed: a web-only process never starts any.
  const indexingCpu = createIndexingCpu({
    threads: config.INDEX_THREADS,
    deadlineMs: config.INDEX_DOCUMENT_TIMEOUT_MS,
    onError: (error) => logger.error({ err: error }, 'an indexing thread failed'),
  });
  const queryEmbedder = createEmbedder(config, 'queries');
  const health = new DependencyHealth(db, redis);
  const metrics = new Metrics(() => queueSnapshots(queues));
  const metricsWindow = new MetricsWindow(metrics);
  const reranker = createReranker(config, { counted: (outcome) => metrics.reranks.inc({ outcome }), logger });
  registerUsageMetrics(metrics.registry, db.knex, logger);
  const cache = new SearchCache(
    redis,
    config.QUEUE_PREFIX,
    { enabled: config.CACHE_ENABLED, l1MaxItems: config.CACHE_L1_MAX_ITEMS, ttlSeconds: config.CACHE_TTL_SECONDS, redisTimeoutMs: config.CACHE_REDIS_TIMEOUT_MS },
    { onEvent: (tier, event) => metrics.cacheEvents.inc({ tier, event }) },
  );
  const replicaReads = db.replica
    ? new ReplicaReads(db.knex, db.replica, {
        logger,
        onRead: (read, target) => metrics.databaseReads.inc({ read, target }),
        onError: () => metrics.replicaErrors.inc(),
      })
    : null;
  // Writes that change search results record the primary's WAL position only when a replica may serve searches.
  const searchVisibleWrites = new TenantWrites(cache, replicaReads ? () => replicaReads.primaryLsn() : null, logger);
  registerCacheMetrics(metrics.registry, cache);
  const keyUsage = new KeyUsageRecorder(db.knex, config.API_KEY_USAGE_FLUSH_MS, (error) =>
    logger.warn({ err: error }, 'could not record API key usage; will retry'),
  );
  const keyChanges = new KeyChanges({
    publisher: redis,
    subscriber: () => createRedisClient(config, 'producer', { autoResubscribe: false }),
    channel: `${config.QUEUE_PREFIX}:api-key-changes`,
    onError: (error, what) => logger.debug({ err: error }, `${what} failed`),
    onListening: (listening) =>
      listening
        ? logger.info('API keys are verified from memory: the change channel is heard')
        : logger.warn('API keys are verified in the database on every request: the change channel is not heard'),
  });
  const apiKeys = new ApiKeyCache(db.knex, config.API_KEY_CACHE_MAX_ITEMS, keyChanges);
  health.start();
  keyUsage.start();
  metricsWindow.start();
  const dispatchIndexing = indexingDispatch(queues);
  const events = eventFanout(queues, logger);
  const endpointSlots = new EndpointSlots(redis, config.QUEUE_PREFIX, config.WEBHOOK_ENDPOINT_CONCURRENCY, slotTimings(config.WEBHOOK_TIMEOUT_MS));
  return {
    config,
    logger,
    db,
    vector,
    rowLevelSecurity,
    redis,
    queues,
    embedder,
    health,
    metrics,
    metricsWindow,
    keyUsage,
    apiKeys,
    keyChanges,
    dispatchIndexing,
    withdrawIndexing: indexingWithdrawal(queues),
    events,
    endpointSlots,
    cache,
    searchQuota: new DailyQuota(redis, config.QUEUE_PREFIX, 'searches_per_day'),
    answerQuota: new DailyQuota(redis, config.QUEUE_PREFIX, 'answers_per_day'),
    searchEvents: new SearchEventRecorder(redis, config.QUEUE_PREFIX, (events) => metrics.analyticsDropped.inc(events)),
    suspension: new SuspensionHold(redis, config.QUEUE_PREFIX),
    enqueueDeliveries: (work, spacingMs = 0) => enqueueDeliveries(queues, endpointSlots, work, { attempts: config.WEBHOOK_RETRY_SCHEDULE.length, spacingMs }),
    startedAt: new Date(),
    version: VERSION,
    reportRead: (read) => (replicaReads ? replicaReads.readLagging('analytics', read) : read(db.knex)),
    chatModel: createConfiguredChatModel(config),
    searchDeps: () => ({
      db: db.knex,
      replica: replicaReads,
      embedder: queryEmbedder,
      reranker,
      vector,
      settings: {
        textSearchConfig: config.SEARCH_TEXT_CONFIG,
        semanticWeight: config.SEARCH_SEMANTIC_WEIGHT,
        rrfK: config.SEARCH_RRF_K,
        candidates: config.SEARCH_CANDIDATES,
        exactScanMaxChunks: config.SEARCH_EXACT_SCAN_MAX_CHUNKS,
        // PGlite enforces no statement_timeout.
        statementTimeoutMs: db.kind === 'postgres' ? config.SEARCH_STATEMENT_TIMEOUT_MS : 0,
      },
    }),
    documentDeps: () => ({ db: db.knex, dispatch: dispatchIndexing, events, logger, writes: searchVisibleWrites }),
    deliveryDeps: () => ({
      db: db.knex,
      events,
      settings: {
        allowPrivate: config.WEBHOOK_ALLOW_PRIVATE,
        timeoutMs: config.WEBHOOK_TIMEOUT_MS,
        userAgent: `ragworks-webhooks/${VERSION}`,
        disableAfterHours: config.WEBHOOK_DISABLE_AFTER_HOURS,
        propagateTrace: config.WEBHOOK_PROPAGATE_TRACE,
      },
    }),
    endpointSettings: () => ({ allowPrivate: config.WEBHOOK_ALLOW_PRIVATE }),
    indexerDeps: () => ({
      db: db.knex,
      writes: searchVisibleWrites,
      events,
      embedder,
      cpu: indexingCpu,
      chunking: {
        targetWords: config.CHUNK_TARGET_WORDS,
        overlapWords: config.CHUNK_OVERLAP_WORDS,
        minWords: config.CHUNK_MIN_WORDS,
        maxWords: config.CHUNK_MAX_WORDS,
      },
      textSearchConfig: config.SEARCH_TEXT_CONFIG,
      vectorSearch: vector.available,
      embedBatchSize: config.EMBEDDINGS_BATCH_SIZE,
      fileLimits: { maxPages: config.UPLOAD_MAX_PAGES, maxExpandedBytes: config.UPLOAD_MAX_EXPANDED_BYTES },
    }),
    async close() {
      health.stop();
      await indexingCpu.close();
      metricsWindow.stop();
      await keyUsage.stop();
      await keyChanges.stop();
      await queues.close().catch(() => undefined);
      await redis.quit().catch(() => redis.disconnect());
      await db.close();
    },
  };
}
