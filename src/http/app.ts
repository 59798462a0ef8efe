import { isUtf8 } from 'node:buffer';
import path from 'node:path';
import { OpenApiGeneratorV31 } from '@asteasolutions/zod-to-openapi';
import express, { type ErrorRequestHandler, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import helmet from 'helmet';
import { AppError, dependencyUnavailable, unavailableDependency } from '../errors';
import { scrapeAllowed } from '../metrics';
import type { Platform } from '../platform';
import { noticeQuotaExceeded, QuotaExceededError } from '../domain/tenants/quotas';
import { adminPages, requireOperatorPage } from './admin/pages';
import { BOARD_PATH, bullBoardRouter } from './board';
import { requestTracking } from './request-tracking';
import { Api } from './route';
import { analyticsRoutes } from './routes/analytics';
import { auditRoutes } from './routes/audit';
import { cacheRoutes } from './routes/cache';
import { deadLetterRoutes } from './routes/dead-letters';
import { documentRoutes } from './routes/documents';
import { healthRoutes } from './routes/health';
import { indexingRoutes } from './routes/indexing';
import { jobRoutes } from './routes/jobs';
import { metricsSummaryRoutes } from './routes/metrics-summary';
import { searchRoutes } from './routes/search';
import { uploadRoutes } from './routes/uploads';
import { answerRoutes } from './routes/answers';
import { tenantRoutes } from './routes/tenants';
import { usageRoutes } from './routes/usage';
import { webhookRoutes } from './routes/webhooks';

export function createApp(platform: Platform): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // X-Forwarded-For, -Proto and -Host are believed only from the proxies TRUST_PROXY names (none by default): req.ip, req.protocol and req.host follow it.
  app.set('trust proxy', platform.config.TRUST_PROXY);
  app.set('query parser', 'simple');

  app.use(requestTracking(app, platform));
  app.use(helmet({ contentSecurityPolicy: false }));

  const api = new Api(platform);
  // Routes are tried in the order declared: the one served most, first.
  searchRoutes(api, platform);
  answerRoutes(api, platform);
  healthRoutes(api, platform);
  tenantRoutes(api, platform);
  uploadRoutes(api, platform);
  documentRoutes(api, platform);
  indexingRoutes(api, platform);
  jobRoutes(api, platform);
  webhookRoutes(api, platform);
  cacheRoutes(api, platform);
  analyticsRoutes(api, platform);
  usageRoutes(api, platform);
  deadLetterRoutes(api, platform);
  metricsSummaryRoutes(api, platform);
  auditRoutes(api, platform);

  // The API before the pages and documents, so an API request is not matched against their routes first.
  // Any JSON value parses (strict: false), so a body that is valid JSON but no object is told so by validation rather than called invalid.
  app.use(
    '/api',
    requireJsonBodies,
    express.json({ limit: platform.config.MAX_BODY_BYTES, strict: false, type: ['application/json', 'application/*+json'], verify: refuseMalformedText }),
  );
  app.use('/api', rejectWhileDependenciesDown(platform));
  app.use(api.router);

  app.get('/metrics', async (req, res) => {
    if (!scrapeAllowed(req.get('authorization'), platform.config.METRICS_TOKEN)) {
      res.setHeader('WWW-Authenticate', 'Bearer realm="ragworks metrics"');
      res.status(401).json({ error: { code: 'unauthenticated', message: 'Send the METRICS_TOKEN as "Authorization: Bearer <token>".' } });
      return;
    }
    res.setHeader('Content-Type', platform.metrics.registry.contentType);
    res.send(await platform.metrics.registry.metrics());
  });

  const openapi = () =>
    new OpenApiGeneratorV31(api.registry.definitions).generateDocument({
      openapi: '3.1.0',
      info: { title: 'ragworks API', version: platform.version, description: 'Multi-tenant document retrieval on queues.' },
      servers: [{ url: '/' }],
    });
  let openapiDocument: ReturnType<typeof openapi> | undefined;
  app.get('/api/openapi.json', (_req, res) => {
    openapiDocument ??= openapi();
    res.json(openapiDocument);
  });
  app.use('/docs/assets', express.static(swaggerUiPath(), { index: false, maxAge: '1d' }));
  app.get('/docs', (_req, res) => res.sendFile(path.join(__dirname, 'docs', 'index.html')));
  app.get('/docs/init.js', (_req, res) => res.sendFile(path.join(__dirname, 'docs', 'init.js')));

  app.use(adminPages(platform));
  app.use(BOARD_PATH, requireOperatorPage(platform), bullBoardRouter(platform));

  app.use((req, _res, next) => next(new AppError(404, 'not_found', `No route for ${req.method} ${req.path}.`)));
  app.use(errorHandler(platform));
  return app;
}

function swaggerUiPath(): string {
  return path.dirname(require.resolve('swagger-ui-dist/package.json'));
}

/** A body must be JSON, but for the upload's form (its route reads it as it streams); bodiless requests pass. */
const requireJsonBodies: RequestHandler = (req, _res, next) => {
  const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
  const upload = req.method === 'POST' && req.path === '/documents/upload';
  if (hasBody && !upload && !req.is(['application/json', 'application/*+json'])) {
    next(new AppError(415, 'unsupported_media_type', 'Send the body as JSON with "Content-Type: application/json".'));
    return;
  }
  next();
};

/** The error type refuseMalformedText raises; body-parser's own types are `entity.*`, `charset.*`, `encoding.*`. */
const MALFORMED_TEXT = 'entity.encoding.invalid';

/**
 * The body's bytes must be valid in its charset: decoding would otherwise
 * replace malformed sequences with U+FFFD, and the text stored would not be
 * the text sent. Charsets the platform cannot check strictly are left to the parser.
 */
function refuseMalformedText(_req: unknown, _res: unknown, body: Buffer, charset: string): void {
  if (isWellFormedIn(body, charset)) return;
  throw Object.assign(new Error(`The body is not valid ${charset.toUpperCase()}: it holds byte sequences that encode no character.`), {
    status: 400,
    type: MALFORMED_TEXT,
  });
}

function isWellFormedIn(body: Buffer, charset: string): boolean {
  if (/^utf-?8$/i.test(charset)) return isUtf8(body);
  let decoder: InstanceType<typeof TextDecoder>;
  try {
    decoder = new TextDecoder(charset, { fatal: true });
  } catch {
    return true;
  }
  try {
    decoder.decode(body);
    return true;
  } catch {
    return false;
  }
}

/** Requests that need only PostgreSQL: reads, and searches (whose cache falls back to this process). */
const readsWithoutRedis = (req: Request) => req.method === 'GET' || req.path === '/search' || req.path === '/search/click';

/**
 * Answers 503 at once while a store the request needs is known to be down,
 * so nothing is half done. Reads and searches go on without Redis; a read
 * that does touch Redis (queue views, counters) fails fast and answers 503
 * through the error handler. Health routes answer anyway.
 */
function rejectWhileDependenciesDown(services: Pick<Platform, 'health'>): RequestHandler {
  return (req, _res, next) => {
    if (req.path === '/health' || req.path === '/openapi.json') return next();
    if (!services.health.isUp('redis') && !readsWithoutRedis(req)) return next(dependencyUnavailable('redis'));
    if (!services.health.isUp('database')) return next(dependencyUnavailable('database'));
    next();
  };
}

const errorHandler = (services: Pick<Platform, 'db' | 'events'>): ErrorRequestHandler => (error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const appError = toAppError(error);
    if (error instanceof QuotaExceededError && res.locals.tenantId) {
      // The refusal does not wait for the notice; at most one per quota and day is sent.
      noticeQuotaExceeded(services.db.knex, services.events, res.locals.tenantId, error).catch((noticeError) =>
        req.log?.warn({ err: noticeError }, 'could not record the quota.exceeded event'),
      );
    }
    if (appError.status >= 500 && appError.code !== 'dependency_unavailable') {
      req.log?.error({ err: error }, 'request failed');
    } else if (appError.code === 'dependency_unavailable') {
      req.log?.warn({ err: error }, 'dependency unavailable');
    }
    // A streamed reply that fails half-way cannot change its status: cut it, so the client sees it broken.
    if (res.headersSent) {
      res.destroy(error instanceof Error ? error : undefined);
      return;
    }
    for (const [name, value] of Object.entries(appError.headers)) res.setHeader(name, value);
    res.status(appError.status).json({
      error: {
        code: appError.code,
        message: appError.message,
        ...(appError.details !== undefined ? { details: appError.details } : {}),
        request_id: res.locals.requestId,
      },
    });
};

/** Maps anything thrown to the error a client sees; never a stack trace. */
function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  const httpError = error as { type?: string; status?: number; expose?: boolean; message?: string };
  switch (httpError?.type) {
    case 'entity.parse.failed':
      return new AppError(400, 'invalid_json', 'The body is not valid JSON.');
    case MALFORMED_TEXT:
      return new AppError(400, 'invalid_encoding', httpError.message ?? 'The body is not valid UTF-8.');
    case 'entity.too.large':
      return new AppError(413, 'payload_too_large', 'The body is larger than this server accepts.', { limit_bytes: (error as { limit?: number }).limit });
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return new AppError(415, 'unsupported_media_type', httpError.message ?? 'Unsupported encoding.');
    case 'request.aborted':
      return new AppError(400, 'request_aborted', 'The request was aborted.');
  }
  const sqlState = (error as { code?: unknown })?.code;
  if (sqlState === '57014') {
    // query_canceled: DATABASE_STATEMENT_TIMEOUT_MS cut a statement short. The database is up; this request asked too much of it.
    return new AppError(503, 'statement_timeout', 'The database stopped a statement that ran longer than it allows; try again shortly, or ask for less.', undefined, {
      'Retry-After': '5',
    });
  }
  const dependency = unavailableDependency(error);
  if (dependency) return dependencyUnavailable(dependency);
  if ((error as Error)?.name === 'EmbeddingError') return dependencyUnavailable('the embeddings provider');
  if (typeof sqlState === 'string' && sqlState.startsWith('22')) {
    // Data exceptions: a value PostgreSQL cannot take (a date out of its range, malformed text).
    return new AppError(400, 'validation_failed', 'A value in the request is out of range or malformed.');
  }
  if (sqlState === '40P01' || sqlState === '40001') {
    return new AppError(409, 'conflict', 'The request collided with a concurrent change; retry it.', undefined, { 'Retry-After': '1' });
  }
  // Errors from Express itself (a path that cannot be decoded, …) carry their status.
  if (httpError?.status && httpError.status >= 400 && httpError.status < 500) {
    return new AppError(httpError.status, httpError.status === 400 ? 'validation_failed' : 'bad_request', httpError.expose && httpError.message ? httpError.message : 'The request is malformed.');
  }
  return new AppError(500, 'internal', 'Something went wrong on our side; it has been logged.');
}
