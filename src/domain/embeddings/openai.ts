import { fetch } from 'undici';
import { backoffMs, bodyExcerpt, DEFAULT_RETRY_BASE_MS, describeNetworkError, endpointLabel, parseRetryAfter, sleep, transientStatus } from '../providers/http';
import { EmbeddingError, type Embedder } from './embedder';

export interface OpenAiEmbedderOptions {
  /** Full endpoint URL, e.g. http://localhost:11434/v1/embeddings. */
  url: string;
  model: string;
  apiKey?: string;
  /** Every returned vector must have exactly this length. */
  dimensions: number;
  batchSize: number;
  /** Retries after the first attempt, per batch. */
  maxRetries: number;
  /** Per attempt, including reading the response body. */
  timeoutMs: number;
  /** Base of the exponential backoff between retries; defaults to 500 ms. */
  retryBaseMs?: number;
}


type Attempt = { ok: true; vectors: number[][] } | { ok: false; problem: string; retryAfterMs?: number; cause?: unknown };

/**
 * Embedder for any OpenAI-compatible /embeddings endpoint (OpenAI, Ollama,
 * vLLM, LiteLLM, ...). Batches are sent one after another so a large document
 * does not flood a local model server.
 */
export function createOpenAiEmbedder(o: OpenAiEmbedderOptions): Embedder {
  for (const [key, min] of [['dimensions', 1], ['batchSize', 1], ['maxRetries', 0], ['timeoutMs', 1]] as const) {
    if (!Number.isInteger(o[key]) || o[key] < min) throw new RangeError(`${key} must be an integer >= ${min}`);
  }
  const where = endpointLabel(o.url);
  const retryBaseMs = o.retryBaseMs ?? DEFAULT_RETRY_BASE_MS;
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
  if (o.apiKey) headers.authorization = `Bearer ${o.apiKey}`;

  const excerpt = (body: string): string => bodyExcerpt(body, o.apiKey);

  const parse = (body: string, count: number): number[][] => {
    let payload: unknown;
    try {
      payload = JSON.parse(body);
    } catch {
      throw new EmbeddingError(`Embedding endpoint ${where} returned a response that is not JSON: ${excerpt(body)}`, false);
    }
    const data = (payload as { data?: unknown } | null)?.data;
    if (!Array.isArray(data)) {
      throw new EmbeddingError(`Embedding endpoint ${where} returned no "data" array: ${excerpt(body)}`, false);
    }
    if (data.length !== count) {
      throw new EmbeddingError(`Embedding endpoint ${where} returned ${data.length} embeddings for ${count} inputs`, false);
    }
    const vectors = new Array<number[] | undefined>(count).fill(undefined);
    data.forEach((item: unknown, position) => {
      const { index = position, embedding } = (item ?? {}) as { index?: unknown; embedding?: unknown };
      if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= count || vectors[index] !== undefined) {
        throw new EmbeddingError(`Embedding endpoint ${where} returned an invalid or duplicate index ${JSON.stringify(index)}`, false);
      }
      if (!Array.isArray(embedding)) {
        throw new EmbeddingError(`Embedding endpoint ${where} returned an item without an "embedding" array`, false);
      }
      if (embedding.length !== o.dimensions) {
        throw new EmbeddingError(
          `Embedding model "${o.model}" returned vectors of ${embedding.length} dimensions, expected ${o.dimensions}; ` +
            'the configured dimensions do not match the model',
          false,
        );
      }
      if (!embedding.every((v) => typeof v === 'number' && Number.isFinite(v))) {
        throw new EmbeddingError(`Embedding endpoint ${where} returned a vector with non-numeric values`, false);
      }
      vectors[index] = embedding as number[];
    });
    return vectors as number[][];
  };

  const attempt = async (batch: string[], signal: AbortSignal | undefined): Promise<Attempt> => {
    const timeout = AbortSignal.timeout(o.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    let status: number;
    let retryAfter: string | null;
    let body: string;
    try {
      const response = await fetch(o.url, {
        method: 'POST',
        headers,
        body: JSON.stringify({ model: o.model, input: batch }),
        signal: combined,
      });
      status = response.status;
      retryAfter = response.headers.get('retry-after');
      body = await response.text();
    } catch (error) {
      // The caller's cancellation is not a provider failure: stop, do not retry.
      if (signal?.aborted) throw signal.reason;
      const problem = timeout.aborted ? `timed out after ${o.timeoutMs} ms` : describeNetworkError(error);
      return { ok: false, problem, cause: error };
    }
    if (transientStatus(status)) {
      return { ok: false, problem: `HTTP ${status}: ${excerpt(body)}`, retryAfterMs: parseRetryAfter(retryAfter, Date.now()) };
    }
    if (status < 200 || status >= 300) {
      throw new EmbeddingError(`Embedding endpoint ${where} rejected the request with HTTP ${status}: ${excerpt(body)}`, false);
    }
    return { ok: true, vectors: parse(body, batch.length) };
  };

  const embedBatch = async (batch: string[], signal: AbortSignal | undefined): Promise<number[][]> => {
    for (let retry = 0; ; retry++) {
      signal?.throwIfAborted();
      const result = await attempt(batch, signal);
      if (result.ok) return result.vectors;
      if (retry >= o.maxRetries) {
        throw new EmbeddingError(
          `Embedding endpoint ${where} failed after ${retry + 1} attempt${retry === 0 ? '' : 's'}: ${result.problem}`,
          true,
          { cause: result.cause },
        );
      }
      await sleep(result.retryAfterMs ?? backoffMs(retryBaseMs, retry), signal);
    }
  };

  return {
    model: o.model,
    dimensions: o.dimensions,
    async embed(texts: string[], signal?: AbortSignal): Promise<number[][]> {
      const vectors: number[][] = [];
      for (let start = 0; start < texts.length; start += o.batchSize) {
        vectors.push(...(await embedBatch(texts.slice(start, start + o.batchSize), signal)));
      }
      return vectors;
    },
  };
}
