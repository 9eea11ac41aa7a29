// Services: every Marathon app with its status, instances running/wanted, health and
// resources, grouped by their group path; refreshed on Marathon events (and every 10 s as a
// fallback). `#/services/new` is the create form: the common fields, or the whole definition
// as JSON; Marathon's 422 details are shown next to the fields they name.

import { api, appHealth, appPath, appStatus, appsAndQueue, marathon } from './api.js';
import { bar, errorBox, every, fmtCpus, fmtMem, h, mount, pill, toast } from './dom.js';

function groupOf(id) {
  const i = id.lastIndexOf('/');
  return i > 0 ? id.slice(0, i) : '/';
}

/** The group paths above `id`, outermost first: `/a/b/c` → [`/a`, `/a/b`]. */
function ancestors(id) {
  const out = [];
  for (let i = id.indexOf('/', 1); i > 0; i = id.indexOf('/', i + 1)) out.push(id.slice(0, i));
  return out;
}

/** The rows of the services tree: a row per group (with its apps' totals) and per app, in id
 *  order, without what a collapsed group hides (unless a filter is set: matches always show). */
export function treeRows(apps, queue, filter, collapsed) {
  const shown = apps.filter((a) => !filter || a.id.includes(filter)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const totals = new Map();
  const statuses = new Map();
  for (const app of shown) {
    const status = appStatus(app, queue);
    statuses.set(app.id, status);
    for (const g of ancestors(app.id)) {
      const t = totals.get(g) ?? { apps: 0, running: 0, wanted: 0, attention: 0 };
      t.apps += 1;
      t.running += app.tasksRunning ?? 0;
      t.wanted += app.instances ?? 0;
      if (status !== 'running' && status !== 'suspended') t.attention += 1;
      totals.set(g, t);
    }
  }
  const rows = [];
  let open = [];
  for (const app of shown) {
    const groups = ancestors(app.id);
    let same = 0;
    while (same < open.length && same < groups.length && open[same] === groups[same]) same += 1;
    for (let d = same; d < groups.length; d++) {
      const hidden = !filter && groups.slice(0, d).some((g) => collapsed.has(g));
      if (!hidden) rows.push({ group: groups[d], depth: d, totals: totals.get(groups[d]), collapsed: !filter && collapsed.has(groups[d]) });
    }
    open = groups;
    if (!filter && groups.some((g) => collapsed.has(g))) continue;
    rows.push({ app, depth: groups.length, status: statuses.get(app.id) });
  }
  return rows;
}

/** What a row shows, as a string: a row is rebuilt only when this changes. */
function signature(r) {
  if (r.group) return `g|${r.group}|${r.collapsed}|${r.totals.apps}|${r.totals.running}|${r.totals.wanted}|${r.totals.attention}`;
  const a = r.app;
  return `a|${a.id}|${r.depth}|${r.status}|${a.tasksRunning ?? 0}|${a.instances}|${appHealth(a)}|${a.cpus}|${a.mem}`;
}

const COLUMNS = ['Service', 'Status', 'Instances', 'Health', 'CPU', 'Memory'];
/** The height of a row (style.css `.grid.virtual tr`): the list draws only the rows in view. */
const ROW_HEIGHT = 37;
const OVERSCAN = 15;
const COLLAPSED_KEY = 'capstan.services.collapsed';

function indent(depth) {
  const el = h('span.indent');
  el.style.width = `${depth * 16}px`; // CSSOM: the CSP allows it
  return el;
}

function rowElement(r, toggle) {
  if (r.group) {
    const name = r.group.slice(r.group.lastIndexOf('/') + 1);
    const t = r.totals;
    return h('tr.group-row', { dataset: { group: r.group } },
      h('td', indent(r.depth),
        h('button.link.group-toggle', { type: 'button', 'aria-expanded': String(!r.collapsed), onclick: () => toggle(r.group) },
          h('span.caret', r.collapsed ? '▸' : '▾'), h('strong.group', `${name}/`)),
        h('span.muted', ` ${t.apps} service${t.apps === 1 ? '' : 's'}`)),
      h('td', t.attention ? h('span.muted', `${t.attention} need attention`) : ''),
      h('td', h('span.muted', `${t.running} / ${t.wanted}`)), h('td'), h('td'), h('td'));
  }
  const a = r.app;
  return h('tr', { dataset: { app: a.id, status: r.status } },
    h('td', indent(r.depth), h('a.app-link', { href: `#/services/app${a.id}`, dataset: { id: a.id } }, a.id.slice(a.id.lastIndexOf('/') + 1))),
    h('td', pill(r.status)),
    h('td', h('span.instances', `${a.tasksRunning ?? 0} / ${a.instances}`)),
    h('td', appHealth(a)),
    h('td', fmtCpus(a.cpus)),
    h('td', fmtMem(a.mem)));
}

/** A table that keeps only the rows in (and near) the window in the DOM, reusing a row's
 *  element while what it shows is unchanged. `set(rows)` replaces the rows; scrolling redraws. */
function virtualTable(toggle) {
  const body = h('tbody');
  const spacer = () => {
    const td = h('td', { colspan: COLUMNS.length });
    return { td, tr: h('tr.spacer', { 'aria-hidden': 'true' }, td) };
  };
  const before = spacer();
  const after = spacer();
  let rowHeight = ROW_HEIGHT;
  const table = h('table.grid.virtual', h('thead', h('tr', COLUMNS.map((c) => h('th', c)))), body);
  let rows = [];
  let cache = new Map();
  let drawn = '';
  let queued = false;
  const draw = (force) => {
    queued = false;
    if (!table.isConnected) return;
    const top = body.getBoundingClientRect().top;
    const first = Math.max(0, Math.floor(-top / rowHeight) - OVERSCAN);
    // Below the window (a long deployments panel above): the first rows all the same.
    const last = Math.min(rows.length, Math.max(first + 2 * OVERSCAN, Math.ceil((window.innerHeight - top) / rowHeight) + OVERSCAN));
    const key = `${first}:${last}`;
    if (!force && key === drawn) return;
    drawn = key;
    const next = new Map();
    const els = [];
    for (let i = first; i < last; i++) {
      const r = rows[i];
      const sig = signature(r);
      let el = cache.get(sig);
      if (!el) el = rowElement(r, toggle);
      next.set(sig, el);
      els.push(el);
    }
    cache = next;
    before.td.style.height = `${first * rowHeight}px`;
    after.td.style.height = `${(rows.length - last) * rowHeight}px`;
    before.tr.hidden = first === 0;
    after.tr.hidden = last === rows.length;
    const want = [before.tr, ...els, after.tr];
    const have = body.children;
    if (have.length !== want.length || want.some((el, i) => have[i] !== el)) body.replaceChildren(...want);
    // The rows' real height (fonts, zoom): the spacers must match it.
    const measured = els.length ? els[0].getBoundingClientRect().height : 0;
    if (measured > 0 && Math.abs(measured - rowHeight) > 0.5) {
      rowHeight = measured;
      draw(true);
    }
  };
  const later = () => {
    if (!queued) {
      queued = true;
      requestAnimationFrame(() => draw(false));
    }
  };
  document.addEventListener('scroll', later, { capture: true, passive: true });
  window.addEventListener('resize', later);
  return {
    table,
    set(next) {
      rows = next;
      draw(true);
    },
    stop() {
      document.removeEventListener('scroll', later, { capture: true });
      window.removeEventListener('resize', later);
    },
  };
}

/** Deployments in progress: their steps as a bar, roll back (a new deployment undoing it) or stop. */
function deploymentsView(deployments, refresh) {
  if (!deployments.length) return null;
  const cancel = (d, force) => async () => {
    const what = force ? 'Stop' : 'Roll back';
    if (!confirm(`${what} deployment ${d.id}?`)) return;
    try {
      await api(marathon(`/v2/deployments/${encodeURIComponent(d.id)}${force ? '?force=true' : ''}`), { method: 'DELETE' });
      toast(force ? `Stopped ${d.id}` : `Rolling back ${d.id}`, 'ok');
    } catch (e) {
      toast(`${what} failed: ${e.message}`, 'bad');
    }
    refresh();
  };
  const more = deployments.length - SHOWN_DEPLOYMENTS;
  return h('section.card#deployments', h('h2', `Deployments in progress (${deployments.length})`),
    h('ul.deployments', deployments.slice(0, SHOWN_DEPLOYMENTS).map((d) => {
      const step = Math.max(0, (d.currentStep ?? 1) - 1);
      const total = d.totalSteps ?? (d.steps ?? []).length;
      const actions = (d.currentActions ?? []).map((a) => `${a.action} ${a.app ?? a.pod ?? ''}`.trim());
      return h('li', { dataset: { deployment: d.id } },
        h('div.dep-head', h('span.mono', (d.affectedApps ?? []).join(', ') || d.id), h('span.muted', ` step ${step + 1} of ${total}`),
          h('span.spacer'),
          h('button.small.dep-rollback', { onclick: cancel(d, false) }, 'Roll back'),
          h('button.small.danger.dep-stop', { onclick: cancel(d, true) }, 'Stop')),
        bar(actions.join('; ') || 'waiting', step, total || 1, (n) => `${n} step${n === 1 ? '' : 's'}`));
    })),
    more > 0 ? h('p.muted', `… and ${more} more (the deploying services show it in their status).`) : null);
}

/** Deployments listed in full; more (a big rollout) are only counted. */
const SHOWN_DEPLOYMENTS = 10;

/** The services page. A full refresh (apps with counts, the queue, the deployments) comes
 *  first, on deployment and group events and every 10 s; a task's event refreshes only its app
 *  (`GET /v2/apps/<id>` and the queue), so a change on a big cluster shows without reloading
 *  1,000 apps. */
async function renderList(root, ctx) {
  let filter = '';
  let collapsed;
  try {
    collapsed = new Set(JSON.parse(localStorage.getItem(COLLAPSED_KEY) ?? '[]'));
  } catch {
    collapsed = new Set();
  }
  const errors = h('div', { hidden: true });
  const deps = h('div', { hidden: true });
  const count = h('span.muted');
  const byId = new Map();
  let queue = [];
  let loaded = false;
  const redraw = () => {
    count.textContent = `${byId.size} service${byId.size === 1 ? '' : 's'}`;
    const rows = treeRows([...byId.values()], queue, filter, collapsed);
    if (!loaded) return;
    if (byId.size === 0 || rows.length === 0) {
      empty.textContent = filter ? 'No service matches.' : 'No services yet: create one, or install a package from the catalog.';
      empty.hidden = false;
      vt.table.hidden = true;
    } else {
      empty.hidden = true;
      vt.table.hidden = false;
    }
    vt.set(rows);
  };
  const toggle = (group) => {
    if (collapsed.has(group)) collapsed.delete(group);
    else collapsed.add(group);
    try {
      localStorage.setItem(COLLAPSED_KEY, JSON.stringify([...collapsed]));
    } catch { /* private mode: the tree still folds for this visit */ }
    redraw();
  };
  const vt = virtualTable(toggle);
  const empty = h('p.empty', { hidden: true });
  const holder = h('div#services-list', errors, deps, empty, vt.table);
  const search = h('input.search', {
    type: 'search', placeholder: 'Filter by id', 'aria-label': 'Filter services',
    oninput: () => { filter = search.value.trim(); redraw(); },
  });

  let full = null; // the full refresh in flight
  let again = false;
  const refresh = async () => {
    if (full) {
      again = true;
      return full;
    }
    full = (async () => {
      try {
        const [both, deployments] = await Promise.all([
          appsAndQueue(),
          api(marathon('/v2/deployments')).catch(() => []),
        ]);
        byId.clear();
        for (const a of both.apps) byId.set(a.id, a);
        queue = both.queue;
        loaded = true;
        mount(errors);
        errors.hidden = true;
        mount(deps, deploymentsView(deployments, refresh));
        deps.hidden = deployments.length === 0;
      } catch (e) {
        mount(errors, errorBox(e));
        errors.hidden = false;
      }
      redraw();
    })();
    await full;
    full = null;
    if (again) {
      again = false;
      await refresh();
    }
  };

  // Task events name their app: refresh just those apps (many at once: everything).
  const pending = new Set();
  let flushing = null;
  const flush = async () => {
    const ids = [...pending];
    pending.clear();
    if (ids.length > 20 || !loaded) return refresh();
    const [apps, q] = await Promise.all([
      Promise.all(ids.map((id) => api(marathon(`/v2/apps/${appPath(id)}`)).then((r) => r.app).catch((e) => (e.status === 404 ? null : undefined)))),
      api(marathon('/v2/queue')).catch(() => null),
    ]);
    ids.forEach((id, i) => {
      if (apps[i] === null) byId.delete(id);
      else if (apps[i]) byId.set(id, { ...byId.get(id), ...apps[i] });
    });
    if (q) queue = q.queue ?? [];
    redraw();
  };
  const TASK_EVENTS = new Set(['status_update_event', 'instance_changed_event', 'health_status_changed_event',
    'instance_health_changed_event', 'failed_health_check_event', 'unhealthy_instance_kill_event']);
  const onEvent = (type, data) => {
    if (TASK_EVENTS.has(type) && data?.appId) {
      pending.add(data.appId);
      if (!flushing) {
        flushing = Promise.resolve().then(async () => {
          try {
            while (pending.size) await flush();
          } finally {
            flushing = null;
          }
        });
      }
    } else {
      later();
    }
  };
  let timer = null;
  const later = () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; refresh(); }, 100);
  };

  mount(root,
    h('div.page-head', h('h1', 'Services'), count, h('span.spacer'), search,
      h('a.button.primary#create-service', { href: '#/services/new' }, 'Create service')),
    holder);
  await refresh();
  const stopLive = ctx.live.onEvent(onEvent);
  const stopPoll = every(10000, refresh);
  return () => { stopLive(); stopPoll(); vt.stop(); clearTimeout(timer); };
}

/** The app definition from the form's fields (only what is filled in). */
function fromForm(f) {
  const app = { id: f.id.value.trim() };
  if (f.cmd.value.trim()) app.cmd = f.cmd.value.trim();
  if (f.image.value.trim()) app.container = { type: 'DOCKER', docker: { image: f.image.value.trim() } };
  app.cpus = Number(f.cpus.value);
  app.mem = Number(f.mem.value);
  app.instances = Number(f.instances.value);
  const path = f.health.value.trim();
  if (path) {
    // An HTTP check on the first port (Marathon gives a port of its choosing to `port: 0`).
    app.portDefinitions = [{ port: 0, protocol: 'tcp', name: 'http' }];
    app.healthChecks = [{
      protocol: 'HTTP', path, portIndex: 0, gracePeriodSeconds: 30, intervalSeconds: 5,
      timeoutSeconds: 5, maxConsecutiveFailures: 3,
    }];
  }
  return app;
}

function toForm(f, app) {
  f.id.value = app.id ?? '';
  f.cmd.value = app.cmd ?? '';
  f.image.value = app.container?.docker?.image ?? '';
  if (app.cpus !== undefined) f.cpus.value = app.cpus;
  if (app.mem !== undefined) f.mem.value = app.mem;
  if (app.instances !== undefined) f.instances.value = app.instances;
  f.health.value = (app.healthChecks ?? []).find((c) => /HTTP/.test(c.protocol ?? ''))?.path ?? '';
}

const FIELD_PATHS = {
  '/id': 'id', '/cmd': 'cmd', '/cpus': 'cpus', '/mem': 'mem', '/instances': 'instances',
  '/container/docker/image': 'image', '/container': 'image', '/healthChecks': 'health',
  '/healthChecks/0': 'health', '/healthChecks/0/path': 'health', '/portDefinitions': 'health',
};

/** The definition without what Marathon adds at run time (for editing). */
function definitionOf(app) {
  const out = { ...app };
  for (const k of ['tasks', 'deployments', 'lastTaskFailure', 'tasksRunning', 'tasksStaged', 'tasksHealthy',
    'tasksUnhealthy', 'versionInfo', 'version']) delete out[k];
  return out;
}

/** The create form, or with `editId` the edit form of that app (PUT, a new version). */
async function renderCreate(root, editId) {
  const field = (name, label, attrs = {}) => {
    const input = h(attrs.multiline ? 'textarea' : 'input', { name, id: `new-${name}`, ...attrs, multiline: undefined });
    const err = h('div.field-error', { id: `new-${name}-error` });
    return { input, err, el: h('label.field', label, input, err) };
  };
  const f = {
    id: field('id', 'ID', { placeholder: '/web', required: true }),
    cmd: field('cmd', 'Command', { placeholder: 'python3 -m http.server $PORT0', multiline: true, rows: 2 }),
    image: field('image', 'Container image (optional)', { placeholder: 'capstan/http' }),
    cpus: field('cpus', 'CPUs', { type: 'number', step: '0.01', min: '0.01', value: '0.1' }),
    mem: field('mem', 'Memory (MiB)', { type: 'number', step: '1', min: '1', value: '32' }),
    instances: field('instances', 'Instances', { type: 'number', step: '1', min: '0', value: '1' }),
    health: field('health', 'Health check path (HTTP, first port; optional)', { placeholder: '/' }),
  };
  const inputs = Object.fromEntries(Object.entries(f).map(([k, v]) => [k, v.input]));
  const json = h('textarea.json#new-json', { rows: 18, spellcheck: 'false', 'aria-label': 'App definition (JSON)' });
  const formPane = h('div.form-grid', Object.values(f).map((x) => x.el));
  const jsonPane = h('div', { hidden: true }, h('p.muted', 'The whole Marathon app definition: anything the form does not show.'), json);
  const message = h('div#new-message');
  let mode = 'form';
  const setMode = (m) => {
    if (m === mode) return;
    try {
      if (m === 'json') json.value = JSON.stringify(merged(safeJson(json.value), fromForm(inputs)), null, 2);
      else toForm(inputs, JSON.parse(json.value));
    } catch (e) {
      mount(message, errorBox(new Error(`The JSON does not parse: ${e.message}`)));
      return;
    }
    mode = m;
    formPane.hidden = m !== 'form';
    jsonPane.hidden = m !== 'json';
    tabs.querySelectorAll('button').forEach((b) => b.classList.toggle('active', b.dataset.mode === m));
  };
  const tabs = h('div.tabs',
    h('button.active', { type: 'button', dataset: { mode: 'form' }, onclick: () => setMode('form') }, 'Form'),
    h('button#new-json-tab', { type: 'button', dataset: { mode: 'json' }, onclick: () => setMode('json') }, 'JSON'));
  const submit = h('button.primary#new-submit', { type: 'submit' }, editId ? 'Save' : 'Create');
  if (editId) {
    try {
      const def = definitionOf((await api(marathon(`/v2/apps/${appPath(editId)}`))).app);
      json.value = JSON.stringify(def, null, 2);
      toForm(inputs, def);
      inputs.id.readOnly = true;
    } catch (e) {
      mount(root, h('div.page-head', h('h1.mono', editId)), errorBox(e));
      return;
    }
  }
  const form = h('form.card', {
    onsubmit: async (e) => {
      e.preventDefault();
      mount(message);
      Object.values(f).forEach((x) => { x.err.textContent = ''; x.input.classList.remove('invalid'); });
      let app;
      try {
        app = mode === 'json' ? { ...JSON.parse(json.value) } : merged(safeJson(json.value), fromForm(inputs));
      } catch (err) {
        mount(message, errorBox(new Error(`The JSON does not parse: ${err.message}`)));
        return;
      }
      if (app.id && !app.id.startsWith('/')) app.id = `/${app.id}`;
      submit.disabled = true;
      try {
        if (editId) {
          await api(marathon(`/v2/apps/${appPath(editId)}`), { method: 'PUT', body: { ...app, id: editId } });
          toast(`Saved ${editId}: deploying the new version`, 'ok');
          location.hash = `#/services/app${editId}`;
        } else {
          const created = await api(marathon('/v2/apps'), { method: 'POST', body: app });
          toast(`Created ${created.id}`, 'ok');
          location.hash = `#/services/app${created.id}`;
        }
      } catch (err) {
        for (const d of err.body?.details ?? []) {
          const name = FIELD_PATHS[d.path];
          if (name && mode === 'form') {
            f[name].err.textContent = (d.errors ?? []).join('; ');
            f[name].input.classList.add('invalid');
          }
        }
        mount(message, errorBox(err));
      } finally {
        submit.disabled = false;
      }
    },
  }, tabs, formPane, jsonPane, message,
  h('div.actions', submit, h('a.button', { href: editId ? `#/services/app${editId}` : '#/services' }, 'Cancel')));
  mount(root, h('div.page-head', editId ? h('h1', 'Edit ', h('span.mono', editId)) : h('h1', 'Create a service')), form);
}

/** The form's fields over the JSON definition, keeping the definition's ports and its health
 *  check when the form says the same (an edit must not change what it does not show). */
function merged(base, form) {
  const out = { ...base, ...form };
  if ((base.portDefinitions ?? []).length && form.portDefinitions) out.portDefinitions = base.portDefinitions;
  const same = (base.healthChecks ?? []).find((c) => /HTTP/.test(c.protocol ?? ''))?.path;
  if (form.healthChecks && same === form.healthChecks[0].path) out.healthChecks = base.healthChecks;
  if (!form.healthChecks && same !== undefined) out.healthChecks = (base.healthChecks ?? []).filter((c) => !/HTTP/.test(c.protocol ?? ''));
  return out;
}

function safeJson(text) {
  try {
    const v = JSON.parse(text);
    return v && typeof v === 'object' ? v : {};
  } catch {
    return {};
  }
}

export function render(root, params, ctx) {
  if (params.create) return renderCreate(root);
  if (params.edit) return renderCreate(root, params.edit);
  return renderList(root, ctx);
}
