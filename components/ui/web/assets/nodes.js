// Nodes: every agent from the master's state summary with its resource bars, attributes and
// task counts. Refreshed every 5 s.

import { api } from './api.js';
import { bar, errorBox, every, fmtCpus, fmtMem, h, mount, pill } from './dom.js';

function attrs(a) {
  return Object.entries(a ?? {}).map(([k, v]) => h('span.tag', `${k}:${typeof v === 'object' ? JSON.stringify(v) : v}`));
}

function view(summary) {
  const slaves = [...(summary.slaves ?? [])].sort((a, b) => String(a.hostname).localeCompare(String(b.hostname)));
  return [
    h('div.page-head', h('h1', 'Nodes'), h('span.muted', `${slaves.length} agents · master ${summary.hostname ?? '?'}`)),
    slaves.length === 0 ? h('p.empty', 'No agent has registered.') : h('div.nodes#nodes',
      slaves.map((s) => h('div.card.node', { dataset: { agent: s.id } },
        h('div.node-head', h('strong.mono', s.hostname ?? s.id), pill(s.active === false ? 'inactive' : 'active')),
        h('div.muted.mono', s.id),
        bar('CPU', s.used_resources?.cpus ?? 0, s.resources?.cpus ?? 0, fmtCpus),
        bar('Memory', s.used_resources?.mem ?? 0, s.resources?.mem ?? 0, fmtMem),
        bar('Disk', s.used_resources?.disk ?? 0, s.resources?.disk ?? 0, fmtMem),
        h('div.muted', `${s.TASK_RUNNING ?? 0} running · ${s.TASK_STAGING ?? 0} staging · ${s.TASK_FAILED ?? 0} failed`),
        h('div.tags', attrs(s.attributes))))),
  ];
}

export async function render(root) {
  const refresh = async () => {
    try {
      mount(root, view(await api('/mesos/master/state-summary')));
    } catch (e) {
      mount(root, h('h1', 'Nodes'), errorBox(e));
    }
  };
  await refresh();
  return every(5000, refresh);
}
