import { randomBytes } from 'node:crypto';
import path from 'node:path';
import ipaddr from 'ipaddr.js';
import cron from 'node-cron';
import { z } from 'zod';
import { mayHoldCredentials } from './secrets';

/**
 * Every environment variable ragworks reads, with its default, in one schema.
 * A variable's `.describe()` is its documentation: `npm run docs:config`
 * writes docs/configuration.md from this schema.
 */

const booleanFlag = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((value) => value === 'true' || value === '1' || value === 'yes')
  .meta({ accepts: '`true` or `false` (also `1`/`0`, `yes`/`no`)' });

const cronExpression = z.string().refine((value) => cron.validate(value), {
  message: 'not a valid cron expression (node-cron syntax, seconds allowed)',
}).meta({ accepts: 'node-cron expression, seconds allowed' });

const redisUrl = z
  .string()
  .refine((value) => /^rediss?:\/\//.test(value), { message: 'must start with redis:// or rediss://' })
  .refine((value) => URL.canParse(value), { message: 'not a valid URL' })
  .refine((value) => !URL.canParse(value) || /^\/?(\d{1,2})?$/.test(new URL(value).pathname), { message: 'may name only a numeric database index (/0 to /15)' })
  .meta({ accepts: '`redis://` or `rediss://` URL, database `/0` to `/15`' });

/** `host:port` entries, comma-separated: Sentinels or cluster nodes. */
const hostPortList = z
  .string()
  .transform((value, ctx) => {
    const hosts = value.split(',').map((entry) => entry.trim()).filter(Boolean);
    return hosts.map((entry) => {
      const match = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(entry);
      if (!match) {
        ctx.addIssue({ code: 'custom', message: `"${entry}" is not host:port` });
        return { host: entry, port: 0 };
      }
      return { host: match[1], port: Number(match[2]) };
    });
  })
  .meta({ accepts: '`host:port`, comma-separated' });

const positiveInt = z.coerce.number().int().positive();

/** Seconds before each attempt, the first usually 0: `0,5,300,…`. */
const retrySchedule = z.string().transform((value, ctx) => {
  const delays = value.split(',').map((part) => part.trim());
  if (delays.length === 0 || delays.some((delay) => !/^\d+(\.\d+)?$/.test(delay))) {
    ctx.addIssue({ code: 'custom', message: 'must be comma-separated seconds, e.g. 0,5,300' });
    return [];
  }
  return delays.map(Number);
}).meta({ accepts: 'seconds, comma-separated' });

/**
 * Per-queue worker concurrency, written `indexing=4,reconcile=1`. Queues not
 * named use WORKER_CONCURRENCY, or their own default.
 */
const concurrencyMap = z.string().transform((value, ctx) => {
  const result: Record<string, number> = {};
  for (const entry of value.split(',').map((part) => part.trim()).filter(Boolean)) {
    const match = /^([a-z][a-z0-9-]*)=(\d+)$/.exec(entry);
    if (!match || Number(match[2]) < 1) {
      ctx.addIssue({ code: 'custom', message: `"${entry}" is not queue=number` });
      continue;
    }
    result[match[1]] = Number(match[2]);
  }
  return result;
}).meta({ accepts: '`queue=number`, comma-separated' });

const unitInterval = z.coerce.number().min(0).max(1);

const TIER_NAMES = ['free', 'standard', 'enterprise', 'unlimited'] as const;

/** A number per tier, written `free=600,standard=6000,enterprise=60000,unlimited=0`; 0 means no limit. Every tier must be named. */
const perTier = z.string().transform((value, ctx) => {
  const result: Partial<Record<(typeof TIER_NAMES)[number], number>> = {};
  for (const entry of value.split(',').map((part) => part.trim()).filter(Boolean)) {
    const match = /^([a-z]+)=(\d+)$/.exec(entry);
    if (!match || !(TIER_NAMES as readonly string[]).includes(match[1])) {
      ctx.addIssue({ code: 'custom', message: `"${entry}" is not tier=number (tiers: ${TIER_NAMES.join(', ')})` });
      continue;
    }
    result[match[1] as (typeof TIER_NAMES)[number]] = Number(match[2]);
  }
  const missing = TIER_NAMES.filter((tier) => result[tier] === undefined);
  if (missing.length > 0) ctx.addIssue({ code: 'custom', message: `names no value for ${missing.join(', ')}` });
  return result as Record<(typeof TIER_NAMES)[number], number>;
}).meta({ accepts: `\`tier=number\` for each of ${TIER_NAMES.map((tier) => `\`${tier}\``).join(', ')}; \`0\`: no limit` });

const PROXY_RANGE_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** One entry of a `trust proxy` list as express takes it: a range name, an address, or address/prefix (IPv4 also address/netmask). */
function isProxyEntry(entry: string): boolean {
  if (PROXY_RANGE_NAMES.has(entry)) return true;
  const [address, range, ...rest] = entry.split('/');
  if (rest.length > 0 || !ipaddr.isValid(address)) return false;
  if (range === undefined) return true;
  const bits = ipaddr.parse(address).kind() === 'ipv6' ? 128 : 32;
  if (/^\d+$/.test(range)) return Number(range) >= 1 && Number(range) <= bits;
  return bits === 32 && ipaddr.IPv4.isValidFourPartDecimal(range) && ipaddr.IPv4.parse(range).prefixLengthFromSubnetMask() !== null;
}

/** Express's `trust proxy`: `true`/`false`, a hop count, or a comma-separated list of addresses, CIDRs and range names. */
const trustProxy = z
  .string()
  .transform((value, ctx): boolean | number | string => {
    const setting = value.trim();
    if (setting === 'true' || setting === 'false') return setting === 'true';
    if (/^\d+$/.test(setting)) return Number(setting);
    const wrong = setting.split(',').map((entry) => entry.trim()).filter((entry) => !isProxyEntry(entry));
    if (wrong.length > 0) ctx.addIssue({ code: 'custom', message: `names no address, CIDR or range (loopback, linklocal, uniquelocal): ${wrong.map((entry) => `"${entry}"`).join(', ')}` });
    return setting;
  })
  .meta({ accepts: '`false`, `true`, a hop count, or addresses, CIDRs and `loopback`/`linklocal`/`uniquelocal`, comma-separated' });

const postgresUrl = z
  .string()
  .refine((value) => /^postgres(ql)?:\/\//.test(value), { message: 'must start with postgres:// or postgresql://' })
  .meta({ accepts: '`postgres://` or `postgresql://` URL' });

export const configSchema = z
  .object({
    NODE_ENV: z.enum(['development', 'production', 'test']).default('development').describe('`production` makes `ADMIN_TOKEN` required.'),
    PORT: z.coerce.number().int().min(0).max(65535).default(8080).describe('The port the web role listens on.'),
    HOST: z.string().default('0.0.0.0').describe('The address the web role listens on.'),
    TRUST_PROXY: trustProxy
      .default(false)
      .describe('The proxies whose `X-Forwarded-For`, `-Proto` and `-Host` are believed for the client address, HTTPS and host; none by default, so behind a proxy name its address or network, e.g. `loopback` or `10.0.0.0/8`.'),
    DATABASE_URL: postgresUrl.optional().describe('The PostgreSQL server, as the application role: neither owner, superuser nor BYPASSRLS, so row-level security holds (see [production database roles](operations.md#production-database-roles)). Unset: the embedded PGlite database under `DATA_DIR`, for role `all` only.'),
    MIGRATION_DATABASE_URL: postgresUrl.optional().describe('The table owner, used only to migrate; it then grants the `DATABASE_URL` role row access. Unset: `DATABASE_URL` does both. Needs `DATABASE_URL`.'),
    DATABASE_REPLICA_URL: postgresUrl.optional().describe('A streaming replica (hot standby) of the `DATABASE_URL` server, as the same application role: searches go to it whenever it has replayed the tenant\'s last write, else to the primary, and analytics reports whenever it is less than a minute behind (see [read replica](operations.md#read-replica)). Unset: every read goes to `DATABASE_URL`. Needs `DATABASE_URL`.'),
    DATABASE_POOL_MAX: positiveInt.default(10).describe('Database connections per process.'),
    DATABASE_STATEMENT_TIMEOUT_MS: z.coerce.number().int().min(0).default(60_000).describe('PostgreSQL server only: any statement of the application running longer is cancelled (`statement_timeout`); `0`: no bound of ours. Migrations are not bound by it.'),
    DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: z.coerce.number().int().min(0).default(60_000).describe('PostgreSQL server only: a session left idle inside a transaction this long is ended by the server, freeing its locks (`idle_in_transaction_session_timeout`); `0`: no bound of ours.'),
    DATA_DIR: z.string().default('./data').describe('Where the embedded database and a generated operator token (`admin-token`) are kept.'),
    REDIS_URL: redisUrl.default('redis://127.0.0.1:6379').describe('Redis; credentials, TLS (`rediss://`) and a database index (`/2`) are honoured.'),
    REDIS_SENTINELS: hostPortList.optional().describe('Redis Sentinel addresses; with them the Redis master is found through Sentinel. Needs `REDIS_SENTINEL_NAME`.'),
    REDIS_SENTINEL_NAME: z.string().min(1).optional().describe('The master name the Sentinels watch; required with `REDIS_SENTINELS`.'),
    REDIS_SENTINEL_USERNAME: z.string().min(1).optional().describe('The user the Sentinels ask for (Sentinel ACLs); the Redis servers\' own come from `REDIS_URL`.'),
    REDIS_SENTINEL_PASSWORD: z.string().min(1).optional().describe('The password the Sentinels ask for (their `requirepass`); the Redis servers\' own comes from `REDIS_URL`.'),
    REDIS_SENTINEL_TLS: booleanFlag.default(false).describe('Talk to the Sentinels over TLS; the Redis servers get TLS when `REDIS_URL` is `rediss://`.'),
    REDIS_CLUSTER_NODES: hostPortList
      .optional()
      .describe('Some nodes of a Redis Cluster (any of them; the rest are discovered); with them ragworks runs on the cluster. Credentials and TLS come from `REDIS_URL`, whose host is then unused. Not with `REDIS_SENTINELS`.'),
    QUEUE_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, "_", "." and "-" only')
      .default('ragworks')
      .describe('Prefix of every Redis key ragworks writes: two deployments can share one Redis with different prefixes.'),
    ADMIN_TOKEN: z.string().min(24, 'must be at least 24 characters').optional().describe('The operator token; required when `NODE_ENV=production`. Unset elsewhere: generated once, printed once and kept in `DATA_DIR/admin-token`.'),
    ADMIN_SESSION_HOURS: z.coerce.number().positive().max(24 * 30).default(12).describe('How long a dashboard session lasts.'),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('The pino log level.'),
    SHUTDOWN_TIMEOUT_MS: positiveInt.default(25_000).describe('Drain deadline on SIGTERM or SIGINT: active jobs may finish until then; the rest are handed back to their queue.'),
    SHUTDOWN_DELAY_MS: z.coerce.number().int().min(0).max(120_000).default(0).describe('On SIGTERM or SIGINT a web process first answers `/readyz` with 503 for this long while it goes on serving, so a load balancer takes it out of rotation before it stops listening. Behind `ops/haproxy/haproxy.cfg` (out after 2 failed checks 2 s apart) use 5000; in Kubernetes the preStop pause does this.'),
    HTTP_KEEP_ALIVE_TIMEOUT_MS: positiveInt.max(240_000).default(65_000).describe('How long the API keeps an idle keep-alive connection open. Longer than a load balancer keeps its idle connections to the API (HAProxy: 5 s, most cloud balancers: 60 s), so the balancer closes them first: otherwise a request it sends just as the API closes one is lost.'),
    MAX_BODY_BYTES: positiveInt.default(10 * 1024 * 1024).describe('Request body limit; a larger body is refused with 413.'),

    OTEL_EXPORTER_OTLP_ENDPOINT: z.url().optional().describe('The OTLP/HTTP collector traces are sent to; unset: none are exported.'),
    OTEL_SERVICE_NAME: z.string().default('ragworks').describe('The service name in traces.'),
    OTEL_TRACE_REDIS: booleanFlag.default(false).describe('Trace every Redis command (costs queue throughput).'),
    OTEL_TRACES_SAMPLER: z.enum(['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio']).default('parentbased_always_on').describe('Which traces are kept (the OpenTelemetry standard variable): e.g. `parentbased_traceidratio` with `OTEL_TRACES_SAMPLER_ARG=0.1` keeps a tenth of the traces that start here and follows the caller\'s choice for the rest.'),
    OTEL_TRACES_SAMPLER_ARG: z.coerce.number().min(0).max(1).optional().describe('The ratio for the `traceidratio` samplers, from 0 to 1.'),

    WORKER_QUEUES: z.string().default('all').describe('The queues a worker process consumes: `all`, or a comma-separated list of [queue names](architecture.md#queues).'),
    WORKER_CONCURRENCY: positiveInt.optional().describe('Jobs at once per queue per process. Unset: each queue\'s own, 16 for `indexing` (documents prepared together are stored in one transaction) and 4 for the others.'),
    WORKER_CONCURRENCY_PER_QUEUE: concurrencyMap.default({}).describe('Concurrency of some queues, e.g. `indexing=8,reconcile=1`; the others follow `WORKER_CONCURRENCY`.'),
    WORKER_LOCK_DURATION_MS: positiveInt.default(30_000).describe("How long a job's lock lasts without renewal: a dead worker's job is taken over by another after this."),
    WORKER_STALLED_INTERVAL_MS: positiveInt.default(30_000).describe('How often workers look for stalled jobs (whose lock expired).'),
    WORKER_DATABASE_RETRIES: z.coerce.number().int().min(0).default(12).describe('Times a job that lost its database connection is put back for 5 s without spending an attempt, each time only if an immediate ping confirms the database is down; after that such failures spend attempts.'),
    METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional().describe('Port on which worker and scheduler processes serve `/metrics` (the web role serves it on `PORT`).'),
    METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional().describe('When set, `/metrics` answers only `Authorization: Bearer <METRICS_TOKEN>` (Prometheus: `authorization: {credentials: …}`), on `PORT` and `METRICS_PORT` alike.'),

    EMBEDDINGS_PROVIDER: z.enum(['hash', 'openai']).default('hash').describe('`hash`: the built-in offline embedder; `openai`: any OpenAI-compatible embeddings endpoint (OpenAI, Ollama, vLLM, TEI).'),
    EMBEDDINGS_URL: z.url().optional().describe('The embeddings endpoint, e.g. `http://localhost:11434/v1/embeddings`; required with `EMBEDDINGS_PROVIDER=openai`.'),
    EMBEDDINGS_MODEL: z.string().min(1).optional().describe('The model the endpoint is asked for, e.g. `nomic-embed-text`; required with `EMBEDDINGS_PROVIDER=openai`.'),
    EMBEDDINGS_API_KEY: z.string().min(1).optional().describe('Bearer key for the endpoint, when it needs one.'),
    EMBEDDINGS_DIMENSIONS: z.coerce.number().int().min(1).max(2000).default(384).describe("Vector size; at most 2000, the most pgvector's HNSW index takes."),
    EMBEDDINGS_BATCH_SIZE: positiveInt.default(64).describe('Chunks per embeddings request.'),
    EMBEDDINGS_TIMEOUT_MS: positiveInt.default(30_000).describe('Deadline of one embeddings request.'),
    EMBEDDINGS_MAX_RETRIES: z.coerce.number().int().min(0).default(5).describe('Retries of an embeddings request answered 429 or 5xx (honouring `Retry-After`).'),

    CHUNK_TARGET_WORDS: positiveInt.default(512).describe('Words per chunk aimed at; `CHUNK_MIN_WORDS` ≤ this ≤ `CHUNK_MAX_WORDS`.'),
    CHUNK_OVERLAP_WORDS: z.coerce.number().int().min(0).default(100).describe('Words shared by consecutive chunks; fewer than `CHUNK_TARGET_WORDS`.'),
    CHUNK_MIN_WORDS: positiveInt.default(50).describe('Fewest words in a chunk.'),
    CHUNK_MAX_WORDS: positiveInt.default(768).describe('Most words in a chunk; fenced code larger than this is split.'),

    INDEX_THREADS: positiveInt.optional().describe('Worker threads per worker process that chunk, extract and embed (built-in embedder) documents off the event loop. Unset: one per core.'),
    INDEX_DOCUMENT_TIMEOUT_MS: positiveInt.default(30_000).describe('Processing time a document may take in its worker thread; past it the document fails for good with `error_code` `document_too_complex`.'),
    INDEX_RETRY_BASE_MS: positiveInt.default(2_000).describe('First wait before an indexing job is retried; waits double up to 300 times this, with ±20 % jitter. An embeddings provider outage is retried 15 times (over an hour at the default), other failures 4 times.'),

    SEARCH_TEXT_CONFIG: z
      .string()
      .regex(/^[a-z_]+$/, 'a PostgreSQL text search configuration name such as english or simple')
      .default('english')
      .describe('The PostgreSQL text search configuration of keyword search (`english`, `simple`, …).'),
    SEARCH_SEMANTIC_WEIGHT: unitInterval.default(0.7).describe('Weight of the semantic ranking in hybrid search; the keyword ranking gets 1 − this.'),
    SEARCH_RRF_K: positiveInt.default(60).describe('The reciprocal rank fusion constant k.'),
    SEARCH_CANDIDATES: positiveInt.default(100).describe('Candidates taken from each ranking before fusion.'),
    SEARCH_EXACT_SCAN_MAX_CHUNKS: z.coerce.number().int().min(0).default(20_000).describe('Tenants with at most this many chunks are searched exactly, larger ones through the HNSW index.'),
    RERANK_URL: z.url().optional().describe('A rerank endpoint (a cross-encoder), e.g. `http://localhost:8080/rerank` (TEI) or `https://api.cohere.com/v2/rerank`: searches with `rerank: true` reorder their best candidates by its scores. Unset: `rerank: true` answers 501 `rerank_unavailable`.'),
    RERANK_MODEL: z.string().min(1).optional().describe('The model the rerank endpoint is asked for, e.g. `BAAI/bge-reranker-v2-m3`; required with `RERANK_URL`. It is part of the cache key of rerank scores.'),
    RERANK_API_KEY: z.string().min(1).optional().describe('Bearer key for the rerank endpoint, when it needs one.'),
    RERANK_API: z.enum(['cohere', 'tei']).default('cohere').describe('The request shape: `cohere` (`documents`, answered with `results[].relevance_score`: Cohere, Jina, Voyage, vLLM, Infinity) or `tei` (`texts`, answered with `[{index, score}]`: Text Embeddings Inference).'),
    RERANK_TIMEOUT_MS: positiveInt.default(2_000).describe('How long a search waits for the reranker; past it the search answers in its original order with `reranked: false`.'),
    UPLOAD_MAX_BYTES: positiveInt.default(25 * 1024 * 1024).describe('The largest file POST /api/documents/upload takes; a larger one is answered 413 while it streams in, before the rest is read.'),
    UPLOAD_MAX_PAGES: positiveInt.default(1_000).describe('A PDF with more pages fails with `too_many_pages` before any page is read.'),
    UPLOAD_MAX_EXPANDED_BYTES: positiveInt.default(100 * 1024 * 1024).describe('A DOCX whose parts expand to more fails with `file_too_large_expanded` (a zip bomb) before it is parsed.'),
    LLM_URL: z.url().optional().describe('Base URL of an OpenAI-compatible chat completions API, e.g. `http://localhost:11434/v1` (Ollama), `http://localhost:8000/v1` (vLLM) or `https://api.openai.com/v1`: POST /api/answer answers from the retrieved passages with it. Unset: /api/answer answers 501 `answers_unavailable`.'),
    LLM_MODEL: z.string().min(1).optional().describe('The chat model asked, e.g. `llama3.1:8b` or `gpt-4o-mini`; required with `LLM_URL`. It is part of the cache key of answers.'),
    LLM_API_KEY: z.string().min(1).optional().describe('Bearer key for the chat completions API, when it needs one.'),
    LLM_TIMEOUT_MS: positiveInt.default(60_000).describe('How long one answer may take from the model, retries and streaming included.'),
    LLM_MAX_RETRIES: z.coerce.number().int().min(0).default(2).describe('Retries of a chat completions request answered 408, 429 or 5xx, or not answered (honouring `Retry-After`), before any of its answer has arrived.'),
    ANSWER_MAX_TOKENS: positiveInt.default(800).describe('The most tokens the model may write for one answer (`max_tokens`).'),
    SEARCH_STATEMENT_TIMEOUT_MS: z.coerce.number().int().min(0).default(5_000).describe('PostgreSQL server only: a search statement running longer is cancelled and answered 503 `search_timeout`; a tighter bound than `DATABASE_STATEMENT_TIMEOUT_MS`. `0`: only that one applies.'),

    SCHEDULE_RECONCILE: cronExpression.default('*/30 * * * * *').describe('When to re-enqueue documents, events and deliveries left without a live job.'),
    SCHEDULE_ANALYTICS: cronExpression.default('0 * * * * *').describe('When to aggregate the search-event stream (every minute).'),
    SCHEDULE_RETENTION: cronExpression.default('0 30 3 * * *').describe('When to delete what is past its retention (daily at 03:30).'),
    SCHEDULE_USAGE: cronExpression.default('0 0 * * * *').describe('When to roll up usage, one job per tenant (hourly).'),
    SCHEDULE_USAGE_RECONCILE: cronExpression.default('0 15 4 * * *').describe('When to compare closed usage days with the raw data (daily at 04:15).'),
    USAGE_DAY_CLOSE_GRACE_MINUTES: z.coerce.number().int().min(0).default(120).describe("How long after a UTC day's end late events still count; then the day is closed."),
    RECONCILE_STUCK_AFTER_SECONDS: positiveInt.default(120).describe('When a queued or processing document without a live job counts as stuck.'),

    API_KEY_USAGE_FLUSH_MS: positiveInt.default(5_000).describe("How often API keys' `last_used_at` and `request_count` are written."),
    API_KEY_CACHE_MAX_ITEMS: positiveInt.default(10_000).describe('Verified API keys each API process keeps in memory (a change to a key or its tenant reaches every process within a second).'),

    ANALYTICS_ENABLED: booleanFlag.default(true).describe('Record search events.'),
    ANALYTICS_ROLLUP_RETENTION_DAYS: positiveInt.default(400).describe('How long hourly search rollups are kept.'),
    ANALYTICS_TRENDING_MIN_VOLUME: positiveInt.default(5).describe('m in the trending formula: the fewest searches this week for a query to trend.'),
    WEBHOOK_LOG_RETENTION_DAYS: positiveInt.default(30).describe('How long finished webhook deliveries and their attempts are kept.'),
    AUDIT_RETENTION_DAYS: positiveInt.default(400).describe('How long audit trail entries are kept.'),
    DEAD_LETTER_RETENTION_DAYS: positiveInt.default(30).describe('How long dead letters are kept once redriven or discarded (open ones stay).'),

    CACHE_ENABLED: booleanFlag.default(true).describe('The search cache.'),
    CACHE_L1_MAX_ITEMS: positiveInt.default(10_000).describe('Entries in the in-process cache tier.'),
    CACHE_TTL_SECONDS: positiveInt.default(300).describe('Entry lifetime in both cache tiers.'),
    CACHE_REDIS_TIMEOUT_MS: positiveInt.default(50).describe('Deadline of one cache call on Redis.'),

    WEBHOOK_TIMEOUT_MS: positiveInt.default(15_000).describe('Deadline of one delivery attempt, from connecting to the end of the response.'),
    WEBHOOK_RETRY_SCHEDULE: retrySchedule.default([0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]).describe('Seconds before each delivery attempt, with ±20 % jitter; the default is the Standard Webhooks schedule, 10 attempts over about 3 days.'),
    WEBHOOK_RETRY_AFTER_MAX_SECONDS: positiveInt.default(3_600).describe('The longest `Retry-After` of a receiver that is honoured.'),
    WEBHOOK_DISABLE_AFTER_HOURS: z.coerce.number().positive().default(120).describe('Disable an endpoint whose every attempt has failed for this long.'),
    WEBHOOK_ALLOW_PRIVATE: booleanFlag.default(false).describe('Allow private, loopback and metadata addresses as webhook targets (development, tests).'),
    WEBHOOK_PROPAGATE_TRACE: booleanFlag.default(false).describe('Send our trace context (`traceparent`, `tracestate`, `baggage`) with webhook deliveries; off by default, since a receiver is a third party.'),
    WEBHOOK_ENDPOINT_CONCURRENCY: positiveInt.default(2).describe('Deliveries in flight per endpoint, across all workers.'),
    WEBHOOK_REPLAY_PER_SECOND: positiveInt.default(10).describe('Pace of a replay, in events per second.'),

    RATE_LIMIT_ENABLED: booleanFlag.default(true).describe('Per-tenant and per-key request limits.'),
    RATE_LIMIT_WINDOW_SECONDS: positiveInt.default(60).describe('The window the limits count over.'),
    RATE_LIMIT_TENANT: perTier.default({ free: 600, standard: 6_000, enterprise: 60_000, unlimited: 0 }).describe("Requests per window for all of a tenant's keys together, by tier."),
    RATE_LIMIT_KEY: perTier.default({ free: 300, standard: 3_000, enterprise: 30_000, unlimited: 0 }).describe('Requests per window for one API key, by tier.'),
  })
  .superRefine((config, ctx) => {
    if (config.NODE_ENV === 'production' && !config.ADMIN_TOKEN) {
      ctx.addIssue({ code: 'custom', path: ['ADMIN_TOKEN'], message: 'is required when NODE_ENV=production' });
    }
    if (config.MIGRATION_DATABASE_URL && !config.DATABASE_URL) {
      ctx.addIssue({ code: 'custom', path: ['MIGRATION_DATABASE_URL'], message: 'needs DATABASE_URL (the embedded database has no separate migrator)' });
    }
    if (config.DATABASE_REPLICA_URL && !config.DATABASE_URL) {
      ctx.addIssue({ code: 'custom', path: ['DATABASE_REPLICA_URL'], message: 'needs DATABASE_URL (the embedded database has no replicas)' });
    }
    if (config.REDIS_SENTINELS && !config.REDIS_SENTINEL_NAME) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_SENTINEL_NAME'], message: 'is required with REDIS_SENTINELS' });
    }
    if (config.REDIS_CLUSTER_NODES && config.REDIS_SENTINELS) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_CLUSTER_NODES'], message: 'cannot be set with REDIS_SENTINELS: a cluster fails over by itself; choose one' });
    }
    if (config.REDIS_CLUSTER_NODES && URL.canParse(config.REDIS_URL) && /^\/?[1-9]/.test(new URL(config.REDIS_URL).pathname)) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_URL'], message: 'may not name a database index with REDIS_CLUSTER_NODES: a cluster has only database 0' });
    }
    if (config.EMBEDDINGS_PROVIDER === 'openai') {
      for (const key of ['EMBEDDINGS_URL', 'EMBEDDINGS_MODEL'] as const) {
        if (!config[key]) ctx.addIssue({ code: 'custom', path: [key], message: 'is required with EMBEDDINGS_PROVIDER=openai' });
      }
    }
    if (config.LLM_URL && !config.LLM_MODEL) {
      ctx.addIssue({ code: 'custom', path: ['LLM_MODEL'], message: 'is required with LLM_URL' });
    }
    if (config.RERANK_URL && !config.RERANK_MODEL) {
      ctx.addIssue({ code: 'custom', path: ['RERANK_MODEL'], message: 'is required with RERANK_URL' });
    }
    if (config.CHUNK_MIN_WORDS > config.CHUNK_TARGET_WORDS || config.CHUNK_TARGET_WORDS > config.CHUNK_MAX_WORDS) {
      ctx.addIssue({ code: 'custom', path: ['CHUNK_TARGET_WORDS'], message: 'needs CHUNK_MIN_WORDS ≤ CHUNK_TARGET_WORDS ≤ CHUNK_MAX_WORDS' });
    }
    if (config.CHUNK_OVERLAP_WORDS >= config.CHUNK_TARGET_WORDS) {
      ctx.addIssue({ code: 'custom', path: ['CHUNK_OVERLAP_WORDS'], message: 'must be smaller than CHUNK_TARGET_WORDS' });
    }
  });

type ParsedConfig = z.output<typeof configSchema>;

export interface Config extends ParsedConfig {
  /** True when ADMIN_TOKEN was not set and one was generated for this process. */
  adminTokenGenerated: boolean;
  ADMIN_TOKEN: string;
  DATA_DIR: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Reads the configuration from an environment. Throws a ConfigError whose
 * message is one line naming the first offending variable.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const parsed = configSchema.safeParse(present);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const variable = String(issue.path[0] ?? 'configuration');
    const shown = variable in present && !mayHoldCredentials(variable) ? ` (got "${truncate(String(present[variable]), 60)}")` : '';
    throw new ConfigError(`Invalid configuration: ${variable} ${describeIssue(issue, variable in present)}${shown}`);
  }
  const adminTokenGenerated = !parsed.data.ADMIN_TOKEN;
  return {
    ...parsed.data,
    DATA_DIR: path.resolve(parsed.data.DATA_DIR),
    ADMIN_TOKEN: parsed.data.ADMIN_TOKEN ?? `rw_admin_${randomBytes(24).toString('base64url')}`,
    adminTokenGenerated,
  };
}

function describeIssue(issue: z.core.$ZodIssue, given: boolean): string {
  // zod leaves `input` out of issues, so whether the variable was set decides "required".
  if (issue.code === 'invalid_type' && !given) return 'is required';
  if (issue.code === 'invalid_type') return `must be a ${issue.expected}`;
  if (issue.code === 'invalid_value' && 'values' in issue) return `must be one of ${issue.values.join(', ')}`;
  return issue.message.startsWith('is ') || issue.message.startsWith('must') ? issue.message : `is invalid: ${issue.message}`;
}

function truncate(value: string, max: number): string {
  return value.length > max ? `${value.slice(0, max)}…` : value;
}

/** The queues a worker process consumes, from WORKER_QUEUES. */
export function selectedQueues(config: Config, known: readonly string[]): string[] {
  if (config.WORKER_QUEUES.trim() === 'all') return [...known];
  const wanted = config.WORKER_QUEUES.split(',').map((name) => name.trim()).filter(Boolean);
  const unknown = wanted.filter((name) => !known.includes(name));
  if (unknown.length > 0) {
    throw new ConfigError(`Invalid configuration: WORKER_QUEUES names unknown queue(s) ${unknown.join(', ')} (known: ${known.join(', ')})`);
  }
  return wanted;
}
