/**
 * What the clients of model providers over HTTP (embeddings, reranking,
 * answers) share: what they say when a call fails — where it went and what
 * came back, never the key — and when and how often they try again.
 */

const EXCERPT_CHARS = 200;

/** The endpoint without credentials or query string, for messages. */
export function endpointLabel(url: string): string {
  const endpoint = new URL(url);
  return `${endpoint.origin}${endpoint.pathname}`;
}

/** The start of a response body on one line, with the API key cut out: a provider echoing the request back must not leak it into logs. */
export function bodyExcerpt(body: string, apiKey?: string): string {
  let text = body.replace(/\s+/g, ' ').trim();
  if (apiKey) text = text.split(apiKey).join('[redacted]');
  return text.length > EXCERPT_CHARS ? `${text.slice(0, EXCERPT_CHARS)}…` : text;
}

export function describeNetworkError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // undici reports "fetch failed" and puts the useful part (ECONNREFUSED, ...) in the cause.
  const cause = error.cause as { code?: unknown; message?: unknown } | undefined;
  const detail = typeof cause?.code === 'string' ? cause.code : typeof cause?.message === 'string' ? cause.message : '';
  return detail ? `${error.message} (${detail})` : error.message;
}

/** Base of the exponential backoff between retries. */
export const DEFAULT_RETRY_BASE_MS = 500;
const RETRY_CAP_MS = 10_000;
const RETRY_AFTER_CAP_MS = 30_000;

/**
 * Answers that say "not now" rather than "never": a timeout, rate limiting,
 * a server or gateway failing. Only these are retried (and, for embeddings,
 * by the indexing queue for over an hour); any other 4xx fails at once.
 */
export function transientStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** Exponential with jitter, so workers that failed together do not retry in lockstep. */
export function backoffMs(baseMs: number, retry: number): number {
  const ceiling = Math.min(RETRY_CAP_MS, baseMs * 2 ** retry);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Delay requested by a Retry-After header (seconds or HTTP-date), capped; undefined when absent or unparseable. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.min(RETRY_AFTER_CAP_MS, Number(trimmed) * 1000);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.min(RETRY_AFTER_CAP_MS, Math.max(0, date - now));
}

export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
