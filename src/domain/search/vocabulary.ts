import type { Knex } from 'knex';
import { withLiterals } from '../../db/literal';
import { queryAsTenant } from '../../db/tenant-scope';

/**
 * What counts as a word of a tenant's vocabulary (search_terms): a lexeme
 * of the `simple` text search configuration (lower case, not stemmed) made
 * of 3 to 32 letters. Numbers, codes and identifiers are left out: nobody
 * misspells them in a way trigrams can repair.
 */
const VOCABULARY_WORD = `'^[[:alpha:]]{3,32}$'`;

/**
 * Adds the words of the documents' titles and of their chunks' headings and
 * text to the tenant's vocabulary; run in the transaction that stores the
 * chunks, as its last statement. Words are inserted in sorted order, so two
 * transactions adding the same new words wait for each other instead of
 * deadlocking. Words that leave with a deleted document stay: a proposal is
 * only used when searching with it finds more (see correctedQuery).
 */
export async function rememberTerms(trx: Knex.Transaction, tenantId: string, documentIds: readonly string[]): Promise<void> {
  if (documentIds.length === 0) return;
  await trx.raw(
    `insert into search_terms (tenant_id, term)
     select distinct ?::uuid, term from (
       select unnest(tsvector_to_array(to_tsvector('simple', coalesce(c.heading, '') || ' ' || c.content))) as term
         from chunks c where c.tenant_id = ? and c.document_id = any(?::uuid[])
       union all
       select unnest(tsvector_to_array(to_tsvector('simple', d.title))) from documents d where d.tenant_id = ? and d.id = any(?::uuid[])
     ) words
     where term ~ ${VOCABULARY_WORD}
     order by term
     on conflict do nothing`,
    [tenantId, tenantId, [...documentIds], tenantId, [...documentIds]],
  );
}

/** Typesense's and Meilisearch's defaults: one typo from 4 letters (5 for Meilisearch), two from 7 (9). */
export function typosAllowed(word: string): number {
  const length = [...word].length;
  return length >= 7 ? 2 : length >= 4 ? 1 : 0;
}

/** A query word the correction may replace: letters only, not negated or joined to other characters. */
const CORRECTABLE_WORD = /(?<![\p{L}\p{N}_'-])\p{L}{4,32}(?![\p{L}\p{N}_'])/gu;

/** Candidates kept per word, by trigram similarity, before edit distance chooses among them. */
const CANDIDATES_PER_WORD = 10;

/**
 * Lower than pg_trgm's default 0.3: a transposition ("serach") breaks up to
 * three trigrams, and edit distance is what decides among the candidates.
 */
const MIN_SIMILARITY = 0.2;

/**
 * The query with each word that matches none of the tenant's chunks (and is
 * no stop word) replaced by the vocabulary word it most likely meant: the
 * fewest edits (transpositions count as one) within typosAllowed, then the
 * closest by trigrams, then the first alphabetically. Null when no word
 * needs or finds a correction. Runs on `db`, which may be a replica.
 */
export async function correctedQuery(db: Knex, tenantId: string, query: string, textSearchConfig: string): Promise<string | null> {
  const words = [...new Set([...query.matchAll(CORRECTABLE_WORD)].map((match) => match[0].toLowerCase()))];
  if (words.length === 0) return null;
  const sql = withLiterals(
    `select w.word, case when k.known then '{}'::text[] else array(
              select v.term from search_terms v
               where v.tenant_id = ? and length(v.term) between length(w.word) - 2 and length(w.word) + 2
                 and similarity(v.term, w.word) >= ?
               order by similarity(v.term, w.word) desc, v.term
               limit ${CANDIDATES_PER_WORD}) end as candidates
       from unnest(?::text[]) as w(word)
       cross join lateral (
         select numnode(plainto_tsquery(?::regconfig, w.word)) = 0
             or exists (select 1 from chunks c where c.tenant_id = ? and c.tsv @@ plainto_tsquery(?::regconfig, w.word)) as known
       ) k`,
    [tenantId, MIN_SIMILARITY, words, textSearchConfig, tenantId, textSearchConfig],
  );
  const rows = await queryAsTenant<{ word: string; candidates: string[] }>(db, tenantId, sql);
  const replacements = new Map<string, string>();
  for (const { word, candidates } of rows) {
    const best = closestWithin(word, candidates, typosAllowed(word));
    if (best) replacements.set(word, best);
  }
  if (replacements.size === 0) return null;
  return query.replace(CORRECTABLE_WORD, (word) => replacements.get(word.toLowerCase()) ?? word);
}

/** The candidate fewest edits away, at most `allowed`; candidates come closest-first, which breaks ties. */
function closestWithin(word: string, candidates: readonly string[], allowed: number): string | null {
  let best: string | null = null;
  let bestDistance = allowed + 1;
  for (const candidate of candidates) {
    const distance = editDistance(word, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

/** Levenshtein distance with adjacent transpositions as one edit (optimal string alignment), by code point. */
export function editDistance(a: string, b: string): number {
  const s = [...a];
  const t = [...b];
  const rows = s.length + 1;
  const cols = t.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = s[i - 1] === t[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && s[i - 1] === t[j - 2] && s[i - 2] === t[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[s.length][t.length];
}
