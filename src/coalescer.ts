/**
 * Runs of some work per key, shared by the callers that ask at about the
 * same time. A caller has just changed something the work must see (it
 * committed a write, say), so it needs a run that begins after it asked: it
 * joins the next run not yet begun, which starts as soon as the run in
 * flight for its key (if any) has ended. At most one run per key is in
 * flight and one waits; under load, everyone who asked meanwhile shares
 * the waiting one, and a failed run fails each of them.
 */
export class Coalescer<Key> {
  private readonly inFlight = new Map<Key, Promise<unknown>>();
  private readonly waiting = new Map<Key, Promise<void>>();

  constructor(private readonly work: (key: Key) => Promise<unknown>) {}

  after(key: Key): Promise<void> {
    const waiting = this.waiting.get(key);
    if (waiting) return waiting;
    const previous = this.inFlight.get(key) ?? Promise.resolve();
    const run = previous
      .catch(() => undefined)
      .then(() => {
        // Begun: whoever asks from now on needs the run after this one.
        this.waiting.delete(key);
        const running = this.work(key);
        this.inFlight.set(key, running);
        return running.finally(() => {
          if (this.inFlight.get(key) === running) this.inFlight.delete(key);
        });
      })
      .then(() => undefined);
    this.waiting.set(key, run);
    return run;
  }
}
