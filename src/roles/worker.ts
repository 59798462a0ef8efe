import { QUEUE_NAMES } from '../../queues';
import { WorkerRuntime } from '../../workers/runtime';
import { selectedQueues } from '../config';
import type { Logger } from '../logger';
import type { Platform } from '../platform';
import type { Stop } from './serve';

/** The worker role: a BullMQ worker per selected queue; stopping drains them. */
export function startWorkers(platform: Platform, logger: Logger): Stop {
  const { config } = platform;
  const runtime = new WorkerRuntime(platform, selectedQueues(config, QUEUE_NAMES));
  runtime.start();
  return async () => {
    const report = await runtime.drain(config.SHUTDOWN_TIMEOUT_MS);
    logger.info(report, `drain report: ${report.finished} finished, ${report.handedBack} handed back`);
  };
}
