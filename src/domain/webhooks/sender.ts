import http from 'node:http';
import https from 'node:https';
import { RequestFilteringHttpAgent, RequestFilteringHttpsAgent } from 'request-filtering-agent';
import { Webhook } from 'standardwebhooks';

export interface SignedRequest {
  url: string;
  messageId: string;
  body: string;
  secrets: string[];
  userAgent: string;
  timeoutMs: number;
  allowPrivate: boolean;
  /** Whether our trace context (traceparent, tracestate, baggage) may travel to the receiver: WEBHOOK_PROPAGATE_TRACE. */
  propagateTrace: boolean;
}

/** The headers through which the HTTP instrumentation would carry our traces to a third party. */
const TRACE_HEADERS = ['traceparent', 'tracestate', 'baggage'];

export interface SendResult {
  ok: boolean;
  statusCode: number | null;
  durationMs: number;
  error: string | null;
  responseBody: string | null;
  /** From Retry-After on 429 and 503, in milliseconds. */
  retryAfterMs: number | null;
}

/** How much of a response is kept in the delivery log. */
export const RESPONSE_BODY_LIMIT = 4096;

/**
 * One `webhook-signature` value: a `v1,<base64>` signature per secret,
 * space-separated, as the Standard Webhooks specification has it for
 * rotation.
 */
export function signatureHeader(secrets: string[], messageId: string, timestamp: Date, body: string): string {
  return secrets.map((secret) => new Webhook(secret).sign(messageId, timestamp, body)).join(' ');
}

// ipaddr.js calls IPv4-compatible IPv6 addresses (::a.b.c.d, deprecated) plain unicast, so ::127.0.0.1 would pass.
const filterOptions = { keepAlive: true, allowPrivateIPAddress: false, allowMetaIPAddress: false, denyIPAddressList: ['::/96'] };
// Keep-alive agents, one pair per policy: connections to a receiver are reused between deliveries.
const filteringAgents = {
  http: new RequestFilteringHttpAgent(filterOptions),
  https: new RequestFilteringHttpsAgent(filterOptions),
};
const openAgents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };

/**
 * POSTs a signed event. Redirects are not followed (a 3xx is a failure), a
 * private or loopback address is refused when the connection is made —
 * after DNS, so a name that resolves or rebinds to one is caught too —
 * unless `allowPrivate`. `timeoutMs` bounds the whole attempt, from the
 * connection to the end of the response; reading stops once the status and
 * RESPONSE_BODY_LIMIT bytes are in, so an endless body cannot hold a worker.
 * Never throws: every outcome is a SendResult.
 */
export function sendSigned(request: SignedRequest): Promise<SendResult> {
  const started = process.hrtime.bigint();
  const elapsed = () => Math.round(Number(process.hrtime.bigint() - started) / 1e6);
  const timestamp = new Date();
  const url = new URL(request.url);
  const secure = url.protocol === 'https:';
  const agents = request.allowPrivate ? openAgents : filteringAgents;
  const transport = secure ? https : http;
  return new Promise<SendResult>((resolve) => {
    let settled = false;
    let incoming: http.IncomingMessage | undefined;
    const chunks: Buffer[] = [];
    let kept = 0;
    const finish = (result: Omit<SendResult, 'durationMs'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      resolve({ ...result, durationMs: elapsed() });
    };
    /** The outcome once a response has (at least partly) arrived; `failure` overrides the status's verdict. */
    const fromResponse = (response: http.IncomingMessage, failure: string | null): Omit<SendResult, 'durationMs'> => {
      const statusCode = response.statusCode ?? 0;
      const ok = failure === null && statusCode >= 200 && statusCode < 300;
      return {
        ok,
        statusCode,
        error: failure ?? (ok ? null : describeStatus(statusCode, response.headers.location)),
        responseBody: storableResponseBody(Buffer.concat(chunks)),
        retryAfterMs: statusCode === 429 || statusCode === 503 ? parseRetryAfter(response.headers['retry-after']) : null,
      };
    };
    // One deadline for the whole exchange: a socket timeout would only measure idleness, which a receiver trickling a byte at a time never reaches.
    const deadline = setTimeout(() => {
      finish(
        incoming
          ? fromResponse(incoming, `HTTP ${incoming.statusCode}, but the response did not end within ${request.timeoutMs} ms`)
          : { ok: false, statusCode: null, error: `no response within ${request.timeoutMs} ms`, responseBody: null, retryAfterMs: null },
      );
      incoming?.destroy();
      outgoing.destroy();
    }, request.timeoutMs);
    const outgoing = transport.request(
      url,
      {
        method: 'POST',
        agent: secure ? agents.https : agents.http,
        headers: {
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(request.body),
          'User-Agent': request.userAgent,
          'webhook-id': request.messageId,
          'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
          'webhook-signature': signatureHeader(request.secrets, request.messageId, timestamp, request.body),
        },
      },
      (response) => {
        incoming = response;
        response.on('data', (chunk: Buffer) => {
          if (settled) return;
          chunks.push(chunk);
          kept += chunk.length;
          if (kept >= RESPONSE_BODY_LIMIT) {
            // The status is known and the log keeps no more: the rest of the body is not worth waiting for.
            finish(fromResponse(response, null));
            response.destroy();
          }
        });
        response.on('end', () => finish(fromResponse(response, null)));
        // A connection reset after the headers ends the response with 'aborted'/'error'/'close' and never 'end'.
        const cutShort = (reason: string) => finish(fromResponse(response, `HTTP ${response.statusCode}, but ${reason} before the response ended`));
        response.on('aborted', () => cutShort('the connection was dropped'));
        response.on('error', (error: NodeJS.ErrnoException) => cutShort(`the connection failed (${error.code ?? error.message})`));
        response.on('close', () => {
          if (!response.complete) cutShort('the connection closed');
        });
      },
    );
    outgoing.on('error', (error: NodeJS.ErrnoException) => {
      // A reset (RST) after the headers surfaces here rather than on the response: keep the status that did arrive.
      if (incoming) finish(fromResponse(incoming, `HTTP ${incoming.statusCode}, but the connection failed (${error.code ?? error.message}) before the response ended`));
      else finish({ ok: false, statusCode: null, error: describeRequestError(error, url, request.allowPrivate), responseBody: null, retryAfterMs: null });
    });
    // The instrumentation has set them by now; until the body goes, the headers can still be taken back.
    if (!request.propagateTrace) for (const header of TRACE_HEADERS) outgoing.removeHeader(header);
    outgoing.end(request.body);
  });
}

/**
 * The error as stored in the delivery log. request-filtering-agent's refusal
 * names the address a name resolved to ("DNS lookup 10.1.2.3(family:4,
 * host:db.internal) is not allowed…"): a tenant must not learn internal DNS
 * answers from it, so only the host they configured is named.
 */
function describeRequestError(error: NodeJS.ErrnoException, url: URL, allowPrivate: boolean): string {
  if (!allowPrivate && /^DNS lookup .* is not allowed/.test(error.message)) return `refused: ${url.hostname} does not resolve to a public address`;
  return error.code ? `${error.code}: ${error.message}` : error.message;
}

/**
 * The response as text PostgreSQL can store: NUL removed (text columns
 * refuse it, and the attempt would go unrecorded), at most
 * RESPONSE_BODY_LIMIT bytes, cut between characters.
 */
export function storableResponseBody(bytes: Buffer): string {
  const text = bytes.toString('utf8').replace(/\u0000/g, '');
  const encoded = Buffer.from(text, 'utf8');
  if (encoded.length <= RESPONSE_BODY_LIMIT) return text;
  let end = RESPONSE_BODY_LIMIT;
  // Back off continuation bytes (10xxxxxx) so no character is split.
  while (end > 0 && (encoded[end] & 0xc0) === 0x80) end -= 1;
  return encoded.subarray(0, end).toString('utf8');
}

function describeStatus(statusCode: number, location: string | undefined): string {
  if (statusCode >= 300 && statusCode < 400) return `HTTP ${statusCode}: redirects are not followed${location ? ` (to ${location})` : ''}`;
  return `HTTP ${statusCode}`;
}

/** Retry-After as seconds or an HTTP date, in milliseconds from now; null when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | null {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  // Every HTTP-date form starts with a day name; without this check Date.parse reads "-5" or "1.5" as dates.
  if (!/^[A-Za-z]{3}/.test(value.trim())) return null;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}
