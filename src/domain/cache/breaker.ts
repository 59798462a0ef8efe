export type BreakerState = 'closed' | 'open' | 'half-open';

/**
 * Stops calling a dependency that keeps failing: after `threshold` failures
 * in a row it opens for `openMs`, during which calls are skipped at once;
 * then one trial call decides whether it closes again.
 */
export class CircuitBreaker {
  private failures = 0;
  private openedAt = 0;
  private trialInFlight = false;
  opened = 0;

  constructor(
    private readonly threshold: number,
    private readonly openMs: number,
    private readonly timeoutMs: number,
  ) {}

  get state(): BreakerState {
    if (this.failures < this.threshold) return 'closed';
    return Date.now() - this.openedAt >= this.openMs ? 'half-open' : 'open';
  }

  /** Runs `call` within the timeout, or not at all while open; `undefined` when skipped or failed. */
  async run<T>(call: () => Promise<T>): Promise<T | undefined> {
    const state = this.state;
    if (state === 'open' || (state === 'half-open' && this.trialInFlight)) return undefined;
    if (state === 'half-open') this.trialInFlight = true;
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await Promise.race([
        call(),
        new Promise<never>((_, reject) => {
          // Timers run before I/O in each turn of the event loop: after a stall of this process (not of
          // the dependency) the answer may be waiting already. One more I/O turn lets it win the race.
          timer = setTimeout(() => setImmediate(() => reject(new Error(`no answer within ${this.timeoutMs} ms`))), this.timeoutMs);
        }),
      ]);
      this.succeeded();
      return result;
    } catch {
      this.failed(state);
      return undefined;
    } finally {
      clearTimeout(timer);
      if (state === 'half-open') this.trialInFlight = false;
    }
  }

  /** Counts a call made elsewhere (in a script shared with other work) that answered. */
  succeeded(): void {
    this.failures = 0;
  }

  /** Counts a call made elsewhere that did not answer, or was not made because the dependency is known down. */
  failed(state = this.state): void {
    this.failures += 1;
    if (this.failures >= this.threshold) {
      if (this.failures === this.threshold || state === 'half-open') this.opened += 1;
      this.openedAt = Date.now();
    }
  }
}
