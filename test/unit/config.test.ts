import { ConfigError, loadConfig, selectedQueues } from '../../src/config';
import { clusterOptions, redisOptions } from '../../src/redis';

const messageOf = (env: Record<string, string>): string => {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected the configuration to be refused');
};

describe('configuration', () => {
  it('has the documented defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      PORT: 8080,
      REDIS_URL: 'redis://127.0.0.1:6379',
      QUEUE_PREFIX: 'ragworks',
      LOG_LEVEL: 'info',
      EMBEDDINGS_PROVIDER: 'hash',
      EMBEDDINGS_DIMENSIONS: 384,
      CHUNK_TARGET_WORDS: 512,
      CHUNK_OVERLAP_WORDS: 100,
      CHUNK_MIN_WORDS: 50,
      CHUNK_MAX_WORDS: 768,
      SEARCH_SEMANTIC_WEIGHT: 0.7,
      SEARCH_RRF_K: 60,
      WORKER_QUEUES: 'all',
    });
    expect(config.DATA_DIR).toMatch(/\/data$/);
    expect(config.DATABASE_URL).toBeUndefined();
  });

  it('generates an operator token in development and requires one in production', () => {
    const development = loadConfig({});
    expect(development.adminTokenGenerated).toBe(true);
    expect(development.ADMIN_TOKEN.length).toBeGreaterThanOrEqual(32);
    expect(messageOf({ NODE_ENV: 'production' })).toMatch(/ADMIN_TOKEN/);
    expect(loadConfig({ NODE_ENV: 'production', ADMIN_TOKEN: 'x'.repeat(32) }).adminTokenGenerated).toBe(false);
  });

  it.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['REDIS_URL', 'http://localhost'],
    ['DATABASE_URL', 'mysql://x'],
    ['LOG_LEVEL', 'loud'],
    ['SCHEDULE_RECONCILE', 'every minute'],
    ['SEARCH_SEMANTIC_WEIGHT', '1.5'],
    ['EMBEDDINGS_PROVIDER', 'magic'],
    ['QUEUE_PREFIX', 'has space'],
    ['ADMIN_TOKEN', 'short'],
    ['WORKER_CONCURRENCY_PER_QUEUE', 'indexing=zero'],
    ['REDIS_SENTINELS', 'nohostport'],
    ['REDIS_CLUSTER_NODES', '10.0.0.1:7000,nohostport'],
    ['RERANK_API', 'openai'],
  ])('refuses %s=%s in one line that names the variable', (name, value) => {
    const message = messageOf({ [name]: value });
    expect(message).toContain(name);
    expect(message.split('\n')).toHaveLength(1);
  });

  it('names the variable a rule across variables needs', () => {
    expect(messageOf({ EMBEDDINGS_PROVIDER: 'openai' })).toMatch(/EMBEDDINGS_URL/);
    expect(messageOf({ REDIS_SENTINELS: 'a:26379' })).toMatch(/REDIS_SENTINEL_NAME/);
    expect(messageOf({ CHUNK_MIN_WORDS: '600' })).toMatch(/CHUNK_TARGET_WORDS/);
    expect(messageOf({ RERANK_URL: 'http://127.0.0.1:8080/rerank' })).toMatch(/RERANK_MODEL is required with RERANK_URL/);
  });

  it('accepts node-cron expressions with seconds', () => {
    expect(loadConfig({ SCHEDULE_RECONCILE: '*/5 * * * * *' }).SCHEDULE_RECONCILE).toBe('*/5 * * * * *');
  });

  it('reads per-queue concurrency and the queues a worker consumes', () => {
    const config = loadConfig({ WORKER_CONCURRENCY_PER_QUEUE: 'indexing=8, reconcile=1', WORKER_QUEUES: 'indexing' });
    expect(config.WORKER_CONCURRENCY_PER_QUEUE).toEqual({ indexing: 8, reconcile: 1 });
    expect(selectedQueues(config, ['indexing', 'reconcile'])).toEqual(['indexing']);
    expect(selectedQueues(loadConfig({}), ['indexing', 'reconcile'])).toEqual(['indexing', 'reconcile']);
    expect(() => selectedQueues(loadConfig({ WORKER_QUEUES: 'indexing,nope' }), ['indexing'])).toThrow(/WORKER_QUEUES.*nope/);
  });
});

describe('Redis connection options', () => {
  it('honours the database index, credentials and TLS in REDIS_URL', () => {
    const options = redisOptions(loadConfig({ REDIS_URL: 'rediss://user:p%40ss@cache.internal:6380/3' }), 'worker');
    expect(options).toMatchObject({ host: 'cache.internal', port: 6380, db: 3, username: 'user', password: 'p@ss', maxRetriesPerRequest: null });
    expect(options.tls).toBeDefined();
  });

  it('makes producers fail fast and workers wait', () => {
    const config = loadConfig({});
    expect(redisOptions(config, 'producer')).toMatchObject({ enableOfflineQueue: false });
    expect(redisOptions(config, 'worker')).toMatchObject({ maxRetriesPerRequest: null });
  });

  it('uses sentinels when configured', () => {
    const options = redisOptions(loadConfig({ REDIS_SENTINELS: 's1:26379,[::1]:26380', REDIS_SENTINEL_NAME: 'mymaster', REDIS_URL: 'redis://:pw@ignored:6379/2' }), 'worker');
    expect(options).toMatchObject({ sentinels: [{ host: 's1', port: 26379 }, { host: '::1', port: 26380 }], name: 'mymaster', db: 2, password: 'pw' });
    expect(options.host).toBeUndefined();
    expect(options).toMatchObject({ sentinelPassword: undefined, sentinelTLS: undefined, enableTLSForSentinelMode: false });
    const secured = redisOptions(
      loadConfig({ REDIS_SENTINELS: 's1:26379', REDIS_SENTINEL_NAME: 'mymaster', REDIS_SENTINEL_USERNAME: 'watcher', REDIS_SENTINEL_PASSWORD: 'spw', REDIS_SENTINEL_TLS: 'true', REDIS_URL: 'rediss://:pw@ignored:6380' }),
      'worker',
    );
    expect(secured).toMatchObject({ sentinelUsername: 'watcher', sentinelPassword: 'spw', sentinelTLS: {}, enableTLSForSentinelMode: true, tls: {}, password: 'pw' });
  });

  it("reaches a cluster's nodes with REDIS_URL's credentials and TLS; never with Sentinel or a database index", () => {
    const config = loadConfig({ REDIS_CLUSTER_NODES: 'r1:7000, [::1]:7001', REDIS_URL: 'rediss://app:pw@ignored:6380' });
    expect(config.REDIS_CLUSTER_NODES).toEqual([{ host: 'r1', port: 7000 }, { host: '::1', port: 7001 }]);
    const options = clusterOptions(config, 'producer');
    expect(options.redisOptions).toMatchObject({ username: 'app', password: 'pw', tls: {} });
    expect(options.redisOptions).not.toHaveProperty('host');
    expect(options.redisOptions).not.toHaveProperty('db');
    // Producers fail fast while the cluster is away, as on a single server; workers wait.
    expect(options.enableOfflineQueue).toBe(false);
    expect(clusterOptions(config, 'worker')).toMatchObject({ enableOfflineQueue: true, redisOptions: { maxRetriesPerRequest: null } });
    expect(messageOf({ REDIS_CLUSTER_NODES: 'r1:7000', REDIS_SENTINELS: 's1:26379', REDIS_SENTINEL_NAME: 'mymaster' })).toMatch(/REDIS_CLUSTER_NODES.*REDIS_SENTINELS/);
    expect(messageOf({ REDIS_CLUSTER_NODES: 'r1:7000', REDIS_URL: 'redis://127.0.0.1:6379/2' })).toMatch(/REDIS_URL.*database index/);
  });
});

describe('configuration errors', () => {
  it('never echo a value that may hold a credential', () => {
    for (const [name, value] of [
      ['ADMIN_TOKEN', 'short-secret'],
      ['DATABASE_URL', 'mysql://user:hunter2@db/x'],
      ['REDIS_URL', 'http://:hunter2@cache'],
    ]) {
      const message = messageOf({ [name]: value });
      expect(message).toContain(name);
      expect(message).not.toContain('hunter2');
      expect(message).not.toContain('short-secret');
    }
  });

  it('refuse a Redis database that is not a number and vector sizes HNSW cannot index', () => {
    expect(messageOf({ REDIS_URL: 'redis://cache:6379/abc' })).toMatch(/REDIS_URL/);
    expect(messageOf({ EMBEDDINGS_DIMENSIONS: '3072' })).toMatch(/EMBEDDINGS_DIMENSIONS/);
    expect(loadConfig({ REDIS_URL: 'redis://cache:6379/5' }).REDIS_URL).toBe('redis://cache:6379/5');
  });

  it('reads TRUST_PROXY as express takes it, trusting no proxy by default', () => {
    expect(loadConfig({}).TRUST_PROXY).toBe(false);
    expect(loadConfig({ NODE_ENV: 'production', ADMIN_TOKEN: 'x'.repeat(32) }).TRUST_PROXY).toBe(false);
    expect(loadConfig({ TRUST_PROXY: 'true' }).TRUST_PROXY).toBe(true);
    expect(loadConfig({ TRUST_PROXY: '2' }).TRUST_PROXY).toBe(2);
    for (const list of ['loopback', 'loopback, uniquelocal', '10.0.0.0/8,fc00::/7', '192.168.1.10', '10.0.0.0/255.0.0.0', '::1']) {
      expect(loadConfig({ TRUST_PROXY: list }).TRUST_PROXY).toBe(list);
    }
    for (const wrong of ['loopbak', '10.0.0.0/33', '10.0.0.0/255.0.255.0', 'proxy.internal', 'yes']) {
      const message = messageOf({ TRUST_PROXY: wrong });
      expect(message).toContain('TRUST_PROXY');
      expect(message.split('\n')).toHaveLength(1);
    }
  });
});
