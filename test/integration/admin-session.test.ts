import type { Express } from 'express';
import request from 'supertest';
import { ADMIN_TOKEN, startStack, type TestStack } from '../helpers/harness';

/** The cookie pairs a response sets, by name, with their attributes. */
const setCookies = (response: request.Response): Record<string, string> =>
  Object.fromEntries(([] as string[]).concat(response.headers['set-cookie'] ?? []).map((line) => [line.split('=')[0], line]));

const cookieValue = (line: string) => line.split(';')[0];

const WRONG_TOKEN = 'wrong-token-wrong-token-wrong';

/**
 * Fills in and posts the login form as a browser on this origin would
 * (`Sec-Fetch-Site: same-origin` unless `headers` say otherwise), with the
 * request's own cookies (`cookies`, e.g. a device cookie) beside the form's.
 */
async function signIn(app: Express, token: string, headers: Record<string, string> = {}, cookies: string[] = []) {
  const form = await request(app).get('/admin/login').set(headers).expect(200);
  const loginCookie = setCookies(form).rw_login;
  const loginToken = /name="login_token" value="([^"]+)"/.exec(form.text)![1];
  const provenance = 'Origin' in headers || 'Referer' in headers ? {} : { 'Sec-Fetch-Site': 'same-origin' };
  return request(app)
    .post('/admin/login')
    .set({ ...provenance, ...headers })
    .set('Cookie', [cookieValue(loginCookie), ...cookies].join('; '))
    .type('form')
    .send({ token, login_token: loginToken });
}

/** The `rw_device=…` pair a successful sign-in set. */
function deviceCookieOf(response: request.Response): string {
  expect(response.status).toBe(303);
  return cookieValue(setCookies(response).rw_device);
}

describe('dashboard sessions behind a proxy TRUST_PROXY names (postgres)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    // The test "proxy" is this process, on loopback.
    stack = await startStack({ database: 'postgres', workers: false, env: { TRUST_PROXY: 'loopback' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('marks the cookies Secure over HTTPS and takes the origin from the proxy for the CSRF check', async () => {
    const proxied = { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'ops.example.com', 'X-Forwarded-For': '203.0.113.10' };
    const signedIn = await signIn(stack.app, ADMIN_TOKEN, { ...proxied, Origin: 'https://ops.example.com' });
    expect(signedIn.status).toBe(303);
    const session = setCookies(signedIn).rw_admin;
    expect(session).toMatch(/; HttpOnly/);
    expect(session).toMatch(/; Secure/);
    expect(session).toMatch(/; SameSite=Strict/);
    // The device cookie: long-lived, sent back only to the sign-in form.
    const device = setCookies(signedIn).rw_device;
    for (const attribute of [/; HttpOnly/, /; Secure/, /; SameSite=Strict/, /; Path=\/admin\/login(;|$)/, /; Max-Age=31536000/]) expect(device).toMatch(attribute);
    const page = await request(stack.app).get('/admin').set(proxied).set('Cookie', cookieValue(session)).expect(200);
    const csrf = /name="csrf-token" content="([^"]+)"/.exec(page.text)![1];
    const tenant = await stack.createTenant();
    const change = (origin: string) =>
      request(stack.app).post(`/api/admin/tenants/${tenant.id}/suspend`).set(proxied).set('Cookie', cookieValue(session)).set('X-CSRF-Token', csrf).set('Origin', origin);
    expect((await change('https://elsewhere.example.com')).status).toBe(403);
    // The scheme is the proxy's too: the page's own origin over plain HTTP is another origin.
    expect((await change('http://ops.example.com')).status).toBe(403);
    await change('https://ops.example.com').expect(200);
  });

  it('makes an address that failed ten times wait, even with the right token, and records each failure', async () => {
    const from = { 'X-Forwarded-For': '198.51.100.7' };
    for (let attempt = 0; attempt < 10; attempt += 1) expect((await signIn(stack.app, WRONG_TOKEN, from)).status).toBe(401);
    const blocked = await signIn(stack.app, ADMIN_TOKEN, from);
    expect(blocked.status).toBe(429);
    const retryAfter = Number(blocked.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(10 * 60);
    expect(setCookies(blocked).rw_admin).toBeUndefined();
    // Another address is not held up: with TRUST_PROXY naming the proxy, the forwarded address is the client's.
    expect((await signIn(stack.app, ADMIN_TOKEN, { 'X-Forwarded-For': '198.51.100.8' })).status).toBe(303);
    const failures = await stack.sql((db) => db('audit_log').where({ action: 'admin.login_failed', ip: '198.51.100.7' }).count('* as n').first());
    expect(Number(failures?.n)).toBe(10);
  });
});

describe('the sign-in throttle with no proxy trusted (the default; postgres)', () => {
  let stack: TestStack;
  /** Device cookies of two browsers that signed in before anything failed. */
  let known: string;
  let otherKnown: string;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
    known = deviceCookieOf(await signIn(stack.app, ADMIN_TOKEN));
    otherKnown = deviceCookieOf(await signIn(stack.app, ADMIN_TOKEN));
    expect(known).not.toEqual(otherKnown);
  });
  afterAll(async () => {
    await stack?.close();
  });

  /** Fails from this (loopback) address, under ever new forged X-Forwarded-For, until it is refused. */
  async function lockOutThisAddress(): Promise<number> {
    for (let attempt = 0; attempt <= 10; attempt += 1) {
      const response = await signIn(stack.app, WRONG_TOKEN, { 'X-Forwarded-For': `198.51.100.${attempt + 1}` });
      if (response.status === 429) return attempt;
      expect(response.status).toBe(401);
    }
    throw new Error('the address was never locked out');
  }

  it('ignores X-Forwarded-Proto and -Host from a peer it does not trust', async () => {
    const forged = { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'ops.example.com' };
    // The browser's real origin is this server's own: what the forged headers claim is not.
    const refused = await signIn(stack.app, ADMIN_TOKEN, { ...forged, Origin: 'https://ops.example.com' });
    expect(refused.status).toBe(403);
    expect(setCookies(refused).rw_admin).toBeUndefined();
    const signedIn = await signIn(stack.app, ADMIN_TOKEN, { ...forged, Host: 'ragworks.internal:8080', Origin: 'http://ragworks.internal:8080' }, [known]);
    expect(signedIn.status).toBe(303);
    expect(setCookies(signedIn).rw_admin).not.toMatch(/; Secure/);
  });

  it("keys the throttle on the peer's own address: after ten failures a new forged X-Forwarded-For is still refused", async () => {
    expect(await lockOutThisAddress()).toBe(10);
    const refused = await signIn(stack.app, ADMIN_TOKEN, { 'X-Forwarded-For': '203.0.113.99' });
    expect(refused.status).toBe(429);
    expect(refused.text).toContain('from this address');
    expect(setCookies(refused).rw_admin).toBeUndefined();
    const failures = await stack.sql((db) => db('audit_log').where({ action: 'admin.login_failed' }).whereIn('ip', ['127.0.0.1', '::ffff:127.0.0.1', '::1']).count('* as n').first());
    expect(Number(failures?.n)).toBe(10);
  });

  it('lets a browser that signed in before through an address locked by failures, but not one without a (valid) device cookie', async () => {
    await lockOutThisAddress();
    expect((await signIn(stack.app, ADMIN_TOKEN)).status).toBe(429);
    // A device cookie whose signature does not hold is no device.
    const forgedDevice = `${known.split('.')[0]}.not-the-signature`;
    expect((await signIn(stack.app, ADMIN_TOKEN, {}, [forgedDevice])).status).toBe(429);
    const signedIn = await signIn(stack.app, ADMIN_TOKEN, {}, [known]);
    expect(signedIn.status).toBe(303);
    expect(setCookies(signedIn).rw_admin).toBeDefined();
    // The device keeps its identity: its cookie is renewed, not replaced.
    expect(deviceCookieOf(signedIn)).toBe(known);
  });

  it('locks a device that fails ten times itself, and only that device', async () => {
    for (let attempt = 0; attempt < 10; attempt += 1) expect((await signIn(stack.app, WRONG_TOKEN, {}, [otherKnown])).status).toBe(401);
    const locked = await signIn(stack.app, ADMIN_TOKEN, {}, [otherKnown]);
    expect(locked.status).toBe(429);
    expect(locked.text).toContain('from this browser');
    expect(Number(locked.headers['retry-after'])).toBeGreaterThan(0);
    expect((await signIn(stack.app, ADMIN_TOKEN, {}, [known])).status).toBe(303);
  });
});

describe('the CSRF rule: one origin check for every change (postgres)', () => {
  let stack: TestStack;
  let tenant: Awaited<ReturnType<TestStack['createTenant']>>;
  let session: string;
  let csrf: string;
  /** The host the browser talks to; no proxy is trusted, so the request's own Host is the origin's host. */
  const HOST = 'ops.example.com';
  const OWN_ORIGIN = `http://${HOST}`;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
    tenant = await stack.createTenant();
  });
  beforeEach(async () => {
    const signedIn = await signIn(stack.app, ADMIN_TOKEN, { Host: HOST, Origin: OWN_ORIGIN });
    expect(signedIn.status).toBe(303);
    session = cookieValue(setCookies(signedIn).rw_admin);
    const page = await request(stack.app).get('/admin').set('Host', HOST).set('Cookie', session).expect(200);
    csrf = /name="csrf-token" content="([^"]+)"/.exec(page.text)![1];
  });
  afterAll(async () => {
    await stack?.close();
  });

  /** Suspends the tenant with the session cookie and its CSRF token, saying what `headers` say of where it comes from. */
  async function suspendWith(headers: Record<string, string>): Promise<number> {
    const response = await request(stack.app).post(`/api/admin/tenants/${tenant.id}/suspend`).set({ Host: HOST, ...headers }).set('Cookie', session).set('X-CSRF-Token', csrf);
    if (response.status === 200) await stack.operator('post', `/api/admin/tenants/${tenant.id}/resume`).expect(200);
    else expect(response.body.error.code).toBe('csrf_failed');
    return response.status;
  }

  it('accepts an Origin equal to this origin, hosts compared normalised (case, trailing dot)', async () => {
    expect(await suspendWith({ Origin: OWN_ORIGIN })).toBe(200);
    expect(await suspendWith({ Host: 'OPS.Example.COM.', Origin: OWN_ORIGIN })).toBe(200);
    expect(await suspendWith({ Host: `${HOST}:8080`, Origin: `http://${HOST}.:8080` })).toBe(200);
    // A scheme's default port is no port.
    expect(await suspendWith({ Host: `${HOST}:80`, Origin: OWN_ORIGIN })).toBe(200);
  });

  it('refuses an Origin of another host, port or scheme, and Origin: null', async () => {
    for (const origin of ['http://evil.example', `http://${HOST}:8081`, `https://${HOST}`, `http://${HOST}.evil.example`, 'null']) {
      expect({ origin, status: await suspendWith({ Origin: origin }) }).toEqual({ origin, status: 403 });
    }
  });

  it('without Origin, takes Sec-Fetch-Site: same-origin and nothing else', async () => {
    expect(await suspendWith({ 'Sec-Fetch-Site': 'same-origin' })).toBe(200);
    for (const site of ['same-site', 'cross-site', 'none']) expect({ site, status: await suspendWith({ 'Sec-Fetch-Site': site }) }).toEqual({ site, status: 403 });
  });

  it("without Origin and Sec-Fetch-Site, takes the Referer's origin", async () => {
    expect(await suspendWith({ Referer: `${OWN_ORIGIN}/admin` })).toBe(200);
    expect(await suspendWith({ Referer: 'http://evil.example/admin' })).toBe(403);
    expect(await suspendWith({ Referer: `https://${HOST}/admin` })).toBe(403);
  });

  it('refuses a change made with the cookie that says nothing of where it comes from', async () => {
    expect(await suspendWith({})).toBe(403);
    expect((await stack.operator('get', `/api/admin/tenants/${tenant.id}`).expect(200)).body.status).toBe('active');
  });

  it('holds for the operator token too: a browser saying elsewhere is refused, a script saying nothing is not', async () => {
    const suspend = () => stack.operator('post', `/api/admin/tenants/${tenant.id}/suspend`).set('Host', HOST);
    for (const headers of [{ Origin: 'http://evil.example' }, { 'Sec-Fetch-Site': 'same-site' }, { Referer: 'http://evil.example/' }, { Origin: 'null' }]) {
      const refused = await suspend().set(headers);
      expect({ headers, status: refused.status, code: refused.body.error?.code }).toEqual({ headers, status: 403, code: 'csrf_failed' });
    }
    await suspend().expect(200);
    await stack.operator('post', `/api/admin/tenants/${tenant.id}/resume`).set('Origin', OWN_ORIGIN).set('Host', HOST).expect(200);
  });

  it('refuses a logout from another origin and keeps the session; takes it from the page', async () => {
    const logout = (headers: Record<string, string>) =>
      request(stack.app).post('/admin/logout').set({ Host: HOST, ...headers }).set('Cookie', session).type('form').send({ csrf });
    const alive = async () => (await request(stack.app).get('/admin').set('Host', HOST).set('Cookie', session)).status;
    for (const headers of [{ Origin: 'http://evil.example' }, { 'Sec-Fetch-Site': 'cross-site' }, { Origin: `https://${HOST}` }, {}] as Array<Record<string, string>>) {
      expect({ headers, status: (await logout(headers)).status }).toEqual({ headers, status: 403 });
      expect(await alive()).toBe(200);
    }
    const out = await logout({ Origin: OWN_ORIGIN });
    expect(out.status).toBe(303);
    expect(await alive()).toBe(302);
  });

  it('refuses a sign-in form posted from another origin', async () => {
    for (const headers of [{ Origin: 'http://evil.example' }, { Origin: 'null' }, { 'Sec-Fetch-Site': 'cross-site' }] as Array<Record<string, string>>) {
      const refused = await signIn(stack.app, ADMIN_TOKEN, { Host: HOST, ...headers });
      expect({ headers, status: refused.status, session: setCookies(refused).rw_admin }).toEqual({ headers, status: 403, session: undefined });
    }
  });
});
