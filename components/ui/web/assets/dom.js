// DOM helpers: element building without innerHTML (every text is a text node, so nothing the
// cluster returns is ever parsed as markup), formatting, and small shared widgets.

/** h('div.card#x', {onclick}, child, ...): an element; strings become text nodes. */
export function h(spec, attrs, ...children) {
  const [, tag = 'div', rest = ''] = /^([a-z0-9]*)(.*)$/i.exec(spec);
  const el = document.createElement(tag || 'div');
  for (const part of rest.match(/[.#][^.#]+/g) ?? []) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtMem(mb) {
  if (mb === undefined || mb === null || Number.isNaN(mb)) return '–';
  if (mb >= 1024 * 1024) return `${(mb / 1024 / 1024).toFixed(1)} TiB`;
  if (mb >= 1024) return `${(mb / 1024).toFixed(1)} GiB`;
  return `${Math.round(mb)} MiB`;
}

export function fmtCpus(c) {
  if (c === undefined || c === null) return '–';
  return Number.isInteger(c) ? String(c) : c.toFixed(2);
}

export function ago(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

/** A labelled used/total bar. */
export function bar(label, used, total, fmt = String) {
  const pct = total > 0 ? Math.min(100, (used / total) * 100) : 0;
  const level = pct > 90 ? 'hot' : pct > 70 ? 'warm' : 'ok';
  const fill = h(`div.bar-fill.${level}`);
  fill.style.width = `${pct.toFixed(1)}%`; // CSSOM, not a style attribute: the CSP allows it
  return h('div.bar', { title: `${label}: ${fmt(used)} of ${fmt(total)} used` },
    h('div.bar-label', h('span', label), h('span.muted', `${fmt(used)} / ${fmt(total)}`)),
    h('div.bar-track', fill));
}

/** A status pill. */
export function pill(state) {
  return h(`span.pill.s-${state.replace(/[^a-z]/g, '')}`, state);
}

/** An error box for `err` (an ApiError or any Error). */
export function errorBox(err) {
  const box = h('div.error', { role: 'alert' }, h('strong', err.message ?? String(err)));
  for (const d of err.details ?? []) box.append(h('div.detail', d));
  return box;
}

/** Shows a transient notice at the bottom of the page. */
export function toast(message, kind = 'info') {
  const host = document.getElementById('toasts');
  if (!host) return;
  const t = h(`div.toast.${kind}`, { role: 'status', dataset: { at: String(Date.now()) } }, message);
  host.append(t);
  setTimeout(() => t.remove(), 6000);
}

/** Removes the notices older than a moment (called when another page opens). */
export function clearOldToasts() {
  for (const t of document.querySelectorAll('#toasts .toast')) {
    if (Date.now() - Number(t.dataset.at) > 1500) t.remove();
  }
}

/** A table from rows: `cols` is [[header, cell(row)], ...]. */
export function table(cols, rows, { empty = 'Nothing here yet.', rowAttrs } = {}) {
  if (rows.length === 0) return h('p.empty', empty);
  const body = h('tbody');
  const frag = document.createDocumentFragment();
  for (const r of rows) {
    frag.append(h('tr', rowAttrs?.(r) ?? null, cols.map(([, cell]) => h('td', cell(r)))));
  }
  body.append(frag);
  return h('table.grid', h('thead', h('tr', cols.map(([name]) => h('th', name)))), body);
}

/** Polls `fn` every `ms` until the returned stop function is called. */
export function every(ms, fn) {
  let stopped = false;
  let timer;
  const tick = async () => {
    try {
      await fn();
    } finally {
      if (!stopped) timer = setTimeout(tick, ms);
    }
  };
  timer = setTimeout(tick, ms);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
