import { fetch } from 'undici';
import type { Config } from '../../config';
import { bodyExcerpt, describeNetworkError, endpointLabel } from '../providers/http';

/** A cross-encoder: how well each passage answers the query, read together rather than as two vectors. */
export interface Reranker {
  readonly model: string;
  /** One score per passage, in the passages' order; higher is more relevant. Throws RerankError when the provider fails. */
  score(query: string, passages: string[], signal?: AbortSignal): Promise<number[]>;
}

export class RerankError extends Error {
  override name = 'RerankError';
}

/**
 * The two request shapes rerank servers speak. `cohere`: `{model, query,
 * documents, top_n}` answered with `{results: [{index, relevance_score}]}`
 * — Cohere, Jina, Voyage, vLLM, Infinity. `tei`: Hugging Face's Text
 * Embeddings Inference, `{query, texts}` answered with `[{index, score}]`.
 */
export const RERANK_APIS = ['cohere', 'tei'] as const;
export type RerankApi = (typeof RERANK_APIS)[number];

export interface HttpRerankerOptions {
  /** The full endpoint, e.g. `http://localhost:8080/rerank` or `https://api.cohere.com/v2/rerank`. */
  url: string;
  model: string;
  apiKey?: string;
  api: RerankApi;
  /** For the whole call, answer included: a search waits no longer for its order. */
  timeoutMs: number;
}

/**
 * A reranker over HTTP. One attempt, no retry: a search that waits for it
 * answers in its original order when it fails, which is better than late.
 */
export function createHttpReranker(o: HttpRerankerOptions): Reranker {
  const where = endpointLabel(o.url);
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
  if (o.apiKey) headers.authorization = `Bearer ${o.apiKey}`;
  const requestBody = (query: string, passages: string[]) =>
    o.api === 'tei'
      ? { query, texts: passages, truncate: true }
      : { model: o.model, query, documents: passages, top_n: passages.length, return_documents: false };

  return {
    model: o.model,
    async score(query, passages, signal) {
      if (passages.length === 0) return [];
      const timeout = AbortSignal.timeout(o.timeoutMs);
      let status: number;
      let body: string;
      try {
        const response = await fetch(o.url, {
          method: 'POST',
          headers,
          body: JSON.stringify(requestBody(query, passages)),
          signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
        });
        status = response.status;
        body = await response.text();
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        throw new RerankError(`Rerank endpoint ${where} ${timeout.aborted ? `did not answer within ${o.timeoutMs} ms` : `failed: ${describeNetworkError(error)}`}`, { cause: error });
      }
      if (status < 200 || status >= 300) throw new RerankError(`Rerank endpoint ${where} answered HTTP ${status}: ${bodyExcerpt(body, o.apiKey)}`);
      return readScores(body, passages.length, () => `Rerank endpoint ${where} answered ${bodyExcerpt(body, o.apiKey)}`);
    },
  };
}

/** Scores by passage from either answer shape; every passage must have exactly one finite score. */
function readScores(body: string, count: number, describe: () => string): number[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new RerankError(`${describe()}: not JSON`);
  }
  const items = Array.isArray(parsed) ? parsed : (parsed as { results?: unknown } | null)?.results;
  if (!Array.isArray(items)) throw new RerankError(`${describe()}: no list of results`);
  const scores: Array<number | undefined> = new Array(count).fill(undefined);
  for (const item of items as Array<{ index?: unknown; relevance_score?: unknown; score?: unknown }>) {
    const score = item?.relevance_score ?? item?.score;
    if (!Number.isInteger(item?.index) || typeof score !== 'number' || !Number.isFinite(score)) throw new RerankError(`${describe()}: a result without an index and a score`);
    const index = item.index as number;
    if (index < 0 || index >= count || scores[index] !== undefined) throw new RerankError(`${describe()}: index ${index} out of range or repeated`);
    scores[index] = score;
  }
  if (scores.some((score) => score === undefined)) throw new RerankError(`${describe()}: scores for ${items.length} of ${count} passages`);
  return scores as number[];
}

/**
 * The reranker RERANK_URL names, null without one. `counted` hears every
 * call's outcome, for metrics; the log gets one line when the reranker
 * starts failing and one when it is back, not one per search.
 */
export function createReranker(
  config: Pick<Config, 'RERANK_URL' | 'RERANK_MODEL' | 'RERANK_API_KEY' | 'RERANK_API' | 'RERANK_TIMEOUT_MS'>,
  observer: { counted: (outcome: 'reranked' | 'failed') => void; logger: { warn(fields: object, message: string): void; info(message: string): void } },
): Reranker | null {
  if (!config.RERANK_URL) return null;
  const reranker = createHttpReranker({ url: config.RERANK_URL, model: config.RERANK_MODEL!, apiKey: config.RERANK_API_KEY, api: config.RERANK_API, timeoutMs: config.RERANK_TIMEOUT_MS });
  let failing = false;
  const heard = (outcome: 'reranked' | 'failed', error?: unknown) => {
    observer.counted(outcome);
    if ((outcome === 'failed') === failing) return;
    failing = outcome === 'failed';
    if (failing) observer.logger.warn({ err: error }, 'the reranker failed; searches asking for it answer in their original order');
    else observer.logger.info('the reranker answers again');
  };
  return {
    model: reranker.model,
    async score(query, passages, signal) {
      try {
        const scores = await reranker.score(query, passages, signal);
        heard('reranked');
        return scores;
      } catch (error) {
        if (error instanceof RerankError) heard('failed', error);
        throw error;
      }
    },
  };
}
