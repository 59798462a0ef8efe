import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Webhook } from 'standardwebhooks';
import { nextAttemptDelayMs } from '../../src/domain/webhooks/retry';
import { parseRetryAfter, RESPONSE_BODY_LIMIT, signatureHeader, storableResponseBody } from '../../src/domain/webhooks/sender';
import { unsafeUrlReason } from '../../src/domain/webhooks/url-safety';

/** The pure parts of webhook delivery: retry timing, Retry-After, signatures, URL refusal. */

const SCHEDULE = [0, 5, 300, 1800] as const;
const HOUR_MS = 3_600_000;

describe('nextAttemptDelayMs', () => {
  const middle = () => 0.5; // 0.8 + 0.4 * 0.5 = exactly the scheduled delay

  it('takes the schedule entry for the number of attempts made', () => {
    expect(nextAttemptDelayMs(SCHEDULE, 0, null, HOUR_MS, middle)).toBe(0);
    expect(nextAttemptDelayMs(SCHEDULE, 1, null, HOUR_MS, middle)).toBe(5_000);
    expect(nextAttemptDelayMs(SCHEDULE, 2, null, HOUR_MS, middle)).toBe(300_000);
    expect(nextAttemptDelayMs(SCHEDULE, 3, null, HOUR_MS, middle)).toBe(1_800_000);
  });

  it('keeps to the last entry past the end of the schedule', () => {
    expect(nextAttemptDelayMs(SCHEDULE, 4, null, HOUR_MS, middle)).toBe(1_800_000);
    expect(nextAttemptDelayMs(SCHEDULE, 50, null, HOUR_MS, middle)).toBe(1_800_000);
  });

  it('adds at most ±20% jitter', () => {
    expect(nextAttemptDelayMs(SCHEDULE, 2, null, HOUR_MS, () => 0)).toBe(240_000);
    expect(nextAttemptDelayMs(SCHEDULE, 2, null, HOUR_MS, () => 0.999999)).toBeLessThanOrEqual(360_000);
    expect(nextAttemptDelayMs(SCHEDULE, 2, null, HOUR_MS, () => 0.999999)).toBeGreaterThan(359_000);
    expect(nextAttemptDelayMs(SCHEDULE, 2, null, HOUR_MS, () => 0.25)).toBe(270_000);
    // With the real random source every delay stays inside the band.
    for (let i = 0; i < 200; i++) {
      const delay = nextAttemptDelayMs(SCHEDULE, 1, null, HOUR_MS);
      expect(delay).toBeGreaterThanOrEqual(4_000);
      expect(delay).toBeLessThanOrEqual(6_000);
    }
  });

  it('waits for a Retry-After longer than the scheduled delay', () => {
    expect(nextAttemptDelayMs(SCHEDULE, 0, 3_000, HOUR_MS, middle)).toBe(3_000);
    expect(nextAttemptDelayMs(SCHEDULE, 1, 42_000, HOUR_MS, middle)).toBe(42_000);
    expect(nextAttemptDelayMs(SCHEDULE, 2, 600_000, HOUR_MS, middle)).toBe(600_000);
  });

  it('never lets a short Retry-After cut the schedule: a receiver answering Retry-After: 1 cannot burn every attempt in seconds', () => {
    expect(nextAttemptDelayMs(SCHEDULE, 1, 1_000, HOUR_MS, middle)).toBe(5_000);
    expect(nextAttemptDelayMs(SCHEDULE, 2, 1_000, HOUR_MS, middle)).toBe(300_000);
    expect(nextAttemptDelayMs(SCHEDULE, 3, 42_000, HOUR_MS, middle)).toBe(1_800_000);
    // The schedule's jitter still applies when it is the longer wait.
    expect(nextAttemptDelayMs(SCHEDULE, 2, 1_000, HOUR_MS, () => 0)).toBe(240_000);
    // Over the default schedule, Retry-After: 1 on every answer waits as long as the schedule does.
    const spec = [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400];
    const total = spec.reduce((sum, _, attempt) => sum + nextAttemptDelayMs(spec, attempt, 1_000, HOUR_MS, middle), 0);
    expect(total).toBeGreaterThanOrEqual(spec.reduce((sum, seconds) => sum + seconds * 1000, 0));
  });

  it('takes Retry-After as at least one second and at most the configured maximum', () => {
    expect(nextAttemptDelayMs(SCHEDULE, 0, 0, HOUR_MS, middle)).toBe(1_000);
    expect(nextAttemptDelayMs(SCHEDULE, 0, 10, HOUR_MS, middle)).toBe(1_000);
    expect(nextAttemptDelayMs(SCHEDULE, 1, 7 * 24 * HOUR_MS, HOUR_MS, middle)).toBe(HOUR_MS);
    expect(nextAttemptDelayMs(SCHEDULE, 1, 90_000, 60_000, middle)).toBe(60_000);
    // The maximum bounds the receiver's wish, not the schedule: a longer scheduled step stays as it is.
    expect(nextAttemptDelayMs(SCHEDULE, 3, 7 * 24 * HOUR_MS, 60_000, middle)).toBe(1_800_000);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2030-01-01T00:00:00Z');

  it('reads delay-seconds', () => {
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter('0', now)).toBe(0);
    expect(parseRetryAfter(' 7 ', now)).toBe(7_000);
  });

  it('reads an HTTP date as the time left until it', () => {
    expect(parseRetryAfter('Tue, 01 Jan 2030 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Tue, 01 Jan 2030 01:00:00 GMT', now)).toBe(3_600_000);
  });

  it('reads a date already past as no wait', () => {
    expect(parseRetryAfter('Sat, 31 Dec 2029 23:00:00 GMT', now)).toBe(0);
  });

  it.each([undefined, '', 'soon', '12abc', '-5', '1.5', '3 days', '1e3'])('gives null for %p', (value) => {
    expect(parseRetryAfter(value, now)).toBeNull();
  });
});

describe('storableResponseBody', () => {
  it('keeps a short body as it is', () => {
    expect(storableResponseBody(Buffer.from('{"ok":true} ✓'))).toBe('{"ok":true} ✓');
    expect(storableResponseBody(Buffer.alloc(0))).toBe('');
  });

  it('drops NUL, which a PostgreSQL text column refuses', () => {
    expect(storableResponseBody(Buffer.from([0x47, 0x49, 0x46, 0x00, 0x01, 0x00, 0x41]))).toBe('GIF\u0001A');
  });

  it('keeps at most the limit in bytes, never splitting a character', () => {
    expect(RESPONSE_BODY_LIMIT).toBe(4096);
    const ascii = storableResponseBody(Buffer.from('x'.repeat(10_000)));
    expect(ascii).toBe('x'.repeat(4096));
    const cutInside = storableResponseBody(Buffer.from(`${'a'.repeat(4095)}${'é'.repeat(10)}`));
    expect(cutInside).toBe('a'.repeat(4095));
    const emoji = storableResponseBody(Buffer.from('😀'.repeat(2000)));
    expect(Buffer.byteLength(emoji)).toBe(4096);
    expect(emoji).toBe('😀'.repeat(1024));
  });

  it('stays within the limit when invalid bytes decode wider', () => {
    const stored = storableResponseBody(Buffer.alloc(4096, 0xff));
    expect(Buffer.byteLength(stored)).toBeLessThanOrEqual(4096);
    expect(stored.length).toBeGreaterThan(1000);
  });
});

describe('signatureHeader', () => {
  const secretA = `whsec_${Buffer.alloc(32, 1).toString('base64')}`;
  const secretB = `whsec_${Buffer.alloc(32, 2).toString('base64')}`;
  const body = JSON.stringify({ id: 'evt', type: 'webhook.test', data: { emoji: 'ünïcødé ✓' } });
  const messageId = '01890a5d-ac96-774b-bcce-b302099a8057';

  const headersFor = (signature: string, timestamp: Date) => ({
    'webhook-id': messageId,
    'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
    'webhook-signature': signature,
  });

  it('is a v1 signature that standardwebhooks verifies', () => {
    const timestamp = new Date();
    const header = signatureHeader([secretA], messageId, timestamp, body);
    expect(header).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(new Webhook(secretA).verify(body, headersFor(header, timestamp))).toEqual(JSON.parse(body));
  });

  it('does not verify with another secret, another body or another id', () => {
    const timestamp = new Date();
    const header = signatureHeader([secretA], messageId, timestamp, body);
    expect(() => new Webhook(secretB).verify(body, headersFor(header, timestamp))).toThrow();
    expect(() => new Webhook(secretA).verify(`${body} `, headersFor(header, timestamp))).toThrow();
    expect(() => new Webhook(secretA).verify(body, { ...headersFor(header, timestamp), 'webhook-id': 'other' })).toThrow();
  });

  it('carries one space-separated v1 signature per secret, each verifiable alone', () => {
    const timestamp = new Date();
    const header = signatureHeader([secretA, secretB], messageId, timestamp, body);
    const parts = header.split(' ');
    expect(parts).toHaveLength(2);
    for (const part of parts) expect(part).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(parts[0]).not.toBe(parts[1]);
    expect(new Webhook(secretA).verify(body, headersFor(header, timestamp))).toEqual(JSON.parse(body));
    expect(new Webhook(secretB).verify(body, headersFor(header, timestamp))).toEqual(JSON.parse(body));
    const stranger = `whsec_${Buffer.alloc(32, 3).toString('base64')}`;
    expect(() => new Webhook(stranger).verify(body, headersFor(header, timestamp))).toThrow();
  });
});

describe('unsafeUrlReason', () => {
  const refusedUnlessAllowed: Array<[string, RegExp]> = [
    ['http://127.0.0.1/', /loopback/],
    ['http://127.0.0.1:8080/hook', /loopback/],
    ['http://2130706433/', /loopback/], // 127.0.0.1 as one number
    ['http://0x7f.1/', /loopback/],
    ['http://localhost/', /localhost/],
    ['http://LOCALHOST:3000/x', /localhost/],
    ['http://localhost./', /localhost/],
    ['http://hooks.localhost/', /localhost/],
    ['http://10.0.0.1/', /private/],
    ['http://172.16.0.1/', /private/],
    ['http://192.168.1.1/', /private/],
    ['http://169.254.169.254/latest/meta-data/', /169\.254\.169\.254/],
    ['http://100.64.0.1/', /100\.64\.0\.1/],
    ['http://0.0.0.0/', /0\.0\.0\.0/],
    ['http://224.0.0.1/', /multicast/],
    ['http://255.255.255.255/', /broadcast/],
    ['http://[::1]/', /loopback/],
    ['http://[::]/', /::/],
    ['http://[::ffff:127.0.0.1]/', /loopback/],
    ['http://[::ffff:10.0.0.1]/', /private/],
    ['http://[::ffff:a9fe:a9fe]/', /169\.254\.169\.254/],
    ['http://[fd00::1]/', /fd00::1/],
    ['http://[fe80::1]/', /fe80::1/],
    // IPv4-compatible IPv6 (::/96, deprecated): ipaddr.js calls these unicast whatever they embed.
    ['http://[::127.0.0.1]/', /IPv4-compatible/],
    ['http://[0:0:0:0:0:0:127.0.0.1]/', /IPv4-compatible/],
    ['http://[::7f00:1]/', /IPv4-compatible/],
    ['http://[::10.0.0.1]/', /IPv4-compatible/],
    ['http://[::169.254.169.254]/', /IPv4-compatible/],
  ];

  it.each(refusedUnlessAllowed)('refuses %s', (url, reason) => {
    expect(unsafeUrlReason(url, false)).toMatch(reason);
  });

  it.each(refusedUnlessAllowed)('allows %s with WEBHOOK_ALLOW_PRIVATE', (url) => {
    expect(unsafeUrlReason(url, true)).toBeNull();
  });

  it.each(['https://example.com/hook', 'http://example.com:8080/a?b=c', 'http://8.8.8.8/', 'https://[2606:4700:4700::1111]/', 'http://metadata.example.org/'])(
    'accepts the public %s',
    (url) => {
      expect(unsafeUrlReason(url, false)).toBeNull();
    },
  );

  it.each([
    ['ftp://example.com/', /http or https/],
    ['file:///etc/passwd', /http or https/],
    ['javascript:alert(1)', /http or https/],
    ['https://user:secret@example.com/', /credentials/],
    ['not a url', /not a valid URL/],
  ])('refuses %s whatever the setting', (url, reason) => {
    expect(unsafeUrlReason(url, false)).toMatch(reason);
    expect(unsafeUrlReason(url, true)).toMatch(reason);
  });
});

describe('the receiver example of docs/webhooks.md', () => {
  /** The Node example under "Verifying in a receiver", as published. */
  function receiverExampleCode(): string {
    const page = readFileSync(path.join(__dirname, '../../docs/webhooks.md'), 'utf8');
    const start = page.indexOf('## Verifying in a receiver');
    expect(start).toBeGreaterThan(-1);
    const block = /```js\n([\s\S]*?)```/.exec(page.slice(start));
    expect(block).not.toBeNull();
    return block![1];
  }

  /** Runs the example with its own `require`, on a free port instead of 3000; resolves once it listens. */
  async function runExample(secret: string): Promise<{ server: http.Server; logged: unknown[][] }> {
    let server: http.Server | undefined;
    const listening: Promise<void>[] = [];
    const patchedHttp = {
      ...http,
      createServer: (...args: Parameters<typeof http.createServer>) => {
        const created = http.createServer(...args);
        server = created;
        const listen = created.listen.bind(created);
        created.listen = ((): http.Server => {
          listening.push(new Promise((resolve) => listen(0, '127.0.0.1', () => resolve())));
          return created;
        }) as typeof created.listen;
        return created;
      },
    };
    const logged: unknown[][] = [];
    const exampleRequire = (name: string): unknown => (name === 'node:http' || name === 'http' ? patchedHttp : require(name));
    const run = new Function('require', 'process', 'console', receiverExampleCode()) as (req: typeof exampleRequire, proc: unknown, out: unknown) => void;
    run(exampleRequire, { env: { RAGWORKS_WEBHOOK_SECRET: secret } }, { log: (...args: unknown[]) => logged.push(args) });
    expect(server).toBeDefined();
    await Promise.all(listening);
    return { server: server!, logged };
  }

  it('verifies a signed body whose multi-byte characters are split between chunks', async () => {
    const secret = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
    const { server, logged } = await runExample(secret);
    try {
      const body = JSON.stringify({ id: 'msg_1', type: 'document.indexed', data: { id: 'doc_é', title: 'Café 😀' } });
      const bytes = Buffer.from(body);
      // Cut inside a character: 'é' is two bytes in UTF-8.
      const cut = bytes.indexOf(Buffer.from('é')) + 1;
      const timestamp = new Date();
      const status = await new Promise<number>((resolve, reject) => {
        const request = http.request(
          {
            host: '127.0.0.1',
            port: (server.address() as AddressInfo).port,
            method: 'POST',
            // No Content-Length: chunked encoding, and each HTTP chunk reaches the server as its own 'data' event.
            headers: {
              'Content-Type': 'application/json',
              'webhook-id': 'msg_1',
              'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
              'webhook-signature': new Webhook(secret).sign('msg_1', timestamp, body),
            },
          },
          (response) => {
            response.resume();
            response.on('end', () => resolve(response.statusCode ?? 0));
          },
        );
        request.on('error', reject);
        request.write(bytes.subarray(0, cut));
        request.end(bytes.subarray(cut));
      });
      expect(status).toBe(204);
      expect(logged).toEqual([['document.indexed', 'doc_é']]);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
