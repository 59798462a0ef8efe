import cron, { type ScheduledTask } from 'node-cron';
import { analyticsQueue, reconcileQueue, retentionQueue, usageQueue } from '../queues';
import type { Platform } from '../src/platform';

/** What the scheduler uses of the platform. */
export type SchedulerServices = Pick<Platform, 'config' | 'logger' | 'queues'>;

export interface Schedule {
  name: string;
  expression(services: SchedulerServices): string;
  /** Enqueues the tick's job; the tick is part of its id, so replicas agree on it. */
  enqueue(services: SchedulerServices, tick: string): Promise<string>;
}

export const SCHEDULES: readonly Schedule[] = [
  {
    name: 'reconcile',
    expression: (services) => services.config.SCHEDULE_RECONCILE,
    enqueue: (services, tick) => services.queues.enqueue(reconcileQueue, { tick }),
  },
  {
    name: 'analytics',
    expression: (services) => services.config.SCHEDULE_ANALYTICS,
    enqueue: (services, tick) => services.queues.enqueue(analyticsQueue, { tick }),
  },
  {
    name: 'retention',
    expression: (services) => services.config.SCHEDULE_RETENTION,
    enqueue: (services, tick) => services.queues.enqueue(retentionQueue, { tick }),
  },
  {
    name: 'usage',
    expression: (services) => services.config.SCHEDULE_USAGE,
    enqueue: (services, tick) => services.queues.enqueue(usageQueue, { kind: 'rollup', tick }),
  },
  {
    name: 'usage-reconcile',
    expression: (services) => services.config.SCHEDULE_USAGE_RECONCILE,
    enqueue: (services, tick) => services.queues.enqueue(usageQueue, { kind: 'reconcile', tick }),
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

  constructor(private readonly services: SchedulerServices) {}

  start(): void {
    const { logger } = this.services;
    for (const schedule of SCHEDULES) {
      const expression = schedule.expression(this.services);
      const task = cron.schedule(
        expression,
        async (context) => {
          const tick = tickOf(context.date);
          try {
            const jobId = await schedule.enqueue(this.services, tick);
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
