// The console's shell: hash routing (`#/services/app/web`), the navigation, who is logged in,
// the live-stream banner, and the page modules. A page is `render(root, params, ctx)` and may
// return a cleanup function, called when the page is left.

import { api, logout, setUnauthorizedHandler, whoami } from './api.js';
import { clearOldToasts, h, mount } from './dom.js';
import * as live from './live.js';
import * as loginPage from './login.js';
import * as overview from './overview.js';
import * as services from './services.js';
import * as service from './service.js';
import * as nodes from './nodes.js';
import * as catalog from './catalog.js';

const NAV = [
  ['overview', 'Overview'],
  ['services', 'Services'],
  ['nodes', 'Nodes'],
  ['catalog', 'Catalog'],
  ['jobs', 'Jobs'],
];

const jobs = {
  render(root) {
    mount(root, h('h1', 'Jobs'),
      h('p.muted', 'Scheduled jobs arrive with the jobs service in a later release. This place in the navigation is kept for them.'));
  },
};

/** [page module, params] for a hash like `#/services/app/a/b`. */
function resolve(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [top = 'overview', ...rest] = parts;
  switch (top) {
    case 'login': return [loginPage, {}, 'login'];
    case 'overview': return [overview, {}, 'overview'];
    case 'services':
      if (rest[0] === 'new') return [services, { create: true }, 'services'];
      if (rest[0] === 'edit' && rest.length > 1) return [services, { edit: `/${rest.slice(1).join('/')}` }, 'services'];
      if (rest[0] === 'app' && rest.length > 1) return [service, { id: `/${rest.slice(1).join('/')}` }, 'services'];
      return [services, {}, 'services'];
    case 'nodes': return [nodes, {}, 'nodes'];
    case 'catalog': return [catalog, { name: rest[0] }, 'catalog'];
    case 'jobs': return [jobs, {}, 'jobs'];
    default: return [overview, {}, 'overview'];
  }
}

let cleanup = null;
let generation = 0;
let shell = null;
let fresh = null; // a shell just built, whose cluster name is not shown yet

function buildShell() {
  const banner = h('div.banner#live-banner', { hidden: true, role: 'status' },
    'Live updates are disconnected: retrying. What you see may be out of date.');
  const user = h('span.user#whoami');
  const nav = h('nav.nav', NAV.map(([id, label]) => h(`a.nav-${id}`, { href: `#/${id}`, dataset: { page: id } },
    label, id === 'jobs' ? h('span.soon', 'later') : null)));
  const content = h('main.content#content');
  const root = h('div.shell',
    h('aside.side', h('a.brand', { href: '#/overview' }, h('img', { src: '/assets/favicon.svg', alt: '' }), 'Capstan'), nav),
    h('div.main',
      h('header.top', h('span.cluster#cluster-name'), h('span.spacer'), user,
        h('button.link#logout', { onclick: doLogout }, 'Log out')),
      banner, content),
    h('div.toasts#toasts'));
  live.onState((up) => { banner.hidden = up; });
  return { root, content, nav, user, banner };
}

/** The cluster's name in the top bar, whichever page is open first. */
async function showClusterName(s) {
  const [summary, meta] = await Promise.all([
    api('/mesos/master/state-summary').catch(() => ({})),
    api('/metadata').catch(() => ({})),
  ]);
  const el = s.root.querySelector('#cluster-name');
  if (el && !el.textContent) el.textContent = summary.cluster || meta.CLUSTER_ID || 'Capstan cluster';
}

async function doLogout() {
  live.stop();
  await logout();
  shell = null;
  location.hash = '#/login';
}

function route() {
  cleanup?.();
  cleanup = null;
  clearOldToasts();
  const mine = ++generation;
  const [page, params, id] = resolve(location.hash);
  const app = document.getElementById('app');
  if (id === 'login') {
    shell = null;
    live.stop();
    page.render(app, params, { loggedIn: () => { location.hash = '#/overview'; } });
    return;
  }
  const me = whoami();
  if (!me) {
    location.hash = '#/login';
    return;
  }
  if (!shell) {
    shell = buildShell();
    mount(app, shell.root);
    fresh = shell;
    live.start();
    // The banner waits a moment before it first shows: the stream needs a round trip to open.
    setTimeout(() => { if (shell) shell.banner.hidden = live.isConnected(); }, 2000);
  }
  shell.user.textContent = me.uid;
  for (const a of shell.nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === id);
  mount(shell.content);
  const done = page.render(shell.content, params, { live });
  if (fresh) {
    // The name comes from the master's state summary, which is big on a big cluster: after
    // the first page has its data.
    const s = fresh;
    fresh = null;
    Promise.resolve(done).finally(() => showClusterName(s));
  }
  Promise.resolve(done).then((fn) => {
    if (typeof fn !== 'function') return;
    if (mine === generation) cleanup = fn;
    else fn(); // the page was left before it finished loading
  });
}

setUnauthorizedHandler(() => {
  if (!location.hash.startsWith('#/login')) location.hash = '#/login';
});
window.addEventListener('hashchange', route);
route();
