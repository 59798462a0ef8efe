import { performance } from 'node:perf_hooks';
import type { RedisClient } from '../../redis';
import { withTimeout } from '../../async';
import { dependencyUnavailable } from '../../errors';
import type { ChangeListener, CredentialChanges, CredentialChannel, CredentialSubject } from './credential-changes';

/** How often the subscribed connection is asked whether it still hears. */
const HEARTBEAT_MS = 200;
/**
 * Past this without an answer the channel is not relied on. Redis answers
 * a PING on a subscribed connection after every message published before
 * it, so an answer younger than this means no change older than that went
 * unheard: a process cut off from the channel stops trusting what it
 * cached within a second.
 */
const SILENCE_MS = 800;
/** A connection silent this long is dropped and opened again: a hung socket never says it is closed. */
const RECONNECT_AFTER_MS = 5_000;
/** How long a change waits for Redis to take its announcement before it is refused. */
const ANNOUNCE_TIMEOUT_MS = 1_000;

type Phase = 'begin' | 'end';

export interface KeyChangesOptions {
  /** Publishes: the process's producer connection. */
  publisher: RedisClient;
  /** Opens the connection that subscribes (a subscribed connection can do nothing else). */
  subscriber: () => RedisClient;
  channel: string;
  onError: (error: unknown, what: string) => void;
  /** Told when the channel starts or stops being heard. */
  onListening: (listening: boolean) => void;
}

/**
 * Changes that decide whether an API key authenticates (a key revoked; a
 * tenant suspended, resumed, deleted, or given another tier, quotas or
 * custom domain), announced on a Redis pub/sub channel to every process,
 * this one included. Each change is announced before it is made and again
 * after, whatever its outcome: a process drops what the change touches when
 * it hears the first and caches none of it until it hears the second, so
 * nothing read while the change was under way outlives it. A change that
 * cannot be announced is not made. The subscription starts when first
 * asked whether it listens: processes that serve no API never open it.
 */
export class KeyChanges implements CredentialChannel, CredentialChanges {
  private readonly listeners: ChangeListener[] = [];
  private subscriber: RedisClient | undefined;
  private subscribed = false;
  private lastHeard = 0;
  /** What onListening was last told. */
  private reported = false;
  private pingSentAt: number | null = null;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly options: KeyChangesOptions) {}

  get listening(): boolean {
    if (!this.subscriber) this.start();
    return this.heardRecently();
  }

  listen(listener: ChangeListener): void {
    this.listeners.push(listener);
  }

  /**
   * Runs `change` (a database change, committed or rolled back when it
   * returns) announced to every process. Throws before running it when Redis
   * does not take the first announcement; losing the second only keeps the
   * subject out of the caches for longer.
   */
  async announce<T>(subject: CredentialSubject, change: () => Promise<T>): Promise<T> {
    try {
      await withTimeout(this.publish(subject, 'begin'), ANNOUNCE_TIMEOUT_MS);
    } catch (error) {
      this.options.onError(error, 'announcing a key change');
      throw dependencyUnavailable('redis');
    }
    this.hear(subject, 'begin');
    try {
      return await change();
    } finally {
      this.hear(subject, 'end');
      await withTimeout(this.publish(subject, 'end'), ANNOUNCE_TIMEOUT_MS).catch((error) => this.options.onError(error, 'announcing the end of a key change'));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    // Not quit(): on a connection that is down it waits in the offline queue while ioredis keeps reconnecting.
    this.subscriber?.disconnect();
  }

  private async publish(subject: CredentialSubject, phase: Phase): Promise<void> {
    await this.options.publisher.publish(this.options.channel, JSON.stringify({ subject, phase }));
  }

  private hear(subject: CredentialSubject, phase: Phase): void {
    for (const listener of this.listeners) listener[phase](subject);
  }

  private heardRecently(): boolean {
    return this.subscribed && performance.now() - this.lastHeard < SILENCE_MS;
  }

  /** Tells the listeners when changes may have gone unheard, and the owner when hearing stops or starts. */
  private report(): void {
    const listening = this.heardRecently();
    if (listening === this.reported) return;
    this.reported = listening;
    if (!listening) for (const listener of this.listeners) listener.lost();
    this.options.onListening(listening);
  }

  private start(): void {
    if (this.stopped) return;
    const subscriber = this.options.subscriber();
    this.subscriber = subscriber;
    subscriber.on('error', (error) => this.options.onError(error, 'the API key change channel'));
    subscriber.on('ready', () => {
      subscriber.subscribe(this.options.channel).then(
        () => {
          this.subscribed = true;
          this.lastHeard = performance.now();
          this.report();
        },
        (error) => this.options.onError(error, 'subscribing to the API key change channel'),
      );
    });
    subscriber.on('close', () => {
      this.subscribed = false;
      this.report();
    });
    subscriber.on('message', (_channel: string, text: string) => {
      this.lastHeard = performance.now();
      try {
        const { subject, phase } = JSON.parse(text) as { subject: CredentialSubject; phase: Phase };
        this.hear(subject, phase);
      } catch (error) {
        this.options.onError(error, 'reading an API key change');
      }
    });
    this.timer = setInterval(() => this.heartbeat(subscriber), HEARTBEAT_MS);
    this.timer.unref();
  }

  private heartbeat(subscriber: RedisClient): void {
    this.report();
    if (!this.subscribed) return;
    const now = performance.now();
    if (this.pingSentAt !== null) {
      if (now - this.pingSentAt >= RECONNECT_AFTER_MS) subscriber.disconnect(true);
      return;
    }
    this.pingSentAt = now;
    subscriber
      .ping()
      .then(() => {
        this.lastHeard = performance.now();
      })
      .catch(() => undefined)
      .finally(() => {
        this.pingSentAt = null;
      });
  }
}
