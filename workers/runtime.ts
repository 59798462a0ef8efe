import { DelayedError, UnrecoverableError, WaitingError, Worker, type ConnectionOptions, type Job, type WorkerOptions } from 'bullmq';
import { concurrencyOf, DATABASE_RETRIES, QUEUE_NAMES, queuePrefix } from '../queues';
import { recordDeadLetter } from '../src/domain/dead-letters/dead-letters';
import { deadLetterMetrics, type DeadLetterMetrics } from '../src/domain/dead-letters/metrics';
import { unavailableDependency } from '../src/errors';
import type { Logger } from '../src/logger';
import type { Platform } from '../src/platform';
import { createRedisClient, redisOptions, type RedisClient } from '../src/redis';
import { inOwnTrace } from '../src/telemetry';
import { PROCESSORS } from './index';
import { holdWhileSuspended } from './suspension-hold';
import type { Processor } from './processor';

export interface DrainReport {
  finished: number;
  handedBack: number;
}

/** Why a worker aborts a job's signal at shutdown; anything else is a cancellation. */
const SHUTDOWN = 'shutdown';
/** BullMQ's reason for failing a job that stalled more than maxStalledCount times. */
const STALLED_TOO_OFTEN = /stalled more than allowable limit/i;
/** How long a job waits when the database is away before it is tried again. */
const DEPENDENCY_RETRY_MS = 5_000;

/**
 * Runs one BullMQ worker per selected queue. Stops cleanly: no new jobs,
 * active ones finish, and at the deadline the rest go back to the queue
 * at once rather than after their locks expire.
 */
export class WorkerRuntime {
  private readonly workers: Worker[] = [];
  /** On a Redis Cluster, the connection every worker shares (BullMQ builds a cluster connection only from one given to it); closed after them. */
  private cluster: RedisClient | undefined;
  private readonly backgroundStops: Array<() => Promise<void>> = [];
  private active = 0;
  private finishedWhileDraining = 0;
  /**
   * Aborted at the drain deadline: the signal every job is given. One for the
   * runtime rather than one per job (BullMQ makes one per job for a processor
   * that takes a signal), since the only cancellation is the hand-back of all.
   */
  private readonly shutdown = new AbortController();
  /** How to stop waiting for each job in flight, at the drain deadline. */
  private readonly handBacks = new Set<(reason: Error) => void>();
  private draining = false;
  private readonly onHealthChange = (name: string, up: boolean) => void this.pauseWhileDown(name, up);
  private readonly deadLetters: DeadLetterMetrics;

  /**
   * `processors` are the ones the queues are looked up in: every queue's
   * (workers/index.ts) unless given, e.g. to run a queue of one's own.
   */
  constructor(
    private readonly platform: Platform,
    private readonly queueNames: string[],
    private readonly processors: readonly Processor[] = PROCESSORS,
  ) {
    this.deadLetters = deadLetterMetrics(platform.metrics.registry, platform.db.knex, platform.logger, QUEUE_NAMES);
  }

  start(): void {
    const { config, logger } = this.platform;
    for (const name of this.queueNames) {
      const processor = this.processors.find((candidate) => candidate.definition.name === name);
      if (!processor) throw new Error(`No processor for queue "${name}"`);
      const worker = new QueueWorker(name, (job, token) => this.run(processor, job, token), processor.definition.ownTrace, {
        connection: config.REDIS_CLUSTER_NODES ? (this.cluster ??= createRedisClient(config, 'worker')) : (redisOptions(config, 'worker') as ConnectionOptions),
        prefix: queuePrefix(config.QUEUE_PREFIX, name),
        concurrency: concurrencyOf(processor.definition, config),
        lockDuration: config.WORKER_LOCK_DURATION_MS,
        stalledInterval: config.WORKER_STALLED_INTERVAL_MS,
        settings: processor.workerSettings?.(this.platform),
        telemetry: this.platform.queues.telemetry,
        autorun: true,
      });
      worker.on('error', (error) => logger.warn({ err: error, queue: name }, 'worker error'));
      worker.on('failed', (job, error) => {
        logger.warn({ queue: name, job_id: job?.id, attempts: job?.attemptsMade, err: error }, 'job attempt failed');
        // A job that kept killing its workers is failed by the stalled-job check, not by run(): record it here.
        if (job && STALLED_TOO_OFTEN.test(error.message)) void this.recordStalledFailure(processor, job, error);
      });
      this.workers.push(worker);
      if (processor.background) this.backgroundStops.push(processor.background(this.platform));
    }
    this.platform.health.on('change', this.onHealthChange);
    logger.info({ queues: this.queueNames }, 'workers started');
  }

  /** True while every worker is paused, e.g. because the database is away. */
  isPaused(): boolean {
    return this.workers.length > 0 && this.workers.every((worker) => worker.isPaused());
  }

  async waitUntilReady(): Promise<void> {
    await Promise.all(this.workers.map((worker) => worker.waitUntilReady()));
  }

  private async run(processor: Processor, job: Job, token: string | undefined): Promise<unknown> {
    const { platform } = this;
    const queue = processor.definition.name;
    const parsed = processor.definition.payload.safeParse(job.data);
    if (!parsed.success) {
      // A job that can never run is a failure like any other: count it, or the failure metric under-reports.
      platform.metrics.jobFailures.inc({ queue, final: 'true' });
      const invalid = new UnrecoverableError(`Invalid payload: ${parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ')}`);
      await this.recordDeadLetter(queue, job, invalid, job.attemptsMade + 1, platform.logger.child({ queue, job_id: job.id }));
      throw invalid;
    }
    const abort = this.shutdown.signal;
    const tenantId = (parsed.data as { tenantId?: string }).tenantId;
    let logger: Logger | undefined;
    const context = {
      services: platform,
      // Made on first use: most jobs log nothing, and a child logger costs a serialisation of its bindings.
      get logger(): Logger {
        logger ??= platform.logger.child({ queue, job_id: job.id, ...(tenantId ? { tenant_id: tenantId } : {}) });
        return logger;
      },
      signal: abort,
      job,
      token,
    };
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    this.active += 1;
    try {
      if (
        processor.definition.holdsWhileSuspended &&
        !processor.checksSuspension &&
        tenantId &&
        token &&
        (await platform.suspension.isSuspended(platform.db.knex, tenantId))
      ) {
        await holdWhileSuspended(platform, queue, job, token, tenantId);
      }
      const result = await this.untilHandedBack(processor.process(parsed.data, context));
      const duration = seconds();
      platform.metrics.jobDuration.observe({ queue, outcome: 'completed' }, duration);
      // Checked first: the job's logger is made on first use, and costs what a job that logs nothing should not pay.
      if (platform.logger.isLevelEnabled('debug')) context.logger.debug({ duration_ms: Math.round(duration * 1000) }, 'job completed');
      return result;
    } catch (error) {
      // A processor that moved its own job (to delayed or waiting) has not failed.
      if (error instanceof DelayedError || error instanceof WaitingError) throw error;
      if (abort.aborted && abort.reason === SHUTDOWN && token) {
        await job.moveToWait(token);
        throw new WaitingError();
      }
      if (token && unavailableDependency(error) === 'database' && (await this.databaseIsDown(job, context.logger))) {
        // Not the job's fault: try again later without spending an attempt.
        await job.updateData({ ...job.data, [DATABASE_RETRIES]: databaseRetries(job) + 1 });
        await job.moveToDelayed(Date.now() + DEPENDENCY_RETRY_MS, token);
        throw new DelayedError();
      }
      const failure = error instanceof Error ? error : new Error(String(error));
      const allowed = Math.min(job.opts.attempts ?? 1, processor.attemptsFor?.(failure) ?? Number.POSITIVE_INFINITY);
      const final = failure instanceof UnrecoverableError || job.attemptsMade + 1 >= allowed;
      platform.metrics.jobFailures.inc({ queue, final: String(final) });
      platform.metrics.jobDuration.observe({ queue, outcome: 'failed' }, seconds());
      if (final && processor.onFinalFailure) {
        await processor.onFinalFailure(parsed.data, failure, context).catch((hookError) =>
          context.logger.error({ err: hookError }, 'could not record the final failure'),
        );
      }
      // BullMQ counts this attempt once the job moves to failed: +1 is the number Bull Board will show.
      if (final) {
        await this.recordDeadLetter(queue, job, failure, job.attemptsMade + 1, context.logger);
        // What was just recorded as final must be final for BullMQ too, whatever attempts the job has left.
        throw unrecoverable(failure);
      }
      throw failure;
    } finally {
      this.active -= 1;
      if (this.draining) this.finishedWhileDraining += 1;
    }
  }

  /** Settles with the work, or rejects as soon as the job is handed back at the drain deadline, whichever is first. */
  private untilHandedBack<T>(work: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.handBacks.add(reject);
      work.then(resolve, reject).finally(() => this.handBacks.delete(reject));
    });
  }

  /**
   * Whether a failure that reads like a lost connection means the database
   * is down, rather than that the job's own statement lost it (a statement
   * can kill its own backend; re-delaying that for free would loop forever).
   * An immediate ping decides; and past WORKER_DATABASE_RETRIES free
   * re-delays, even a real outage spends the job's attempts.
   */
  private async databaseIsDown(job: Job, logger: Logger): Promise<boolean> {
    if (databaseRetries(job) >= this.platform.config.WORKER_DATABASE_RETRIES) {
      logger.warn({ database_retries: databaseRetries(job) }, 'the job lost its database connection again; this time it spends an attempt');
      return false;
    }
    const { database } = await this.platform.health.check();
    return !database;
  }

  private async recordStalledFailure(processor: Processor, job: Job, error: Error): Promise<void> {
    const queue = processor.definition.name;
    const logger = this.platform.logger.child({ queue, job_id: job.id });
    this.platform.metrics.jobFailures.inc({ queue, final: 'true' });
    const parsed = processor.definition.payload.safeParse(job.data);
    if (parsed.success && processor.onFinalFailure) {
      await processor
        .onFinalFailure(parsed.data, error, { services: this.platform, logger, signal: new AbortController().signal, job, token: undefined })
        .catch((hookError) => logger.error({ err: hookError }, 'could not record the final failure'));
    }
    // The job has already moved to failed here, so attemptsMade already counts the last attempt.
    await this.recordDeadLetter(queue, job, error, job.attemptsMade, logger);
  }

  /** Keeps a job that failed for good as a dead letter; never throws, since the job's own failure matters more. */
  private async recordDeadLetter(queue: string, job: Job, error: Error, attempts: number, logger: Logger): Promise<void> {
    try {
      const outcome = await recordDeadLetter(this.platform.db.knex, {
        queue,
        jobId: String(job.id),
        jobName: job.name,
        data: job.data,
        error,
        attempts,
        maxAttempts: job.opts.attempts ?? null,
      });
      if (outcome === 'recorded') this.deadLetters.recorded.inc({ queue });
    } catch (recordError) {
      logger.error({ err: recordError }, 'could not record the dead letter');
    }
  }

  private async pauseWhileDown(name: string, up: boolean): Promise<void> {
    if (name !== 'database' || this.draining) return;
    this.platform.logger.warn({ dependency: name, up }, up ? 'database is back; workers resume' : 'database is unreachable; workers pause');
    for (const worker of this.workers) {
      if (up) worker.resume();
      else await worker.pause(true).catch(() => undefined);
    }
  }

  /**
   * Stops fetching, lets active jobs finish for up to `timeoutMs`, then
   * hands the rest back to their queues so another worker takes them now.
   */
  async drain(timeoutMs: number): Promise<DrainReport> {
    this.draining = true;
    this.platform.health.off('change', this.onHealthChange);
    // Closing first: a worker fetches no job after close() has begun, and stopping the background work awaits I/O.
    const closing = Promise.all(this.workers.map((worker) => worker.close()));
    await Promise.all(this.backgroundStops.splice(0).map((stop) => stop()));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      closing.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    let handedBack = 0;
    if (timedOut) {
      handedBack = this.active;
      this.shutdown.abort(SHUTDOWN);
      for (const handBack of this.handBacks) handBack(new Error(SHUTDOWN));
      await closing;
    }
    await this.cluster?.quit().catch(() => this.cluster?.disconnect());
    // Handed-back jobs also pass through run()'s finally, so they are in the count.
    return { finished: this.finishedWhileDraining - handedBack, handedBack };
  }
}

/**
 * A BullMQ worker that processes the runs its queue sends to a trace of their
 * own (QueueDefinition.ownTrace) in one: BullMQ starts a job's span as it
 * begins processing it, so the choice is made here, before that.
 */
class QueueWorker extends Worker {
  constructor(
    name: string,
    processor: (job: Job, token: string | undefined) => Promise<unknown>,
    private readonly ownTrace: ((job: Job) => boolean) | undefined,
    options: WorkerOptions,
  ) {
    super(name, processor, options);
  }

  override processJob(job: Job, token: string, fetchNextCallback?: () => boolean): ReturnType<Worker['processJob']> {
    if (!this.ownTrace?.(job)) return super.processJob(job, token, fetchNextCallback);
    return inOwnTrace(() => super.processJob(job, token, fetchNextCallback));
  }
}

function databaseRetries(job: Job): number {
  const count = (job.data as Record<string, unknown> | undefined)?.[DATABASE_RETRIES];
  return typeof count === 'number' ? count : 0;
}

/** The failure as an error that makes BullMQ fail the job now, keeping its message and stack. */
function unrecoverable(failure: Error): UnrecoverableError {
  if (failure instanceof UnrecoverableError) return failure;
  const stop = new UnrecoverableError(failure.message);
  stop.stack = failure.stack;
  return stop;
}
