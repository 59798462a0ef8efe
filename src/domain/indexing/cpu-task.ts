import type { MessagePort } from 'node:worker_threads';

/** What the pool posts to a thread: the input, and a port on which the thread says it has begun. */
export interface CpuTask<Input> {
  input: Input;
  started: MessagePort;
}

/**
 * Makes a synchronous function a task of a CPU pool's thread entry. It says
 * when it starts, so the pool's deadline counts the time the work runs, not
 * the time it waited for a free thread.
 */
export function cpuTask<Input, Output>(work: (input: Input) => Output): (task: CpuTask<Input>) => Output {
  return ({ input, started }) => {
    started.postMessage(null);
    started.close();
    return work(input);
  };
}
