// Overview: the cluster's name and version, its leaders, the daemons and their health,
// resources used and free (from the master's state summary), services by state and the
// recent task failures. Refreshed every 5 s and on Marathon events.

import { api, appStatus, appsAndQueue, marathon } from './api.js';
import { ago, bar, errorBox, every, fmtCpus, fmtMem, h, mount, pill } from './dom.js';

function sum(slaves, key, field) {
  return slaves.reduce((n, s) => n + (s[key]?.[field] ?? 0), 0);
}

async function load() {
  const [meta, version, summary, leader, units, appsq] = await Promise.all([
    api('/metadata').catch(() => ({})),
    api('/dcos-metadata/dcos-version.json').catch(() => ({})),
    api('/mesos/master/state-summary'),
    api(marathon('/v2/leader')).catch(() => ({})),
    api('/system/health/v1/units').catch(() => ({ units: [] })),
    appsAndQueue().catch(() => ({ apps: [], queue: [] })),
  ]);
  return { meta, version, summary, leader, units, ...appsq };
}

function view(d) {
  const slaves = d.summary.slaves ?? [];
  const name = d.summary.cluster || d.meta.CLUSTER_ID || 'Capstan cluster';
  const cluster = document.getElementById('cluster-name');
  if (cluster) cluster.textContent = name;
  const byState = {};
  for (const app of d.apps) {
    const s = appStatus(app, d.queue);
    byState[s] = (byState[s] ?? 0) + 1;
  }
  const failures = d.apps
    .filter((a) => a.lastTaskFailure)
    .map((a) => ({ app: a.id, ...a.lastTaskFailure }))
    .sort((a, b) => String(b.timestamp).localeCompare(String(a.timestamp)))
    .slice(0, 5);
  const activeAgents = slaves.filter((s) => s.active !== false).length;
  return [
    h('h1', 'Overview'),
    h('section.cards',
      h('div.card.stat#ov-cluster', h('div.stat-label', 'Cluster'), h('div.stat-value', name),
        h('div.muted', `Capstan, DC/OS API ${d.version.version ?? '?'}`),
        d.meta.CLUSTER_ID ? h('div.muted.mono', d.meta.CLUSTER_ID) : null),
      h('div.card.stat', h('div.stat-label', 'Leaders'),
        h('div', 'Master: ', h('span.mono#ov-master-leader', d.summary.hostname ?? '–')),
        h('div', 'Apps: ', h('span.mono', d.leader.leader ?? '–'))),
      h('div.card.stat', h('div.stat-label', 'Agents'), h('div.stat-value#ov-agents', String(activeAgents)),
        h('div.muted', `${slaves.length - activeAgents} inactive`)),
      h('div.card.stat', h('div.stat-label', 'Services'), h('div.stat-value#ov-services', String(d.apps.length)),
        h('div.states', Object.entries(byState).map(([s, n]) => h('span', pill(s), ` ${n}`))))),
    h('section.card',
      h('h2', 'Resources'),
      bar('CPU', sum(slaves, 'used_resources', 'cpus'), sum(slaves, 'resources', 'cpus'), fmtCpus),
      bar('Memory', sum(slaves, 'used_resources', 'mem'), sum(slaves, 'resources', 'mem'), fmtMem),
      bar('Disk', sum(slaves, 'used_resources', 'disk'), sum(slaves, 'resources', 'disk'), fmtMem)),
    h('section.two',
      h('div.card', h('h2', 'Daemons'),
        h('ul.units', (d.units.units ?? []).map((u) =>
          h('li', pill(u.health === 0 ? 'healthy' : 'unhealthy'), ' ', h('span.mono', u.id), h('span.muted', ` ${u.description ?? ''}`))))),
      h('div.card', h('h2', 'Recent failures'),
        failures.length === 0 ? h('p.empty', 'No task failures.')
          : h('ul.failures', failures.map((f) => h('li',
            h('a', { href: `#/services/app${f.app}` }, f.app), ' ', h('span.pill.s-failed', f.state ?? 'failed'),
            h('div.muted', `${f.message ?? ''} ${ago(f.timestamp)}`)))))),
  ];
}

export async function render(root, _params, ctx) {
  const refresh = async () => {
    try {
      mount(root, view(await load()));
    } catch (e) {
      mount(root, h('h1', 'Overview'), errorBox(e));
    }
  };
  await refresh();
  const stopPoll = every(5000, refresh);
  const stopLive = ctx.live.onChange(refresh);
  return () => { stopPoll(); stopLive(); };
}
