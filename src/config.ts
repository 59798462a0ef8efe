import { randomBytes } from 'node:crypto';
import path from 'node:path';
import cron from 'node-cron';
import { z } from 'zod';

/** Every environment variable ragworks reads, with its default, in one schema. */

const booleanFlag = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((value) => value === 'true' || value === '1' || value === 'yes');

const cronExpression = z.string().refine((value) => cron.validate(value), {
  message: 'not a valid cron expression (node-cron syntax, seconds allowed)',
});

const redisUrl = z
  .string()
  .refine((value) => /^rediss?:\/\//.test(value), { message: 'must start with redis:// or rediss://' })
  .refine((value) => URL.canParse(value), { message: 'not a valid URL' })
  .refine((value) => !URL.canParse(value) || /^\/?(\d{1,2})?$/.test(new URL(value).pathname), { message: 'may name only a numeric database index (/0 to /15)' });

const sentinelList = z
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
  });

const positiveInt = z.coerce.number().int().positive();

/** Seconds before each attempt, the first usually 0: `0,5,300,…`. */
const retrySchedule = z.string().transform((value, ctx) => {
  const delays = value.split(',').map((part) => part.trim());
  if (delays.length === 0 || delays.some((delay) => !/^\d+(\.\d+)?$/.test(delay))) {
    ctx.addIssue({ code: 'custom', message: 'must be comma-separated seconds, e.g. 0,5,300' });
    return [];
  }
  return delays.map(Number);
});

/**
 * Per-queue worker concurrency, written `indexing=4,reconcile=1`. Queues not
 * named use WORKER_CONCURRENCY.
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
});

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
});

const postgresUrl = z.string().refine((value) => /^postgres(ql)?:\/\//.test(value), { message: 'must start with postgres:// or postgresql://' });

export const configSchema = z
  .object({
    NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
    PORT: z.coerce.number().int().min(0).max(65535).default(8080),
    HOST: z.string().default('0.0.0.0'),
    /** The application's connection: a role that is neither owner, superuser nor BYPASSRLS, so row-level security holds. */
    DATABASE_URL: postgresUrl.optional(),
    /** The table owner, for migrations; defaults to DATABASE_URL. */
    MIGRATION_DATABASE_URL: postgresUrl.optional(),
    DATABASE_POOL_MAX: positiveInt.default(10),
    DATA_DIR: z.string().default('./data'),
    REDIS_URL: redisUrl.default('redis://127.0.0.1:6379'),
    REDIS_SENTINELS: sentinelList.optional(),
    REDIS_SENTINEL_NAME: z.string().min(1).optional(),
    QUEUE_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, "_", "." and "-" only')
      .default('ragworks'),
    ADMIN_TOKEN: z.string().min(24, 'must be at least 24 characters').optional(),
    ADMIN_SESSION_HOURS: z.coerce.number().positive().max(24 * 30).default(12),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    SHUTDOWN_TIMEOUT_MS: positiveInt.default(25_000),
    MAX_BODY_BYTES: positiveInt.default(10 * 1024 * 1024),

    OTEL_EXPORTER_OTLP_ENDPOINT: z.url().optional(),
    OTEL_SERVICE_NAME: z.string().default('ragworks'),
    OTEL_TRACE_REDIS: booleanFlag.default(false),

    WORKER_QUEUES: z.string().default('all'),
    WORKER_CONCURRENCY: positiveInt.default(4),
    WORKER_CONCURRENCY_PER_QUEUE: concurrencyMap.default({}),
    WORKER_LOCK_DURATION_MS: positiveInt.default(30_000),
    WORKER_STALLED_INTERVAL_MS: positiveInt.default(30_000),
    METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
    /** When set, /metrics answers only `Authorization: Bearer <METRICS_TOKEN>` (Prometheus: `authorization: {credentials: …}`). */
    METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),

    EMBEDDINGS_PROVIDER: z.enum(['hash', 'openai']).default('hash'),
    EMBEDDINGS_URL: z.url().optional(),
    EMBEDDINGS_MODEL: z.string().min(1).optional(),
    EMBEDDINGS_API_KEY: z.string().min(1).optional(),
    // pgvector's HNSW index takes vectors of at most 2000 dimensions.
    EMBEDDINGS_DIMENSIONS: z.coerce.number().int().min(1).max(2000).default(384),
    EMBEDDINGS_BATCH_SIZE: positiveInt.default(64),
    EMBEDDINGS_TIMEOUT_MS: positiveInt.default(30_000),
    EMBEDDINGS_MAX_RETRIES: z.coerce.number().int().min(0).default(5),

    CHUNK_TARGET_WORDS: positiveInt.default(512),
    CHUNK_OVERLAP_WORDS: z.coerce.number().int().min(0).default(100),
    CHUNK_MIN_WORDS: positiveInt.default(50),
    CHUNK_MAX_WORDS: positiveInt.default(768),

    SEARCH_TEXT_CONFIG: z
      .string()
      .regex(/^[a-z_]+$/, 'a PostgreSQL text search configuration name such as english or simple')
      .default('english'),
    SEARCH_SEMANTIC_WEIGHT: unitInterval.default(0.7),
    SEARCH_RRF_K: positiveInt.default(60),
    SEARCH_CANDIDATES: positiveInt.default(100),
    SEARCH_EXACT_SCAN_MAX_CHUNKS: z.coerce.number().int().min(0).default(20_000),

    SCHEDULE_RECONCILE: cronExpression.default('*/30 * * * * *'),
    SCHEDULE_ANALYTICS: cronExpression.default('0 * * * * *'),
    SCHEDULE_RETENTION: cronExpression.default('0 30 3 * * *'),
    SCHEDULE_USAGE: cronExpression.default('0 0 * * * *'),
    SCHEDULE_USAGE_RECONCILE: cronExpression.default('0 15 4 * * *'),
    USAGE_DAY_CLOSE_GRACE_MINUTES: z.coerce.number().int().min(0).default(120),
    RECONCILE_STUCK_AFTER_SECONDS: positiveInt.default(120),

    API_KEY_USAGE_FLUSH_MS: positiveInt.default(5_000),

    ANALYTICS_ENABLED: booleanFlag.default(true),
    ANALYTICS_ROLLUP_RETENTION_DAYS: positiveInt.default(400),
    ANALYTICS_TRENDING_MIN_VOLUME: positiveInt.default(5),
    WEBHOOK_LOG_RETENTION_DAYS: positiveInt.default(30),
    AUDIT_RETENTION_DAYS: positiveInt.default(400),
    DEAD_LETTER_RETENTION_DAYS: positiveInt.default(30),

    CACHE_ENABLED: booleanFlag.default(true),
    CACHE_L1_MAX_ITEMS: positiveInt.default(10_000),
    CACHE_TTL_SECONDS: positiveInt.default(300),
    CACHE_REDIS_TIMEOUT_MS: positiveInt.default(50),

    WEBHOOK_TIMEOUT_MS: positiveInt.default(15_000),
    WEBHOOK_RETRY_SCHEDULE: retrySchedule.default([0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]),
    WEBHOOK_RETRY_AFTER_MAX_SECONDS: positiveInt.default(3_600),
    WEBHOOK_DISABLE_AFTER_HOURS: z.coerce.number().positive().default(120),
    WEBHOOK_ALLOW_PRIVATE: booleanFlag.default(false),
    WEBHOOK_ENDPOINT_CONCURRENCY: positiveInt.default(2),
    WEBHOOK_REPLAY_PER_SECOND: positiveInt.default(10),

    RATE_LIMIT_ENABLED: booleanFlag.default(true),
    RATE_LIMIT_WINDOW_SECONDS: positiveInt.default(60),
    RATE_LIMIT_TENANT: perTier.default({ free: 600, standard: 6_000, enterprise: 60_000, unlimited: 0 }),
    RATE_LIMIT_KEY: perTier.default({ free: 300, standard: 3_000, enterprise: 30_000, unlimited: 0 }),
  })
  .superRefine((config, ctx) => {
    if (config.NODE_ENV === 'production' && !config.ADMIN_TOKEN) {
      ctx.addIssue({ code: 'custom', path: ['ADMIN_TOKEN'], message: 'is required when NODE_ENV=production' });
    }
    if (config.MIGRATION_DATABASE_URL && !config.DATABASE_URL) {
      ctx.addIssue({ code: 'custom', path: ['MIGRATION_DATABASE_URL'], message: 'needs DATABASE_URL (the embedded database has no separate migrator)' });
    }
    if (config.REDIS_SENTINELS && !config.REDIS_SENTINEL_NAME) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_SENTINEL_NAME'], message: 'is required with REDIS_SENTINELS' });
    }
    if (config.EMBEDDINGS_PROVIDER === 'openai') {
      for (const key of ['EMBEDDINGS_URL', 'EMBEDDINGS_MODEL'] as const) {
        if (!config[key]) ctx.addIssue({ code: 'custom', path: [key], message: 'is required with EMBEDDINGS_PROVIDER=openai' });
      }
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

/** Values never echoed in an error: they may hold credentials. */
const SECRET_VARIABLE = /TOKEN|KEY|SECRET|PASSWORD|_URL$|SENTINELS/;

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
    const shown = variable in present && !SECRET_VARIABLE.test(variable) ? ` (got "${truncate(String(present[variable]), 60)}")` : '';
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
