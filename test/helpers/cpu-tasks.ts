import { threadId } from 'node:worker_threads';
import { cpuTask } from '../../src/domain/indexing/cpu-task';

/**
 * A thread entry for CpuPool tests: tasks that hold their thread for as long
 * as asked, the way a crafted document would, without depending on how fast
 * the real chunker is.
 */

/** Keeps the thread busy for `ms` without yielding (a runaway loop or regular expression); returns the thread's id. */
export const spin = cpuTask((ms: number) => {
  const until = Date.now() + ms;
  while (Date.now() < until);
  return threadId;
});

export const fail = cpuTask((message: string): never => {
  throw new RangeError(message);
});
