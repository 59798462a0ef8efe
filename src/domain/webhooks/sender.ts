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
}

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

// Keep-alive agents, one pair per policy: connections to a receiver are reused between deliveries.
const filteringAgents = {
  http: new RequestFilteringHttpAgent({ keepAlive: true, allowPrivateIPAddress: false, allowMetaIPAddress: false }),
  https: new RequestFilteringHttpsAgent({ keepAlive: true, allowPrivateIPAddress: false, allowMetaIPAddress: false }),
};
const openAgents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };

/**
 * POSTs a signed event. Redirects are not followed (a 3xx is a failure), a
 * private or loopback address is refused when the connection is made —
 * after DNS, so a name that resolves or rebinds to one is caught too —
 * unless `allowPrivate`. Never throws: every outcome is a SendResult.
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
    const finish = (result: Omit<SendResult, 'durationMs'>) => {
      if (settled) return;
      settled = true;
      resolve({ ...result, durationMs: elapsed() });
    };
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
        const chunks: Buffer[] = [];
        let kept = 0;
        response.on('data', (chunk: Buffer) => {
          if (kept < RESPONSE_BODY_LIMIT) {
            chunks.push(chunk);
            kept += chunk.length;
          }
        });
        response.on('error', () => undefined);
        response.on('end', () => {
          const statusCode = response.statusCode ?? 0;
          const ok = statusCode >= 200 && statusCode < 300;
          finish({
            ok,
            statusCode,
            error: ok ? null : describeStatus(statusCode, response.headers.location),
            responseBody: storableResponseBody(Buffer.concat(chunks)),
            retryAfterMs: statusCode === 429 || statusCode === 503 ? parseRetryAfter(response.headers['retry-after']) : null,
          });
        });
      },
    );
    outgoing.setTimeout(request.timeoutMs, () => {
      outgoing.destroy(new Error(`no response within ${request.timeoutMs} ms`));
    });
    outgoing.on('error', (error: NodeJS.ErrnoException) => {
      finish({ ok: false, statusCode: null, error: error.code ? `${error.code}: ${error.message}` : error.message, responseBody: null, retryAfterMs: null });
    });
    outgoing.end(request.body);
  });
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
