/**
 * A real webhook receiver for tests: a node:http server on 127.0.0.1 (port 0)
 * that records every request and checks its Standard Webhooks signature with
 * the `standardwebhooks` package, the way a tenant's receiver would.
 *
 * Usage:
 *
 *   const receiver = await startWebhookReceiver();
 *   receiver.secrets = [created.secret];            // secret(s) to verify with
 *   receiver.respond({ status: 500 }, { status: 500, body: 'x'.repeat(10_000) });
 *   // …create an endpoint with url receiver.url('/hook'), cause an event…
 *   const [first] = await receiver.waitForRequests(1, { timeoutMs: 20_000 });
 *   expect(first.verified).toBe(true);
 *   await receiver.close();
 *
 * API (kept stable; other test files depend on it):
 * - `startWebhookReceiver(options?)` → Promise<WebhookReceiver>; `options.secrets` presets `secrets`.
 * - `receiver.port` — the port, which stays the same across down()/up().
 * - `receiver.url(path = '/')` → `http://127.0.0.1:<port><path>`.
 * - `receiver.secrets: string[]` — assign at any time; a request is `verified`
 *   when `new Webhook(secret).verify(rawBody, headers)` succeeds for ANY of them
 *   (an empty list verifies nothing).
 * - `receiver.requests: ReceivedRequest[]` — every request, in arrival order:
 *   method, path, headers (lower-case names), rawBody, json (parsed body or
 *   null), receivedAt (ms since epoch, when the body was complete), verified,
 *   verifiedWith (the secret that verified, or null), webhookId, eventType (json.type),
 *   response (the ScriptedResponse served for it), and — updated while the
 *   answer is written — bytesSent (body bytes written) and hungUp (the client
 *   closed the connection before the response was complete).
 * - `receiver.respond(...responses)` — appends to a queue of scripted responses
 *   {status, headers?, body?, delayMs?, destroy?}; each request consumes one, in
 *   order; when the queue is empty `receiver.defaultResponse` is used
 *   (initially {status: 200, body: 'ok'}). `delayMs` waits before answering (a
 *   slow receiver); `destroy: true` drops the connection without an answer.
 *   A string body is sent as is; any other body is sent as JSON. Misbehaving
 *   receivers, each after sending the status line and headers:
 *   `trickle: {chunk, intervalMs, count}` writes `chunk` every intervalMs,
 *   count times, then ends; `endless: true` writes 16 KB chunks for as long as
 *   the client reads; `cutAfter: {body, reset?}` promises a longer body
 *   (Content-Length), writes `body` and closes the connection (FIN), or resets
 *   it (RST) with `reset: true`.
 * - `receiver.pendingResponses()` — how many scripted responses are still queued.
 * - `receiver.down()` — stops listening and drops every open connection
 *   (including keep-alive ones), so the next delivery fails to connect
 *   (ECONNREFUSED, or ECONNRESET on a reused keep-alive socket).
 * - `receiver.up()` — listens again on the SAME port.
 * - `receiver.waitForRequests(n, {timeoutMs = 30000, filter?})` — resolves with
 *   the recorded requests (only those matching `filter`, when given) once at
 *   least n have arrived; rejects on timeout saying how many did.
 * - `receiver.inFlight` / `receiver.maxInFlight` — requests being answered now /
 *   the most at once so far (for concurrency limits).
 * - `receiver.close()` — stops the server, drops connections, cancels delayed
 *   answers; leaves no open handles.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Webhook } from 'standardwebhooks';

export interface ScriptedResponse {
  status: number;
  headers?: Record<string, string>;
  /** A string is sent as is; anything else as JSON. */
  body?: unknown;
  /** Wait this long before answering. */
  delayMs?: number;
  /** Drop the connection instead of answering (after delayMs, if set). */
  destroy?: boolean;
  /** After the headers, write `chunk` every `intervalMs`, `count` times, then end. */
  trickle?: { chunk: string; intervalMs: number; count: number };
  /** After the headers, write 16 KB chunks until the client hangs up. */
  endless?: boolean;
  /** Promise a longer body, write `body`, then close the connection (or reset it, with `reset`). */
  cutAfter?: { body: string; reset?: boolean };
}

export interface ReceivedRequest {
  method: string;
  path: string;
  /** Header names in lower case; repeated headers joined with ", ". */
  headers: Record<string, string>;
  rawBody: string;
  /** The parsed body, or null when it is not JSON. */
  json: unknown;
  /** Milliseconds since the epoch at which the whole body had arrived. */
  receivedAt: number;
  verified: boolean;
  verifiedWith: string | null;
  webhookId: string | undefined;
  /** `type` of the JSON body, when there is one. */
  eventType: string | undefined;
  response: ScriptedResponse;
  /** Body bytes written so far. */
  bytesSent: number;
  /** The client closed the connection before the response was complete. */
  hungUp: boolean;
}

export interface WaitForRequestsOptions {
  timeoutMs?: number;
  filter?: (request: ReceivedRequest) => boolean;
}

export interface WebhookReceiver {
  readonly port: number;
  secrets: string[];
  readonly requests: ReceivedRequest[];
  defaultResponse: ScriptedResponse;
  readonly inFlight: number;
  readonly maxInFlight: number;
  url(path?: string): string;
  respond(...responses: ScriptedResponse[]): void;
  pendingResponses(): number;
  down(): Promise<void>;
  up(): Promise<void>;
  waitForRequests(n: number, options?: WaitForRequestsOptions): Promise<ReceivedRequest[]>;
  close(): Promise<void>;
}

export async function startWebhookReceiver(options: { secrets?: string[] } = {}): Promise<WebhookReceiver> {
  const scripted: ScriptedResponse[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const waiters = new Set<() => void>();
  let inFlight = 0;
  let maxInFlight = 0;
  let listening = false;
  let closed = false;

  const verify = (rawBody: string, headers: Record<string, string>): string | null => {
    for (const secret of receiver.secrets) {
      try {
        new Webhook(secret).verify(rawBody, headers);
        return secret;
      } catch {
        // Not this secret (or not signed at all); try the next one.
      }
    }
    return null;
  };

  const later = (ms: number, fn: () => void) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  };

  const server = http.createServer((req, res) => {
    inFlight += 1;
    maxInFlight = Math.max(maxInFlight, inFlight);
    let done = false;
    const finished = () => {
      if (done) return;
      done = true;
      inFlight -= 1;
    };
    res.on('close', finished);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('error', () => undefined);
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(req.headers)) {
        if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
      }
      let json: unknown = null;
      try {
        json = JSON.parse(rawBody);
      } catch {
        json = null;
      }
      const verifiedWith = verify(rawBody, headers);
      const response = scripted.shift() ?? receiver.defaultResponse;
      const eventType = json !== null && typeof json === 'object' && typeof (json as { type?: unknown }).type === 'string' ? (json as { type: string }).type : undefined;
      const record: ReceivedRequest = {
        method: req.method ?? '',
        path: req.url ?? '',
        headers,
        rawBody,
        json,
        receivedAt: Date.now(),
        verified: verifiedWith !== null,
        verifiedWith,
        webhookId: headers['webhook-id'],
        eventType,
        response,
        bytesSent: 0,
        hungUp: false,
      };
      receiver.requests.push(record);
      for (const wake of [...waiters]) wake();
      res.on('close', () => {
        if (!res.writableFinished) record.hungUp = true;
      });
      const write = (data: string | Buffer) => {
        record.bytesSent += Buffer.byteLength(data);
        return res.write(data);
      };

      const answer = () => {
        if (response.destroy) {
          req.socket.destroy();
          return;
        }
        const body = response.body === undefined ? '' : typeof response.body === 'string' ? response.body : JSON.stringify(response.body);
        const headersOut: Record<string, string> = { ...(response.headers ?? {}) };
        if (response.body !== undefined && typeof response.body !== 'string' && !Object.keys(headersOut).some((h) => h.toLowerCase() === 'content-type')) {
          headersOut['Content-Type'] = 'application/json';
        }
        if (response.trickle) {
          const { chunk, intervalMs, count } = response.trickle;
          res.writeHead(response.status, headersOut);
          let written = 0;
          const next = () => {
            if (res.destroyed) return;
            if (written === count) {
              res.end();
              return;
            }
            written += 1;
            write(chunk);
            later(intervalMs, next);
          };
          next();
          return;
        }
        if (response.endless) {
          res.writeHead(response.status, headersOut);
          const block = Buffer.alloc(16 * 1024, 'x');
          // Honours backpressure: writes again only when the client has read what was sent.
          const pump = () => {
            while (!res.destroyed && write(block));
            if (!res.destroyed) res.once('drain', pump);
          };
          pump();
          return;
        }
        if (response.cutAfter) {
          const { body: partial, reset } = response.cutAfter;
          res.writeHead(response.status, { ...headersOut, 'Content-Length': String(Buffer.byteLength(partial) + 10_000) });
          write(partial);
          // Let the headers and the partial body leave first.
          later(50, () => (reset ? req.socket.resetAndDestroy() : req.socket.destroy()));
          return;
        }
        res.writeHead(response.status, headersOut);
        res.end(body);
      };
      if (response.delayMs && response.delayMs > 0) later(response.delayMs, answer);
      else answer();
    });
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // A keep-alive socket dropped by down() must not surface as an unhandled error.
  server.on('clientError', (_error, socket) => socket.destroy());

  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      const onError = (error: Error) => reject(error);
      server.once('error', onError);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', onError);
        listening = true;
        resolve();
      });
    });

  const stopListening = () =>
    new Promise<void>((resolve) => {
      if (!listening) {
        resolve();
        return;
      }
      listening = false;
      server.close(() => resolve());
      // close() waits for open connections; drop them so down() really is down.
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections();
    });

  await listen(0);
  const port = (server.address() as AddressInfo).port;

  const receiver: WebhookReceiver & { requests: ReceivedRequest[] } = {
    port,
    secrets: options.secrets ?? [],
    requests: [],
    defaultResponse: { status: 200, body: 'ok' },
    get inFlight() {
      return inFlight;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    url: (path = '/') => `http://127.0.0.1:${port}${path.startsWith('/') ? path : `/${path}`}`,
    respond: (...responses) => {
      scripted.push(...responses);
    },
    pendingResponses: () => scripted.length,
    down: () => stopListening(),
    up: async () => {
      if (closed) throw new Error('the receiver is closed');
      if (!listening) await listen(port);
    },
    waitForRequests: (n, { timeoutMs = 30_000, filter } = {}) =>
      new Promise<ReceivedRequest[]>((resolve, reject) => {
        const matching = () => (filter ? receiver.requests.filter(filter) : [...receiver.requests]);
        const now = matching();
        if (now.length >= n) {
          resolve(now);
          return;
        }
        const timer = setTimeout(() => {
          waiters.delete(check);
          const got = matching();
          reject(new Error(`webhook receiver: expected ${n} request(s)${filter ? ' matching the filter' : ''} within ${timeoutMs} ms, got ${got.length} (types: ${got.map((r) => r.eventType ?? '?').join(', ') || 'none'})`));
        }, timeoutMs);
        function check() {
          const got = matching();
          if (got.length < n) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(got);
        }
        waiters.add(check);
      }),
    close: async () => {
      closed = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await stopListening();
    },
  };
  return receiver;
}
