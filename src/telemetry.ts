import { context, createContextKey, isSpanContextValid, ROOT_CONTEXT, trace, type Context, type SpanContext } from '@opentelemetry/api';
import type { NodeSDK } from '@opentelemetry/sdk-node';
import type { JobsOptions, Telemetry } from 'bullmq';
import type { BullMQOtel } from 'bullmq-otel';
import type { Config } from './config';

/** Probes and scrapes: asked every few seconds, they would fill the traces with nothing to look at. */
const UNTRACED_PATHS = new Set(['/healthz', '/readyz', '/metrics', '/api/health']);

/**
 * BullMQ's OpenTelemetry for every Queue and Worker, when traces are
 * exported: `POST /api/documents`, its indexing job, the worker's work, the
 * fan-out and the first delivery attempt share one trace. A run of a job
 * that its queue sends to a trace of its own (QueueDefinition.ownTrace)
 * starts one, linked to the span that added the job (inOwnTrace).
 */
export function queueTelemetry(config: Pick<Config, 'OTEL_EXPORTER_OTLP_ENDPOINT' | 'OTEL_SERVICE_NAME'>): Telemetry | undefined {
  if (!config.OTEL_EXPORTER_OTLP_ENDPOINT) return undefined;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { BullMQOtel: Otel } = require('bullmq-otel') as typeof import('bullmq-otel');
  return linkingTelemetry(new Otel({ tracerName: config.OTEL_SERVICE_NAME }));
}

/** Set on the context a worker processes a job in when that run starts a trace of its own. */
const OWN_TRACE = createContextKey('ragworks.own-trace');
/** The span context the job was added in: the one such a run links to. */
const ADDED_IN = createContextKey('ragworks.added-in');

/**
 * Runs `processJob` (a worker's processing of one job) so that BullMQ's span
 * for the job is the root of a new trace with a span link to the context the
 * job carries, instead of that context's child: OpenTelemetry's messaging
 * conventions link a consumer to the message's creation context when the
 * two belong in different traces. Work that comes days later, or one trace
 * per tenant of a tick, does not grow the trace that asked for it.
 */
export function inOwnTrace<T>(processJob: () => T): T {
  return context.with(ROOT_CONTEXT.setValue(OWN_TRACE, true), processJob);
}

/**
 * Telemetry options for a job added now to a queue whose runs may start
 * traces of their own: the job carries the active span's context, and
 * `omitContext` keeps BullMQ from re-pointing it at each retry's `delay`
 * span, so every such run links to the work that added the job rather than
 * to the attempt before it. Outside any span (a scheduler's tick) the job
 * keeps BullMQ's default, its producer span.
 */
export function carriedContext(telemetry: Telemetry | undefined): JobsOptions['telemetry'] | undefined {
  const active = context.active();
  if (!telemetry || !trace.getSpan(active)) return undefined;
  return { omitContext: true, metadata: telemetry.contextManager.getMetadata(active) };
}

/**
 * bullmq-otel's telemetry, except in a context marked by inOwnTrace: there
 * the context a job carries becomes a link of the job's span, not its parent.
 */
function linkingTelemetry(otel: BullMQOtel): Telemetry<Context> {
  const { tracer, contextManager } = otel;
  return {
    tracer: {
      startSpan(name, options, parent) {
        const addedIn = parent?.getValue(ADDED_IN) as SpanContext | undefined;
        // Only the job's own span starts in a context without a span: the spans within it are its children.
        const links = addedIn && !trace.getSpan(parent!) ? [{ context: addedIn }] : undefined;
        return tracer.startSpan(name, links ? { ...options, links } : options, parent);
      },
    },
    contextManager: {
      with: (ctx, fn) => contextManager.with(ctx, fn),
      active: () => contextManager.active(),
      getMetadata: (ctx) => contextManager.getMetadata(ctx),
      fromMetadata(active, metadata) {
        const carried = contextManager.fromMetadata(active, metadata);
        if (active.getValue(OWN_TRACE) !== true) return carried;
        // BullMQ starts the job's span in the context returned here: without the carried span, it is a root.
        const addedIn = trace.getSpanContext(carried);
        const root = trace.deleteSpan(carried);
        return addedIn && isSpanContextValid(addedIn) ? root.setValue(ADDED_IN, addedIn) : root;
      },
    },
  };
}

/**
 * Starts OpenTelemetry before anything it instruments is loaded. Nothing is
 * exported unless OTEL_EXPORTER_OTLP_ENDPOINT is set. Redis commands are
 * traced only with OTEL_TRACE_REDIS=true: tracing every command costs a
 * fifth of queue throughput. Read straight from the environment because it
 * must run before the configuration module and its imports load.
 */
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
