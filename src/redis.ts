import { Redis, type RedisOptions } from 'ioredis';
import { withTimeout } from './async';
import type { Config } from './config';

export type RedisRole = 'producer' | 'worker';

/**
 * Connection options from REDIS_URL (database index and credentials
 * honoured) or, with REDIS_SENTINELS, from the sentinels. Producers fail
 * fast while Redis is away so the API can answer 503; workers wait for it.
 */
export function redisOptions(config: Config, role: RedisRole): RedisOptions {
  const url = new URL(config.REDIS_URL);
  const common: RedisOptions = {
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    db: url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0,
    tls: url.protocol === 'rediss:' ? {} : undefined,
    connectTimeout: 5_000,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
    ...(role === 'producer' ? { enableOfflineQueue: false, maxRetriesPerRequest: 1 } : { maxRetriesPerRequest: null }),
  };
  if (config.REDIS_SENTINELS && config.REDIS_SENTINEL_NAME) {
    return {
      ...common,
      sentinels: config.REDIS_SENTINELS,
      name: config.REDIS_SENTINEL_NAME,
      sentinelUsername: config.REDIS_SENTINEL_USERNAME,
      sentinelPassword: config.REDIS_SENTINEL_PASSWORD,
      sentinelTLS: config.REDIS_SENTINEL_TLS ? {} : undefined,
      // The master and replicas the Sentinels name are reached as REDIS_URL says: with TLS for rediss://.
      enableTLSForSentinelMode: common.tls !== undefined,
    };
  }
  return { ...common, host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port ? Number(url.port) : 6379 };
}

export function describeRedis(config: Config): string {
  if (config.REDIS_SENTINELS) {
    return `sentinels ${config.REDIS_SENTINELS.map((s) => `${s.host}:${s.port}`).join(',')} (master "${config.REDIS_SENTINEL_NAME}")`;
  }
  const url = new URL(config.REDIS_URL);
  if (url.password) url.password = '***';
  return url.toString();
}

export class RedisUnreachableError extends Error {
  override name = 'RedisUnreachableError';
}

/**
 * Opens a connection and waits until it answers, or fails with one line
 * that names the address and says how to start Redis.
 */
export async function connectRedis(config: Config, role: RedisRole, timeoutMs = 5_000): Promise<Redis> {
  const redis = new Redis({ ...redisOptions(config, role), lazyConnect: true });
  let lastError: Error | undefined;
  const onError = (error: Error) => {
    lastError = error;
  };
  redis.on('error', onError);
  try {
    await withTimeout(redis.connect(), timeoutMs);
    await withTimeout(redis.ping(), timeoutMs);
  } catch (error) {
    redis.disconnect();
    const reason = (lastError ?? (error as Error)).message;
    throw new RedisUnreachableError(
      `Cannot reach Redis at ${describeRedis(config)} (${reason}). Start one with "redis-server --daemonize yes" or "docker run -d -p 6379:6379 redis:7", or set REDIS_URL.`,
    );
  }
  redis.off('error', onError);
  return redis;
}
