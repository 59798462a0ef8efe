import type { Knex } from 'knex';
import { queueSnapshots } from '../queues/queue-health';
import { enqueueDeliveries } from '../queues/webhooks';
import { QueueRegistry, indexingQueue, webhookFanoutQueue } from '../queues';
import { ConfigError, type Config } from './config';
import { queueTelemetry } from './telemetry';
import { openDatabase, type Database, type DatabaseOptions } from './db/database';
import { migrateToLatest, type MigrationOptions, type RowLevelSecurity, type VectorSupport } from './db/migrate';
import { KeyUsageRecorder } from './domain/apikeys/apikeys';
import { ApiKeyCache } from './domain/apikeys/key-cache';
import { KeyChanges } from './domain/apikeys/key-changes';
import { createEmbedder, type Embedder } from './domain/embeddings';
import type { DispatchIndexing } from './domain/indexing/dispatch';
import { createIndexingCpu, type IndexerDeps } from './domain/indexing/indexer';
import type { DocumentDeps } from './domain/documents/documents';
import type { SearchDeps } from './domain/search/search';
import { createReranker } from './domain/search/reranker';
import { createChatModel, type ChatModel } from './domain/answers/chat-model';
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
  let db: Database | undefined;
  try {
    db = await openDatabase(databaseOptions(config, logger, config.DATABASE_POOL_MAX));
    const migration = await migrateToLatest(db, migrationOptions(config));
    if (migration.applied.length > 0) logger.info({ migrations: migration.applied }, 'database migrated');
    if (!migration.vectorSearch.available) logger.warn(`semantic and hybrid search are off: ${migration.vectorSearch.reason}`);
    if (migration.rowLevelSecurity.enforced && !migration.textSearchIndex.usable) {
      logger.warn(`keyword search scans each tenant's chunks instead of using its index: ${migration.textSearchIndex.reason}`);
    }
    if (!migration.rowLevelSecurity.enforced) {
      const problem = `row-level security does not hold: ${migration.rowLevelSecurity.reason}; connect DATABASE_URL as an application role and migrate with MIGRATION_DATABASE_URL (docs/operations.md, "Production database roles")`;
      // A server's one role serving every tenant is a laptop's setup: in production one tenant could read another's rows.
      // The embedded database has no roles to separate; it serves one process on one machine.
      if (config.NODE_ENV === 'production' && db.kind === 'postgres') throw new ConfigError(`refusing to start in production: ${problem}`);
      logger.warn(problem);
    }
    return assemble(config, logger, redis, db, migration.vectorSearch, migration.rowLevelSecurity);
  } catch (error) {
    redis.disconnect();
    await db?.close().catch(() => undefined);
    throw error;
  }
}

export function databaseOptions(config: Config, logger: Logger, poolMax: number): DatabaseOptions {
  return {
    databaseUrl: config.DATABASE_URL,
    replicaUrl: config.DATABASE_REPLICA_URL,
    dataDir: config.DATA_DIR,
    poolMax,
    logger,
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
    idleInTransactionTimeoutMs: config.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  };
}

export function migrationOptions(config: Config): MigrationOptions {
  return { databaseUrl: config.DATABASE_URL, migrationDatabaseUrl: config.MIGRATION_DATABASE_URL, embeddingDimensions: config.EMBEDDINGS_DIMENSIONS };
}

function assemble(config: Config, logger: Logger, redis: RedisClient, db: Database, vector: VectorSupport, rowLevelSecurity: RowLevelSecurity): Platform {
  const queues = new QueueRegistry(redis, config.QUEUE_PREFIX, queueTelemetry(config));
  const embedder = createEmbedder(config);
  // Threads start with the first document indexed: a web-only process never starts any.
  const indexingCpu = createIndexingCpu({
    threads: config.INDEX_THREADS,
    deadlineMs: config.INDEX_DOCUMENT_TIMEOUT_MS,
    onError: (error) => logger.error({ err: error }, 'an indexing thread failed'),
  });
  const queryEmbedder = createEmbedder(config, 'queries');
  let rerankFailing = false;
  const reranker = createReranker(config, (outcome, error) => {
    metrics.reranks.inc({ outcome });
    // One line when the reranker starts failing and one when it is back, not one per search.
    if ((outcome === 'failed') === rerankFailing) return;
    rerankFailing = outcome === 'failed';
    if (rerankFailing) logger.warn({ err: error }, 'the reranker failed; searches asking for it answer in their original order');
    else logger.info('the reranker answers again');
  });
  const chatModel = config.LLM_URL
    ? createChatModel({
        baseUrl: config.LLM_URL,
        model: config.LLM_MODEL!,
        apiKey: config.LLM_API_KEY,
        maxTokens: config.ANSWER_MAX_TOKENS,
        timeoutMs: config.LLM_TIMEOUT_MS,
        maxRetries: config.LLM_MAX_RETRIES,
      })
    : null;
  const health = new DependencyHealth(db, redis);
  const metrics = new Metrics(() => queueSnapshots(queues));
  const metricsWindow = new MetricsWindow(metrics);
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
  const dispatchIndexing: DispatchIndexing = async (work) => {
    await queues.enqueueMany(indexingQueue, work);
  };
  const events: EventSink = {
    announce: async (pending) => {
      await queues.enqueueMany(webhookFanoutQueue, [...pending]).catch((error) =>
        logger.warn({ err: error, event_ids: pending.map((event) => event.eventId) }, 'could not enqueue a webhook fan-out; the reconcile tick will'),
      );
    },
  };
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
    withdrawIndexing: async (work) => {
      await queues.removeWaiting(indexingQueue, work);
    },
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
    chatModel,
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
