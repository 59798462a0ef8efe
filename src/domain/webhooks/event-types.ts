/** Every event a webhook endpoint can subscribe to. */
export const EVENT_TYPES = {
  'document.created': 'A document was accepted and queued for indexing.',
  'document.indexed': 'A document version was indexed and is searchable.',
  'document.failed': 'A document version could not be indexed; `error` says why, `error_code` says it for machines.',
  'document.deleted': 'A document and its chunks were deleted.',
  'index_job.completed': 'An index job finished with every document indexed.',
  'index_job.failed': 'An index job finished with at least one document failed.',
  'webhook.test': 'Sent by POST /api/admin/webhooks/:id/test.',
  'webhook.endpoint_disabled': 'An endpoint was disabled after failing for too long or answering 410 Gone.',
  'quota.exceeded': 'An operation was refused by a quota (sent at most once per quota and UTC day); `data` names the quota, limit and use.',
} as const;

export type EventType = keyof typeof EVENT_TYPES;
export const EVENT_TYPE_NAMES = Object.keys(EVENT_TYPES) as [EventType, ...EventType[]];
