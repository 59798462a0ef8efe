import pg from 'pg';
import { fetch, type Dispatcher } from 'undici';
import { ADMIN_TOKEN } from './harness';
import { uniqueName } from './databases';

export interface ApiAnswer {
  status: number;
  body: Record<string, unknown>;
}

/**
 * ragworks' HTTP API as a client outside the fleet sees it. A request that
 * gets no answer (connection refused or reset, or no answer within the
 * timeout) comes back as status 0, so a load can count it.
 */
export class HttpApi {
  constructor(
    readonly baseUrl: string,
    private readonly options: { timeoutMs?: number; dispatcher?: Dispatcher } = {},
  ) {}

  async call(method: string, route: string, token: string, body?: unknown, tenantId?: string): Promise<ApiAnswer> {
    try {
      const response = await fetch(`${this.baseUrl}${route}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(tenantId ? { 'X-Tenant-Id': tenantId } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 15_000),
        dispatcher: this.options.dispatcher,
      });
      const text = await response.text();
      let parsed: Record<string, unknown> = {};
      try {
        parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
      } catch {
        parsed = { text };
      }
      return { status: response.status, body: parsed };
    } catch (error) {
      const cause = (error as Error & { cause?: Error }).cause;
      return { status: 0, body: { error: cause ? `${(error as Error).message}: ${cause.message}` : (error as Error).message } };
    }
  }

  /** A tenant of tier `unlimited` (rate limits stay out of the way of a load) and a key with every scope. */
  async createTenant(name = 'fleet'): Promise<{ id: string; key: string }> {
    const slug = uniqueName(name).replace(/_/g, '-');
    const tenant = await this.call('POST', '/api/admin/tenants', ADMIN_TOKEN, { slug, name: slug, tier: 'unlimited' });
    if (tenant.status !== 201) throw new Error(`creating a tenant answered ${tenant.status}: ${JSON.stringify(tenant.body)}`);
    const id = tenant.body.id as string;
    const key = await this.call('POST', '/api/admin/api-keys', ADMIN_TOKEN, { name: 'fleet key', scopes: ['admin'] }, id);
    if (key.status !== 201) throw new Error(`creating a key answered ${key.status}: ${JSON.stringify(key.body)}`);
    return { id, key: key.body.key as string };
  }
}

export type RequestKind = 'write' | 'search';

export interface Outcome {
  kind: RequestKind;
  status: number;
  startedAt: number;
  endedAt: number;
  /** The answer's `error.code`; for an answer that is not ours (a proxy's page) `not-json`; for no answer, why. */
  code?: string;
}

/** What a load saw, as figures. */
export interface LoadReport {
  requests: number;
  byStatus: Record<string, number>;
  accepted: number;
  /** Answers other than 2xx and the API's own documented 503s: other statuses, a proxy's 503 page, no answer at all (0). */
  unexpected: Outcome[];
  unavailable: number;
  /** The unavailable answers by kind of request and `code` (`write dependency_unavailable`…). */
  unavailableBy: Record<string, number>;
  /** Longest stretch, for one kind of request, from the first to the last of an unbroken run of 503s (or no answers), in ms. */
  longestUnavailableMs: number;
}

/**
 * A steady stream of document writes and searches for one tenant, with
 * every answer kept. Each written document carries a word of its own, so a
 * check afterwards can find it.
 */
export class SteadyLoad {
  readonly outcomes: Outcome[] = [];
  /** Documents the API accepted (202), by id, with the word each carries. */
  readonly accepted = new Map<string, string>();
  private running = false;
  private loops: Promise<void>[] = [];
  private written = 0;

  constructor(
    private readonly api: HttpApi,
    private readonly key: string,
    private readonly options: { writers: number; searchers: number; pauseMs: number; label?: string },
  ) {}

  start(): void {
    this.running = true;
    for (let writer = 0; writer < this.options.writers; writer += 1) this.loops.push(this.loop('write'));
    for (let searcher = 0; searcher < this.options.searchers; searcher += 1) this.loops.push(this.loop('search'));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    this.loops = [];
  }

  /** The figures of every request, or of those started within `window` (epoch ms). */
  report(window: { from: number; to: number } = { from: 0, to: Infinity }): LoadReport {
    const outcomes = this.outcomes.filter((outcome) => outcome.startedAt >= window.from && outcome.startedAt <= window.to);
    const byStatus: Record<string, number> = {};
    for (const outcome of outcomes) byStatus[outcome.status] = (byStatus[outcome.status] ?? 0) + 1;
    // A 503 of the API's own (JSON, with its code and Retry-After), not a proxy's page that says nothing.
    const documented = (outcome: Outcome) => (outcome.status >= 200 && outcome.status < 300) || (outcome.status === 503 && outcome.code !== 'not-json');
    const unavailable = outcomes.filter((outcome) => outcome.status === 503 || outcome.status === 0);
    const unavailableBy: Record<string, number> = {};
    for (const outcome of unavailable) {
      const code = `${outcome.kind} ${outcome.status === 0 ? 'no answer' : (outcome.code ?? 'none')}`;
      unavailableBy[code] = (unavailableBy[code] ?? 0) + 1;
    }
    return {
      requests: outcomes.length,
      byStatus,
      accepted: outcomes.filter((outcome) => outcome.kind === 'write' && outcome.status === 202).length,
      unexpected: outcomes.filter((outcome) => !documented(outcome)),
      unavailable: unavailable.length,
      unavailableBy,
      longestUnavailableMs: Math.max(
        longestUnavailable(outcomes.filter((outcome) => outcome.kind === 'write')),
        longestUnavailable(outcomes.filter((outcome) => outcome.kind === 'search')),
      ),
    };
  }

  private async loop(kind: RequestKind): Promise<void> {
    while (this.running) {
      const startedAt = Date.now();
      const answer = kind === 'write' ? await this.write() : await this.search();
      const code = answer.status === 0 ? String(answer.body.error) : 'text' in answer.body ? 'not-json' : (answer.body.error as { code?: string } | undefined)?.code;
      this.outcomes.push({ kind, status: answer.status, startedAt, endedAt: Date.now(), code });
      // An unanswered request returns at once (refused): pause as after any answer, or the loop spins.
      await new Promise((resolve) => setTimeout(resolve, this.options.pauseMs));
    }
  }

  private async write(): Promise<ApiAnswer> {
    this.written += 1;
    const word = `${this.options.label ?? 'doc'}${this.written}x${Math.random().toString(36).slice(2, 8)}`;
    const answer = await this.api.call('POST', '/api/documents', this.key, {
      title: `Document ${word}`,
      content: `# ${word}\n\nThe fleet keeps ${word} through failures of its parts.`,
    });
    if (answer.status === 202) this.accepted.set(answer.body.id as string, word);
    return answer;
  }

  private search(): Promise<ApiAnswer> {
    return this.api.call('POST', '/api/search', this.key, { query: 'fleet keeps failures', mode: 'keyword', limit: 5 });
  }
}

/** The longest time, in ms, between the start of the first and the end of the last request of a run of unavailable answers. */
function longestUnavailable(outcomes: Outcome[]): number {
  const ordered = [...outcomes].sort((a, b) => a.startedAt - b.startedAt);
  let longest = 0;
  let runStart: number | undefined;
  for (const outcome of ordered) {
    if (outcome.status === 503 || outcome.status === 0) {
      runStart ??= outcome.startedAt;
      longest = Math.max(longest, outcome.endedAt - runStart);
    } else if (outcome.status >= 200 && outcome.status < 300) {
      runStart = undefined;
    }
  }
  return longest;
}

export interface IndexingCheck {
  documents: number;
  indexed: number;
  /** Documents by status. */
  byStatus: Record<string, number>;
  /** Documents whose chunks are not exactly one set of the document's current version, numbered 0..n-1. */
  notExactlyOnce: string[];
  /** Documents with more than one `document.indexed` event for their version. */
  indexedEventsTwice: string[];
  missing: string[];
}

/**
 * What the database holds for these documents, read across tenants (as the
 * application's own maintenance reads do): every one indexed, its chunks one set of its current
 * version, one `document.indexed` event for it.
 */
export async function checkIndexedOnce(databaseUrl: string, ids: string[]): Promise<IndexingCheck> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query('begin');
    await client.query(`select set_config('app.all_tenants', 'on', true)`);
    const documents = await client.query<{ id: string; status: string; version: number; chunks: string; versions: string; ordinals_ok: boolean; events: string }>(
      `select d.id, d.status, d.version,
              count(c.id) as chunks,
              count(distinct c.document_version) as versions,
              coalesce(bool_and(c.document_version = d.version), true)
                and coalesce(max(c.ordinal) = count(c.id) - 1, true) as ordinals_ok,
              (select count(*) from webhook_events e
                where e.type = 'document.indexed' and e.payload->'data'->>'id' = d.id::text
                  and (e.payload->'data'->>'version')::int = d.version) as events
         from documents d left join chunks c on c.document_id = d.id
        where d.id = any($1::uuid[])
        group by d.id`,
      [ids],
    );
    await client.query('commit');
    const found = new Set(documents.rows.map((row) => row.id));
    const byStatus: Record<string, number> = {};
    for (const row of documents.rows) byStatus[row.status] = (byStatus[row.status] ?? 0) + 1;
    return {
      documents: ids.length,
      indexed: documents.rows.filter((row) => row.status === 'indexed').length,
      byStatus,
      notExactlyOnce: documents.rows.filter((row) => row.status === 'indexed' && (Number(row.chunks) === 0 || Number(row.versions) !== 1 || !row.ordinals_ok)).map((row) => row.id),
      indexedEventsTwice: documents.rows.filter((row) => Number(row.events) > 1).map((row) => row.id),
      missing: ids.filter((id) => !found.has(id)),
    };
  } finally {
    await client.end();
  }
}
