// Catalog: the packages of the cluster's repositories (Cosmos `package/search`) as cards with
// search, one click to install with the defaults, the installed packages with uninstall, and a
// package's page with its description, versions and an install form generated from its
// config JSON schema (defaults filled in, checked by the browser before it is sent).

import { cosmos } from './api.js';
import { errorBox, h, mount, toast } from './dom.js';

function icon(p) {
  const src = p.images?.['icon-medium'] ?? p.images?.['icon-small'];
  const letter = h('div.pkg-icon.letter', (p.name ?? '?').slice(0, 1).toUpperCase());
  // Only same-origin icons load (the CSP refuses others): fall back to the letter.
  if (!src || !src.startsWith('/')) return letter;
  return h('img.pkg-icon', { src, alt: '', onerror: (e) => e.target.replaceWith(letter) });
}

async function install(name, options, version) {
  const body = { packageName: name };
  if (version) body.packageVersion = version;
  if (options && Object.keys(options).length) body.options = options;
  const r = await cosmos('install', body, 'v2');
  toast(`Installed ${r.packageName} ${r.packageVersion} as ${r.appId}`, 'ok');
  return r;
}

function installedView(list, reload) {
  const pkgs = list.packages ?? [];
  if (!pkgs.length) return h('p.empty', 'No package is installed.');
  return h('ul.installed#installed', pkgs.map((p) => {
    const def = p.packageInformation?.packageDefinition ?? {};
    return h('li', { dataset: { package: def.name, app: p.appId } },
      h('strong', def.name), ' ', h('span.muted', def.version ?? ''), ' as ',
      h('a.mono', { href: `#/services/app${p.appId}` }, p.appId), ' ',
      h('a', { href: `/service${p.appId}/`, target: '_blank', rel: 'noopener' }, 'open'), ' ',
      h('button.small.danger', {
        onclick: async () => {
          if (!confirm(`Uninstall ${def.name} (${p.appId})?`)) return;
          try {
            await cosmos('uninstall', { packageName: def.name, appId: p.appId });
            toast(`Uninstalled ${def.name}`, 'ok');
          } catch (e) {
            toast(`Uninstall failed: ${e.message}`, 'bad');
          }
          reload();
        },
      }, 'Uninstall'));
  }));
}

async function renderList(root) {
  const cards = h('div.cards.pkgs#packages');
  const installed = h('div');
  const search = h('input.search#catalog-search', { type: 'search', placeholder: 'Search packages', 'aria-label': 'Search packages' });
  let timer;
  const load = async () => {
    try {
      const r = await cosmos('search', { query: search.value.trim() });
      mount(cards, (r.packages ?? []).length === 0 ? h('p.empty', 'No package matches.') : r.packages.map((p) =>
        h('div.card.pkg', { dataset: { package: p.name } },
          h('div.pkg-head', icon(p), h('div', h('a.pkg-name', { href: `#/catalog/${encodeURIComponent(p.name)}` }, p.name),
            h('div.muted', p.currentVersion ?? ''))),
          h('p.pkg-desc', p.description ?? ''),
          h('div.tags', (p.tags ?? []).map((t) => h('span.tag', t))),
          h('div.pkg-error', { role: 'alert' }),
          h('div.actions', h('button.primary.install', {
            onclick: async (e) => {
              const error = e.target.closest('.pkg').querySelector('.pkg-error');
              e.target.disabled = true;
              mount(error);
              try {
                await install(p.name);
                await loadInstalled();
              } catch (err) {
                mount(error, errorBox(err));
                toast(`Install failed: ${err.message}`, 'bad');
              } finally {
                e.target.disabled = false;
              }
            },
          }, 'Install'), h('a.button', { href: `#/catalog/${encodeURIComponent(p.name)}` }, 'Configure…')))));
    } catch (e) {
      mount(cards, errorBox(e));
    }
  };
  const loadInstalled = async () => {
    try {
      mount(installed, installedView(await cosmos('list', {}), loadInstalled));
    } catch (e) {
      mount(installed, errorBox(e));
    }
  };
  search.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(load, 200); });
  mount(root,
    h('div.page-head', h('h1', 'Catalog'), h('span.spacer'), search),
    cards,
    h('section.card', h('h2', 'Installed'), installed));
  await Promise.all([load(), loadInstalled()]);
}

/** Inputs for a JSON schema object; returns [elements, collect()]. */
function schemaForm(schema, path = []) {
  const els = [];
  const getters = [];
  for (const [key, prop] of Object.entries(schema?.properties ?? {})) {
    const name = [...path, key].join('.');
    if (prop.type === 'object') {
      const [inner, collect] = schemaForm(prop, [...path, key]);
      els.push(h('fieldset', h('legend', key), prop.description ? h('p.muted', prop.description) : null, inner));
      getters.push((out) => { const v = collect(); if (Object.keys(v).length) out[key] = v; });
      continue;
    }
    let input;
    if (prop.type === 'boolean') {
      input = h('input', { type: 'checkbox', name, checked: prop.default === true });
      getters.push((out) => { out[key] = input.checked; });
    } else if (Array.isArray(prop.enum)) {
      input = h('select', { name }, prop.enum.map((v) => h('option', { value: String(v), selected: v === prop.default }, String(v))));
      getters.push((out) => { out[key] = prop.type === 'string' ? input.value : JSON.parse(input.value); });
    } else if (prop.type === 'number' || prop.type === 'integer') {
      input = h('input', {
        type: 'number', name, value: prop.default ?? '', min: prop.minimum, max: prop.maximum,
        step: prop.type === 'integer' ? '1' : 'any', required: (schema.required ?? []).includes(key),
      });
      getters.push((out) => { if (input.value !== '') out[key] = Number(input.value); });
    } else if (prop.type === 'string') {
      input = h('input', {
        name, value: prop.default ?? '', pattern: prop.pattern, minlength: prop.minLength, maxlength: prop.maxLength,
        required: (schema.required ?? []).includes(key),
      });
      getters.push((out) => { if (input.value !== '') out[key] = input.value; });
    } else {
      input = h('textarea.json', { name, rows: 3 }, prop.default === undefined ? '' : JSON.stringify(prop.default));
      getters.push((out) => { if (input.value.trim()) out[key] = JSON.parse(input.value); });
    }
    els.push(h('label.field', `${key}${prop.type ? ` (${prop.type})` : ''}`, input, prop.description ? h('span.muted', prop.description) : null));
  }
  return [els, () => { const out = {}; for (const g of getters) g(out); return out; }];
}

async function renderPackage(root, name) {
  let d;
  try {
    d = await cosmos('describe', { packageName: name }, 'v3');
  } catch (e) {
    mount(root, h('h1', name), errorBox(e));
    return;
  }
  const p = d.package ?? d;
  const [fields, collect] = schemaForm(p.config ?? {});
  const message = h('div');
  const form = h('form.card#install-form', {
    onsubmit: async (e) => {
      e.preventDefault();
      mount(message);
      try {
        const r = await install(p.name, collect(), p.version);
        mount(message, h('div.notice', `Installed as ${r.appId}. `, r.postInstallNotes ?? '', ' ',
          h('a', { href: `#/services/app${r.appId}` }, 'See the service')));
      } catch (err) {
        mount(message, errorBox(err));
      }
    },
  }, h('h2', 'Install'), fields.length ? fields : h('p.muted', 'This package has no options.'), message,
  h('div.actions', h('button.primary', { type: 'submit' }, 'Install')));
  mount(root,
    h('div.page-head', h('a.muted', { href: '#/catalog' }, 'Catalog'), h('span.muted', ' / '), h('h1', p.name),
      h('span.muted', p.version ?? '')),
    h('section.card.pkg-page', h('div.pkg-head', icon(p), h('div', h('p', p.description ?? ''),
      h('div.muted', `Maintainer: ${p.maintainer ?? '?'}`),
      h('div.tags', (p.tags ?? []).map((t) => h('span.tag', t)))))),
    form);
}

export function render(root, params) {
  return params.name ? renderPackage(root, params.name) : renderList(root);
}
