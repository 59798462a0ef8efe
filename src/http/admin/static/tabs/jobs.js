import { api, query } from '../api.js';
import { attempt, badge, field, formatDate, formatNumber, h, progress, section, table, toast } from '../ui.js';

const POLL_MS = 2000;
const stateTone = { completed: 'ok', processing: 'warn', queued: 'muted', failed: 'bad', canceled: 'muted' };

export default {
  id: 'jobs',
  title: 'Jobs',
  async render(panel, context) {
    const indexJobs = h('div', { 'data-testid': 'index-jobs' });
    const queues = h('div', { 'data-testid': 'queues' });
    const failed = h('div', { 'data-testid': 'failed-jobs' });
    const details = h('div', { 'data-testid': 'job-details' });
    const deadLetters = h('div', { 'data-testid': 'dead-letters' });
    panel.append(
      section('Index jobs', indexJobs),
      section('Queues', queues),
      section('Failed jobs', failed, details),
      section('Dead letters', deadLetters),
    );
    const refresh = async () => {
      await Promise.all([
        renderIndexJobs(indexJobs, context),
        renderQueues(queues, refresh),
        renderFailed(failed, details, context, refresh),
        renderDeadLetters(deadLetters, context, refresh),
      ]);
    };
    await refresh();
    // Progress bars move while indexing runs; only the index jobs are polled, the rest refresh after actions.
    const timer = setInterval(() => renderIndexJobs(indexJobs, context).catch(() => undefined), POLL_MS);
    return () => clearInterval(timer);
  },
};

async function renderIndexJobs(container, { tenant }) {
  if (!tenant) {
    container.replaceChildren(h('p', { class: 'empty' }, 'Pick a tenant to follow its index jobs.'));
    return;
  }
  const page = await api('GET', '/api/index/jobs?limit=20', { tenant });
  const retryFailedDocuments = async (job) => {
    const detail = await api('GET', `/api/index/jobs/${job.job_id}`, { tenant });
    const ids = detail.documents.filter((item) => item.status === 'failed').map((item) => item.document_id);
    if (ids.length === 0) return toast('No failed documents in this job.');
    await attempt(() => api('POST', '/api/index/batch', { tenant, body: { document_ids: ids, force_reindex: true } }), `Re-indexing ${ids.length} documents as a new job.`);
    await renderIndexJobs(container, { tenant });
  };
  container.replaceChildren(
    table(
      'The 20 newest index jobs of this tenant, live',
      [
        ['Job', (job) => h('code', {}, job.job_id)],
        ['Status', (job) => badge(job.status, stateTone[job.status] ?? 'muted')],
        ['Progress', (job) => progress(job.documents_completed + job.documents_failed, job.documents_total, `Progress of index job ${job.job_id}`)],
        ['Failed', (job) => formatNumber(job.documents_failed)],
        ['Created', (job) => formatDate(job.created_at)],
        ['', (job) => (job.documents_failed > 0 ? h('button', { type: 'button', onclick: () => retryFailedDocuments(job) }, 'Retry failed documents') : '')],
      ],
      page.items,
      { empty: 'No index jobs yet.' },
    ),
  );
}

async function renderQueues(container, refresh) {
  const overview = await api('GET', '/api/admin/queues');
  const retryFailed = async (queue) => {
    const dry = await attempt(() => api('POST', `/api/admin/queues/${queue.name}/retry-failed`, { body: { dry_run: true } }));
    if (!dry) return;
    if (dry.matched === 0) return toast(`No failed jobs in ${queue.name}.`);
    if (!window.confirm(`Retry ${dry.matched} failed jobs of ${queue.name}?`)) return;
    await attempt(() => api('POST', `/api/admin/queues/${queue.name}/retry-failed`, { body: { dry_run: false } }), (result) => `${result.retried} jobs of ${queue.name} retried.`);
    await refresh();
  };
  const pauseOrResume = async (queue) => {
    const action = queue.is_paused ? 'resume' : 'pause';
    await attempt(() => api('POST', `/api/admin/queues/${queue.name}/${action}`), `${queue.name} ${action === 'pause' ? 'paused' : 'resumed'}.`);
    await refresh();
  };
  container.replaceChildren(
    table(
      'Every queue: job counts, the oldest waiting job and the workers listening',
      [
        ['Queue', (queue) => h('a', { href: `/admin/queues/queue/${encodeURIComponent(queue.name)}` }, queue.name)],
        ['State', (queue) => badge(queue.is_paused ? 'paused' : 'running', queue.is_paused ? 'warn' : 'ok')],
        ['Waiting', (queue) => formatNumber(queue.counts.waiting)],
        ['Active', (queue) => formatNumber(queue.counts.active)],
        ['Delayed', (queue) => formatNumber(queue.counts.delayed)],
        ['Failed', (queue) => formatNumber(queue.counts.failed)],
        ['Completed', (queue) => formatNumber(queue.counts.completed)],
        ['Oldest waiting', (queue) => `${formatNumber(queue.oldest_waiting_age_seconds)} s`],
        ['Workers', (queue) => formatNumber(queue.workers)],
        [
          '',
          (queue) =>
            h(
              'div',
              { class: 'actions' },
              h('button', { type: 'button', onclick: () => pauseOrResume(queue) }, queue.is_paused ? `Resume ${queue.name}` : `Pause ${queue.name}`),
              h('button', { type: 'button', onclick: () => retryFailed(queue), disabled: queue.counts.failed === 0 }, 'Retry failed…'),
            ),
        ],
      ],
      overview,
    ),
  );
}

async function renderFailed(container, details, { tenant }, refresh) {
  const page = await api('GET', `/api/admin/jobs${query({ state: 'failed', limit: 20 })}`, { tenant });
  const showDetails = async (job) => {
    const detail = await attempt(() => api('GET', `/api/admin/jobs/${encodeURIComponent(job.queue)}/${encodeURIComponent(job.id)}`, { tenant }));
    if (!detail) return;
    details.replaceChildren(
      h('h3', {}, `${detail.queue} job ${detail.id}`),
      h('p', {}, `Attempts: ${detail.attempts_made}. Error: ${detail.failed_reason ?? '—'}`),
      h('pre', { 'aria-label': 'Stack trace' }, (detail.stacktrace ?? []).join('\n') || 'No stack trace.'),
      h('pre', { 'aria-label': 'Job data' }, JSON.stringify(detail.data, null, 2)),
    );
  };
  const retry = async (job) => {
    await attempt(() => api('POST', `/api/admin/jobs/${encodeURIComponent(job.queue)}/${encodeURIComponent(job.id)}/retry`, { tenant }), `Job ${job.id} retried.`);
    await refresh();
  };
  container.replaceChildren(
    table(
      'The 20 newest failed jobs',
      [
        ['Queue', (job) => job.queue],
        ['Job', (job) => h('code', {}, job.id)],
        ['Attempts', (job) => formatNumber(job.attempts_made)],
        ['Error', (job) => job.failed_reason ?? '—'],
        ['Finished', (job) => formatDate(job.finished_at)],
        [
          '',
          (job) =>
            h(
              'div',
              { class: 'actions' },
              h('button', { type: 'button', onclick: () => showDetails(job) }, 'Details'),
              h('button', { type: 'button', class: 'primary', onclick: () => retry(job) }, 'Retry'),
            ),
        ],
      ],
      page.items,
      { empty: 'No failed jobs.' },
    ),
  );
}

async function renderDeadLetters(container, { tenant }, refresh) {
  const page = await api('GET', `/api/admin/dead-letters${query({ state: 'open', limit: 20 })}`, { tenant });
  const errorClass = h('input', { placeholder: 'e.g. EmbeddingError' });
  const redriveAll = async () => {
    const filter = errorClass.value ? { error_class: errorClass.value } : {};
    const dry = await attempt(() => api('POST', '/api/admin/dead-letters/redrive', { tenant, body: { ...filter, dry_run: true } }));
    if (!dry) return;
    if (dry.matched === 0) return toast('No dead letters match.');
    if (!window.confirm(`Redrive ${dry.matched} dead letters?`)) return;
    await attempt(() => api('POST', '/api/admin/dead-letters/redrive', { tenant, body: { ...filter, dry_run: false } }), (result) => `${result.redriven} dead letters redriven.`);
    await refresh();
  };
  const redrive = async (letter) => {
    await attempt(() => api('POST', `/api/admin/dead-letters/${letter.id}/redrive`, { tenant }), 'Redriven: the job runs again.');
    await refresh();
  };
  const discard = async (letter) => {
    if (!window.confirm('Discard this dead letter? Its job will not run again.')) return;
    await attempt(() => api('DELETE', `/api/admin/dead-letters/${letter.id}`, { tenant }), 'Discarded.');
    await refresh();
  };
  container.replaceChildren(
    h('div', { class: 'toolbar' }, field('Error class (optional)', errorClass), h('button', { type: 'button', onclick: redriveAll }, 'Redrive matching…')),
    table(
      'Jobs that used up their attempts',
      [
        ['Queue', (letter) => letter.queue],
        ['Job', (letter) => h('code', {}, letter.job_id)],
        ['Error', (letter) => `${letter.error_class}: ${letter.error_message}`],
        ['Attempts', (letter) => formatNumber(letter.attempts)],
        ['Failed', (letter) => formatDate(letter.failed_at)],
        [
          '',
          (letter) =>
            h(
              'div',
              { class: 'actions' },
              h('button', { type: 'button', class: 'primary', onclick: () => redrive(letter) }, 'Redrive'),
              h('button', { type: 'button', class: 'danger', onclick: () => discard(letter) }, 'Discard'),
            ),
        ],
      ],
      page.items,
      { empty: 'No dead letters.' },
    ),
  );
}
