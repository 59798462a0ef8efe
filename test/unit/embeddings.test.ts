import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EmbeddingError } from '../../src/domain/embeddings/embedder';
import { createHashingEmbedder, HASHING_MODEL } from '../../src/domain/embeddings/hashing';
import { createOpenAiEmbedder, type OpenAiEmbedderOptions } from '../../src/domain/embeddings/openai';

function dot(a: number[], b: number[]): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

function cosine(a: number[], b: number[]): number {
  return dot(a, b) / Math.sqrt(dot(a, a) * dot(b, b));
}

describe('hashing embedder', () => {
  const embedder = createHashingEmbedder();

  it('describes itself', () => {
    expect(embedder.model).toBe(HASHING_MODEL);
    expect(embedder.model).toBe('ragworks-hash-v1');
    expect(embedder.dimensions).toBe(384);
    expect(createHashingEmbedder(64).dimensions).toBe(64);
  });

  it('is deterministic across calls and instances', async () => {
    const text = 'Install the package with apt on Debian.';
    const [a] = await embedder.embed([text]);
    const [b] = await createHashingEmbedder().embed([text]);
    expect(a).toEqual(b);
  });

  it('returns unit-length vectors of the configured size, in input order', async () => {
    const texts = ['first text about servers', 'second text about gardens', 'x'];
    const vectors = await embedder.embed(texts);
    expect(vectors).toHaveLength(3);
    for (const [i, vector] of vectors.entries()) {
      expect(vector).toHaveLength(384);
      expect(Math.sqrt(dot(vector, vector))).toBeCloseTo(1, 10);
      expect(vector).toEqual((await embedder.embed([texts[i]!]))[0]);
    }
    const [small] = await createHashingEmbedder(64).embed(['anything at all']);
    expect(small).toHaveLength(64);
  });

  it('maps text without letters or digits to a zero vector', async () => {
    for (const text of ['', '   ', '!!! ??? ---']) {
      const [vector] = await embedder.embed([text]);
      expect(vector).toHaveLength(384);
      expect(vector!.every((v) => v === 0)).toBe(true);
    }
  });

  it('ranks a paraphrase sharing words above an unrelated text', async () => {
    const [query, paraphrase, unrelated] = await embedder.embed([
      'How do I install the package on a Debian Linux server?',
      'Installing this package on Debian Linux servers takes one apt command.',
      'The bakery sells fresh bread and pastries every morning.',
    ]);
    const related = cosine(query!, paraphrase!);
    const other = cosine(query!, unrelated!);
    expect(related).toBeGreaterThan(0.3);
    expect(related).toBeGreaterThan(other + 0.2);
  });

  it('ignores case and compatibility forms, and handles CJK text', async () => {
    const [plain, shouted, fullwidth] = await embedder.embed(['hello world', 'HELLO World', 'ｈｅｌｌｏ ｗｏｒｌｄ']);
    expect(shouted).toEqual(plain);
    expect(fullwidth).toEqual(plain);
    const [zh, zhRelated, zhOther] = await embedder.embed(['如何安装软件包', '安装这个软件包很简单', '今天天气很好']);
    expect(cosine(zh!, zhRelated!)).toBeGreaterThan(cosine(zh!, zhOther!));
  });

  it('stops when the signal is aborted', async () => {
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    await expect(embedder.embed(['text'], controller.signal)).rejects.toThrow('stop');
  });

  it('embeds a 500-word chunk in about a millisecond', async () => {
    const words = 'the quick brown fox jumps over lazy dogs while servers index documents quietly'.split(' ');
    const chunk = Array.from({ length: 500 }, (_, i) => `${words[i % words.length]}${i % 37}`).join(' ');
    const texts = Array.from({ length: 100 }, (_, i) => `${chunk} ${i}`);
    const started = performance.now();
    await embedder.embed(texts);
    // Generous bound for slow CI machines; it is about 1 ms per text locally.
    expect((performance.now() - started) / texts.length).toBeLessThan(20);
  });
});

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: { model: string; input: string[] };
}

type Reply = (request: Received, res: ServerResponse, attempt: number) => void;

const DIMS = 4;

/** A recognisable vector per input: [length, first char code, 0, 1]. */
function vectorFor(text: string, dims = DIMS): number[] {
  return [text.length, text.charCodeAt(0), 0, 1].slice(0, dims).concat(new Array(Math.max(0, dims - 4)).fill(0));
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function ok(request: Received, res: ServerResponse): void {
  okWithDims(request, res, DIMS);
}

function okWithDims(request: Received, res: ServerResponse, dims: number): void {
  json(res, 200, {
    object: 'list',
    model: request.body.model,
    data: request.body.input.map((text, index) => ({ object: 'embedding', index, embedding: vectorFor(text, dims) })),
  });
}

describe('OpenAI-compatible embedder', () => {
  let server: Server;
  let url: string;
  let received: Received[] = [];
  let reply: Reply = ok;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (part: Buffer) => parts.push(part));
      req.on('end', () => {
        const request: Received = {
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          body: JSON.parse(Buffer.concat(parts).toString('utf8')) as Received['body'],
        };
        received.push(request);
        reply(request, res, received.length);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/embeddings`;
  });

  afterAll(async () => {
    // Requests left hanging by the timeout and abort tests would keep close() waiting.
    server.closeAllConnections();
    await new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
  });

  beforeEach(() => {
    received = [];
    reply = ok;
  });

  const options = (overrides: Partial<OpenAiEmbedderOptions> = {}): OpenAiEmbedderOptions => ({
    url,
    model: 'test-embed',
    dimensions: DIMS,
    batchSize: 16,
    maxRetries: 3,
    timeoutMs: 5_000,
    retryBaseMs: 1,
    ...overrides,
  });

  async function failure(promise: Promise<unknown>): Promise<EmbeddingError> {
    const error: unknown = await promise.then(
      () => new Error('expected the call to fail'),
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(EmbeddingError);
    return error as EmbeddingError;
  }

  it('posts the model and inputs with a bearer token', async () => {
    const embedder = createOpenAiEmbedder(options({ apiKey: 'sk-test-123' }));
    expect(embedder.model).toBe('test-embed');
    expect(embedder.dimensions).toBe(DIMS);
    const vectors = await embedder.embed(['alpha', 'beta']);
    expect(vectors).toEqual([vectorFor('alpha'), vectorFor('beta')]);
    expect(received).toHaveLength(1);
    const [request] = received;
    expect(request!.method).toBe('POST');
    expect(request!.url).toBe('/v1/embeddings');
    expect(request!.headers['content-type']).toBe('application/json');
    expect(request!.headers.authorization).toBe('Bearer sk-test-123');
    expect(request!.body).toEqual({ model: 'test-embed', input: ['alpha', 'beta'] });
  });

  it('sends no authorization header without an api key, and no request for no input', async () => {
    const embedder = createOpenAiEmbedder(options());
    await embedder.embed(['alpha']);
    expect(received[0]!.headers.authorization).toBeUndefined();
    expect(await embedder.embed([])).toEqual([]);
    expect(received).toHaveLength(1);
  });

  it('splits input into batches and orders results by index', async () => {
    reply = (request, res) => {
      const data = request.body.input.map((text, index) => ({ index, embedding: vectorFor(text) }));
      json(res, 200, { data: data.reverse() });
    };
    const texts = ['a', 'bb', 'ccc', 'dddd', 'eeeee'];
    const vectors = await createOpenAiEmbedder(options({ batchSize: 2 })).embed(texts);
    expect(received.map((r) => r.body.input)).toEqual([['a', 'bb'], ['ccc', 'dddd'], ['eeeee']]);
    expect(vectors).toEqual(texts.map((t) => vectorFor(t)));
  });

  it('retries a 429 after the Retry-After delay', async () => {
    reply = (request, res, attempt) => {
      if (attempt === 1) json(res, 429, { error: { message: 'slow down' } }, { 'retry-after': '0' });
      else ok(request, res);
    };
    // A one-minute backoff base would time the test out unless Retry-After is used instead.
    const vectors = await createOpenAiEmbedder(options({ retryBaseMs: 60_000 })).embed(['alpha']);
    expect(vectors).toEqual([vectorFor('alpha')]);
    expect(received).toHaveLength(2);
  }, 10_000);

  it('accepts Retry-After as an HTTP date', async () => {
    reply = (request, res, attempt) => {
      if (attempt === 1) json(res, 503, 'busy', { 'retry-after': new Date(Date.now() - 5_000).toUTCString() });
      else ok(request, res);
    };
    await createOpenAiEmbedder(options({ retryBaseMs: 60_000 })).embed(['alpha']);
    expect(received).toHaveLength(2);
  }, 10_000);

  it('retries server errors with backoff until one succeeds', async () => {
    reply = (request, res, attempt) => {
      if (attempt <= 2) json(res, 500, { error: 'internal' });
      else ok(request, res);
    };
    const vectors = await createOpenAiEmbedder(options()).embed(['alpha', 'beta']);
    expect(vectors).toEqual([vectorFor('alpha'), vectorFor('beta')]);
    expect(received).toHaveLength(3);
  });

  it('retries a request timeout (408) like a server error, and reports exhausted retries as retryable', async () => {
    reply = (request, res, attempt) => {
      if (attempt === 1) json(res, 408, { error: 'request timeout' });
      else ok(request, res);
    };
    expect(await createOpenAiEmbedder(options()).embed(['alpha'])).toEqual([vectorFor('alpha')]);
    expect(received).toHaveLength(2);

    received = [];
    reply = (_request, res) => json(res, 408, { error: 'request timeout' });
    const error = await failure(createOpenAiEmbedder(options({ maxRetries: 1 })).embed(['alpha']));
    expect(error.retryable).toBe(true);
    expect(received).toHaveLength(2);
  });

  it('fails without retrying on other 4xx responses', async () => {
    reply = (_request, res) => json(res, 400, { error: { message: 'input must not contain sk-secret-999' } });
    const error = await failure(createOpenAiEmbedder(options({ apiKey: 'sk-secret-999' })).embed(['alpha']));
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('400');
    expect(error.message).toContain('input must not contain');
    expect(error.message).not.toContain('sk-secret-999');
    expect(received).toHaveLength(1);
  });

  it('rejects vectors of the wrong dimension without retrying', async () => {
    reply = (request, res) => okWithDims(request, res, 3);
    const error = await failure(createOpenAiEmbedder(options()).embed(['alpha']));
    expect(error.retryable).toBe(false);
    expect(error.message).toMatch(/3 dimensions, expected 4/);
    expect(received).toHaveLength(1);
  });

  it('rejects a response whose item count does not match the batch', async () => {
    reply = (_request, res) => json(res, 200, { data: [{ index: 0, embedding: vectorFor('a') }] });
    const error = await failure(createOpenAiEmbedder(options()).embed(['a', 'b']));
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('1 embeddings for 2 inputs');
  });

  it('gives up with a retryable error once retries are exhausted', async () => {
    reply = (_request, res) => json(res, 503, { error: 'overloaded' });
    const error = await failure(createOpenAiEmbedder(options({ maxRetries: 2 })).embed(['alpha']));
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('3 attempts');
    expect(error.message).toContain('503');
    expect(received).toHaveLength(3);
  });

  it('retries network errors and reports them as retryable', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const error = await failure(
      createOpenAiEmbedder(options({ url: `http://127.0.0.1:${port}/v1/embeddings`, maxRetries: 1 })).embed(['alpha']),
    );
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('2 attempts');
  });

  it('times out a hanging request and retries it', async () => {
    reply = () => {
      // Never answers.
    };
    const error = await failure(createOpenAiEmbedder(options({ timeoutMs: 100, maxRetries: 1 })).embed(['alpha']));
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('timed out after 100 ms');
    expect(received).toHaveLength(2);
  });

  it("stops at once when the caller's signal aborts", async () => {
    reply = () => {
      // Never answers.
    };
    const controller = new AbortController();
    const reason = new Error('job cancelled');
    setTimeout(() => controller.abort(reason), 50);
    await expect(createOpenAiEmbedder(options()).embed(['alpha'], controller.signal)).rejects.toBe(reason);
    expect(received).toHaveLength(1);
  });
});
