/** Retry-After below this is raised to it: a receiver cannot make us spin. */
const MIN_RETRY_AFTER_MS = 1_000;

/**
 * The wait before the next attempt after `attemptsMade` failed ones: the
 * schedule's entry with ±20% jitter (so receivers recovering from an outage
 * are not hit by every retry at once), or the receiver's Retry-After,
 * bounded to [1 s, `retryAfterMaxMs`].
 */
export function nextAttemptDelayMs(
  scheduleSeconds: readonly number[],
  attemptsMade: number,
  retryAfterMs: number | null,
  retryAfterMaxMs: number,
  random: () => number = Math.random,
): number {
  if (retryAfterMs !== null) return Math.min(Math.max(retryAfterMs, MIN_RETRY_AFTER_MS), retryAfterMaxMs);
  const seconds = scheduleSeconds[Math.min(attemptsMade, scheduleSeconds.length - 1)] ?? 0;
  return Math.round(seconds * 1000 * (0.8 + 0.4 * random()));
}
