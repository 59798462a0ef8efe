import { fetch } from 'undici';
import type { Config } from '../../config';
import { backoffMs, bodyExcerpt, DEFAULT_RETRY_BASE_MS, describeNetworkError, endpointLabel, parseRetryAfter, sleep, transientStatus } from '../providers/http';

export interface ChatMessage {
  role: 'system' | 'user';
  content: string;
}

export interface TokenUsage {
  prompt_tokens: number;
  completion_tokens: number;
}

export interface Completion {
  text: string;
  usage: TokenUsage;
}

export interface CompletionOptions {
  /** Stops the request upstream (a client that went away). */
  signal?: AbortSignal;
  /** Given: the answer is streamed, each piece handed over as it arrives. */
  onDelta?: (text: string) => void;
}

/** An OpenAI-compatible chat completions API (LLM_URL). */
export interface ChatModel {
  readonly model: string;
  complete(messages: ChatMessage[], options?: CompletionOptions): Promise<Completion>;
}

/**
 * The model could not answer. `retryAfterSeconds`: it said "not now"
 * (429, 5xx, a timeout, no connection) and kept saying it through every
 * retry; absent: it refused the request itself (a wrong model name or key).
 */
export class ChatModelError extends Error {
  constructor(
    message: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'ChatModelError';
  }
}

export interface ChatModelOptions {
  /** The API's base URL, e.g. http://localhost:11434/v1; `/chat/completions` is appended. */
  baseUrl: string;
  model: string;
  apiKey?: string;
  maxTokens: number;
  /** For one answer: every attempt, every wait between them and the whole stream. */
  timeoutMs: number;
  /** Retries after the first attempt, only before any of the answer has arrived. */
  maxRetries: number;
  retryBaseMs?: number;
}

/** The chat model LLM_URL names, null without one (POST /api/answer then answers 501). */
export function createConfiguredChatModel(
  config: Pick<Config, 'LLM_URL' | 'LLM_MODEL' | 'LLM_API_KEY' | 'ANSWER_MAX_TOKENS' | 'LLM_TIMEOUT_MS' | 'LLM_MAX_RETRIES'>,
): ChatModel | null {
  if (!config.LLM_URL) return null;
  return createChatModel({
    baseUrl: config.LLM_URL,
    model: config.LLM_MODEL!,
    apiKey: config.LLM_API_KEY,
    maxTokens: config.ANSWER_MAX_TOKENS,
    timeoutMs: config.LLM_TIMEOUT_MS,
    maxRetries: config.LLM_MAX_RETRIES,
  });
}

/** When the model said "not now" without saying until when. */
const DEFAULT_RETRY_AFTER_SECONDS = 5;

type Attempt = { ok: true; completion: Completion } | { ok: false; problem: string; retryAfterMs?: number };

/**
 * Asks for one answer at temperature 0 (the same passages give the same
 * answer, which is what makes caching it honest), streamed when the caller
 * takes deltas. Transient failures are retried with the embedder's policy
 * (exponential backoff with jitter, `Retry-After` honoured) as long as the
 * deadline allows and nothing was streamed yet. A server that reports no
 * token usage is metered by estimate: a token per four characters.
 */
export function createChatModel(o: ChatModelOptions): ChatModel {
  const url = `${o.baseUrl.replace(/\/+$/, '')}/chat/completions`;
  const where = endpointLabel(url);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (o.apiKey) headers.authorization = `Bearer ${o.apiKey}`;
  const excerpt = (body: string) => bodyExcerpt(body, o.apiKey);

  const attempt = async (messages: ChatMessage[], signal: AbortSignal, onDelta: CompletionOptions['onDelta'], deadline: AbortSignal): Promise<Attempt> => {
    const streaming = onDelta !== undefined;
    let response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { ...headers, accept: streaming ? 'text/event-stream' : 'application/json' },
        body: JSON.stringify({
          model: o.model,
          messages,
          temperature: 0,
          max_tokens: o.maxTokens,
          stream: streaming,
          ...(streaming ? { stream_options: { include_usage: true } } : {}),
        }),
        signal,
      });
    } catch (error) {
      if (deadline.aborted) return { ok: false, problem: `timed out after ${o.timeoutMs} ms` };
      if (signal.aborted) throw signal.reason;
      return { ok: false, problem: describeNetworkError(error) };
    }
    if (transientStatus(response.status)) {
      return { ok: false, problem: `HTTP ${response.status}: ${excerpt(await response.text().catch(() => ''))}`, retryAfterMs: parseRetryAfter(response.headers.get('retry-after'), Date.now()) };
    }
    if (response.status < 200 || response.status >= 300) {
      throw new ChatModelError(`The chat model at ${where} refused the request with HTTP ${response.status}: ${excerpt(await response.text().catch(() => ''))}`);
    }
    const promptChars = messages.reduce((sum, message) => sum + message.content.length, 0);
    try {
      const completion = streaming ? await readStream(response.body!, onDelta, where) : parseCompletion(await response.text(), where, excerpt);
      return { ok: true, completion: { text: completion.text, usage: completion.usage ?? estimateUsage(promptChars, completion.text) } };
    } catch (error) {
      if (error instanceof ChatModelError) throw error;
      if (deadline.aborted) throw new ChatModelError(`The chat model at ${where} did not finish within ${o.timeoutMs} ms`, DEFAULT_RETRY_AFTER_SECONDS);
      if (signal.aborted) throw signal.reason;
      throw new ChatModelError(`The chat model at ${where} broke off its answer: ${describeNetworkError(error)}`, DEFAULT_RETRY_AFTER_SECONDS);
    }
  };

  return {
    model: o.model,
    async complete(messages, options = {}) {
      const deadline = AbortSignal.timeout(o.timeoutMs);
      const signal = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
      const ends = Date.now() + o.timeoutMs;
      for (let retry = 0; ; retry++) {
        const result = await attempt(messages, signal, options.onDelta, deadline);
        if (result.ok) return result.completion;
        const wait = result.retryAfterMs ?? backoffMs(o.retryBaseMs ?? DEFAULT_RETRY_BASE_MS, retry);
        if (retry >= o.maxRetries || Date.now() + wait >= ends) {
          const retryAfterSeconds = Math.max(1, Math.ceil((result.retryAfterMs ?? DEFAULT_RETRY_AFTER_SECONDS * 1000) / 1000));
          throw new ChatModelError(`The chat model at ${where} failed after ${retry + 1} attempt${retry === 0 ? '' : 's'}: ${result.problem}`, retryAfterSeconds);
        }
        await sleep(wait, signal).catch((reason: unknown) => {
          if (deadline.aborted) throw new ChatModelError(`The chat model at ${where} did not answer within ${o.timeoutMs} ms: ${result.problem}`, DEFAULT_RETRY_AFTER_SECONDS);
          throw reason;
        });
      }
    },
  };
}

function estimateUsage(promptChars: number, text: string): TokenUsage {
  return { prompt_tokens: Math.ceil(promptChars / 4), completion_tokens: Math.ceil(text.length / 4) };
}

function readUsage(value: unknown): TokenUsage | null {
  const usage = value as { prompt_tokens?: unknown; completion_tokens?: unknown } | null | undefined;
  if (typeof usage?.prompt_tokens !== 'number' || typeof usage.completion_tokens !== 'number') return null;
  return { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens };
}

function parseCompletion(body: string, where: string, excerpt: (body: string) => string): { text: string; usage: TokenUsage | null } {
  let payload: { choices?: Array<{ message?: { content?: unknown } }>; usage?: unknown };
  try {
    payload = JSON.parse(body);
  } catch {
    throw new ChatModelError(`The chat model at ${where} answered something that is not JSON: ${excerpt(body)}`);
  }
  const content = payload?.choices?.[0]?.message?.content;
  if (typeof content !== 'string') throw new ChatModelError(`The chat model at ${where} answered no choices[0].message.content: ${excerpt(body)}`);
  return { text: content, usage: readUsage(payload.usage) };
}

/**
 * Reads an OpenAI-style stream of Server-Sent Events: `data: {chunk}` lines
 * whose choices carry content deltas, a last chunk with `usage` (asked for
 * with stream_options.include_usage), then `data: [DONE]`.
 */
async function readStream(body: AsyncIterable<Uint8Array>, onDelta: (text: string) => void, where: string): Promise<{ text: string; usage: TokenUsage | null }> {
  const decoder = new TextDecoder();
  let buffered = '';
  let text = '';
  let usage: TokenUsage | null = null;
  let done = false;
  const line = (raw: string) => {
    if (!raw.startsWith('data:')) return;
    const data = raw.slice(5).trim();
    if (data === '[DONE]') {
      done = true;
      return;
    }
    let chunk: { choices?: Array<{ delta?: { content?: unknown } }>; usage?: unknown; error?: { message?: unknown } };
    try {
      chunk = JSON.parse(data);
    } catch {
      throw new ChatModelError(`The chat model at ${where} streamed a chunk that is not JSON`, DEFAULT_RETRY_AFTER_SECONDS);
    }
    if (chunk.error) throw new ChatModelError(`The chat model at ${where} failed while answering: ${String(chunk.error.message ?? 'unknown error')}`, DEFAULT_RETRY_AFTER_SECONDS);
    const piece = chunk.choices?.[0]?.delta?.content;
    if (typeof piece === 'string' && piece.length > 0) {
      text += piece;
      onDelta(piece);
    }
    usage = readUsage(chunk.usage) ?? usage;
  };
  for await (const bytes of body) {
    buffered += decoder.decode(bytes, { stream: true });
    let end: number;
    while ((end = buffered.indexOf('\n')) >= 0) {
      line(buffered.slice(0, end).replace(/\r$/, ''));
      buffered = buffered.slice(end + 1);
    }
    if (done) break;
  }
  if (!done) line(buffered.trim());
  if (!done) throw new ChatModelError(`The chat model at ${where} ended its stream without [DONE]`, DEFAULT_RETRY_AFTER_SECONDS);
  return { text, usage };
}
