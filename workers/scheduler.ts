import cron, { type ScheduledTask } from 'node-cron';
import { analyticsQueue, reconcileQueue, retentionQueue, usageQueue } from '../queues';
import type { Platform } from '../src/platform';

export interface Schedule {
  name: string;
  expression(platform: Platform): string;
  /** Enqueues the tick's job; the tick is part of its id, so replicas agree on it. */
  enqueue(platform: Platform, tick: string): Promise<string>;
}

export const SCHEDULES: readonly Schedule[] = [
  {
    name: 'reconcile',
    expression: (platform) => platform.config.SCHEDULE_RECONCILE,
    enqueue: (platform, tick) => platform.queues.enqueue(reconcileQueue, { tick }),
  },
  {
    name: 'analytics',
    expression: (platform) => platform.config.SCHEDULE_ANALYTICS,
    enqueue: (platform, tick) => platform.queues.enqueue(analyticsQueue, { tick }),
  },
  {
    name: 'retention',
    expression: (platform) => platform.config.SCHEDULE_RETENTION,
    enqueue: (platform, tick) => platform.queues.enqueue(retentionQueue, { tick }),
  },
  {
    name: 'usage',
    expression: (platform) => platform.config.SCHEDULE_USAGE,
    enqueue: (platform, tick) => platform.queues.enqueue(usageQueue, { kind: 'rollup', tick }),
  },
  {
    name: 'usage-reconcile',
    expression: (platform) => platform.config.SCHEDULE_USAGE_RECONCILE,
    enqueue: (platform, tick) => platform.queues.enqueue(usageQueue, { kind: 'reconcile', tick }),
  },
];

/** The scheduled time of a tick, to the second, the same on every replica. */
export function tickOf(date: Date): string {
  return new Date(Math.floor(date.getTime() / 1000) * 1000).toISOString();
}

/**
 * Fires each schedule with node-cron. Any number of replicas may run: they
 * derive the same job id from the same tick, and BullMQ ignores an add
 * whose id exists.
 */
export class Scheduler {
  private readonly tasks: ScheduledTask[] = [];

  constructor(private readonly platform: Platform) {}

  start(): void {
    const { logger } = this.platform;
    for (const schedule of SCHEDULES) {
      const expression = schedule.expression(this.platform);
      const task = cron.schedule(
        expression,
        async (context) => {
          const tick = tickOf(context.date);
          try {
            const jobId = await schedule.enqueue(this.platform, tick);
            logger.debug({ schedule: schedule.name, tick, job_id: jobId }, 'scheduled job enqueued');
          } catch (error) {
            logger.warn({ err: error, schedule: schedule.name, tick }, 'could not enqueue a scheduled job');
          }
        },
        { name: `ragworks-${schedule.name}`, noOverlap: true },
      );
      this.tasks.push(task);
      logger.info({ schedule: schedule.name, expression }, 'schedule started');
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.tasks.map((task) => task.destroy()));
    this.tasks.length = 0;
  }
}
