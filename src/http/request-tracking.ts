import { randomUUID } from 'node:crypto';
import type { Express, Request, RequestHandler, Response } from 'express';
import pino from 'pino';
import type { Logger } from '../logger';
import type { Platform } from '../platform';
import { requestScope } from '../request-scope';
import { BOARD_PATH } from './board';

/** What request tracking uses of the platform. */
export type TrackingServices = Pick<Platform, 'logger' | 'metrics'>;

declare module 'http' {
  interface IncomingMessage {
    /** The request id: X-Request-Id as sent when valid, else a new UUID. */
    id: string;
    /** A logger whose lines carry the request; made on first use. */
    log: Logger;
  }
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** Requests that are never logged line by line: probes and scrapes. */
const QUIET = new Set(['/healthz', '/metrics']);

const requestLog = Symbol('request log');

/**
 * What every request gets, at the cost of one listener: its id (sent back
 * as X-Request-Id), a logger that carries it (`req.log`, built only when a
 * line is written), the scope domain code logs with, one line when it ends
 * (`request completed`, or `request errored` at error level for a 5xx, as
 * pino-http writes them) and the latency histogram. A line whose level is
 * off costs nothing to build.
 */
export function requestTracking(app: Express, services: TrackingServices): RequestHandler {
  const logger = services.logger.child({}, { serializers: { req: pino.stdSerializers.req, res: pino.stdSerializers.res, err: pino.stdSerializers.err } });
  Object.defineProperty(app.request, 'log', {
    configurable: true,
    get(this: Request & { [requestLog]?: Logger }) {
      return (this[requestLog] ??= logger.child({ req: this }));
    },
  });
  return (req, res, next) => {
    const given = req.headers['x-request-id'];
    const id = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    req.id = id;
    res.locals.requestId = id;
    res.setHeader('X-Request-Id', id);
    const started = performance.now();
    res.once('close', () => finished(services, logger, req, res, performance.now() - started));
    requestScope.run({ requestId: id }, next);
  };
}

function finished(services: TrackingServices, logger: Logger, req: Request, res: Response, ms: number): void {
  // Only answers sent to the end are timed: a client that went away measures nothing of ours.
  if (res.writableFinished) services.metrics.httpDuration.observe({ method: req.method, route: routeOf(req), status: String(res.statusCode) }, ms / 1000);
  if (QUIET.has(req.url)) return;
  const failed = res.statusCode >= 500;
  const level = failed ? 'error' : 'info';
  if (!logger.isLevelEnabled(level)) return;
  const fields = { req, tenant_id: res.locals.tenantId, res, responseTime: Math.round(ms) };
  if (failed) logger.error({ ...fields, err: new Error(`failed with status code ${res.statusCode}`) }, 'request errored');
  else logger.info(fields, 'request completed');
}

/** Latency by the route's pattern, never its raw URL, so label values stay few. */
function routeOf(req: Request): string {
  if (req.route?.path) return `${req.baseUrl}${req.route.path}`;
  return req.path.startsWith(BOARD_PATH) ? BOARD_PATH : 'unmatched';
}
