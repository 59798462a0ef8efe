import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { embedText } from '../../src/domain/embeddings/hashing';

export interface FakeEmbeddingsProvider {
  /** Environment that points ragworks at this provider. */
  env: Record<string, string>;
  /** Models named in the requests received so far. */
  models: Set<string>;
  /** Decides, per request, whether to refuse its input with 400. Change it at any time. */
  rejects: (input: string[]) => boolean;
  /** Decides, per request, whether to answer 503, as a provider that is down or overloaded. Change it at any time. */
  unavailable: (input: string[]) => boolean;
  close(): Promise<void>;
}

/**
 * A real HTTP server speaking the OpenAI embeddings API on 127.0.0.1, as
 * Ollama or vLLM would. Vectors come from the built-in hashing embedder, so
 * answers are deterministic; `rejects` makes it refuse input the way a
 * provider refuses content it will not embed, `unavailable` answer 503 the
 * way a provider that is down does.
 */
export async function startEmbeddingsProvider(options: { dimensions: number; model: string; rejects?: (input: string[]) => boolean }): Promise<FakeEmbeddingsProvider> {
  const provider: FakeEmbeddingsProvider = {
    env: {},
    models: new Set(),
    rejects: options.rejects ?? (() => false),
    unavailable: () => false,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (part: string) => (raw += part));
    req.on('end', () => {
      const body = JSON.parse(raw) as { model: string; input: string[] };
      provider.models.add(body.model);
      res.setHeader('Content-Type', 'application/json');
      if (provider.unavailable(body.input)) {
        res.statusCode = 503;
        res.end(JSON.stringify({ error: { message: 'the test provider is unavailable' } }));
        return;
      }
      if (provider.rejects(body.input)) {
        res.statusCode = 400;
        res.end(JSON.stringify({ error: { message: 'input rejected by the test provider' } }));
        return;
      }
      const data = body.input.map((text, index) => ({ object: 'embedding', index, embedding: embedText(text, options.dimensions) }));
      res.end(JSON.stringify({ object: 'list', model: body.model, data }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  provider.env = {
    EMBEDDINGS_PROVIDER: 'openai',
    EMBEDDINGS_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/embeddings`,
    EMBEDDINGS_MODEL: options.model,
    EMBEDDINGS_DIMENSIONS: String(options.dimensions),
  };
  return provider;
}
