/**
 * How changes to keys and tenants reach the verdicts every process caches
 * (key-cache.ts), as the writers (apikeys.ts, tenants.ts) and the channel
 * between processes (key-changes.ts) see them.
 */

/** What a change touches: one API key, or one tenant (named by id or slug) and everything that hangs on it. */
export type CredentialSubject = { keyId: string } | { tenant: string };

/** Makes a change that may alter verdicts, announced to every process that caches them (KeyChanges). */
export interface CredentialChanges {
  announce<T>(subject: CredentialSubject, change: () => Promise<T>): Promise<T>;
}

/** What the cache hears of changes (KeyChanges): announced here and in every other process. */
export interface ChangeListener {
  /** A change to the subject is beginning. */
  begin(subject: CredentialSubject): void;
  /** The change has ended, committed or not. */
  end(subject: CredentialSubject): void;
  /** Changes may have gone unheard. */
  lost(): void;
}

export interface CredentialChannel {
  /** Whether every change announced so far has been heard: the cache is used only then. */
  readonly listening: boolean;
  listen(listener: ChangeListener): void;
}
