// Nodes: every agent from the master's state summary with its resource bars, attributes and
// task counts, Drain (the master's operator call DRAIN_AGENT: no new tasks, its tasks
// killed so their schedulers start them elsewhere) and its undo, Reactivate
// (REACTIVATE_AGENT: the node is offered again; killed tasks stay where their services
// restarted them). Refreshed every 5 s; a card is rebuilt
// only when what it shows changed, so a big cluster's page stays cheap.

import { api } from './api.js';
import { bar, errorBox, every, fmtCpus, fmtMem, h, mount, pill, toast } from './dom.js';

function attrs(a) {
  return Object.entries(a ?? {}).map(([k, v]) => h('span.tag', `${k}:${typeof v === 'object' ? JSON.stringify(v) : v}`));
}

/** An agent's state in words: active, draining (deactivated by a drain), inactive. */
export function nodeState(s) {
  if (s.deactivated) return 'draining';
  return s.active === false ? 'inactive' : 'active';
}

async function drain(s, refresh) {
  if (!confirm(`Drain ${s.hostname ?? s.id}? No new task will start there, and its tasks are killed so that their services start them elsewhere.`)) return;
  try {
    await api('/mesos/api/v1', { method: 'POST', body: { type: 'DRAIN_AGENT', drain_agent: { agent_id: { value: s.id } } } });
    toast(`Draining ${s.hostname ?? s.id}`, 'ok');
  } catch (e) {
    toast(`Drain failed: ${e.message}`, 'bad');
  }
  refresh();
}

async function reactivate(s, refresh) {
  try {
    await api('/mesos/api/v1', { method: 'POST', body: { type: 'REACTIVATE_AGENT', reactivate_agent: { agent_id: { value: s.id } } } });
    toast(`${s.hostname ?? s.id} takes tasks again`, 'ok');
  } catch (e) {
    toast(`Reactivate failed: ${e.message}`, 'bad');
  }
  refresh();
}

function card(s, refresh) {
  const state = nodeState(s);
  return h('div.card.node', { dataset: { agent: s.id, state } },
    h('div.node-head', h('strong.mono', s.hostname ?? s.id), pill(state), h('span.spacer'),
      state === 'active' ? h('button.small.node-drain', { onclick: () => drain(s, refresh) }, 'Drain') : null,
      state === 'draining' ? h('button.small.node-reactivate', { onclick: () => reactivate(s, refresh) }, 'Reactivate') : null),
    h('div.muted.mono', s.id),
    bar('CPU', s.used_resources?.cpus ?? 0, s.resources?.cpus ?? 0, fmtCpus),
    bar('Memory', s.used_resources?.mem ?? 0, s.resources?.mem ?? 0, fmtMem),
    bar('Disk', s.used_resources?.disk ?? 0, s.resources?.disk ?? 0, fmtMem),
    h('div.muted', `${s.TASK_RUNNING ?? 0} running · ${s.TASK_STAGING ?? 0} staging · ${s.TASK_FAILED ?? 0} failed`),
    h('div.tags', attrs(s.attributes)));
}

const signature = (s) => JSON.stringify([s.id, s.hostname, nodeState(s), s.used_resources, s.resources,
  s.TASK_RUNNING, s.TASK_STAGING, s.TASK_FAILED, s.attributes]);

export async function render(root) {
  const head = h('span.muted');
  const grid = h('div.nodes#nodes');
  const empty = h('p.empty', { hidden: true }, 'No agent has registered.');
  const errors = h('div');
  let cache = new Map();
  mount(root, h('div.page-head', h('h1', 'Nodes'), head), errors, empty, grid);
  const refresh = async () => {
    let summary;
    try {
      summary = await api('/mesos/master/state-summary');
      mount(errors);
    } catch (e) {
      mount(errors, errorBox(e));
      return;
    }
    const slaves = [...(summary.slaves ?? [])].sort((a, b) => String(a.hostname).localeCompare(String(b.hostname)));
    head.textContent = `${slaves.length} agents · master ${summary.hostname ?? '?'}`;
    empty.hidden = slaves.length > 0;
    const next = new Map();
    const els = slaves.map((s) => {
      const sig = signature(s);
      const el = cache.get(sig) ?? card(s, refresh);
      next.set(sig, el);
      return el;
    });
    cache = next;
    const have = grid.children;
    if (have.length !== els.length || els.some((el, i) => have[i] !== el)) grid.replaceChildren(...els);
  };
  await refresh();
  return every(5000, refresh);
}
