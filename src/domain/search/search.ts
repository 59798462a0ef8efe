import type { Knex } from 'knex';
import { LRUCache } from 'lru-cache';
import { AppError } from '../../errors';
import type { VectorSupport } from '../../db/migrate';
import { withLiterals } from '../../db/literal';
import { queryAsTenant, withTenant } from '../../db/tenant-scope';
import type { ReplicaReads } from '../../db/replica-reads';
import type { DocumentContentType } from '../documents/documents';
import type { Embedder } from '../embeddings/embedder';
import type { Reranker } from './reranker';
import { correctedQuery } from './vocabulary';

export const SEARCH_MODES = ['hybrid', 'semantic', 'keyword'] as const;
export type SearchMode = (typeof SEARCH_MODES)[number];

export const SEARCH_LIMITS = { queryChars: 1000, maxResults: 100, defaultResults: 10, defaultRerankCandidates: 50 } as const;

export interface SearchFilters {
  content_type?: DocumentContentType;
  tags?: string[];
  created_from?: string;
  created_to?: string;
}

export interface SearchRequest {
  query: string;
  mode: SearchMode;
  limit: number;
  filters?: SearchFilters;
  /** Reorder the best `rerank_candidates` with the reranker (RERANK_URL) before taking `limit`. */
  rerank?: boolean;
  rerank_candidates?: number;
  /** Keyword and hybrid searches that match nothing by full text retry with misspelt words corrected (default true). */
  typo_tolerance?: boolean;
}

export interface SearchResult {
  document_id: string;
  chunk_id: string;
  title: string;
  content: string;
  snippet: string;
  heading: string | null;
  /** The page of an uploaded PDF the chunk begins on; null for every other document. */
  page: number | null;
  score: number;
  tags: string[];
  content_type: DocumentContentType;
  source_url: string | null;
  created_at: string;
}

export interface SearchResponse {
  results: SearchResult[];
  total_results: number;
  mode: SearchMode;
  query: string;
  /** The corrected query the results were found with, when the typo pass found better ones; else null. */
  did_you_mean: string | null;
  took_ms: number;
}

export interface SearchSettings {
  textSearchConfig: string;
  semanticWeight: number;
  rrfK: number;
  candidates: number;
  exactScanMaxChunks: number;
  /** The search statement's own bound, tighter than every statement's; 0: none of its own. */
  statementTimeoutMs: number;
}

export interface SearchDeps {
  /** The primary. */
  db: Knex;
  /** Where a search may read instead when it is current (DATABASE_REPLICA_URL); null: always `db`. */
  replica: ReplicaReads | null;
  embedder: Embedder;
  /** RERANK_URL's cross-encoder; null: none configured. */
  reranker: Reranker | null;
  vector: VectorSupport;
  settings: SearchSettings;
}

/** A statement and its positional bindings, exactly as search runs it. */
export interface SearchStatement {
  /** With a `?` for each binding, for knex (EXPLAIN in tests); runStatement writes the bindings in as literals. */
  sql: string;
  bindings: Knex.RawBinding[];
  /** Settings the statement needs, local to it (`set_config(…, true)` in the same round trip). */
  settings: Array<[string, string]>;
}

/**
 * `results`: what search answers, with each result's text, document and
 * snippet. `ranking`: the same candidates, order and limit — chunk_id and
 * score only — to measure what the results' columns and snippets add.
 */
export type StatementForm = 'results' | 'ranking';

export async function search(deps: SearchDeps, tenantId: string, request: SearchRequest): Promise<SearchResponse> {
  const started = process.hrtime.bigint();
  let found = await searchOnce(deps, tenantId, request);
  let didYouMean: string | null = null;
  if (wantsTypoPass(request, found)) {
    const corrected = await correctedQuery(deps.db, tenantId, request.query, deps.settings.textSearchConfig);
    if (corrected !== null) {
      const retried = await searchOnce(deps, tenantId, { ...request, query: corrected });
      if (retried.keywordHits > found.keywordHits) {
        found = retried;
        didYouMean = corrected;
      }
    }
  }
  return {
    results: found.results,
    total_results: found.results.length,
    mode: request.mode,
    query: request.query,
    did_you_mean: didYouMean,
    took_ms: Number(process.hrtime.bigint() - started) / 1e6,
  };
}

/**
 * "Finds little", as Typesense's default `typo_tokens_threshold` of 1 has
 * it: no chunk matches by full text (every word must match, so one misspelt
 * word is enough). A search that finds costs no more than before. Semantic
 * search matches by meaning, where a typo costs little.
 */
function wantsTypoPass(request: SearchRequest, found: { keywordHits: number }): boolean {
  return request.mode !== 'semantic' && request.typo_tolerance !== false && found.keywordHits === 0;
}

async function searchOnce(deps: SearchDeps, tenantId: string, request: SearchRequest): Promise<{ results: SearchResult[]; keywordHits: number }> {
  const statement = await prepareSearch(deps, tenantId, request);
  const rows = await runStatement(deps.db, tenantId, statement);
  return { results: rows.map(toResult), keywordHits: rows[0]?.keyword_hits ?? 0 };
}

/**
 * Builds the SQL for a search: embeds the query when the mode needs it and
 * decides between the HNSW index and an exact scan.
 */
export async function prepareSearch(deps: SearchDeps, tenantId: string, request: SearchRequest, form: StatementForm = 'results'): Promise<SearchStatement> {
  if (request.mode !== 'keyword' && !deps.vector.available) {
    throw new AppError(501, 'vector_search_unavailable', `${request.mode} search needs pgvector: ${deps.vector.reason}. Use mode "keyword".`, {
      extension: 'vector',
      mode: request.mode,
    });
  }
  const queryVector = request.mode === 'keyword' ? null : (await deps.embedder.embed([request.query]))[0];
  const exact = queryVector ? await useExactScan(deps, tenantId) : false;
  return buildSearchStatement(deps, tenantId, request, queryVector, exact, form);
}

/**
 * Runs a search statement for the tenant in one round trip: its settings and
 * the tenant's scope travel in the same query string (queryAsTenant). A
 * `ranking` statement's rows have chunk_id and score only.
 */
export async function runStatement<Row = SearchRow>(db: Knex, tenantId: string, statement: SearchStatement): Promise<Row[]> {
  try {
    return await queryAsTenant<Row>(db, tenantId, withLiterals(statement.sql, statement.bindings), statement.settings);
  } catch (error) {
    // query_canceled: the search's statement_timeout (or an operator's pg_cancel_backend); the database itself is fine.
    if ((error as { code?: unknown } | null)?.code === '57014') throw searchTimedOut(statement);
    throw error;
  }
}

function searchTimedOut(statement: SearchStatement): AppError {
  const bound = statement.settings.find(([name]) => name === 'statement_timeout')?.[1];
  return new AppError(
    503,
    'search_timeout',
    `The search ran longer than ${bound ? `its ${bound} ms bound` : 'allowed'} and was stopped; try again, or narrow it with filters or a lower limit.`,
    bound ? { timeout_ms: Number(bound) } : undefined,
    { 'Retry-After': '5' },
  );
}

interface SearchRow {
  document_id: string;
  chunk_id: string;
  title: string;
  content: string;
  snippet: string;
  heading: string | null;
  page: number | null;
  score: number;
  tags: string[];
  content_type: DocumentContentType;
  source_url: string | null;
  created_at: Date;
  /** How many chunks the full-text query matched (up to the candidates taken); 0 in semantic mode. */
  keyword_hits: number;
}

const toResult = ({ keyword_hits: _, ...row }: SearchRow): SearchResult => ({ ...row, score: Number(row.score), created_at: row.created_at.toISOString() });

/** Per-tenant chunk counts, remembered briefly: the exact-scan decision need not be fresh to the row. */
const chunkCountCache = new LRUCache<string, number>({ max: 10_000, ttl: 30_000 });

/**
 * A tenant small enough is searched exactly: an approximate index scan
 * filtered by tenant could otherwise return fewer than k of its chunks.
 * Larger tenants use HNSW with pgvector's iterative scan (0.8+), which keeps
 * scanning until enough rows pass the filter.
 */
async function useExactScan(deps: SearchDeps, tenantId: string): Promise<boolean> {
  const threshold = deps.settings.exactScanMaxChunks;
  let count = chunkCountCache.get(tenantId);
  if (count === undefined) {
    const result = await withTenant(deps.db, tenantId, (trx) =>
      trx.raw('select count(*)::int as n from (select 1 from chunks where tenant_id = ? limit ?) t', [tenantId, threshold + 1]),
    );
    count = Number(result.rows[0].n);
    chunkCountCache.set(tenantId, count);
  }
  return count <= threshold || !supportsIterativeScan(deps.vector);
}

function supportsIterativeScan(vector: VectorSupport): boolean {
  if (!vector.available) return false;
  const [major, minor] = vector.version.split('.').map(Number);
  return major > 0 || minor >= 8;
}

class Bindings {
  readonly values: Knex.RawBinding[] = [];
  add(value: Knex.RawBinding): string {
    this.values.push(value);
    return '?';
  }
}

export function buildSearchStatement(
  deps: SearchDeps,
  tenantId: string,
  request: SearchRequest,
  queryVector: number[] | null,
  exactScan: boolean,
  form: StatementForm = 'results',
): SearchStatement {
  const { settings } = deps;
  const b = new Bindings();
  // Inlined, not bound: it appears more than once, and config validation allows only [a-z_].
  if (!/^[a-z_]+$/.test(settings.textSearchConfig)) throw new Error('Invalid text search configuration name');
  const config = `'${settings.textSearchConfig}'::regconfig`;
  // Written out at each use rather than computed once in a CTE: with its configuration named,
  // websearch_to_tsquery is immutable, so the planner folds each use into the same constant.
  const tsquery = () => `websearch_to_tsquery(${config}, ${b.add(request.query)})`;
  const ctes: string[] = [];
  // A chunk carries its tenant: the documents are joined only when a filter is on them.
  const joinDocuments = hasDocumentFilters(request.filters) ? 'join documents d on d.id = c.document_id' : '';
  const filters = () => documentFilters(b, 'd', tenantId, request.filters);
  const candidates = Math.max(settings.candidates, request.limit);
  const sessionSettings: Array<[string, string]> = [];
  if (settings.statementTimeoutMs > 0) sessionSettings.push(['statement_timeout', String(settings.statementTimeoutMs)]);

  if (request.mode !== 'semantic') {
    ctes.push(`kw as (
      select c.id, ts_rank_cd(c.tsv, ${tsquery()}) as score,
             row_number() over (order by ts_rank_cd(c.tsv, ${tsquery()}) desc, c.id) as rank
        from chunks c ${joinDocuments}
       where c.tenant_id = ${b.add(tenantId)} and c.tsv @@ ${tsquery()} ${filters()}
       order by score desc, c.id
       limit ${b.add(candidates)})`);
  }
  if (request.mode !== 'keyword' && queryVector) {
    const dims = deps.embedder.dimensions;
    const literal = `[${queryVector.join(',')}]`;
    // Bound at each use: positional bindings cannot be referenced twice.
    const distance = () => `c.embedding::vector(${dims}) <=> ${b.add(literal)}::vector(${dims})`;
    ctes.push(`sem_raw as (
      select c.id, ${distance()} as distance
        from chunks c ${joinDocuments}
       where c.tenant_id = ${b.add(tenantId)} and c.embedding_dims = ${dims} and c.embedding_model = ${b.add(deps.embedder.model)} ${filters()}
       order by ${exactScan ? `(${distance()}) + 0` /* hides the ordering from the planner: no HNSW */ : distance()}
       limit ${b.add(candidates)})`);
    // A zero vector (a query or chunk with no words, e.g. only punctuation) has no direction: its cosine
    // distance is NaN, which would surface as a null score. Such a pair matches nothing by meaning.
    ctes.push(
      `sem as (select id, 1 - distance as score, row_number() over (order by distance, id) as rank from sem_raw where distance <> 'NaN'::float8)`,
    );
    if (!exactScan) {
      sessionSettings.push(['hnsw.ef_search', String(Math.min(Math.max(candidates, 40), 1000))]);
      if (supportsIterativeScan(deps.vector)) sessionSettings.push(['hnsw.iterative_scan', 'relaxed_order']);
    }
  }

  let ranked: string;
  if (request.mode === 'keyword') ranked = 'select id, score from kw';
  else if (request.mode === 'semantic') ranked = 'select id, score from sem';
  else {
    const k = settings.rrfK;
    const semanticWeight = settings.semanticWeight;
    ranked = `select coalesce(s.id, w.id) as id,
                     coalesce(${b.add(semanticWeight)}::float8 / (${b.add(k)} + s.rank), 0)
                   + coalesce(${b.add(1 - semanticWeight)}::float8 / (${b.add(k)} + w.rank), 0) as score
                from sem s full outer join kw w on w.id = s.id`;
  }
  ctes.push(`ranked as (${ranked} order by score desc, id limit ${b.add(request.limit)})`);

  if (form === 'ranking') {
    return { sql: `with ${ctes.join(',\n')}\n    select r.id as chunk_id, r.score from ranked r order by r.score desc, r.id`, bindings: b.values, settings: sessionSettings };
  }
  // Snippets are made only here, for the `limit` rows ranked: ts_headline reads a chunk's whole text.
  const sql = `with ${ctes.join(',\n')}
    select c.document_id, c.id as chunk_id, d.title, c.content, c.heading, c.page, r.score, d.tags, d.content_type, d.source_url, d.created_at,
           ${request.mode === 'semantic' ? '0' : '(select count(*) from kw)::int'} as keyword_hits,
           ts_headline(${config}, c.content, ${tsquery()},
                       'StartSel=<mark>, StopSel=</mark>, MaxWords=35, MinWords=15, MaxFragments=2, FragmentDelimiter=" … "') as snippet
      from ranked r join chunks c on c.id = r.id join documents d on d.id = c.document_id
     order by r.score desc, c.id`;
  return { sql, bindings: b.values, settings: sessionSettings };
}

function hasDocumentFilters(filters: SearchFilters | undefined): boolean {
  return Boolean(filters?.content_type || (filters?.tags && filters.tags.length > 0) || filters?.created_from || filters?.created_to);
}

/** The filters on a joined document (none: no clause, and no join needed). */
function documentFilters(b: Bindings, alias: string, tenantId: string, filters: SearchFilters | undefined): string {
  if (!hasDocumentFilters(filters)) return '';
  const clauses = [`and ${alias}.tenant_id = ${b.add(tenantId)}`];
  if (filters?.content_type) clauses.push(`and ${alias}.content_type = ${b.add(filters.content_type)}`);
  if (filters?.tags && filters.tags.length > 0) clauses.push(`and ${alias}.tags @> ${b.add(filters.tags)}::text[]`);
  if (filters?.created_from) clauses.push(`and ${alias}.created_at >= ${b.add(filters.created_from)}::timestamptz`);
  if (filters?.created_to) clauses.push(`and ${alias}.created_at < ${b.add(filters.created_to)}::timestamptz`);
  return clauses.join(' ');
}
