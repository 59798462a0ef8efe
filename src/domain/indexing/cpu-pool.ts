import os from 'node:os';
import path from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { CpuTask } from './cpu-task';

/** A document whose CPU-bound steps ran past their deadline: trying again would only burn the same time. */
export class DocumentTooComplexError extends Error {
  override readonly name = 'DocumentTooComplexError';

  constructor(readonly deadlineMs: number) {
    super(`document_too_complex: processing the document took longer than ${deadlineMs} ms; it was stopped and will not be retried`);
  }
}

type Task = (task: CpuTask<never>) => unknown;
/** The names of an entry module's tasks (functions made with cpuTask). */
type TaskName<Entry> = { [Name in keyof Entry]: Entry[Name] extends Task ? Name : never }[keyof Entry] & string;
type InputOf<T> = T extends (task: CpuTask<infer Input>) => unknown ? Input : never;
type OutputOf<T> = T extends (...args: never[]) => infer Output ? Awaited<Output> : never;

export interface CpuPoolOptions {
  /** Absolute path of the module the threads load; its exports are the tasks. */
  entry: string;
  /** Threads kept running; undefined: one per core. */
  threads?: number;
  /** Longest a task may run once a thread has started it. */
  deadlineMs: number;
  /** An error from a thread outside any task (one that cannot start, say). */
  onError(error: Error): void;
}

/**
 * A pool of worker threads for CPU-bound steps, so that the event loop stays
 * free to renew job locks however heavy a document is. Threads start with the
 * first task and live until close(). A task past its deadline is aborted,
 * which terminates its thread (nothing else can stop a runaway synchronous
 * loop or regular expression); the pool starts a fresh one and the tasks of
 * other threads run on undisturbed.
 */
export class CpuPool<Entry> {
  private pool: Piscina | undefined;
  private closed = false;

  constructor(private readonly options: CpuPoolOptions) {}

  /**
   * Runs a task of the entry module. Rejects with DocumentTooComplexError
   * past the deadline, or with the signal's AbortError when it aborts.
   */
  async run<Name extends TaskName<Entry>>(name: Name, input: InputOf<Entry[Name]>, signal?: AbortSignal): Promise<OutputOf<Entry[Name]>> {
    const deadline = new AbortController();
    const { port1: startedHere, port2: startedThere } = new MessageChannel();
    let timer: NodeJS.Timeout | undefined;
    startedHere.once('message', () => {
      timer = setTimeout(() => deadline.abort(), this.options.deadlineMs);
    });
    try {
      const task: CpuTask<typeof input> = { input, started: startedThere };
      return await this.threads().run(task, {
        filename: this.options.entry,
        name,
        signal: signal ? AbortSignal.any([signal, deadline.signal]) : deadline.signal,
        transferList: [startedThere],
      });
    } catch (error) {
      if (deadline.signal.aborted && !signal?.aborted) throw new DocumentTooComplexError(this.options.deadlineMs);
      throw error;
    } finally {
      clearTimeout(timer);
      startedHere.close();
    }
  }

  /**
   * Starts the threads now rather than with the first task, and has each run
   * `name` once on `input` (a task that costs next to nothing), so that
   * each has loaded the entry: the first real tasks do not wait for it.
   * Never rejects.
   */
  async warm<Name extends TaskName<Entry>>(name: Name, input: InputOf<Entry[Name]>): Promise<void> {
    const threads = this.options.threads ?? os.availableParallelism();
    await Promise.all(Array.from({ length: threads }, () => this.run(name, input))).catch(() => undefined);
  }

  /** Stops every thread; tasks still running are rejected (their jobs were handed back by then). */
  async close(): Promise<void> {
    this.closed = true;
    await this.pool?.destroy();
  }

  private threads(): Piscina {
    if (this.closed) throw new Error('The CPU pool is closed');
    if (!this.pool) {
      const threads = this.options.threads ?? os.availableParallelism();
      // No default filename: piscina would load it for a `default` export, which an entry of named tasks lacks.
      this.pool = new Piscina({ minThreads: threads, maxThreads: threads, execArgv: threadExecArgv(this.options.entry) });
      this.pool.on('error', this.options.onError);
    }
    return this.pool;
  }
}

/**
 * Compiled JavaScript needs nothing. A .ts entry (the code run from source,
 * by `node --import tsx` or jest) needs tsx in each thread: its require hook,
 * since on Node 20 the loader hooks that `--import tsx` registers do not
 * reach worker threads, and jest compiles only in its own module registry.
 */
function threadExecArgv(entry: string): string[] | undefined {
  if (path.extname(entry) !== '.ts') return undefined;
  return [...process.execArgv, '--require', require.resolve('tsx/cjs')];
}
