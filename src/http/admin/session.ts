import { createHmac } from 'node:crypto';
import { parse, serialize } from 'cookie';
import type { Request, Response } from 'express';
import { isLiveSession } from '../../domain/admin/sessions';
import { normalHost } from '../../domain/hosts';
import { isUuid } from '../../domain/ids';
import type { Platform } from '../../platform';
import { sameSecret } from '../../same-secret';

/** What the dashboard's sessions use of the platform. */
export type SessionServices = Pick<Platform, 'config' | 'db'>;

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

const keyOf = (services: Pick<Platform, 'config'>) => createHmac('sha256', services.config.ADMIN_TOKEN).update('ragworks admin sessions').digest();
/** HMAC of `purpose:id` under a key derived from ADMIN_TOKEN: a new token voids everything signed with the old one. */
export const mac = (services: Pick<Platform, 'config'>, purpose: string, id: string) => createHmac('sha256', keyOf(services)).update(`${purpose}:${id}`).digest('base64url');

export function csrfTokenFor(services: Pick<Platform, 'config'>, sessionId: string): string {
  return mac(services, 'csrf', sessionId);
}

export function csrfValid(services: Pick<Platform, 'config'>, sessionId: string, presented: string | undefined): boolean {
  return presented !== undefined && sameSecret(presented, csrfTokenFor(services, sessionId));
}

/**
 * Cookies are Secure over HTTPS (as a trusted proxy reports it) and always
 * in production, where a proxy that does not send X-Forwarded-Proto must not
 * make them travel in clear.
 */
export function secureCookies(services: Pick<Platform, 'config'>, req: Request): boolean {
  return req.secure || services.config.NODE_ENV === 'production';
}

export function setSessionCookie(services: Pick<Platform, 'config'>, req: Request, res: Response, sessionId: string): void {
  res.append(
    'Set-Cookie',
    serialize(SESSION_COOKIE, `${sessionId}.${mac(services, 'session', sessionId)}`, {
      httpOnly: true,
      sameSite: 'strict',
      secure: secureCookies(services, req),
      path: '/',
      maxAge: Math.round(services.config.ADMIN_SESSION_HOURS * 3600),
    }),
  );
}

export function clearSessionCookie(services: Pick<Platform, 'config'>, req: Request, res: Response): void {
  res.append('Set-Cookie', serialize(SESSION_COOKIE, '', { httpOnly: true, sameSite: 'strict', secure: secureCookies(services, req), path: '/', maxAge: 0 }));
}

/** The live session the request's cookie names, if its signature holds. */
export async function sessionOf(services: SessionServices, req: Request): Promise<string | null> {
  const header = req.headers.cookie;
  if (!header) return null;
  const value = parse(header)[SESSION_COOKIE];
  if (!value) return null;
  const [id, signature] = value.split('.', 2);
  if (!id || !signature || !isUuid(id) || !sameSecret(signature, mac(services, 'session', id))) return null;
  return (await isLiveSession(services.db.knex, id)) ? id : null;
}

/** Where a browser says a request comes from: a page of this server's origin, anywhere else, or nothing said (not a browser). */
export type Provenance = 'own-origin' | 'elsewhere' | 'unstated';

/**
 * The one rule for "this change comes from our own pages" (docs/operations.md,
 * "Operator dashboard → CSRF"). `Origin`, when sent, must be this server's
 * origin: scheme, host and port, with the scheme and host as a trusted
 * proxy reports them (TRUST_PROXY); `Origin: null` is elsewhere. Without
 * it, `Sec-Fetch-Site` decides (`same-origin` only); without both, the
 * origin of `Referer`. A request with none of the three says nothing.
 */
export function provenanceOf(req: Request): Provenance {
  const origin = req.get('origin');
  if (origin !== undefined) return isOwnOrigin(req, origin) ? 'own-origin' : 'elsewhere';
  const site = req.get('sec-fetch-site');
  if (site !== undefined) return site === 'same-origin' ? 'own-origin' : 'elsewhere';
  const referer = req.get('referer');
  if (referer !== undefined) return isOwnOrigin(req, referer) ? 'own-origin' : 'elsewhere';
  return 'unstated';
}

/** Whether `url` (an Origin or a Referer) has this server's scheme, host and port; hosts compared normalised. */
function isOwnOrigin(req: Request, url: string): boolean {
  if (!URL.canParse(url) || !req.host || !URL.canParse(`${req.protocol}://${req.host}`)) return false;
  const theirs = new URL(url);
  const ours = new URL(`${req.protocol}://${req.host}`);
  // URL leaves out a scheme's default port: http://h and http://h:80 are one origin.
  return theirs.protocol === ours.protocol && theirs.port === ours.port && normalHost(theirs.hostname) === normalHost(ours.hostname);
}
