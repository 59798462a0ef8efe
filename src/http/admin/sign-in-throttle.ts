import { randomBytes } from 'node:crypto';
import { parse, serialize } from 'cookie';
import type { Request, Response } from 'express';
import ipaddr from 'ipaddr.js';
import { withTimeout } from '../../async';
import { giveBackBudgets, takeBudgets, type Budget } from '../../budgets';
import type { Platform } from '../../platform';
import { sameSecret } from '../../same-secret';
import { mac, secureCookies } from './session';

/** What the sign-in throttle uses of the platform. */
export type SignInServices = Pick<Platform, 'config' | 'health' | 'logger' | 'redis'>;

/**
 * The sign-in throttle, after OWASP's "device cookies": a browser that has
 * signed in before holds a signed, long-lived device cookie, and its failed
 * attempts count against that device alone; attempts without one count
 * against the client's address (as TRUST_PROXY lets it be known; an IPv6
 * address by its /64, which one host usually has whole). An address locked
 * out by someone guessing therefore never locks out the operator's known
 * browser, and a device that guesses wrong itself is locked like an address.
 * Each attempt takes a unit before the token is checked, and a right token
 * gives it back: concurrent guesses cannot pass the limit, successes cost
 * nothing.
 */
export const DEVICE_COOKIE = 'rw_device';
/** Failed sign-ins a device or an address may make per window; the window starts with the first. */
export const SIGN_IN_FAILURES_ALLOWED = 10;
export const SIGN_IN_FAILURE_WINDOW_SECONDS = 10 * 60;
const DEVICE_COOKIE_DAYS = 365;
const DEVICE_ID = /^[A-Za-z0-9_-]{22}$/;
/** A hung Redis must not hold the sign-in form; past this the attempt goes on uncounted. */
const REDIS_DEADLINE_MS = 250;

export type SignInAttempt =
  | { admitted: true; device: string | null; budget: Budget | null }
  | { admitted: false; by: 'device' | 'address'; retryAfterSeconds: number };

/** The device the request's device cookie names, if its signature holds. */
export function deviceOf(services: SignInServices, req: Request): string | null {
  const value = parse(req.headers.cookie ?? '')[DEVICE_COOKIE];
  const [id, signature] = value?.split('.', 2) ?? [];
  return id && signature && DEVICE_ID.test(id) && sameSecret(signature, mac(services, 'device', id)) ? id : null;
}

/** Marks the browser that just signed in as known: `device` kept when it had one, else a new one. Sent back only to `path`, the sign-in form. */
export function setDeviceCookie(services: SignInServices, req: Request, res: Response, device: string | null, path: string): void {
  const id = device ?? randomBytes(16).toString('base64url');
  res.append(
    'Set-Cookie',
    serialize(DEVICE_COOKIE, `${id}.${mac(services, 'device', id)}`, {
      httpOnly: true,
      sameSite: 'strict',
      secure: secureCookies(services, req),
      path,
      maxAge: DEVICE_COOKIE_DAYS * 24 * 3600,
    }),
  );
}

/**
 * Takes one attempt from the device's budget, or the address's without a
 * device. Without Redis (down, failing, slow) the attempt goes on
 * uncounted: the token's length is the defence that never goes away.
 */
export async function takeSignInAttempt(services: SignInServices, req: Request): Promise<SignInAttempt> {
  const device = deviceOf(services, req);
  const by = device ? 'device' : 'address';
  const budget: Budget = {
    key: `${services.config.QUEUE_PREFIX}:sign-in-failures:${by}:${device ?? networkOf(req.ip)}`,
    limit: SIGN_IN_FAILURES_ALLOWED,
    windowMs: SIGN_IN_FAILURE_WINDOW_SECONDS * 1000,
  };
  if (!services.health.isUp('redis')) return { admitted: true, device, budget: null };
  try {
    const taking = await withTimeout(takeBudgets(services.redis, [budget]), REDIS_DEADLINE_MS);
    if (taking.admitted) return { admitted: true, device, budget };
    return { admitted: false, by, retryAfterSeconds: Math.max(1, Math.ceil(taking.states[0].resetMs / 1000)) };
  } catch (error) {
    services.logger.debug({ err: error }, 'sign-in attempts not counted: Redis did not answer');
    return { admitted: true, device, budget: null };
  }
}

/** A right token: the attempt it took is given back. */
export async function forgiveSignInAttempt(services: SignInServices, attempt: { budget: Budget | null }): Promise<void> {
  if (!attempt.budget) return;
  await withTimeout(giveBackBudgets(services.redis, [attempt.budget]), REDIS_DEADLINE_MS).catch((error) =>
    services.logger.debug({ err: error }, 'sign-in attempt not given back: Redis did not answer'),
  );
}

/** Whose attempts an address's are: the address itself, an IPv6 address's /64 network. */
function networkOf(ip: string | undefined): string {
  if (!ip || !ipaddr.isValid(ip)) return 'unknown';
  const address = ipaddr.process(ip);
  return address.kind() === 'ipv6' ? `${ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/64`).toString()}/64` : address.toString();
}
