import type { Knex } from 'knex';
import { enableRowLevelSecurity } from './row-level-security';

/**
 * One row per answer served by POST /api/answer: the source of answer
 * analytics (count, latency, no-citation rate, feedback) and of the usage
 * counters billing reads (answers, and the prompt and completion tokens
 * spent). Feedback is kept on the answer's row: one rating per answer, the
 * last one sent.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('answer_events', (t) => {
    t.uuid('query_id').primary();
    t.uuid('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.text('question').notNullable();
    t.text('model').notNullable();
    t.integer('passages').notNullable();
    t.integer('cited').notNullable();
    t.integer('prompt_tokens').notNullable();
    t.integer('completion_tokens').notNullable();
    t.double('took_ms').notNullable();
    t.boolean('cached').notNullable();
    t.boolean('streamed').notNullable();
    t.text('user_id');
    t.text('rating');
    t.text('feedback_comment');
    t.timestamp('feedback_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['tenant_id', 'created_at']);
  });
  await knex.raw(`alter table answer_events add constraint answer_events_rating_check check (rating in ('up', 'down'))`);
  await enableRowLevelSecurity(knex, 'answer_events');

  await knex.schema.alterTable('usage_daily', (t) => {
    t.bigInteger('answers').notNullable().defaultTo(0);
    t.bigInteger('answer_prompt_tokens').notNullable().defaultTo(0);
    t.bigInteger('answer_completion_tokens').notNullable().defaultTo(0);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('usage_daily', (t) => {
    t.dropColumn('answers');
    t.dropColumn('answer_prompt_tokens');
    t.dropColumn('answer_completion_tokens');
  });
  await knex.schema.dropTable('answer_events');
}
