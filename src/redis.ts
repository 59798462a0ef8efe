import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { withTimeout } from './async';
import type { Config } from './config';
import { redactUrl } from './secrets';

export type RedisRole = 'producer' | 'worker';

/** A connection to one Redis server (found directly or through Sentinel) or to a Redis Cluster (REDIS_CLUSTER_NODES). */
export type RedisClient = Redis | Cluster;

/**
 * `{value}`, a Redis Cluster hash tag: a key's slot is chosen by its first
 * tag alone, so keys that carry the same tag share a slot and one script or
 * MULTI may touch them together. Tenant-scoped keys carry the tenant's id,
 * a queue's keys its name (queues/keys.ts).
 */
export const hashTag = (value: string): string => `{${value}}`;

/** What picks a key's cluster slot, by the cluster's rule: the first non-empty `{…}`, else the whole key. */
export function slotName(key: string): string {
  const open = key.indexOf('{');
  if (open === -1) return key;
  const close = key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}

/**
 * Splits work into what one script may run: all of it together on one
 * server, so the single-server path keeps its single round trip; on a
 * cluster, one group per hash tag (keys of one group share a slot), sent
 * in parallel. `keyOf` names the key an item's keys are tagged like.
 */
export function bySlot<T>(redis: RedisClient, items: readonly T[], keyOf: (item: T) => string): T[][] {
  if (!redis.isCluster) return items.length > 0 ? [[...items]] : [];
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const name = slotName(keyOf(item));
    const group = groups.get(name);
    if (group) group.push(item);
    else groups.set(name, [item]);
  }
  return [...groups.values()];
}

/** SCANs every key matching `pattern` (never KEYS): on a cluster, on every master, each holding its own slots' keys. */
export async function scanKeys(redis: RedisClient, pattern: string, each: (keys: string[]) => Promise<void>): Promise<void> {
  for (const node of redis instanceof Cluster ? redis.nodes('master') : [redis]) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await each(keys);
    } while (cursor !== '0');
  }
}

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

/**
 * Options of a Redis Cluster connection: each node is reached with
 * REDIS_URL's credentials and TLS; retries and the offline queue are the
 * cluster's own, with the role's behaviour (producers fail fast).
 */
export function clusterOptions(config: Config, role: RedisRole): ClusterOptions {
  // The nodes' addresses come from REDIS_CLUSTER_NODES and the cluster; a cluster has only database 0.
  const { retryStrategy, enableOfflineQueue, db: _db, host: _host, port: _port, ...node } = redisOptions(config, role);
  return {
    redisOptions: node,
    clusterRetryStrategy: retryStrategy,
    enableOfflineQueue: enableOfflineQueue ?? true,
  };
}

/**
 * A connection as configured: to the cluster with REDIS_CLUSTER_NODES, else
 * to one server (REDIS_URL or through Sentinel). `autoResubscribe` is for a
 * single server's connection: on a cluster, ioredis itself carries the
 * subscriptions to another node when the one holding them goes.
 */
export function createRedisClient(config: Config, role: RedisRole, options: { lazyConnect?: boolean; autoResubscribe?: boolean } = {}): RedisClient {
  if (config.REDIS_CLUSTER_NODES) return new Cluster(config.REDIS_CLUSTER_NODES, { ...clusterOptions(config, role), lazyConnect: options.lazyConnect });
  return new Redis({ ...redisOptions(config, role), ...options });
}

export function describeRedis(config: Config): string {
  if (config.REDIS_CLUSTER_NODES) return `cluster nodes ${config.REDIS_CLUSTER_NODES.map((node) => `${node.host}:${node.port}`).join(',')}`;
  if (config.REDIS_SENTINELS) {
    return `sentinels ${config.REDIS_SENTINELS.map((s) => `${s.host}:${s.port}`).join(',')} (master "${config.REDIS_SENTINEL_NAME}")`;
  }
  return redactUrl(config.REDIS_URL);
}

export class RedisUnreachableError extends Error {
  override name = 'RedisUnreachableError';
}

/**
 * Opens a connection and waits until it answers, or fails with one line
 * that names the address and says how to start Redis.
 */
export async function connectRedis(config: Config, role: RedisRole, timeoutMs = 5_000): Promise<RedisClient> {
  const redis = createRedisClient(config, role, { lazyConnect: true });
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
