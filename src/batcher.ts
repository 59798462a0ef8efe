/** One item's outcome in a batch: a value, or the error that item met. */
export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

interface Waiting<I, O> {
  item: I;
  resolve(value: O): void;
  reject(error: unknown): void;
}

interface Lane<I, O> {
  waiting: Array<Waiting<I, O>>;
  running: boolean;
  scheduled: boolean;
}

/**
 * Gathers the calls that concurrent jobs make into batches, one lane per
 * key (a tenant): a call that finds its lane idle starts a batch once the
 * current I/O callbacks have run (so calls arriving together go together);
 * calls that arrive while a batch runs wait for the next one. So a lone
 * call waits for nothing, and under load one statement serves many calls —
 * group commit. Each caller's promise settles only when its own item has
 * (for a write: after its commit). Batches of a lane run one after another,
 * in arrival order.
 */
export class Batcher<I, O> {
  private readonly lanes = new Map<string, Lane<I, O>>();

  constructor(
    private readonly run: (key: string, items: I[]) => Promise<Array<Settled<O>>>,
    private readonly maxItems = 200,
  ) {}

  submit(key: string, item: I): Promise<O> {
    let lane = this.lanes.get(key);
    if (!lane) {
      lane = { waiting: [], running: false, scheduled: false };
      this.lanes.set(key, lane);
    }
    const promise = new Promise<O>((resolve, reject) => lane.waiting.push({ item, resolve, reject }));
    if (!lane.running && !lane.scheduled) {
      lane.scheduled = true;
      setImmediate(() => void this.drain(key, lane));
    }
    return promise;
  }

  private async drain(key: string, lane: Lane<I, O>): Promise<void> {
    lane.scheduled = false;
    lane.running = true;
    while (lane.waiting.length > 0) {
      const batch = lane.waiting.splice(0, this.maxItems);
      let outcomes: Array<Settled<O>>;
      try {
        outcomes = await this.run(
          key,
          batch.map((entry) => entry.item),
        );
      } catch (error) {
        outcomes = batch.map(() => ({ ok: false, error }));
      }
      batch.forEach((entry, index) => {
        const outcome = outcomes[index] ?? { ok: false, error: new Error('the batch returned no outcome for this item') };
        if (outcome.ok) entry.resolve(outcome.value);
        else entry.reject(outcome.error);
      });
    }
    lane.running = false;
    this.lanes.delete(key);
  }
}

/** Runs `work` and settles every item of a batch with its outcome. */
export async function settleAll<T>(count: number, work: () => Promise<T[]>): Promise<Array<Settled<T>>> {
  try {
    const values = await work();
    return values.map((value) => ({ ok: true, value }));
  } catch (error) {
    return Array.from({ length: count }, () => ({ ok: false, error }));
  }
}
