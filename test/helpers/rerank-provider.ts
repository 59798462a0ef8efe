import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RerankCall {
  headers: http.IncomingHttpHeaders;
  body: { model?: string; query: string; documents?: string[]; texts?: string[]; top_n?: number };
}

export interface FakeRerankProvider {
  /** Environment that points ragworks at this provider (RERANK_API is the caller's to add). */
  env: Record<string, string>;
  calls: RerankCall[];
  /** `ok`: scores; `down`: 503; `hang`: never answers. Change it at any time. */
  mode: 'ok' | 'down' | 'hang';
  /** The score it gives a passage: how often `word` occurs in it. */
  scoreOf(passage: string): number;
  close(): Promise<void>;
}

/**
 * A real HTTP server speaking both rerank shapes on 127.0.0.1: a body with
 * `documents` (Cohere, Jina…) is answered `{results: [{index,
 * relevance_score}]}` best first, one with `texts` (TEI) `[{index, score}]`.
 * A passage scores by how often `word` occurs in it, so a test knows the
 * order a real cross-encoder would be asked to produce.
 */
export async function startRerankProvider(options: { word: string; model: string; apiKey: string }): Promise<FakeRerankProvider> {
  const hanging = new Set<http.ServerResponse>();
  const provider: FakeRerankProvider = {
    env: {},
    calls: [],
    mode: 'ok',
    scoreOf: (passage) => passage.toLowerCase().split(options.word).length - 1,
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hanging) res.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  const server = http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (part: string) => (raw += part));
    req.on('end', () => {
      const body = JSON.parse(raw) as RerankCall['body'];
      provider.calls.push({ headers: req.headers, body });
      if (provider.mode === 'hang') {
        hanging.add(res);
        return;
      }
      res.setHeader('Content-Type', 'application/json');
      if (provider.mode === 'down') {
        res.statusCode = 503;
        res.end(JSON.stringify({ error: 'the test reranker is down' }));
        return;
      }
      const passages = body.documents ?? body.texts ?? [];
      const ranked = passages.map((passage, index) => ({ index, score: provider.scoreOf(passage) })).sort((a, b) => b.score - a.score);
      res.end(JSON.stringify(body.texts ? ranked : { results: ranked.map(({ index, score }) => ({ index, relevance_score: score })) }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  provider.env = {
    RERANK_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/rerank`,
    RERANK_MODEL: options.model,
    RERANK_API_KEY: options.apiKey,
  };
  return provider;
}
