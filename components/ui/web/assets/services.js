// Services: every Marathon app with its status, instances running/wanted, health and
// resources, grouped by their group path; refreshed on Marathon events (and every 10 s as a
// fallback). `#/services/new` is the create form: the common fields, or the whole definition
// as JSON; Marathon's 422 details are shown next to the fields they name.

import { api, appHealth, appPath, appStatus, appsAndQueue, marathon } from './api.js';
import { bar, errorBox, every, fmtCpus, fmtMem, h, mount, pill, table, toast } from './dom.js';

function groupOf(id) {
  const i = id.lastIndexOf('/');
  return i > 0 ? id.slice(0, i) : '/';
}

function list(apps, queue, filter) {
  const shown = apps
    .filter((a) => !filter || a.id.includes(filter))
    .sort((a, b) => a.id.localeCompare(b.id));
  const rows = [];
  let group = null;
  for (const app of shown) {
    const g = groupOf(app.id);
    if (g !== '/' && g !== group) rows.push({ group: g });
    group = g;
    rows.push({ app, status: appStatus(app, queue) });
  }
  const cols = [
    ['Service', (r) => r.group ? h('strong.group', `${r.group}/`)
      : h('a.app-link', { href: `#/services/app${r.app.id}`, dataset: { id: r.app.id } },
        groupOf(r.app.id) === '/' ? r.app.id.slice(1) : h('span', h('span.indent'), r.app.id.slice(groupOf(r.app.id).length + 1)))],
    ['Status', (r) => r.group ? '' : pill(r.status)],
    ['Instances', (r) => r.group ? '' : h('span.instances', `${r.app.tasksRunning ?? 0} / ${r.app.instances}`)],
    ['Health', (r) => r.group ? '' : appHealth(r.app)],
    ['CPU', (r) => r.group ? '' : fmtCpus(r.app.cpus)],
    ['Memory', (r) => r.group ? '' : fmtMem(r.app.mem)],
  ];
  return table(cols, rows, {
    empty: filter ? 'No service matches.' : 'No services yet: create one, or install a package from the catalog.',
    rowAttrs: (r) => r.group ? { class: 'group-row' } : { dataset: { app: r.app.id, status: r.status } },
  });
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
  return h('section.card#deployments', h('h2', `Deployments in progress (${deployments.length})`),
    h('ul.deployments', deployments.map((d) => {
      const step = Math.max(0, (d.currentStep ?? 1) - 1);
      const total = d.totalSteps ?? (d.steps ?? []).length;
      const actions = (d.currentActions ?? []).map((a) => `${a.action} ${a.app ?? a.pod ?? ''}`.trim());
      return h('li', { dataset: { deployment: d.id } },
        h('div.dep-head', h('span.mono', (d.affectedApps ?? []).join(', ') || d.id), h('span.muted', ` step ${step + 1} of ${total}`),
          h('span.spacer'),
          h('button.small.dep-rollback', { onclick: cancel(d, false) }, 'Roll back'),
          h('button.small.danger.dep-stop', { onclick: cancel(d, true) }, 'Stop')),
        bar(actions.join('; ') || 'waiting', step, total || 1, (n) => `${n} step${n === 1 ? '' : 's'}`));
    })));
}

async function renderList(root, ctx) {
  let filter = '';
  const holder = h('div#services-list');
  const count = h('span.muted');
  const search = h('input.search', {
    type: 'search', placeholder: 'Filter by id', 'aria-label': 'Filter services',
    oninput: () => { filter = search.value.trim(); draw(); },
  });
  let last = { apps: [], queue: [] };
  let deployments = [];
  let error = null;
  const draw = () => {
    count.textContent = `${last.apps.length} service${last.apps.length === 1 ? '' : 's'}`;
    mount(holder, error ? errorBox(error) : null, deploymentsView(deployments, refresh), list(last.apps, last.queue, filter));
  };
  const refresh = async () => {
    try {
      [last, deployments] = await Promise.all([
        appsAndQueue(),
        api(marathon('/v2/deployments')).catch(() => []),
      ]);
      error = null;
    } catch (e) {
      error = e;
    }
    draw();
  };
  mount(root,
    h('div.page-head', h('h1', 'Services'), count, h('span.spacer'), search,
      h('a.button.primary#create-service', { href: '#/services/new' }, 'Create service')),
    holder);
  await refresh();
  const stopLive = ctx.live.onChange(refresh);
  const stopPoll = every(10000, refresh);
  return () => { stopLive(); stopPoll(); };
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
