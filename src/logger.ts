import { trace } from '@opentelemetry/api';
import pino from 'pino';
import { requestScope } from './request-scope';
import { SECRET_FIELDS } from './secrets';

export type Logger = pino.Logger;

/** Paths whose values never reach a log line. */
const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'req.headers.cookie',
  'req.headers["x-csrf-token"]',
  // The dashboard's session cookie, as pino-http logs a sign-in's response.
  'res.headers["set-cookie"]',
  'headers.authorization',
  ...SECRET_FIELDS.map((field) => `*.${field}`),
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      // Lines written while serving a request carry its id and tenant; the
      // active span's ids tie them to their trace when tracing is on.
      mixin() {
        const fields: Record<string, string> = {};
        const scope = requestScope.getStore();
        if (scope) {
          fields.request_id = scope.requestId;
          if (scope.tenantId) fields.tenant_id = scope.tenantId;
        }
        const span = trace.getActiveSpan();
        if (span) {
          const { traceId, spanId } = span.spanContext();
          fields.trace_id = traceId;
          fields.span_id = spanId;
        }
        return fields;
      },
    },
    destination,
  );
}
