// A service's page: its status and configuration, scale / restart / suspend / destroy, its
// tasks with their endpoints and health, and a task's stdout or stderr read through the
// Mesos files API of the task's agent (`/agent/<id>/files/read.json` via the router), followed
// by polling from the last offset.

import { api, appHealth, appPath, appStatus, marathon } from './api.js';
import { ago, errorBox, every, fmtCpus, fmtMem, h, mount, pill, table, toast } from './dom.js';

/** The task's sandbox directory from its agent's state. */
async function sandboxOf(task) {
  const state = await api(`/agent/${encodeURIComponent(task.slaveId)}/state.json`);
  for (const f of [...(state.frameworks ?? []), ...(state.completed_frameworks ?? [])]) {
    for (const e of [...(f.executors ?? []), ...(f.completed_executors ?? [])]) {
      const all = [...(e.tasks ?? []), ...(e.completed_tasks ?? []), ...(e.queued_tasks ?? [])];
      if (e.id === task.id || all.some((t) => t.id === task.id)) return e.directory;
    }
  }
  throw new Error(`The agent does not know task ${task.id} (any more)`);
}

const CHUNK = 64 * 1024;
const encoder = new TextEncoder();

/** A log viewer for `task`'s `file`, following new output; returns [element, stop]. */
function logViewer(task) {
  const pre = h('pre.log#task-log', { 'aria-label': 'Task log' });
  const status = h('span.muted#task-log-status', 'Opening the sandbox…');
  let file = 'stdout';
  let offset = 0;
  let dir = null;
  let stopped = false;
  let follow = true;
  const read = async () => {
    if (stopped) return;
    try {
      dir ??= await sandboxOf(task);
      const q = new URLSearchParams({ path: `${dir}/${file}`, offset: String(offset), length: String(CHUNK) });
      const r = await api(`/agent/${encodeURIComponent(task.slaveId)}/files/read.json?${q}`);
      if (r.data) {
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(r.data);
        offset = r.offset + encoder.encode(r.data).length;
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
      status.textContent = `${file} · ${offset} bytes${follow ? ' · following' : ''}`;
      if (r.data && r.data.length >= CHUNK / 2) return read(); // catch up before waiting
    } catch (e) {
      status.textContent = `Cannot read ${file}: ${e.message}`;
    }
  };
  const switchTo = (f) => {
    file = f;
    offset = 0;
    pre.replaceChildren();
    tabs.querySelectorAll('button').forEach((b) => b.classList.toggle('active', b.dataset.file === f));
    read();
  };
  const tabs = h('div.tabs',
    ['stdout', 'stderr'].map((f) => h(`button${f === 'stdout' ? '.active' : ''}`, {
      type: 'button', id: `log-${f}`, dataset: { file: f }, onclick: () => switchTo(f),
    }, f)),
    h('label.inline', h('input', { type: 'checkbox', checked: true, onchange: (e) => { follow = e.target.checked; } }), 'Follow'));
  const stopPoll = every(1000, () => (follow ? read() : null));
  read();
  const el = h('section.card#log-panel', h('h2', 'Log of ', h('span.mono', task.id)), tabs, status, pre);
  return [el, () => { stopped = true; stopPoll(); }];
}

async function load(id) {
  const [app, queue, versions] = await Promise.all([
    api(marathon(`/v2/apps/${appPath(id)}?embed=app.counts&embed=app.tasks&embed=app.deployments&embed=app.lastTaskFailure`)),
    api(marathon('/v2/queue')).catch(() => ({ queue: [] })),
    api(marathon(`/v2/apps/${appPath(id)}/versions`)).catch(() => ({ versions: [] })),
  ]);
  return { app: app.app, queue: queue.queue ?? [], versions: versions.versions ?? [] };
}

function waitReason(app, queue) {
  const q = queue.find((e) => e.app?.id === app.id);
  if (!q) return null;
  const reasons = [];
  const summary = q.processedOffersSummary;
  for (const r of summary?.rejectSummaryLastOffers ?? []) {
    if (r.declined > 0) reasons.push(`${r.declined} of ${r.processed} recent offers lacked ${r.reason.replace(/^Insufficient/, '').toLowerCase() || r.reason}`);
  }
  const delay = q.delay?.timeLeftSeconds ?? 0;
  return h('div.notice#service-waiting',
    delay > 0 ? `Delayed after failures: next launch in ${delay} s. ` : `Waiting for ${q.count ?? 0} instance(s) to be placed. `,
    reasons.length ? reasons.join('; ') : 'No matching offer yet.');
}

/** The definition without what Marathon adds at run time (counts, tasks, version stamps). */
function stripRuntime(app) {
  const out = { ...app };
  for (const k of ['tasks', 'deployments', 'lastTaskFailure', 'tasksRunning', 'tasksStaged', 'tasksHealthy',
    'tasksUnhealthy', 'versionInfo', 'version']) delete out[k];
  return out;
}

/** A line diff of two JSON texts (longest common subsequence; definitions are small). */
export function lineDiff(a, b) {
  const x = a.split('\n');
  const y = b.split('\n');
  const n = x.length;
  const m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push([' ', x[i]]); i++; j++; }
    else if (i < n && (j === m || lcs[i + 1][j] >= lcs[i][j + 1])) { out.push(['-', x[i]]); i++; }
    else { out.push(['+', y[j]]); j++; }
  }
  return out;
}

/** The changed lines of a diff with two lines of context, `['~']` where lines are left out. */
function hunks(lines) {
  const keep = lines.map((_, i) => lines.slice(Math.max(0, i - 2), i + 3).some(([k]) => k !== ' '));
  const out = [];
  lines.forEach((l, i) => {
    if (keep[i]) out.push(l);
    else if ((!out.length || out[out.length - 1][0] !== '~') && keep.slice(i).includes(true)) out.push(['~']);
  });
  return out;
}

const json = (v) => JSON.stringify(v, Object.keys(flatKeys(v)).sort(), 2);
function flatKeys(v, acc = {}) {
  if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (!Array.isArray(v)) acc[k] = true;
      flatKeys(x, acc);
    }
  }
  return acc;
}

export async function render(root, params, ctx) {
  const id = params.id;
  let logStop = null;
  let logTask = null;
  const logHolder = h('div.page');
  const body = h('div.page');
  const lower = h('div.page'); // below the log: versions and the definition
  // Kept across refreshes, so what is being typed or looked at survives a live update.
  const scaleInput = h('input#scale-instances', { type: 'number', min: '0', step: '1', 'aria-label': 'Instances' });
  let scaleDirty = false;
  scaleInput.addEventListener('input', () => { scaleDirty = true; });
  let diff = null; // { version, lines } of the version compared with the current one
  let last = null;
  const openLog = (task) => {
    logStop?.();
    const [el, stop] = logViewer(task);
    logStop = stop;
    logTask = task.id;
    mount(logHolder, el);
  };
  let actionError = null; // the last action's failure, shown until the next action
  const act = async (what, fn) => {
    try {
      await fn();
      actionError = null;
      toast(what, 'ok');
    } catch (e) {
      actionError = new Error(`${what} failed: ${e.message}${e.status === 409 ? ' (a deployment is still in progress: wait for it, or stop it on the services page)' : ''}`);
      toast(actionError.message, 'bad');
    }
    await refresh();
  };
  const showDiff = async (app, version) => {
    try {
      const old = await api(marathon(`/v2/apps/${appPath(app.id)}/versions/${encodeURIComponent(version)}`));
      diff = { version, lines: lineDiff(json(stripRuntime(old)), json(stripRuntime(app))) };
    } catch (e) {
      diff = { version, error: e };
    }
    draw();
  };
  const versionsView = (app, versions) => h('section.card#versions-panel',
    h('h2', 'Configuration versions'),
    versions.length === 0 ? h('p.empty', 'No versions.') : h('ul.versions#versions', versions.slice(0, 20).map((v) => {
      const current = v === app.version;
      return h(`li${current ? '.current' : ''}`, { dataset: { version: v } },
        h('span.mono', v), ' ', current ? h('span.tag', 'current') : null, h('span.muted', ` ${ago(v)}`), h('span.spacer'),
        current ? null : h('button.small.diff', { onclick: () => showDiff(app, v) }, 'Diff'),
        current ? null : h('button.small.rollback', {
          onclick: () => {
            if (!confirm(`Roll ${app.id} back to its configuration of ${v}?`)) return;
            diff = null;
            act(`Rolling ${app.id} back to ${v}`, () => api(marathon(`/v2/apps/${appPath(app.id)}`), { method: 'PUT', body: { version: v } }));
          },
        }, 'Roll back'));
    })),
    diff ? h('div#version-diff',
      h('div.muted', `From ${diff.version} (−) to the current configuration (+):`),
      diff.error ? errorBox(diff.error) : h('pre.diff', hunks(diff.lines).map(([k, line]) =>
        h(`span.d${k === '+' ? 'add' : k === '-' ? 'del' : k === '~' ? 'gap' : 'ctx'}`, k === '~' ? '⋯' : `${k} ${line}`)))) : null);
  const view = ({ app, queue, versions }) => {
    const status = appStatus(app, queue);
    if (!scaleDirty && document.activeElement !== scaleInput) scaleInput.value = String(app.instances);
    const tasks = [...(app.tasks ?? [])].sort((a, b) => String(a.startedAt ?? a.stagedAt ?? '').localeCompare(String(b.startedAt ?? b.stagedAt ?? '')));
    const endpoints = (t) => (t.ports ?? []).map((p) => `${t.host}:${p}`).join(', ') || t.host || '–';
    const healthOf = (t) => {
      const r = t.healthCheckResults ?? [];
      if (!r.length) return (app.healthChecks ?? []).length ? 'unknown' : 'none';
      return r.every((x) => x.alive) ? 'healthy' : 'unhealthy';
    };
    const state = (t) => (t.state ?? 'TASK_STAGING').replace(/^TASK_/, '').toLowerCase();
    const served = (app.portDefinitions ?? []).length > 0 || (app.container?.portMappings ?? app.container?.docker?.portMappings ?? []).length > 0;
    const serviceName = app.labels?.DCOS_SERVICE_NAME;
    const servicePath = serviceName ? `/service/${serviceName}/` : `/service${app.id}/`;
    return [[
      h('div.page-head', h('a.muted', { href: '#/services' }, 'Services'), h('span.muted', ' / '),
        h('h1.mono#service-id', app.id), h('span#service-status', { dataset: { status } }, pill(status)), h('span.spacer'),
        served ? h('a.button#service-open', { href: servicePath, target: '_blank', rel: 'noopener' }, 'Open') : null,
        h('form.inline-form', {
          onsubmit: (e) => {
            e.preventDefault();
            const n = Number(scaleInput.value);
            scaleDirty = false;
            scaleInput.blur();
            act(`Scaled ${app.id} to ${n}`, () => api(marathon(`/v2/apps/${appPath(app.id)}`), { method: 'PUT', body: { instances: n } }));
          },
        }, scaleInput, h('button#scale', { type: 'submit' }, 'Scale')),
        h('a.button#edit', { href: `#/services/edit${app.id}` }, 'Edit'),
        h('button#restart', { onclick: () => act(`Restarting ${app.id}`, () => api(marathon(`/v2/apps/${appPath(app.id)}/restart`), { method: 'POST' })) }, 'Restart'),
        h('button#suspend', { disabled: app.instances === 0, onclick: () => act(`Suspended ${app.id}`, () => api(marathon(`/v2/apps/${appPath(app.id)}`), { method: 'PUT', body: { instances: 0 } })) }, 'Suspend'),
        h('button.danger#destroy', {
          onclick: () => {
            if (!confirm(`Destroy ${app.id} and all its tasks?`)) return;
            api(marathon(`/v2/apps/${appPath(app.id)}`), { method: 'DELETE' })
              .then(() => { toast(`Destroyed ${app.id}`, 'ok'); location.hash = '#/services'; })
              .catch((e) => toast(`Destroy failed: ${e.message}`, 'bad'));
          },
        }, 'Destroy')),
      actionError ? h('div#service-action-error', errorBox(actionError)) : null,
      waitReason(app, queue),
      h('section.cards',
        h('div.card.stat', h('div.stat-label', 'Instances'), h('div.stat-value#service-instances', `${app.tasksRunning ?? 0} / ${app.instances}`),
          h('div.muted', `${app.tasksStaged ?? 0} staged`)),
        h('div.card.stat', h('div.stat-label', 'Health'), h('div.stat-value#service-health', appHealth(app))),
        h('div.card.stat', h('div.stat-label', 'Resources'), h('div', `${fmtCpus(app.cpus)} CPU · ${fmtMem(app.mem)}`),
          h('div.muted', `per instance; version ${app.version ?? '?'}`)),
        (app.deployments ?? []).length ? h('div.card.stat', h('div.stat-label', 'Deployments'),
          app.deployments.map((d) => h('div.mono', d.id))) : null),
      app.lastTaskFailure ? h('div.notice.bad#service-last-failure', `Last failure: ${app.lastTaskFailure.state} ${ago(app.lastTaskFailure.timestamp)}: ${app.lastTaskFailure.message ?? ''}`) : null,
      h('section.card#service-tasks', h('h2', 'Tasks'),
        table([
          ['Task', (t) => h('span.mono', t.id)],
          ['State', (t) => pill(state(t))],
          ['Endpoints', (t) => h('span.mono', endpoints(t))],
          ['Health', (t) => { const x = healthOf(t); return x === 'none' ? '–' : pill(x); }],
          ['Started', (t) => (t.startedAt ? ago(t.startedAt) : '–')],
          ['', (t) => h('span.row-actions',
            h(`button.small.log-button${t.id === logTask ? '.active' : ''}`, { onclick: () => openLog(t), dataset: { task: t.id } }, 'Logs'),
            h('button.small.danger.kill', {
              onclick: () => {
                if (!confirm(`Kill task ${t.id}? Marathon starts a replacement.`)) return;
                act(`Killed ${t.id}`, () => api(marathon(`/v2/apps/${appPath(app.id)}/tasks/${encodeURIComponent(t.id)}`), { method: 'DELETE' }));
              },
            }, 'Kill'))],
        ], tasks, { empty: 'No tasks.', rowAttrs: (t) => ({ dataset: { task: t.id, state: state(t), health: healthOf(t) } }) })),
    ], [
      versionsView(app, versions),
      h('details.card', h('summary', 'Configuration (JSON)'), h('pre.json', JSON.stringify(stripRuntime(app), null, 2))),
    ]];
  };
  const draw = () => {
    if (!last) return;
    const open = lower.querySelector('details')?.open;
    const [top, bottom] = last.error ? [[h('div.page-head', h('h1.mono', id)), errorBox(last.error)], []] : view(last);
    mount(body, top);
    mount(lower, bottom);
    if (open) lower.querySelector('details').open = true;
  };
  const refresh = async () => {
    try {
      last = await load(id);
    } catch (e) {
      last = { error: e };
    }
    draw();
  };
  mount(root, body, logHolder, lower);
  await refresh();
  const stopLive = ctx.live.onChange(refresh);
  const stopPoll = every(5000, refresh);
  return () => { stopLive(); stopPoll(); logStop?.(); };
}
