import type { Knex } from 'knex';
import * as core from './20261126000001_core';
import * as webhooks from './20261126000002_webhooks';
import * as reconcileIndexes from './20261126000003_reconcile_indexes';
import * as analytics from './20261126000004_analytics';
import * as webhookIndexes from './20261126000005_webhook_indexes';
import * as tenancy from './20261126000006_tenancy';
import * as adminSessions from './20261126000010_admin_sessions';
import * as usage from './20261126000007_usage';
import * as deadLetters from './20261126000008_dead_letters';
import * as audit from './20261126000009_audit';
import * as documentErrorCode from './20261126000011_document_error_code';
import * as searchTerms from './20261204000012_search_terms';
import * as answers from './20261204000013_answers';
import * as uploads from './20261204000014_uploads';

/**
 * Every migration in order. Named without a file extension so the names
 * recorded in knex_migrations do not depend on how the code was loaded.
 */
export const migrations: ReadonlyArray<{ name: string; migration: Knex.Migration }> = [
  { name: '20261126000001_core', migration: core },
  { name: '20261126000002_webhooks', migration: webhooks },
  { name: '20261126000003_reconcile_indexes', migration: reconcileIndexes },
  { name: '20261126000004_analytics', migration: analytics },
  { name: '20261126000005_webhook_indexes', migration: webhookIndexes },
  { name: '20261126000006_tenancy', migration: tenancy },
  { name: '20261126000007_usage', migration: usage },
  { name: '20261126000008_dead_letters', migration: deadLetters },
  { name: '20261126000009_audit', migration: audit },
  { name: '20261126000010_admin_sessions', migration: adminSessions },
  { name: '20261126000011_document_error_code', migration: documentErrorCode },
  { name: '20261204000012_search_terms', migration: searchTerms },
  { name: '20261204000013_answers', migration: answers },
  { name: '20261204000014_uploads', migration: uploads },
];
