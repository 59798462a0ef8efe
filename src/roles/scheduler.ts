import { Scheduler } from '../../workers/scheduler';
import type { Platform } from '../platform';
import type { Stop } from './serve';

/** The scheduler role: the cron ticks that enqueue the periodic jobs. */
export function startScheduler(platform: Platform): Stop {
  const scheduler = new Scheduler(platform);
  scheduler.start();
  return () => scheduler.stop();
}
