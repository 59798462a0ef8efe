import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Express } from 'express';
import type { Knex } from 'knex';
import request from 'supertest';
import { QUEUE_NAMES } from '../../queues';
import { loadConfig, type Config } from '../../src/config';
import { acrossTenants } from '../../src/db/tenant-scope';
import type { Tier } from '../../src/domain/tenants/quotas';
import { createApp } from '../../src/http/app';
import { createLogger } from '../../src/logger';
import { createPlatform, type Platform } from '../../src/platform';
import { WorkerRuntime } from '../../workers/runtime';
import { createTestDatabase, REDIS_URL, uniqueName } from './databases';
import { seedPgliteDataDir } from './pglite-template';
import { deleteRedisPrefix } from './redis';
import { waitFor } from './wait';

export const ADMIN_TOKEN = 'test-operator-token-0123456789abcdef';

export interface TestStack {
  config: Config;
  platform: Platform;
  app: Express;
  workers?: WorkerRuntime;
  /** Environment for child processes that should join this stack (same database and prefix). */
  env: Record<string, string>;
  /** supertest with the operator token. */
  operator(method: 'get' | 'post' | 'patch' | 'delete', url: string, tenant?: string): request.Test;
  /** supertest with an API key. */
  as(key: string, method: 'get' | 'post' | 'patch' | 'delete', url: string): request.Test;
  /** A tenant (tier `unlimited` unless named: quotas and rate limits stay out of tests not about them) and an admin-scope key. */
  createTenant(slug?: string, tier?: Tier): Promise<{ id: string; slug: string; key: string }>;
  /** Runs `work` on the platform's own connection seeing every tenant's rows, to inspect or arrange them. */
  sql<T>(work: (db: Knex.Transaction) => Promise<T>): Promise<T>;
  waitForDocument(key: string, id: string, status?: string): Promise<Record<string, unknown>>;
  /** Posts the documents as one batch and waits until each is indexed; their ids, in order. */
  indexDocuments(key: string, documents: Array<{ title: string; content: string }>): Promise<string[]>;
  close(): Promise<void>;
}

export interface StackOptions {
  /** `postgres`: a fresh database on the local server (no pgvector). `pglite`: the embedded one, with pgvector. */
  database: 'postgres' | 'pglite';
  /** Run BullMQ workers in this process (default true). */
  workers?: boolean;
  env?: Record<string, string>;
}

/**
 * A complete ragworks in this process on its own database and Redis key
 * prefix: the real platform, the real Express app, real workers.
 */
export async function startStack(options: StackOptions): Promise<TestStack> {
  const prefix = uniqueName('rwtest');
  // A test that brings its own DATABASE_URL (a proxy, a database it prepared) owns that database.
  const database = options.database === 'postgres' && !options.env?.DATABASE_URL ? await createTestDatabase() : undefined;
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'ragworks-test-'));
  if (!database && !options.env?.DATABASE_URL) await seedPgliteDataDir(dataDir);
  const env: Record<string, string> = {
    NODE_ENV: 'test',
    ADMIN_TOKEN,
    REDIS_URL,
    QUEUE_PREFIX: prefix,
    DATA_DIR: dataDir,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    API_KEY_USAGE_FLUSH_MS: '100',
    SCHEDULE_RECONCILE: '0 0 1 1 *',
    ...(database ? { DATABASE_URL: database.applicationUrl, MIGRATION_DATABASE_URL: database.url } : {}),
    ...options.env,
  };
  const config = loadConfig(env);
  const platform = await createPlatform(config, createLogger(config.LOG_LEVEL));
  const app = createApp(platform);
  let workers: WorkerRuntime | undefined;
  if (options.workers !== false) {
    workers = new WorkerRuntime(platform, [...QUEUE_NAMES]);
    workers.start();
    await workers.waitUntilReady();
  }
  const bearer = (token: string) => `Bearer ${token}`;
  const stack: TestStack = {
    config,
    platform,
    app,
    workers,
    env,
    operator(method, url, tenant) {
      const test = request(app)[method](url).set('Authorization', bearer(ADMIN_TOKEN));
      return tenant ? test.set('X-Tenant-Id', tenant) : test;
    },
    as(key, method, url) {
      return request(app)[method](url).set('Authorization', bearer(key));
    },
    async createTenant(slug = uniqueName('t').replace(/_/g, '-'), tier = 'unlimited') {
      const tenant = await stack.operator('post', '/api/admin/tenants').send({ slug, name: `Tenant ${slug}`, tier }).expect(201);
      const key = await stack.operator('post', '/api/admin/api-keys', tenant.body.id).send({ name: 'test key', scopes: ['admin'] }).expect(201);
      return { id: tenant.body.id, slug, key: key.body.key };
    },
    sql: (work) => acrossTenants(platform.db.knex, work),
    async waitForDocument(key, id, status = 'indexed') {
      return waitFor(
        async () => {
          const response = await stack.as(key, 'get', `/api/documents/${id}`);
          if (response.body.status === 'failed' && status !== 'failed') throw new Error(`document failed: ${response.body.error}`);
          return response.body.status === status ? response.body : null;
        },
        { what: `document ${id} to be ${status}` },
      );
    },
    async indexDocuments(key, documents) {
      const reply = await stack.as(key, 'post', '/api/documents/batch').send({ documents }).expect(202);
      const ids: string[] = reply.body.items.map((item: { id: string }) => item.id);
      for (const id of ids) await stack.waitForDocument(key, id);
      return ids;
    },
    async close() {
      if (workers) await workers.drain(5_000);
      await platform.close();
      await deleteRedisPrefix(prefix);
      await database?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return stack;
}
