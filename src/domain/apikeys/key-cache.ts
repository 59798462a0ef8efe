import type { Knex } from 'knex';
import { LRUCache } from 'lru-cache';
import { customDomainOf, type Tenant } from '../tenants/tenants';
import { hashKey, isWellFormedKey, verifyApiKey, type KeyVerdict } from './apikeys';
import type { CredentialChannel, CredentialSubject } from './credential-changes';

type Accepted = Extract<KeyVerdict, { ok: true }>;
type Refused = Extract<KeyVerdict, { ok: false }>;

interface Positive {
  verdict: Accepted;
  /** The request's custom domain, or null: the domain's tenant is part of the verdict. */
  domain: string | null;
  /** The key's expires_at in ms, checked on every use. */
  expiresAt: number;
}

interface Negative {
  verdict: Refused;
  /** The key's id when the key exists (revoked, expired). */
  keyId: string | null;
}

/**
 * A ceiling, not the mechanism: changes reach the cache as messages (KeyChanges).
 * An entry older than this is looked up again anyway.
 */
const ACCEPTED_TTL_MS = 60_000;
/**
 * Refusals hold for good (a revoked or expired key stays so, an unknown key
 * stays unknown: a new key's secret is random, nobody can have presented it
 * before it existed), so this only lets them go in time; while kept, a
 * client that retries a bad key costs no query.
 */
const REFUSED_TTL_MS = 10_000;
/**
 * How long a change announced as beginning keeps its subject out of the
 * cache when its end is never heard: longer than any change runs.
 */
const HOLD_MS = 5 * 60_000;

/**
 * API keys verified once and kept in process: a verdict (the key with its
 * tenant and the custom domain's tenant, or the refusal) keyed by the key's
 * SHA-256 and the request's custom domain. Only the expiry moves by itself,
 * so it is checked on every use; everything else that decides a verdict
 * changes through a change announced to every process (KeyChanges), which
 * drops the entries it touches and keeps its subject out of the cache until
 * the change has ended. While the channel cannot be relied on, nothing is
 * cached: each request is checked in the database.
 */
export class ApiKeyCache {
  private readonly accepted: LRUCache<string, Positive>;
  /** Apart from the accepted ones, so a flood of bad keys cannot push out good ones. */
  private readonly refused: LRUCache<string, Negative>;
  /** Subjects of changes under way, with when their hold lapses. */
  private readonly held = new Map<string, { subject: CredentialSubject; until: number }>();
  /** Moves with every drop, so a lookup that overlapped one does not store what it read before it. */
  private stamp = 0;

  constructor(
    private readonly db: Knex,
    maxEntries: number,
    private readonly channel: CredentialChannel,
  ) {
    this.accepted = new LRUCache({ max: maxEntries, ttl: ACCEPTED_TTL_MS });
    this.refused = new LRUCache({ max: maxEntries, ttl: REFUSED_TTL_MS });
    channel.listen({ begin: (subject) => this.hold(subject), end: (subject) => this.release(subject), lost: () => this.clear() });
  }

  /** verifyApiKey, answered from memory when it can be. */
  async verify(presented: string, options: { host?: string; now?: Date } = {}): Promise<KeyVerdict> {
    if (!isWellFormedKey(presented)) return { ok: false, reason: 'unknown' };
    const now = options.now ?? new Date();
    if (!this.channel.listening) {
      // Whatever was cached may have missed a change: start afresh when the channel is back.
      this.clear();
      return verifyApiKey(this.db, presented, { host: options.host, now });
    }
    const digest = hashKey(presented);
    const domain = customDomainOf(options.host);
    const slot = `${digest} ${domain ?? ''}`;
    const accepted = this.accepted.get(slot);
    if (accepted) return accepted.expiresAt > now.getTime() ? accepted.verdict : { ok: false, reason: 'expired', keyId: accepted.verdict.apiKey.id };
    const refused = this.refused.get(digest);
    if (refused) return refused.verdict;

    const stamp = this.stamp;
    const verdict = await verifyApiKey(this.db, presented, { host: options.host, now });
    if (stamp === this.stamp && this.channel.listening) this.store(slot, digest, domain, verdict);
    return verdict;
  }

  /** A change to the subject is beginning: its entries go, and it stays out of the cache until `release`. */
  private hold(subject: CredentialSubject): void {
    this.held.set(subjectKey(subject), { subject, until: Date.now() + HOLD_MS });
    this.drop(subject);
  }

  /** The change has ended (committed or not): what was read during it goes, and the subject may be cached again. */
  private release(subject: CredentialSubject): void {
    this.held.delete(subjectKey(subject));
    this.drop(subject);
  }

  private clear(): void {
    if (this.accepted.size === 0 && this.refused.size === 0) return;
    this.stamp += 1;
    this.accepted.clear();
    this.refused.clear();
  }

  private drop(subject: CredentialSubject): void {
    this.stamp += 1;
    for (const [slot, entry] of [...this.accepted.entries()]) if (touches(subject, entry.verdict, entry.domain)) this.accepted.delete(slot);
    if ('keyId' in subject) for (const [digest, entry] of [...this.refused.entries()]) if (entry.keyId === subject.keyId) this.refused.delete(digest);
  }

  private store(slot: string, digest: string, domain: string | null, verdict: KeyVerdict): void {
    if (!verdict.ok) {
      this.refused.set(digest, { verdict, keyId: 'keyId' in verdict ? verdict.keyId : null });
      return;
    }
    const now = Date.now();
    for (const [name, { subject, until }] of this.held) {
      if (until <= now) this.held.delete(name);
      else if (touches(subject, verdict, domain)) return;
    }
    const { expires_at: expiresAt } = verdict.apiKey;
    this.accepted.set(slot, { verdict, domain, expiresAt: expiresAt === null ? Infinity : Date.parse(expiresAt) });
  }
}

function subjectKey(subject: CredentialSubject): string {
  return 'keyId' in subject ? `key:${subject.keyId}` : `tenant:${subject.tenant}`;
}

const names = (tenant: Tenant | null) => (tenant ? [tenant.id, tenant.slug] : []);

/**
 * Whether a change to `subject` may alter this verdict. A tenant's change
 * also touches every verdict made on a custom domain: the domain may have
 * just moved to or from that tenant.
 */
function touches(subject: CredentialSubject, verdict: Accepted, domain: string | null): boolean {
  if ('keyId' in subject) return verdict.apiKey.id === subject.keyId;
  return domain !== null || [...names(verdict.tenant), ...names(verdict.domainTenant)].includes(subject.tenant);
}
