import { createHmac } from 'node:crypto';
import { parse, serialize } from 'cookie';
import type { Request, Response } from 'express';
import { isLiveSession } from '../../domain/admin/sessions';
import { isUuid } from '../../domain/ids';
import type { Platform } from '../../platform';
import { sameSecret } from '../../same-secret';

/**
 * The dashboard's session cookie and its CSRF token. The cookie holds the
 * session id and an HMAC of it; the CSRF token is another HMAC of the same
 * id, put into the page and sent back in `X-CSRF-Token` (or the `csrf` form
 * field) with every change. Without the HttpOnly cookie nobody can compute
 * it, and SameSite=Strict keeps the cookie off cross-site requests in the
 * first place. The key comes from ADMIN_TOKEN, so changing the token ends
 * every session.
 */
export const SESSION_COOKIE = 'rw_admin';

const keyOf = (platform: Platform) => createHmac('sha256', platform.config.ADMIN_TOKEN).update('ragworks admin sessions').digest();
const mac = (platform: Platform, purpose: string, id: string) => createHmac('sha256', keyOf(platform)).update(`${purpose}:${id}`).digest('base64url');

export function csrfTokenFor(platform: Platform, sessionId: string): string {
  return mac(platform, 'csrf', sessionId);
}

export function csrfValid(platform: Platform, sessionId: string, presented: string | undefined): boolean {
  return presented !== undefined && sameSecret(presented, csrfTokenFor(platform, sessionId));
}

/**
 * Cookies are Secure over HTTPS (as a trusted proxy reports it) and always
 * in production, where a proxy that does not send X-Forwarded-Proto must not
 * make them travel in clear.
 */
export function secureCookies(platform: Platform, req: Request): boolean {
  return req.secure || platform.config.NODE_ENV === 'production';
}

export function setSessionCookie(platform: Platform, req: Request, res: Response, sessionId: string): void {
  res.append(
    'Set-Cookie',
    serialize(SESSION_COOKIE, `${sessionId}.${mac(platform, 'session', sessionId)}`, {
      httpOnly: true,
      sameSite: 'strict',
      secure: secureCookies(platform, req),
      path: '/',
      maxAge: Math.round(platform.config.ADMIN_SESSION_HOURS * 3600),
    }),
  );
}

export function clearSessionCookie(platform: Platform, req: Request, res: Response): void {
  res.append('Set-Cookie', serialize(SESSION_COOKIE, '', { httpOnly: true, sameSite: 'strict', secure: secureCookies(platform, req), path: '/', maxAge: 0 }));
}

/** The live session the request's cookie names, if its signature holds. */
export async function sessionOf(platform: Platform, req: Request): Promise<string | null> {
  const header = req.headers.cookie;
  if (!header) return null;
  const value = parse(header)[SESSION_COOKIE];
  if (!value) return null;
  const [id, signature] = value.split('.', 2);
  if (!id || !signature || !isUuid(id) || !sameSecret(signature, mac(platform, 'session', id))) return null;
  return (await isLiveSession(platform.db.knex, id)) ? id : null;
}

/**
 * A change arriving with the session cookie must come from our own pages:
 * the CSRF token must match, and a browser-sent Origin must be this host.
 */
export function sameOriginChange(req: Request): boolean {
  const origin = req.get('origin');
  if (origin === undefined) return req.get('sec-fetch-site') === undefined || req.get('sec-fetch-site') === 'same-origin';
  try {
    // req.host: the Host a trusted proxy forwarded (X-Forwarded-Host), else the request's own.
    return new URL(origin).host === req.host;
  } catch {
    return false;
  }
}
