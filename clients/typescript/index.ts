import createClient, { type Client } from 'openapi-fetch';
import type { components, paths } from './schema';

export type { components, paths };

export interface RagworksClientOptions {
  /** Where ragworks listens, e.g. http://localhost:8080. */
  baseUrl: string;
  /** An API key, or the operator's ADMIN_TOKEN. */
  token: string;
  /** With the operator token: the tenant (id or slug) to act on. */
  tenant?: string;
  /** A fetch of your own (tests, proxies); the global one otherwise. */
  fetch?: typeof fetch;
}

export type Citation = { n: number; document_id: string; chunk_id: string; title: string; page?: number; snippet: string };

/** The end of a streamed answer. */
export interface AnswerDone {
  model: string;
  usage: { prompt_tokens: number; completion_tokens: number };
  cached: boolean;
  query_id: string;
}

export interface AnswerStreamHandlers {
  onCitations?(citations: Citation[]): void;
  onDelta?(text: string): void;
}

/** A reply that was not 2xx: the API's error envelope, with the status. */
export class RagworksError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'RagworksError';
  }
}

export interface RagworksClient {
  /** Every operation of the API, typed from its OpenAPI document (openapi-fetch): `api.GET('/api/documents/{id}', {params: {path: {id}}})`. */
  api: Client<paths>;
  /** POST /api/documents/upload: one file as multipart, with optional title, tags and metadata. */
  upload(file: { name: string; data: Uint8Array }, fields?: { title?: string; tags?: string[]; metadata?: Record<string, unknown> }): Promise<components['schemas']['DocumentSummary'] | DocumentSummaryShape>;
  /** POST /api/answer as Server-Sent Events: citations, then the answer as it is written; resolves with the full answer and its `done`. */
  askStreaming(body: paths['/api/answer']['post']['requestBody']['content']['application/json'], handlers?: AnswerStreamHandlers, signal?: AbortSignal): Promise<{ answer: string; citations: Citation[]; done: AnswerDone }>;
}

/** What an upload answers, named for readers of this file (the schema's own name may differ). */
type DocumentSummaryShape = paths['/api/documents/upload']['post']['responses'][202]['content']['application/json'];

export function createRagworksClient(options: RagworksClientOptions): RagworksClient {
  const headers: Record<string, string> = { authorization: `Bearer ${options.token}` };
  if (options.tenant) headers['x-tenant-id'] = options.tenant;
  const fetchImpl = options.fetch ?? fetch;
  const api = createClient<paths>({ baseUrl: options.baseUrl, headers, fetch: fetchImpl });
  const url = (path: string) => new URL(path, options.baseUrl);

  const failure = async (response: Response): Promise<RagworksError> => {
    const text = await response.text();
    try {
      const { error } = JSON.parse(text) as { error: { code: string; message: string; details?: unknown } };
      return new RagworksError(response.status, error.code, error.message, error.details);
    } catch {
      return new RagworksError(response.status, 'unexpected_reply', `HTTP ${response.status}: ${text.slice(0, 200)}`);
    }
  };

  return {
    api,
    async upload(file, fields = {}) {
      const form = new FormData();
      if (fields.title) form.append('title', fields.title);
      for (const tag of fields.tags ?? []) form.append('tags', tag);
      if (fields.metadata) form.append('metadata', JSON.stringify(fields.metadata));
      form.append('file', new Blob([file.data]), file.name);
      const response = await fetchImpl(url('/api/documents/upload'), { method: 'POST', headers, body: form });
      if (response.status !== 202) throw await failure(response);
      return (await response.json()) as DocumentSummaryShape;
    },
    async askStreaming(body, handlers = {}, signal) {
      const response = await fetchImpl(url('/api/answer'), {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({ ...body, stream: true }),
        signal,
      });
      if (response.status !== 200 || !response.body) throw await failure(response);
      let answer = '';
      let citations: Citation[] = [];
      let done: AnswerDone | null = null;
      for await (const event of serverSentEvents(response.body)) {
        if (event.event === 'citations') {
          citations = (event.data as { citations: Citation[] }).citations;
          handlers.onCitations?.(citations);
        } else if (event.event === 'delta') {
          const text = (event.data as { text: string }).text;
          answer += text;
          handlers.onDelta?.(text);
        } else if (event.event === 'done') done = event.data as AnswerDone;
        else if (event.event === 'error') {
          const { error } = event.data as { error: { code: string; message: string } };
          throw new RagworksError(200, error.code, error.message);
        }
      }
      if (!done) throw new RagworksError(200, 'stream_ended', 'The answer stream ended before its `done` event.');
      return { answer, citations, done };
    },
  };
}

/** Server-Sent Events as `{event, data}`, data parsed as JSON. */
async function* serverSentEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<{ event: string; data: unknown }> {
  const decoder = new TextDecoder();
  let buffered = '';
  for await (const bytes of body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(bytes, { stream: true });
    let end: number;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      let event = 'message';
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data += line.slice(5).trim();
      }
      if (data) yield { event, data: JSON.parse(data) };
    }
  }
}
