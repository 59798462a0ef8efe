import type { NodeSDK } from '@opentelemetry/sdk-node';
import type { Telemetry } from 'bullmq';
import type { Config } from './config';

/**
 * Starts OpenTelemetry before anything it instruments is loaded. Nothing is
 * exported unless OTEL_EXPORTER_OTLP_ENDPOINT is set. Redis commands are
 * traced only with OTEL_TRACE_REDIS=true: tracing every command costs a
 * fifth of queue throughput. Read straight from the environment because it
 * must run before the configuration module and its imports load.
 */
const UNTRACED_PATHS = new Set(['/healthz', '/readyz', '/metrics', '/api/health']);

/**
 * BullMQ's OpenTelemetry for every Queue and Worker, when traces are
 * exported: `POST /api/documents`, its indexing job, the worker's work, the
 * fan-out and each delivery attempt share one trace.
 */
export function queueTelemetry(config: Pick<Config, 'OTEL_EXPORTER_OTLP_ENDPOINT' | 'OTEL_SERVICE_NAME'>): Telemetry | undefined {
  if (!config.OTEL_EXPORTER_OTLP_ENDPOINT) return undefined;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { BullMQOtel } = require('bullmq-otel') as typeof import('bullmq-otel');
  return new BullMQOtel({ tracerName: config.OTEL_SERVICE_NAME });
}

export function startTelemetry(env: NodeJS.ProcessEnv = process.env): { shutdown(): Promise<void> } {
  if (!env.OTEL_EXPORTER_OTLP_ENDPOINT) return { shutdown: async () => undefined };
  // Metrics go through prom-client and logs through pino.
  env.OTEL_METRICS_EXPORTER ??= 'none';
  env.OTEL_LOGS_EXPORTER ??= 'none';
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { NodeSDK: Sdk } = require('@opentelemetry/sdk-node') as typeof import('@opentelemetry/sdk-node');
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http');
  const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http') as typeof import('@opentelemetry/instrumentation-http');
  const { ExpressInstrumentation } = require('@opentelemetry/instrumentation-express') as typeof import('@opentelemetry/instrumentation-express');
  const { PgInstrumentation } = require('@opentelemetry/instrumentation-pg') as typeof import('@opentelemetry/instrumentation-pg');
  const { IORedisInstrumentation } = require('@opentelemetry/instrumentation-ioredis') as typeof import('@opentelemetry/instrumentation-ioredis');
  const traceRedis = env.OTEL_TRACE_REDIS === 'true' || env.OTEL_TRACE_REDIS === '1';
  const sdk: NodeSDK = new Sdk({
    serviceName: env.OTEL_SERVICE_NAME || 'ragworks',
    traceExporter: new OTLPTraceExporter({ url: `${env.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/$/, '')}/v1/traces` }),
    instrumentations: [
      // Probes and scrapes come every few seconds and say nothing about the work: never a trace of their own.
      new HttpInstrumentation({ ignoreIncomingRequestHook: (req) => UNTRACED_PATHS.has((req.url ?? '').split('?')[0]) }),
      new ExpressInstrumentation(),
      new PgInstrumentation(),
      ...(traceRedis ? [new IORedisInstrumentation()] : []),
    ],
  });
  sdk.start();
  return {
    // With no collector listening, shutdown rejects while flushing: nothing to do about it at exit.
    shutdown: () => sdk.shutdown().catch(() => undefined),
  };
}
