/**
 * What the clients of model providers over HTTP (embeddings, reranking) say
 * when a call fails: where it went and what came back, never the key.
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
