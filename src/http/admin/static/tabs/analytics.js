import { api, query } from '../api.js';
import { card, field, formatDate, formatNumber, formatPercent, h, section, table } from '../ui.js';

const RANGES = [7, 30, 90];
const DAY_MS = 86_400_000;
// Kept while the page is open, so coming back to the tab shows the range last picked.
let days = 30;

/** Chart.js as its UMD build, served by us (no CDN): loaded once, it defines window.Chart. */
let chartLibrary;
function loadChart() {
  chartLibrary ??= new Promise((resolve, reject) => {
    const script = h('script', { src: '/admin/vendor/chart.umd.min.js' });
    script.addEventListener('load', () => resolve(window.Chart));
    script.addEventListener('error', () => {
      chartLibrary = undefined;
      reject(new Error('could not load the chart library'));
    });
    document.head.append(script);
  });
  return chartLibrary;
}

/** A week in hours reads well; longer ranges in days. Whole UTC days, today included. */
function seriesRange(rangeDays) {
  const end = new Date();
  if (rangeDays <= 7) return { interval: 'hour', start: new Date(end.getTime() - rangeDays * DAY_MS), end };
  const today = Date.UTC(end.getUTCFullYear(), end.getUTCMonth(), end.getUTCDate());
  return { interval: 'day', start: new Date(today - (rangeDays - 1) * DAY_MS), end };
}

const bucketLabel = (bucket, interval) =>
  new Date(bucket).toLocaleString(undefined, interval === 'hour' ? { weekday: 'short', hour: '2-digit', minute: '2-digit' } : { month: 'short', day: 'numeric', timeZone: 'UTC' });

function renderAnswers(stats, rangeDays) {
  const answered = stats.total_answers > 0;
  const { up, down } = stats.feedback;
  return section(
    'Answers',
    h(
      'div',
      { class: 'cards', 'data-testid': 'answer-totals' },
      card('Answers', formatNumber(stats.total_answers), `${formatNumber(stats.cached_answers)} from the cache`),
      // With no answers the API's average is a placeholder 0, not a measurement.
      card('Average latency', answered ? `${formatNumber(Math.round(stats.average_latency_ms))} ms` : '—', 'retrieval and the model’s reply'),
      card('No-citation rate', formatPercent(stats.no_citation_rate), 'answers citing no passage'),
      card('Tokens', formatNumber(stats.prompt_tokens + stats.completion_tokens), `${formatNumber(stats.prompt_tokens)} prompt, ${formatNumber(stats.completion_tokens)} completion`),
      card('Feedback', `${formatNumber(up)} up, ${formatNumber(down)} down`, `${formatNumber(up + down)} of ${formatNumber(stats.total_answers)} answers rated`),
    ),
    h('h3', {}, 'Rated down'),
    table(
      // The API returns only the latest few, so the caption must not promise all of them.
      `The latest answers rated down, last ${rangeDays} days`,
      [
        ['Question', (row) => row.question],
        ['Comment', (row) => row.comment ?? '—'],
        ['Rated at', (row) => formatDate(row.rated_at)],
      ],
      stats.recent_down,
      { empty: 'No answer was rated down in this range.' },
    ),
  );
}

export default {
  id: 'analytics',
  title: 'Analytics',
  needsTenant: true,
  async render(panel, { tenant }) {
    let chart = null;
    const picker = h('select', { 'data-testid': 'range' }, RANGES.map((value) => h('option', { value: String(value), selected: value === days }, `Last ${value} days`)));
    const totals = h('div', { class: 'cards', 'data-testid': 'analytics-totals' });
    const canvas = h('canvas', { role: 'img', 'aria-label': 'Searches over time' });
    const rangeNote = h('p', { class: 'card-hint', 'data-testid': 'range-label', 'aria-live': 'polite' });
    const lists = h('div', { 'data-testid': 'analytics-lists' });
    const answers = h('div', { 'data-testid': 'analytics-answers' });
    panel.append(
      h('div', { class: 'toolbar' }, field('Range', picker)),
      totals,
      section('Searches over time', h('div', { class: 'chart' }, canvas), rangeNote),
      answers,
      lists,
    );

    // A slow answer for a range no longer picked must not overwrite the newer one.
    let latest = 0;
    const load = async () => {
      const request = ++latest;
      const range = seriesRange(days);
      const [stats, series, popular, noResults, trending, answerStats, Chart] = await Promise.all([
        api('GET', `/api/admin/analytics/stats${query({ days })}`, { tenant }),
        api('GET', `/api/admin/analytics/timeseries${query({ start: range.start.toISOString(), end: range.end.toISOString(), interval: range.interval })}`, { tenant }),
        api('GET', `/api/admin/analytics/popular${query({ days, limit: 10 })}`, { tenant }),
        api('GET', `/api/admin/analytics/no-results${query({ days, limit: 10 })}`, { tenant }),
        api('GET', `/api/admin/analytics/trending${query({ limit: 10 })}`, { tenant }),
        api('GET', `/api/admin/analytics/answers${query({ days })}`, { tenant }),
        loadChart(),
      ]);
      if (request !== latest) return;
      totals.replaceChildren(
        card('Searches', formatNumber(stats.total_searches), `last ${days} days`),
        card('Unique queries', formatNumber(stats.unique_queries)),
        card('Unique users', formatNumber(stats.unique_users)),
        card('Average latency', `${formatNumber(Math.round(stats.average_latency_ms))} ms`, 'inside the server'),
        card('Click-through rate', formatPercent(stats.click_through_rate), 'searches with a click'),
        card('Cache hit ratio', formatPercent(stats.cache_hit_ratio)),
      );

      const counts = series.items.map((item) => item.searches);
      const total = counts.reduce((sum, value) => sum + value, 0);
      const description = `Searches per ${series.interval}, last ${days} days: ${formatNumber(total)} in all`;
      canvas.setAttribute('aria-label', description);
      rangeNote.textContent = `${description} (UTC buckets, ${formatNumber(series.items.length)} of them).`;
      chart?.destroy();
      chart = new Chart(canvas, {
        type: 'line',
        data: {
          labels: series.items.map((item) => bucketLabel(item.bucket, series.interval)),
          datasets: [{ label: 'Searches', data: counts, borderColor: '#2b59c3', backgroundColor: 'rgba(43, 89, 195, 0.15)', fill: true, pointRadius: 0 }],
        },
        options: {
          animation: false,
          maintainAspectRatio: false,
          interaction: { mode: 'index', intersect: false },
          scales: { y: { beginAtZero: true, ticks: { precision: 0 } }, x: { ticks: { maxTicksLimit: 12 } } },
          plugins: { legend: { display: false } },
        },
      });

      answers.replaceChildren(renderAnswers(answerStats, days));

      lists.replaceChildren(
        section(
          'Popular queries',
          table(
            `The most searched queries, last ${days} days`,
            [
              ['Query', (row) => row.query],
              ['Searches', (row) => formatNumber(row.searches)],
              ['Without results', (row) => formatNumber(row.no_result_searches)],
            ],
            popular.items,
            { empty: 'No searches in this range yet (events are aggregated every minute).' },
          ),
        ),
        section(
          'Trending queries',
          h('p', { class: 'card-hint' }, `This week is the last 7 days, whatever the range. ${trending.formula} (m = ${trending.m}).`),
          table(
            'Week-over-week growth',
            [
              ['Query', (row) => row.query],
              ['This week', (row) => formatNumber(row.this_week)],
              ['Last week', (row) => formatNumber(row.last_week)],
              ['Growth', (row) => formatPercent(row.growth)],
            ],
            trending.items,
            { empty: `No query reached ${trending.m} searches this week.` },
          ),
        ),
        section(
          'Queries without results',
          table(
            `Queries that found nothing, last ${days} days`,
            [
              ['Query', (row) => row.query],
              ['Empty searches', (row) => formatNumber(row.searches)],
            ],
            noResults.items,
            { empty: 'Every search found something.' },
          ),
        ),
      );
    };

    picker.addEventListener('change', () => {
      days = Number(picker.value);
      load().catch((error) => {
        rangeNote.textContent = `Could not load: ${error.message}`;
      });
    });
    await load();
    return () => chart?.destroy();
  },
};
