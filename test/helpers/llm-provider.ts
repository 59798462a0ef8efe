import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ChatCall {
  headers: http.IncomingHttpHeaders;
  body: {
    model: string;
    messages: Array<{ role: string; content: string }>;
    stream?: boolean;
    stream_options?: { include_usage?: boolean };
    max_tokens?: number;
    temperature?: number;
  };
}

export interface FakeChatProvider {
  /** Environment that points ragworks at this provider. */
  env: Record<string, string>;
  calls: ChatCall[];
  /**
   * `ok`: answers; `down`: 503 with `Retry-After: 1`; `refuse`: 400 (a
   * wrong model); `hang`: never answers. Change it at any time.
   */
  mode: 'ok' | 'down' | 'refuse' | 'hang';
  /** Calls to answer 503 before answering again (retries), whatever the mode. */
  failNext: number;
  /** Milliseconds between streamed pieces. */
  pieceDelayMs: number;
  /** Report token usage (a server that does not is metered by estimate). */
  reportUsage: boolean;
  /** Streamed answers whose client went away before the last piece. */
  abandoned: number;
  /** What it answers to a prompt: the passage count and a citation of [1]. */
  answerFor(call: ChatCall): string;
  close(): Promise<void>;
}

/** What it reports as spent on every answer. */
export const FAKE_USAGE = { prompt_tokens: 321, completion_tokens: 54 } as const;

/**
 * A real HTTP server speaking OpenAI's chat completions on 127.0.0.1
 * (`POST /v1/chat/completions`), streamed as Server-Sent Events when asked
 * (`stream: true`): one piece per word, the usage in a last chunk when
 * `stream_options.include_usage`, then `data: [DONE]`.
 */
export async function startChatProvider(options: { model: string; apiKey: string }): Promise<FakeChatProvider> {
  const open = new Set<http.ServerResponse>();
  const provider: FakeChatProvider = {
    env: {},
    calls: [],
    mode: 'ok',
    failNext: 0,
    pieceDelayMs: 0,
    reportUsage: true,
    abandoned: 0,
    answerFor: (call) => {
      const user = call.body.messages.find((message) => message.role === 'user')?.content ?? '';
      const passages = user.split('\n').filter((line) => /^\[\d+\] \{/.test(line)).length;
      return `The documents give ${passages} passages; the first says it best [1].`;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of open) res.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  const server = http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (part: string) => (raw += part));
    req.on('end', () => {
      const call: ChatCall = { headers: req.headers, body: JSON.parse(raw) };
      provider.calls.push(call);
      open.add(res);
      res.on('close', () => open.delete(res));
      if (provider.mode === 'hang') return;
      if (provider.failNext > 0 || provider.mode === 'down') {
        if (provider.failNext > 0) provider.failNext -= 1;
        res.writeHead(503, { 'Content-Type': 'application/json', 'Retry-After': '1' }).end(JSON.stringify({ error: { message: 'the test model is overloaded' } }));
        return;
      }
      if (provider.mode === 'refuse') {
        res.writeHead(400, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: { message: `model "${call.body.model}" not found` } }));
        return;
      }
      const answer = provider.answerFor(call);
      const usage = provider.reportUsage ? { usage: FAKE_USAGE } : {};
      if (!call.body.stream) {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ id: 'chatcmpl-test', object: 'chat.completion', model: call.body.model, choices: [{ index: 0, message: { role: 'assistant', content: answer }, finish_reason: 'stop' }], ...usage }));
        return;
      }
      void streamAnswer(res, answer, call, provider, usage);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  provider.env = {
    LLM_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    LLM_MODEL: options.model,
    LLM_API_KEY: options.apiKey,
  };
  return provider;
}

async function streamAnswer(res: http.ServerResponse, answer: string, call: ChatCall, provider: FakeChatProvider, usage: object): Promise<void> {
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
  const chunk = (body: object) => res.write(`data: ${JSON.stringify({ id: 'chatcmpl-test', object: 'chat.completion.chunk', model: call.body.model, ...body })}\n\n`);
  const pieces = answer.split(/(?<= )/);
  for (const piece of pieces) {
    if (res.destroyed) {
      provider.abandoned += 1;
      return;
    }
    chunk({ choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] });
    if (provider.pieceDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, provider.pieceDelayMs));
  }
  if (res.destroyed) {
    provider.abandoned += 1;
    return;
  }
  chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
  if (call.body.stream_options?.include_usage) chunk({ choices: [], ...usage });
  res.end('data: [DONE]\n\n');
}
