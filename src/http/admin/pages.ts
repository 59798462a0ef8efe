import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parse, serialize } from 'cookie';
import express, { type Request, type RequestHandler, type Response, type Router } from 'express';
import { endSession, openSession } from '../../domain/admin/sessions';
import { recordAudit } from '../../domain/audit/audit';
import type { Platform } from '../../platform';
import { sameSecret } from '../../same-secret';
import { isOperatorRequest, isOperatorToken } from '../auth';
import { clearSessionCookie, csrfTokenFor, csrfValid, provenanceOf, secureCookies, sessionOf, setSessionCookie, type SessionServices } from './session';
import { forgiveSignInAttempt, setDeviceCookie, takeSignInAttempt, type SignInServices } from './sign-in-throttle';

/** What the dashboard's pages use of the platform. */
export type AdminPageServices = SessionServices & SignInServices & Pick<Platform, 'version'>;

export const ADMIN_PATH = '/admin';
const LOGIN_PATH = `${ADMIN_PATH}/login`;
/** Pre-session token for the login form (double submit), so another site cannot log a browser in with its own token. */
const LOGIN_COOKIE = 'rw_login';
const STATIC_DIR = path.join(__dirname, 'static');

/** Our pages load only our own scripts, styles and data; nobody may frame them. */
const PAGE_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

const escapeHtml = (value: string) =>
  value.replace(/[&<>"']/g, (char) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[char]!);

/** Where to go after logging in: only our own pages, never another site. */
function nextPath(value: unknown): string {
  return typeof value === 'string' && /^\/admin(\/[A-Za-z0-9/_#?=&.-]*)?$/.test(value) ? value : ADMIN_PATH;
}

function template(name: string): (values: Record<string, string>) => string {
  const source = fs.readFileSync(path.join(STATIC_DIR, name), 'utf8');
  return (values) => source.replace(/\{\{(\w+)\}\}/g, (_match, key: string) => escapeHtml(values[key] ?? ''));
}

/**
 * `Referrer-Policy: same-origin` rather than helmet's `no-referrer`: under
 * `no-referrer` browsers send `Origin: null` with our own forms' posts
 * (sign-in, sign-out), which the CSRF rule must refuse.
 */
function sendPage(res: Response, status: number, html: string): void {
  res
    .status(status)
    .setHeader('Content-Security-Policy', PAGE_POLICY)
    .setHeader('Referrer-Policy', 'same-origin')
    .setHeader('Cache-Control', 'no-store')
    .type('html')
    .send(html);
}

/**
 * The operator's pages: login and logout, the dashboard, its static files,
 * and the guard in front of Bull Board. Anonymous visitors of any page go
 * to the login page and see no content.
 */
export function adminPages(services: AdminPageServices): Router {
  const router = express.Router();
  const loginPage = template('login.html');
  const dashboardPage = template('index.html');
  const forms = express.urlencoded({ extended: false, limit: '8kb' });

  const renderLogin = (req: Request, res: Response, status: number, error = '') => {
    const loginToken = randomBytes(24).toString('base64url');
    res.append('Set-Cookie', serialize(LOGIN_COOKIE, loginToken, { httpOnly: true, sameSite: 'strict', secure: secureCookies(services, req), path: LOGIN_PATH, maxAge: 3600 }));
    sendPage(res, status, loginPage({ loginToken, next: nextPath(req.query.next ?? req.body?.next), error, errorHidden: error ? '' : 'hidden' }));
  };

  router.use(`${ADMIN_PATH}/assets`, express.static(STATIC_DIR, { index: false, maxAge: '1h' }));
  router.get(`${ADMIN_PATH}/vendor/chart.umd.min.js`, (_req, res) => {
    res.sendFile(path.join(path.dirname(require.resolve('chart.js')), 'chart.umd.min.js'), { maxAge: '1d' });
  });

  router.get(LOGIN_PATH, async (req, res) => {
    if (await sessionOf(services, req)) return res.redirect(303, nextPath(req.query.next));
    renderLogin(req, res, 200);
  });

  router.post(LOGIN_PATH, forms, async (req, res) => {
    const presented = parse(req.headers.cookie ?? '')[LOGIN_COOKIE];
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (!presented || typeof body.login_token !== 'string' || !sameSecret(presented, body.login_token)) {
      return renderLogin(req, res, 403, 'The form expired or came from another page; please sign in again.');
    }
    if (provenanceOf(req) !== 'own-origin') {
      return renderLogin(req, res, 403, "This sign-in did not come from this server's own page (behind a proxy, TRUST_PROXY must name it).");
    }
    const attempt = await takeSignInAttempt(services, req);
    if (!attempt.admitted) {
      res.setHeader('Retry-After', String(attempt.retryAfterSeconds));
      const from = attempt.by === 'device' ? 'this browser' : 'this address';
      return renderLogin(req, res, 429, `Too many failed sign-ins from ${from}; try again in ${Math.ceil(attempt.retryAfterSeconds / 60)} minutes.`);
    }
    const token = typeof body.token === 'string' ? body.token : '';
    const valid = token.length > 0 && isOperatorToken(token, services.config.ADMIN_TOKEN);
    const audit = (action: string, status: number, sessionId: string | null) =>
      recordAudit(services.db.knex, { actor: { kind: 'operator', sessionId }, action, method: 'POST', path: LOGIN_PATH, status, ip: req.ip ?? null, requestId: String(res.locals.requestId ?? '') }).catch((error) =>
        req.log?.warn({ err: error }, 'could not record the login in the audit trail'),
      );
    if (!valid) {
      await audit('admin.login_failed', 401, null);
      return renderLogin(req, res, 401, 'That is not the operator token.');
    }
    await forgiveSignInAttempt(services, attempt);
    const sessionId = await openSession(services.db.knex, { hours: services.config.ADMIN_SESSION_HOURS, ip: req.ip ?? null, userAgent: req.get('user-agent') ?? null });
    await audit('admin.login', 303, sessionId);
    setSessionCookie(services, req, res, sessionId);
    setDeviceCookie(services, req, res, attempt.device, LOGIN_PATH);
    res.append('Set-Cookie', serialize(LOGIN_COOKIE, '', { httpOnly: true, sameSite: 'strict', secure: secureCookies(services, req), path: LOGIN_PATH, maxAge: 0 }));
    res.redirect(303, nextPath(body.next));
  });

  router.post(`${ADMIN_PATH}/logout`, forms, async (req, res) => {
    const sessionId = await sessionOf(services, req);
    const csrf = (req.body as Record<string, unknown> | undefined)?.csrf;
    if (sessionId && csrfValid(services, sessionId, typeof csrf === 'string' ? csrf : undefined) && provenanceOf(req) === 'own-origin') {
      await endSession(services.db.knex, sessionId);
      await recordAudit(services.db.knex, {
        actor: { kind: 'operator', sessionId },
        action: 'admin.logout',
        method: 'POST',
        path: `${ADMIN_PATH}/logout`,
        status: 303,
        ip: req.ip ?? null,
        requestId: String(res.locals.requestId ?? ''),
      }).catch((error) => req.log?.warn({ err: error }, 'could not record the logout in the audit trail'));
    } else if (sessionId) {
      return res.status(403).type('text').send('Refused: this logout did not come from the dashboard page.');
    }
    clearSessionCookie(services, req, res);
    res.redirect(303, LOGIN_PATH);
  });

  // Also answers /admin/: trailing slashes are optional in Express 5 routes.
  router.get(ADMIN_PATH, async (req, res) => {
    const sessionId = await sessionOf(services, req);
    if (!sessionId) return res.redirect(302, `${LOGIN_PATH}?next=${encodeURIComponent(ADMIN_PATH)}`);
    sendPage(res, 200, dashboardPage({ csrf: csrfTokenFor(services, sessionId), version: services.version }));
  });

  return router;
}

/**
 * In front of Bull Board: a dashboard session, or the operator token (HTTP
 * Basic with the token as password, or Bearer) for scripts. Anyone else is
 * sent to the login page.
 */
export function requireOperatorPage(services: AdminPageServices): RequestHandler {
  return async (req, res, next) => {
    try {
      if (await isOperatorRequest(services, req)) return next();
    } catch (error) {
      return next(error);
    }
    res.redirect(302, `${LOGIN_PATH}?next=${encodeURIComponent(`${req.baseUrl}${req.path === '/' ? '' : req.path}`)}`);
  };
}
