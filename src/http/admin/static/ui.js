// Small DOM helpers. Text always goes in as text (never as HTML), so nothing the
// API returns can inject markup.

/** h('button', {class: 'x', onclick}, 'Label', child…) */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

export const formatDate = (value) => (value ? new Date(value).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : '—');
export const formatNumber = (value) => (value === null || value === undefined ? '—' : Number(value).toLocaleString());
export const formatPercent = (value) => (value === null || value === undefined ? '—' : `${(value * 100).toFixed(1)}%`);

/** A table with a caption; `columns` are [header, (row) => cell content]. */
export function table(caption, columns, rows, { empty = 'Nothing here yet.' } = {}) {
  if (rows.length === 0) return h('p', { class: 'empty' }, empty);
  return h(
    'table',
    {},
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, columns.map(([header]) => h('th', { scope: 'col' }, header)))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map(([, cell]) => h('td', {}, cell(row)))))),
  );
}

export function badge(text, tone) {
  return h('span', { class: `badge ${tone}` }, text);
}

/** A labelled progress bar. */
export function progress(done, total, label) {
  const value = total > 0 ? Math.round((done / total) * 100) : 0;
  return h('div', { class: 'progress-row' }, h('progress', { max: '100', value: String(value), 'aria-label': label }), h('span', {}, `${done} / ${total}`));
}

/** A card with a big figure. */
export function card(label, value, hint) {
  return h('div', { class: 'card' }, h('div', { class: 'card-label' }, label), h('div', { class: 'card-value' }, value), hint ? h('div', { class: 'card-hint' }, hint) : null);
}

export function section(title, ...children) {
  return h('section', { class: 'block' }, h('h2', {}, title), ...children);
}

/** Tells the operator what happened, for screen readers too (the element is a live region). */
export function toast(message, tone = 'info') {
  const element = document.getElementById('toast');
  element.className = `toast ${tone} shown`;
  element.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => element.classList.remove('shown'), 6000);
}

/** Runs an action, shows its error instead of throwing. */
export async function attempt(action, success) {
  try {
    const result = await action();
    if (success) toast(typeof success === 'function' ? success(result) : success, 'ok');
    return result;
  } catch (error) {
    toast(error.message, 'error');
    return undefined;
  }
}

/** A labelled form field: the input sits inside its label, so the two stay tied wherever the field is drawn. */
export function field(label, input) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), input);
}

/** A secret shown once, with a copy button. */
export function shownOnce(label, secret) {
  const output = h('output', { class: 'secret', 'aria-label': label }, secret);
  const copy = h('button', { type: 'button', onclick: async () => {
    await navigator.clipboard?.writeText(secret).then(() => toast('Copied.', 'ok'), () => toast('Copy failed: select the text instead.', 'error'));
  } }, 'Copy');
  return h('div', { class: 'once', role: 'alert' }, h('strong', {}, `${label} — shown only now: `), output, copy);
}
