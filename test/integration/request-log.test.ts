import { Writable } from 'node:stream';
import request from 'supertest';
import { createApp } from '../../src/http/app';
import { createLogger } from '../../src/logger';
import type { Platform } from '../../src/platform';
import { startStack, type TestStack } from '../helpers/harness';

// One log line per request, as an operator reads them (docs/operations.md):
// `request completed` at info, `request errored` at error for a 5xx, none
// for probes and scrapes; lines a request's own code writes carry the request.

jest.setTimeout(60_000);

type Line = Record<string, unknown> & { msg?: string; level?: number; req?: Record<string, unknown>; res?: Record<string, unknown> };

describe('request log lines', () => {
  let stack: TestStack;
  let tenant: { id: string; key: string };

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
    tenant = await stack.createTenant();
  });
  afterAll(async () => {
    await stack?.close();
  });

  /** The stack's platform with a logger at `level` whose lines the test reads, and Redis said to be down when asked. */
  function appLogging(level: string, redisDown = false) {
    const lines: Line[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        for (const text of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(text));
        done();
      },
    });
    const health = Object.assign(Object.create(stack.platform.health), { isUp: (name: string) => !(redisDown && name === 'redis') });
    const app = createApp({ ...stack.platform, logger: createLogger(level, sink), health } as Platform);
    return { app, lines, requestLines: () => lines.filter((line) => line.msg === 'request completed' || line.msg === 'request errored') };
  }

  it('writes `request completed` at info with the request, its status, its time and its tenant; none for /healthz', async () => {
    const { app, requestLines } = appLogging('info');
    await request(app).get('/api/documents').set('Authorization', `Bearer ${tenant.key}`).set('X-Request-Id', 'logged-1').expect(200);
    await request(app).get('/healthz').expect(200);
    const [line, ...more] = requestLines();
    expect(more).toEqual([]);
    expect(line).toMatchObject({
      level: 30,
      msg: 'request completed',
      request_id: 'logged-1',
      tenant_id: tenant.id,
      req: { id: 'logged-1', method: 'GET', url: '/api/documents', headers: { authorization: '[redacted]' } },
      res: { statusCode: 200 },
      responseTime: expect.any(Number),
    });
  });

  it('writes a 5xx as `request errored` at error, with the lines its own code wrote carrying the request; at warn, only those', async () => {
    const { app, lines, requestLines } = appLogging('warn', true);
    await request(app).post('/api/documents').set('Authorization', `Bearer ${tenant.key}`).set('X-Request-Id', 'logged-2').send({ title: 't', content: 'c' }).expect(503);
    await request(app).get('/api/documents').set('Authorization', `Bearer ${tenant.key}`).expect(200);
    expect(requestLines()).toEqual([
      expect.objectContaining({ level: 50, msg: 'request errored', req: expect.objectContaining({ id: 'logged-2' }), res: expect.objectContaining({ statusCode: 503 }), err: expect.objectContaining({ message: 'failed with status code 503' }) }),
    ]);
    expect(lines.find((line) => line.msg === 'dependency unavailable')).toMatchObject({ level: 40, req: { id: 'logged-2', method: 'POST' } });
  });
});
