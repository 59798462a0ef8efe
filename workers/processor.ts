import type { Job, WorkerOptions } from 'bullmq';
import type { PayloadOf, QueueDefinition } from '../queues';
import type { Logger } from '../src/logger';
import type { Platform } from '../src/platform';

/** What a processor is given besides its payload; no globals. */
export interface ProcessorContext<Services = unknown> {
  /** The services the processor declared it uses (its `Services` type), wired in by the runtime. */
  services: Services;
  logger: Logger;
  /** Aborted when the worker hands the job back at shutdown. */
  signal: AbortSignal;
  job: Job;
  /** The worker's lock token for this job, for moving it (e.g. back to delayed). */
  token: string | undefined;
}

/**
 * One queue's processor. `Services` names the few parts of the platform it
 * uses (a `Pick<Platform, …>`), so its signature says what it depends on.
 */
export interface Processor<D extends QueueDefinition = QueueDefinition, Services = Platform> {
  definition: D;
  process(payload: PayloadOf<D>, context: ProcessorContext<Services>): Promise<unknown>;
  /**
   * How many attempts in all a failure like this one may use, when fewer
   * than the job's `attempts` (which only the failures worth the whole
   * schedule get). 1 fails the job at once.
   */
  attemptsFor?(error: Error): number;
  /** Called once when the job will not be tried again (unrecoverable, or out of attempts). */
  onFinalFailure?(payload: PayloadOf<D>, error: Error, context: ProcessorContext<Services>): Promise<void>;
  /** Worker settings the queue needs, such as a custom backoff strategy. */
  workerSettings?(services: Services): WorkerOptions['settings'];
  /** Work the queue needs beside its jobs while its worker runs (e.g. a periodic sweep); returns how to stop it. */
  background?(services: Services): () => Promise<void>;
  /**
   * For a queue that holds while its tenant is suspended: the processor
   * reads the tenant's status with its own data and holds the job itself
   * (holdWhileSuspended), so the runtime does not look it up before every job.
   */
  checksSuspension?: boolean;
}

export function defineProcessor<D extends QueueDefinition, Services extends Partial<Platform>>(processor: Processor<D, Services>): Processor<D, Services> {
  return processor;
}
