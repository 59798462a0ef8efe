/** Retry-After below this is raised to it: a receiver cannot make us spin. */
const MIN_RETRY_AFTER_MS = 1_000;

/**
 * The wait before the next attempt after `attemptsMade` failed ones: the
 * schedule's entry with ±20% jitter (so receivers recovering from an outage
 * are not hit by every retry at once). A receiver's Retry-After, bounded to
 * [1 s, `retryAfterMaxMs`], can only lengthen that wait: one answering
 * `Retry-After: 1` to everything must not use up every attempt in seconds.
 */
export function nextAttemptDelayMs(
  scheduleSeconds: readonly number[],
  attemptsMade: number,
  retryAfterMs: number | null,
  retryAfterMaxMs: number,
  random: () => number = Math.random,
): number {
  const seconds = scheduleSeconds[Math.min(attemptsMade, scheduleSeconds.length - 1)] ?? 0;
  const scheduled = Math.round(seconds * 1000 * (0.8 + 0.4 * random()));
  if (retryAfterMs === null) return scheduled;
  return Math.max(scheduled, MIN_RETRY_AFTER_MS, Math.min(retryAfterMs, retryAfterMaxMs));
}
