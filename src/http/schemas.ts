import { z } from 'zod';
import { SCOPES } from '../domain/apikeys/apikeys';
import { CONTENT_TYPES, TEXT_CONTENT_TYPES, DOCUMENT_ERROR_CODES, DOCUMENT_LIMITS, DOCUMENT_STATUSES } from '../domain/documents/documents';
import { INDEX_JOB_STATUSES } from '../domain/indexing/jobs';
import { SEARCH_LIMITS, SEARCH_MODES } from '../domain/search/search';
import { QUOTA_NAMES } from '../domain/tenants/quotas';
import { ANSWER_LIMITS } from '../domain/answers/answer';
import { TIERS } from '../domain/tenants/tenants';

/**
 * PostgreSQL text cannot hold NUL and its jsonb refuses unpaired surrogates,
 * so both are refused at the door rather than failing later in SQL (or in an
 * event, an analytics batch, a webhook payload).
 */
const withoutNul = (value: string) => !value.includes('\u0000') && value.isWellFormed();
const NUL_MESSAGE = 'must be well-formed text without NUL characters';

export const safeString = (options: { min?: number; max: number; trim?: boolean }) => {
  const base = options.trim ? z.string().trim() : z.string();
  return base
    .min(options.min ?? 0)
    .max(options.max)
    .refine(withoutNul, NUL_MESSAGE);
};

const METADATA_MAX_BYTES = 64 * 1024;
const METADATA_MAX_DEPTH = 16;

/** Why PostgreSQL's jsonb would refuse a value, or null: too deep, a NUL, or a lone surrogate. */
function metadataProblem(value: unknown, depth = 0): string | null {
  if (depth > METADATA_MAX_DEPTH) return `must not nest deeper than ${METADATA_MAX_DEPTH} levels`;
  if (typeof value === 'string') {
    if (value.includes('\u0000')) return NUL_MESSAGE;
    return value.isWellFormed() ? null : 'must contain only well-formed Unicode text';
  }
  if (value === null || typeof value !== 'object') return null;
  for (const [key, inner] of Object.entries(value)) {
    const problem = metadataProblem(key, depth + 1) ?? metadataProblem(inner, depth + 1);
    if (problem) return problem;
  }
  return null;
}

export const metadataSchema = z.record(z.string(), z.unknown()).superRefine((value, ctx) => {
  const problem = metadataProblem(value);
  if (problem) {
    ctx.addIssue({ code: 'custom', message: problem });
    return;
  }
  if (Buffer.byteLength(JSON.stringify(value)) > METADATA_MAX_BYTES) ctx.addIssue({ code: 'custom', message: `must be at most ${METADATA_MAX_BYTES} bytes as JSON` });
});

const httpUrl = z.url({ protocol: /^https?$/ }).max(2048);
const isoDateTime = z.iso.datetime({ offset: true });

export const listQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(200).optional(),
});

export const idParams = z.object({ id: z.uuid() });
export const idOrSlugParams = z.object({ id: safeString({ min: 1, max: 100 }) });

const page = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item), next_cursor: z.string().nullable() });

// Tenants

const slug = z
  .string()
  .regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, 'must be 1-63 lowercase letters, digits or "-", not starting or ending with "-"')
  // X-Tenant-Id and the admin routes take an id or a slug: a slug shaped like an id would be ambiguous.
  .refine((value) => !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(value), 'must not look like a UUID');
const domain = z
  .string()
  .max(253)
  .regex(/^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i, 'must be a host name such as docs.example.com')
  .transform((value) => value.toLowerCase());

export const tenantCreate = z
  .object({
    slug,
    name: safeString({ min: 1, max: 200, trim: true }),
    tier: z.enum(TIERS).optional(),
    custom_domain: domain.nullable().optional(),
  })
  .strict();

const quotaLimit = z.union([z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), z.literal('unlimited')]);

/** Per-quota overrides: a number, `"unlimited"`, or `null` to fall back to the tier's value. Quotas not named keep their override. */
const quotaOverridesPatch = z
  .object(Object.fromEntries(QUOTA_NAMES.map((name) => [name, quotaLimit.nullable().optional()])) as Record<(typeof QUOTA_NAMES)[number], z.ZodOptional<z.ZodNullable<typeof quotaLimit>>>)
  .strict();

export const tenantPatch = tenantCreate.partial().extend({ quotas: quotaOverridesPatch.optional() }).strict();

const quotasSchema = z
  .object(Object.fromEntries(QUOTA_NAMES.map((name) => [name, z.number().int().nullable()])) as Record<(typeof QUOTA_NAMES)[number], z.ZodNullable<z.ZodNumber>>)
  .describe('Effective limits (tier, then overrides); null: no limit');

export const tenantSchema = z.object({
  id: z.uuid(),
  slug: z.string(),
  name: z.string(),
  tier: z.enum(TIERS),
  custom_domain: z.string().nullable(),
  status: z.enum(['active', 'suspended']),
  quota_overrides: z.record(z.string(), quotaLimit),
  quotas: quotasSchema,
  retention_days: z.number().int().nullable().describe('Days of raw history kept; null: kept for good'),
  created_at: z.string(),
  updated_at: z.string(),
});
export const tenantPage = page(tenantSchema);

// API keys

export const apiKeyCreate = z
  .object({
    name: safeString({ min: 1, max: 200, trim: true }),
    scopes: z.array(z.enum(SCOPES)).min(1).max(SCOPES.length).optional(),
    expires_at: isoDateTime.nullable().optional().refine((value) => !value || new Date(value) > new Date(), 'must be in the future'),
  })
  .strict();

export const apiKeyPatch = z.object({ scopes: z.array(z.enum(SCOPES)).min(1).max(SCOPES.length) }).strict();

export const apiKeySchema = z.object({
  id: z.uuid(),
  name: z.string(),
  prefix: z.string(),
  scopes: z.array(z.enum(SCOPES)),
  expires_at: z.string().nullable(),
  last_used_at: z.string().nullable(),
  request_count: z.number().int(),
  created_at: z.string(),
});
export const apiKeyCreated = apiKeySchema.extend({ key: z.string().describe('The secret key. Shown only in this response.') });
export const apiKeyPage = page(apiKeySchema);

// Documents

export const documentInput = z
  .object({
    title: safeString({ min: 1, max: DOCUMENT_LIMITS.titleChars, trim: true }),
    content: z.string().min(1).refine(withoutNul, NUL_MESSAGE).refine((value) => value.trim().length > 0, 'must not be blank'),
    content_type: z.enum(TEXT_CONTENT_TYPES).default('markdown'),
    tags: z.array(safeString({ min: 1, max: DOCUMENT_LIMITS.tagChars, trim: true })).max(DOCUMENT_LIMITS.tags).default([]),
    metadata: metadataSchema.default({}),
    source_url: httpUrl.nullable().optional(),
    external_id: safeString({ min: 1, max: 256 }).nullable().optional(),
  })
  .strict();

export const documentBatch = z
  .object({ documents: z.array(documentInput).min(1).max(DOCUMENT_LIMITS.batch) })
  .strict();

export const documentPatch = z
  .object({
    title: documentInput.shape.title,
    content: documentInput.shape.content,
    // Without the create defaults: a field left out of a PATCH stays as it is instead of becoming [] or {}.
    tags: documentInput.shape.tags.unwrap(),
    metadata: documentInput.shape.metadata.unwrap(),
  })
  .partial()
  .strict()
  .refine((value) => Object.keys(value).length > 0, 'must change at least one of title, content, tags, metadata');

export const documentListQuery = listQuery.extend({
  content_type: z.enum(CONTENT_TYPES).optional(),
  tag: safeString({ min: 1, max: DOCUMENT_LIMITS.tagChars }).optional(),
  status: z.enum(DOCUMENT_STATUSES).optional(),
});

export const documentSummarySchema = z.object({
  id: z.uuid(),
  title: z.string(),
  content_type: z.enum(CONTENT_TYPES),
  tags: z.array(z.string()),
  metadata: z.record(z.string(), z.unknown()),
  source_url: z.string().nullable(),
  external_id: z.string().nullable(),
  status: z.enum(DOCUMENT_STATUSES),
  version: z.number().int(),
  chunk_count: z.number().int(),
  content_bytes: z.number().int(),
  error: z.string().nullable(),
  error_code: z
    .enum(DOCUMENT_ERROR_CODES)
    .nullable()
    .describe('Why the document failed, for machines: `document_too_complex` (its processing passed INDEX_DOCUMENT_TIMEOUT_MS), `embedding_failed` (the embeddings provider refused it or stayed unavailable), `indexing_failed` (anything else); null unless `status` is `failed`'),
  job_id: z.uuid().nullable().describe('The index job that last queued this document'),
  indexed_at: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
});
export const documentDetailSchema = documentSummarySchema.extend({ content: z.string() });
export const documentPage = page(documentSummarySchema);

// Index jobs

export const indexRequest = z.object({ document_id: z.uuid(), force_reindex: z.boolean().default(false) }).strict();
export const indexBatchRequest = z
  .object({ document_ids: z.array(z.uuid()).min(1).max(DOCUMENT_LIMITS.batch), force_reindex: z.boolean().default(false) })
  .strict();
export const indexJobListQuery = listQuery.extend({ status: z.enum(INDEX_JOB_STATUSES).optional() });

export const indexJobSchema = z.object({
  job_id: z.uuid(),
  status: z.enum(INDEX_JOB_STATUSES),
  force_reindex: z.boolean(),
  documents_total: z.number().int(),
  documents_completed: z.number().int(),
  documents_failed: z.number().int(),
  created_at: z.string(),
  started_at: z.string().nullable(),
  completed_at: z.string().nullable(),
  error: z.string().nullable(),
});
export const indexJobDetailSchema = indexJobSchema.extend({
  documents: z.array(
    z.object({
      document_id: z.uuid(),
      version: z.number().int(),
      status: z.enum(['queued', 'processing', 'completed', 'failed', 'canceled']),
      error: z.string().nullable(),
    }),
  ),
});
export const indexJobPage = page(indexJobSchema);

// Search

const searchQueryText = safeString({ min: 1, max: SEARCH_LIMITS.queryChars, trim: true });
const searchLimit = z.coerce.number().int().min(1).max(SEARCH_LIMITS.maxResults).default(SEARCH_LIMITS.defaultResults);
const rerankCandidates = z.coerce
  .number()
  .int()
  .min(1)
  .max(SEARCH_LIMITS.maxResults)
  .default(SEARCH_LIMITS.defaultRerankCandidates)
  .describe('With `rerank`: how many of the best results the reranker reorders before `limit` are taken (at least `limit`)');
const typoToleranceHelp =
  'Keyword and hybrid searches whose words match no chunk are retried with misspelt words corrected from the tenant\'s own vocabulary (`did_you_mean`); `false` searches the words as written';
/** The tags a search is narrowed to, the same rules in a body and in a query string. */
const searchTags = z.array(safeString({ min: 1, max: DOCUMENT_LIMITS.tagChars })).max(DOCUMENT_LIMITS.tags);

export const searchBody = z
  .object({
    query: searchQueryText,
    mode: z.enum(SEARCH_MODES).default('hybrid'),
    limit: searchLimit,
    filters: z
      .object({
        content_type: z.enum(CONTENT_TYPES).optional(),
        tags: searchTags.optional(),
        created_from: isoDateTime.optional(),
        created_to: isoDateTime.optional(),
      })
      .strict()
      .optional(),
    user_id: safeString({ min: 1, max: 200 }).optional(),
    rerank: z.boolean().default(false).describe('Reorder the best `rerank_candidates` with the cross-encoder of RERANK_URL'),
    rerank_candidates: rerankCandidates,
    typo_tolerance: z.boolean().default(true).describe(typoToleranceHelp),
  })
  .strict();

export const answerBody = z
  .object({
    query: searchQueryText.describe('The question'),
    mode: z.enum(SEARCH_MODES).default('hybrid').describe('How the passages are retrieved, as in a search'),
    limit: z.coerce
      .number()
      .int()
      .min(1)
      .max(ANSWER_LIMITS.maxPassages)
      .default(ANSWER_LIMITS.defaultPassages)
      .describe('How many passages the model is given'),
    filters: searchBody.shape.filters,
    rerank: searchBody.shape.rerank,
    typo_tolerance: searchBody.shape.typo_tolerance,
    stream: z.boolean().optional().describe('`true`: answer with Server-Sent Events (also chosen by `Accept: text/event-stream`)'),
    user_id: searchBody.shape.user_id,
  })
  .strict();

export const searchQuery = z.object({
  q: searchQueryText,
  mode: z.enum(SEARCH_MODES).default('hybrid'),
  limit: searchLimit,
  content_type: z.enum(CONTENT_TYPES).optional(),
  created_from: isoDateTime.optional(),
  created_to: isoDateTime.optional(),
  tags: z
    .string()
    .describe(`Comma-separated: at most ${DOCUMENT_LIMITS.tags} tags of 1 to ${DOCUMENT_LIMITS.tagChars} characters, as in the body's \`filters.tags\``)
    .transform((value) => value.split(',').map((tag) => tag.trim()).filter(Boolean))
    .pipe(searchTags)
    .optional(),
  rerank: z
    .enum(['true', 'false'])
    .default('false')
    .transform((value) => value === 'true')
    .describe('`true`: reorder the best `rerank_candidates` with the cross-encoder of RERANK_URL'),
  rerank_candidates: rerankCandidates,
  typo_tolerance: z
    .enum(['true', 'false'])
    .default('true')
    .transform((value) => value === 'true')
    .describe(typoToleranceHelp),
});

export const searchResponseSchema = z.object({
  results: z.array(
    z.object({
      document_id: z.uuid(),
      chunk_id: z.uuid(),
      title: z.string(),
      content: z.string(),
      snippet: z.string().describe('The best passage with matched terms inside <mark>…</mark>'),
      heading: z.string().nullable(),
      page: z.number().int().nullable().describe('The page of an uploaded PDF the passage begins on; null otherwise'),
      score: z.number(),
      tags: z.array(z.string()),
      content_type: z.enum(CONTENT_TYPES),
      source_url: z.string().nullable(),
      created_at: z.string(),
    }),
  ),
  total_results: z.number().int().describe('Number of results returned'),
  mode: z.enum(SEARCH_MODES),
  query: z.string(),
  did_you_mean: z
    .string()
    .nullable()
    .describe('The query with misspelt words corrected, when the results were found with it instead of `query`; null otherwise'),
  took_ms: z.number(),
  cached: z.boolean(),
  reranked: z.boolean().describe('The results are in the reranker\'s order, each `score` the reranker\'s; false when `rerank` was not asked for, or the reranker failed (then in the retrieved order)'),
  query_id: z.uuid().describe('Send it with POST /api/search/click when the user opens a result'),
});
