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
  const [app, queue] = await Promise.all([
    api(marathon(`/v2/apps/${appPath(id)}?embed=app.counts&embed=app.tasks&embed=app.deployments&embed=app.lastTaskFailure`)),
    api(marathon('/v2/queue')).catch(() => ({ queue: [] })),
  ]);
  return { app: app.app, queue: queue.queue ?? [] };
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
  return h('div.notice',
    delay > 0 ? `Delayed after failures: next launch in ${delay} s. ` : `Waiting for ${q.count ?? 0} instance(s) to be placed. `,
    reasons.length ? reasons.join('; ') : 'No matching offer yet.');
}

export async function render(root, params, ctx) {
  const id = params.id;
  let logStop = null;
  const logHolder = h('div');
  const body = h('div');
  const openLog = (task) => {
    logStop?.();
    const [el, stop] = logViewer(task);
    logStop = stop;
    mount(logHolder, el);
  };
  const act = async (what, fn) => {
    try {
      await fn();
      toast(what, 'ok');
      await refresh();
    } catch (e) {
      toast(`${what} failed: ${e.message}`, 'bad');
    }
  };
  const view = ({ app, queue }) => {
    const status = appStatus(app, queue);
    const scaleInput = h('input#scale-instances', { type: 'number', min: '0', step: '1', value: String(app.instances), 'aria-label': 'Instances' });
    const tasks = app.tasks ?? [];
    const endpoints = (t) => (t.ports ?? []).map((p) => `${t.host}:${p}`).join(', ') || t.host || '–';
    const health = (t) => {
      const r = t.healthCheckResults ?? [];
      if (!r.length) return '–';
      return r.every((x) => x.alive) ? pill('healthy') : pill('unhealthy');
    };
    const state = (t) => (t.state ?? 'TASK_STAGING').replace(/^TASK_/, '').toLowerCase();
    return [
      h('div.page-head', h('a.muted', { href: '#/services' }, 'Services'), h('span.muted', ' / '),
        h('h1.mono#service-id', app.id), pill(status), h('span.spacer'),
        h('form.inline-form', {
          onsubmit: (e) => {
            e.preventDefault();
            const n = Number(scaleInput.value);
            act(`Scaled ${app.id} to ${n}`, () => api(marathon(`/v2/apps/${appPath(app.id)}`), { method: 'PUT', body: { instances: n } }));
          },
        }, scaleInput, h('button#scale', { type: 'submit' }, 'Scale')),
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
      waitReason(app, queue),
      h('section.cards',
        h('div.card.stat', h('div.stat-label', 'Instances'), h('div.stat-value#service-instances', `${app.tasksRunning ?? 0} / ${app.instances}`),
          h('div.muted', `${app.tasksStaged ?? 0} staged`)),
        h('div.card.stat', h('div.stat-label', 'Health'), h('div.stat-value', appHealth(app))),
        h('div.card.stat', h('div.stat-label', 'Resources'), h('div', `${fmtCpus(app.cpus)} CPU · ${fmtMem(app.mem)}`),
          h('div.muted', `per instance; version ${app.version ?? '?'}`)),
        (app.deployments ?? []).length ? h('div.card.stat', h('div.stat-label', 'Deployments'),
          app.deployments.map((d) => h('div.mono', d.id))) : null),
      app.lastTaskFailure ? h('div.notice.bad', `Last failure: ${app.lastTaskFailure.state} ${ago(app.lastTaskFailure.timestamp)}: ${app.lastTaskFailure.message ?? ''}`) : null,
      h('section.card', h('h2', 'Tasks'),
        table([
          ['Task', (t) => h('span.mono', t.id)],
          ['State', (t) => pill(state(t))],
          ['Endpoints', (t) => h('span.mono', endpoints(t))],
          ['Health', health],
          ['Started', (t) => (t.startedAt ? ago(t.startedAt) : '–')],
          ['', (t) => h('button.small.log-button', { onclick: () => openLog(t), dataset: { task: t.id } }, 'Logs')],
        ], tasks, { empty: 'No tasks.', rowAttrs: (t) => ({ dataset: { task: t.id, state: state(t) } }) })),
      h('details.card', h('summary', 'Configuration (JSON)'), h('pre.json', JSON.stringify(stripRuntime(app), null, 2))),
    ];
  };
  const refresh = async () => {
    try {
      mount(body, view(await load(id)));
    } catch (e) {
      mount(body, h('div.page-head', h('h1.mono', id)), errorBox(e));
    }
  };
  mount(root, body, logHolder);
  await refresh();
  const stopLive = ctx.live.onChange(refresh);
  const stopPoll = every(5000, refresh);
  return () => { stopLive(); stopPoll(); logStop?.(); };
}

function stripRuntime(app) {
  const { tasks, deployments, lastTaskFailure, tasksRunning, tasksStaged, tasksHealthy, tasksUnhealthy, versionInfo, ...rest } = app;
  void tasks; void deployments; void lastTaskFailure; void tasksRunning; void tasksStaged; void tasksHealthy; void tasksUnhealthy; void versionInfo;
  return rest;
}
