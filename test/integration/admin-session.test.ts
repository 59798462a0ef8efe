import request from 'supertest';
import { ADMIN_TOKEN, startStack, type TestStack } from '../helpers/harness';

/** The cookie pairs a response sets, by name, with their attributes. */
const setCookies = (response: request.Response): Record<string, string> =>
  Object.fromEntries(([] as string[]).concat(response.headers['set-cookie'] ?? []).map((line) => [line.split('=')[0], line]));

const cookieValue = (line: string) => line.split(';')[0];

describe('dashboard sessions behind a proxy, and sign-in throttling (postgres)', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({ database: 'postgres', workers: false });
  });
  afterAll(async () => {
    await stack?.close();
  });

  /** Fills in and posts the login form as a browser would, from `ip` (as a trusted proxy reports it). */
  async function signIn(token: string, headers: Record<string, string>) {
    const form = await request(stack.app).get('/admin/login').set(headers).expect(200);
    const loginCookie = setCookies(form).rw_login;
    const loginToken = /name="login_token" value="([^"]+)"/.exec(form.text)![1];
    return request(stack.app).post('/admin/login').set(headers).set('Cookie', cookieValue(loginCookie)).type('form').send({ token, login_token: loginToken });
  }

  it('marks the cookie Secure over HTTPS and takes the origin from the proxy for the CSRF check', async () => {
    const proxied = { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'ops.example.com', 'X-Forwarded-For': '203.0.113.10' };
    const signedIn = await signIn(ADMIN_TOKEN, proxied);
    expect(signedIn.status).toBe(303);
    const session = setCookies(signedIn).rw_admin;
    expect(session).toMatch(/; HttpOnly/);
    expect(session).toMatch(/; Secure/);
    expect(session).toMatch(/; SameSite=Strict/);
    const page = await request(stack.app).get('/admin').set(proxied).set('Cookie', cookieValue(session)).expect(200);
    const csrf = /name="csrf-token" content="([^"]+)"/.exec(page.text)![1];
    const tenant = await stack.createTenant();
    const change = (origin: string) =>
      request(stack.app).post(`/api/admin/tenants/${tenant.id}/suspend`).set(proxied).set('Cookie', cookieValue(session)).set('X-CSRF-Token', csrf).set('Origin', origin);
    expect((await change('https://elsewhere.example.com')).status).toBe(403);
    await change('https://ops.example.com').expect(200);
  });

  it('makes an address that failed ten times wait, even with the right token, and records each failure', async () => {
    const from = { 'X-Forwarded-For': '198.51.100.7' };
    for (let attempt = 0; attempt < 10; attempt += 1) expect((await signIn('wrong-token-wrong-token-wrong', from)).status).toBe(401);
    const blocked = await signIn(ADMIN_TOKEN, from);
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(0);
    expect(setCookies(blocked).rw_admin).toBeUndefined();
    // Another address is not held up.
    expect((await signIn(ADMIN_TOKEN, { 'X-Forwarded-For': '198.51.100.8' })).status).toBe(303);
    const failures = await stack.sql((db) => db('audit_log').where({ action: 'admin.login_failed', ip: '198.51.100.7' }).count('* as n').first());
    expect(Number(failures?.n)).toBe(10);
  });
});
