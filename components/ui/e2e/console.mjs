// Browser tests of the Capstan console: Debian's /usr/bin/chromium (headless) driven by
// playwright-core against a running cluster's router. Every scenario of issue 16 in order —
// log in, create an app from the form and watch it deploy and become healthy, scale it, read
// its live log, install a catalog package with one click and open its /service/ page, roll
// back an app version, see a killed task replaced — each saving a screenshot. The first
// failure ends the run with a message (and a screenshot of the page as it was) and exit 1.
//
//   CAPSTAN_URL=http://127.0.1.1 CAPSTAN_USER=admin CAPSTAN_PASSWORD=... node console.mjs
//
// Env: CAPSTAN_URL (the router, required), CAPSTAN_USER (default admin), CAPSTAN_PASSWORD
// (required), UI_SCREENSHOTS (default target/ui-screenshots), CHROMIUM (default
// /usr/bin/chromium), UI_APP_CMD (the created app's command; default: python3's http.server),
// UI_TIMEOUT_MS (per wait, default 120000), UI_BREAK_STREAM_PID (the apps daemon to kill for
// the broken-stream scenario; it runs only when set).

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const env = (k, d) => {
  const v = process.env[k];
  if (v !== undefined && v !== '') return v;
  if (d === undefined) {
    console.error(`console.mjs: set ${k}`);
    process.exit(2);
  }
  return d;
};

const BASE = env('CAPSTAN_URL').replace(/\/+$/, '');
const USER = env('CAPSTAN_USER', 'admin');
const PASSWORD = env('CAPSTAN_PASSWORD');
const SHOTS = resolve(env('UI_SCREENSHOTS', 'target/ui-screenshots'));
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const TIMEOUT = Number(env('UI_TIMEOUT_MS', '120000'));
const APP = '/ui-web';
const MARKER = 'hello-from-the-console';
const APP_CMD = env('UI_APP_CMD', `echo ${MARKER}; exec /usr/bin/python3 -m http.server $PORT0`);
const PACKAGE = 'hello-world';

mkdirSync(SHOTS, { recursive: true });
rmSync(join(SHOTS, 'failure.png'), { force: true }); // from an earlier run
const profile = mkdtempSync(join(tmpdir(), 'capstan-ui-chromium-'));

class Failure extends Error {}

let page;
let step = 'starting';
const consoleErrors = [];

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Waits until `fn()` (in node, may use `page`) returns a truthy value. */
async function until(what, fn, timeout = TIMEOUT) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      if (e instanceof Failure) throw e;
      last = e;
    }
    if (Date.now() > end) throw new Failure(`timed out waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const text = async (sel) => (await page.locator(sel).first().textContent({ timeout: 1000 }))?.trim() ?? '';

/** Task ids in the service page's tasks table, with their states. */
async function tasks() {
  return page.locator('#service-tasks tr[data-task]').evaluateAll((rows) =>
    rows.map((r) => ({ id: r.dataset.task, state: r.dataset.state, health: r.dataset.health })));
}

/** No deployment in progress (an app locked by one refuses changes with a 409). */
async function settled() {
  return page.evaluate(async () => {
    const r = await fetch('/service/marathon/v2/deployments', { credentials: 'same-origin' });
    return r.ok && (await r.json()).length === 0;
  });
}

/** The app through the API, with the browser's session (what the page should be showing). */
async function appJson() {
  return page.evaluate(async (id) => {
    const r = await fetch(`/service/marathon/v2/apps${id}?embed=app.counts`, { credentials: 'same-origin' });
    return r.ok ? (await r.json()).app : null;
  }, APP);
}

/** Removes what an earlier run against the same cluster left (the app, the package). */
async function leftovers() {
  const gone = () => page.evaluate(async ([id, pkg]) => {
    const opts = (body) => ({
      method: 'POST', credentials: 'same-origin', body: JSON.stringify(body),
      headers: {
        'Content-Type': 'application/vnd.dcos.package.uninstall-request+json;charset=utf-8;version=v1',
        Accept: 'application/vnd.dcos.package.uninstall-response+json;charset=utf-8;version=v1',
      },
    });
    let app = { ok: false };
    for (const one of [id, '/ui-waits']) {
      const r = await fetch(`/service/marathon/v2/apps${one}`, { credentials: 'same-origin' });
      if (r.ok) await fetch(`/service/marathon/v2/apps${one}?force=true`, { method: 'DELETE', credentials: 'same-origin' });
      if (r.ok) app = r;
    }
    const pk = await fetch(`/service/marathon/v2/apps/${pkg}`, { credentials: 'same-origin' });
    if (pk.ok) await fetch('/package/uninstall', opts({ packageName: pkg, all: true }));
    const deployments = await (await fetch('/service/marathon/v2/deployments', { credentials: 'same-origin' })).json();
    return !app.ok && !pk.ok && deployments.length === 0;
  }, [APP, PACKAGE]);
  await until('the leftovers of an earlier run removed', gone);
}

async function openService() {
  await page.goto(`${BASE}/#/services/app${APP}`);
  await page.locator('#service-id').waitFor({ timeout: TIMEOUT });
}

const scenarios = [
  ['login', async () => {
    await page.goto(`${BASE}/`);
    await page.locator('#login-uid').waitFor({ timeout: TIMEOUT });
    await page.fill('#login-uid', USER);
    await page.fill('#login-password', 'not-the-password');
    await page.click('#login-submit');
    await until('the wrong password refused', async () => (await text('.login-message')).includes('Wrong'));
    await page.fill('#login-uid', USER);
    await page.fill('#login-password', PASSWORD);
    await shot('01-login');
    await page.click('#login-submit');
    await until('the overview after login', async () => (await text('#whoami')) === USER);
    await until('the overview with its agents', async () => Number(await text('#ov-agents')) >= 1);
    await until('the daemons and their health', async () => (await page.locator('ul.units li').count()) > 0);
    await shot('02-overview');
    await page.click('a.nav-nodes');
    await until('the nodes page', async () => (await page.locator('#nodes .node').count()) >= 1);
    await shot('03-nodes');
  }],

  ['create an app from the form', async () => {
    await leftovers();
    await page.click('a.nav-services');
    await page.locator('#create-service').click();
    await page.locator('#new-id').waitFor();
    await page.fill('#new-id', APP.slice(1));
    await page.fill('#new-cmd', APP_CMD);
    await page.fill('#new-cpus', '0.1');
    await page.fill('#new-mem', '32');
    await page.fill('#new-instances', '1');
    await page.fill('#new-health', '/');
    await shot('04-create');
    // A bad value first: Marathon's 422 is shown on the field it names.
    await page.fill('#new-mem', '-5');
    await page.evaluate(() => { document.querySelector('#new-mem').removeAttribute('min'); });
    await page.click('#new-submit');
    await until('the 422 detail on the memory field', async () => (await text('#new-mem-error')) !== '');
    await shot('04-create-invalid');
    await page.fill('#new-mem', '32');
    await page.click('#new-submit');
    await until('the new service page', async () => (await text('#service-id')) === APP);
  }],

  ['watch it deploy and become healthy', async () => {
    await until('the deployment or the running task', async () =>
      (await page.locator('#service-status').getAttribute('data-status')) === 'deploying' || (await tasks()).length > 0);
    await until(`${APP} running and healthy`, async () => {
      const t = await tasks();
      return t.length === 1 && t[0].state === 'running' && t[0].health === 'healthy'
        && (await text('#service-instances')) === '1 / 1'
        && (await page.locator('#service-status').getAttribute('data-status')) === 'running';
    });
    await page.click('a.nav-services');
    await until('the services list row running', async () =>
      (await page.locator(`#services-list tr[data-app="${APP}"]`).getAttribute('data-status', { timeout: 1000 })) === 'running');
    await shot('05-services');
    await openService();
    await until('the health shown', async () => (await tasks())[0]?.health === 'healthy');
    await shot('06-service-healthy');
  }],

  ['scale it', async () => {
    await page.fill('#scale-instances', '2');
    await page.click('#scale');
    await until('2 of 2 running', async () => {
      const t = await tasks();
      return t.length === 2 && t.every((x) => x.state === 'running') && (await text('#service-instances')) === '2 / 2'
        && await settled();
    });
    await shot('07-scaled');
  }],

  ['read its live log', async () => {
    const first = page.locator('#service-tasks button.log-button').first();
    const logged = await first.getAttribute('data-task');
    await first.click();
    await until(`the marker ${MARKER} in stdout`, async () => (await text('#task-log')).includes(MARKER));
    await until('the log following', async () => (await text('#task-log-status')).includes('following'));
    // Live: a request to the task's server shows up in its stderr (http.server logs there).
    await page.click('#log-stderr');
    await until('stderr shown', async () => (await text('#task-log-status')).startsWith('stderr'));
    const all = await page.evaluate(async (id) => {
      const r = await fetch(`/service/marathon/v2/apps${id}/tasks`, { credentials: 'same-origin' });
      return (await r.json()).tasks;
    }, APP);
    const t = all.find((x) => x.id === logged);
    if (!t?.ports?.length) throw new Failure(`task ${logged} has no port: ${JSON.stringify(t)}`);
    await until('the request in the followed stderr', async () => {
      await fetch(`http://${t.host}:${t.ports[0]}/live-log-probe`).catch(() => {});
      return (await text('#task-log')).includes('live-log-probe');
    }, 30000);
    await page.locator('#log-panel').scrollIntoViewIfNeeded();
    await shot('08-log');
    await page.click('#log-stdout');
    await until('stdout again', async () => (await text('#task-log')).includes(MARKER));
  }],

  ['install a catalog package with one click and open its /service/ page', async () => {
    await page.click('a.nav-catalog');
    const card = page.locator(`#packages .pkg[data-package="${PACKAGE}"]`);
    await card.waitFor({ timeout: TIMEOUT });
    await shot('09-catalog');
    await card.locator('button.install').click();
    await until(`${PACKAGE} in the installed list`, async () => {
      const error = (await card.locator('.pkg-error').textContent({ timeout: 1000 })).trim();
      if (error) throw new Failure(`the install failed: ${error}`);
      return (await page.locator(`#installed li[data-package="${PACKAGE}"]`).count()) === 1;
    });
    const appId = await page.locator(`#installed li[data-package="${PACKAGE}"]`).getAttribute('data-app');
    await page.goto(`${BASE}/#/services/app${appId}`);
    await until(`${appId} healthy`, async () => {
      const t = await tasks();
      return t.length >= 1 && t.every((x) => x.state === 'running' && x.health === 'healthy');
    });
    const open = page.locator('#service-open');
    await open.waitFor();
    const href = await open.getAttribute('href');
    if (href !== `/service${appId}/`) throw new Failure(`the service link is ${href}, not /service${appId}/`);
    const resp = await page.goto(`${BASE}${href}`);
    if (!resp || resp.status() !== 200) throw new Failure(`${href} answered ${resp?.status()}`);
    await shot('10-package-service');
    await page.goto(`${BASE}/#/catalog/${PACKAGE}`);
    await page.locator('#install-form').waitFor();
    await shot('11-package-page');
  }],

  ['edit it in the form', async () => {
    await openService();
    await page.click('#edit');
    await until('the edit form filled in', async () => (await page.inputValue('#new-id')) === APP);
    await page.fill('#new-mem', '48');
    await page.click('#new-submit');
    await until('the new version with 48 MiB, still 2 running', async () => {
      const app = await appJson();
      const t = await tasks();
      return app?.mem === 48 && t.length === 2 && t.every((x) => x.state === 'running')
        && (await page.locator('#versions li[data-version]').count()) >= 3 && await settled();
    });
  }],

  ['roll back an app version', async () => {
    await openService();
    await until('three versions listed, nothing deploying', async () =>
      (await page.locator('#versions li[data-version]').count()) >= 3 && await settled());
    // The oldest version is the one created by the form (1 instance).
    const oldest = page.locator('#versions li[data-version]').last();
    const version = await oldest.getAttribute('data-version');
    await oldest.locator('button.diff').click();
    await until('the diff shown', async () => {
      const d = await text('#version-diff');
      return d.includes('"instances": 1') && d.includes('"mem": 32');
    });
    await shot('12-versions');
    page.once('dialog', (d) => d.accept());
    await oldest.locator('button.rollback').click();
    await until('back to 1 instance', async () => {
      const error = await page.locator('#service-action-error').textContent({ timeout: 100 }).catch(() => '');
      if (error) throw new Failure(error);
      const t = await tasks();
      return t.length === 1 && (await text('#service-instances')) === '1 / 1';
    });
    const app = await appJson();
    if (app.instances !== 1 || app.mem !== 32) throw new Failure(`after the rollback to ${version}: ${app.instances} instances, ${app.mem} MiB`);
    await shot('13-rolled-back');
  }],

  ['see a killed task replaced', async () => {
    await openService();
    await until('one running task', async () => {
      const t = await tasks();
      return t.length === 1 && t[0].state === 'running';
    });
    const [before] = await tasks();
    page.once('dialog', (d) => d.accept());
    await page.locator(`#service-tasks tr[data-task="${before.id}"] button.kill`).click();
    await until('a new task in place of the killed one', async () => {
      const t = await tasks();
      return t.length === 1 && t[0].id !== before.id && t[0].state === 'running';
    });
    await until('the replacement healthy and 1 / 1', async () => {
      const t = await tasks();
      return t.length === 1 && t[0].health === 'healthy' && (await text('#service-instances')) === '1 / 1';
    });
    await shot('14-task-replaced');
  }],
];

scenarios.push(['the main pages with everything running', async () => {
  await page.click('a.nav-services');
  await until('both services in the list', async () =>
    (await page.locator('#services-list tr[data-app]').count()) >= 2);
  await shot('15-services-all');
  await page.click('a.nav-overview');
  await until('the services counted', async () => Number(await text('#ov-services')) >= 2);
  await shot('16-overview-running');
}]);

scenarios.push(['a deployment that waits, and its rollback', async () => {
  // More CPU than any agent has: the deployment waits, the page says why, and rolling the
  // deployment back removes the app it was creating.
  const id = '/ui-waits';
  await page.evaluate(async (id) => {
    await fetch('/service/marathon/v2/apps', {
      method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ id, cmd: 'sleep 1000', cpus: 512, mem: 16, instances: 1 }),
    });
  }, id);
  await page.click('a.nav-services');
  const dep = page.locator(`#deployments li[data-deployment]`).filter({ hasText: id });
  await dep.waitFor({ timeout: TIMEOUT });
  await until(`${id} waiting`, async () =>
    ['waiting', 'deploying'].includes(await page.locator(`#services-list tr[data-app="${id}"]`).getAttribute('data-status', { timeout: 1000 })));
  await shot('17-deployment-waiting');
  await page.goto(`${BASE}/#/services/app${id}`);
  await until('why it waits', async () => (await text('#service-waiting')).includes('Waiting'));
  await shot('18-why-it-waits');
  await page.click('a.nav-services');
  await dep.waitFor({ timeout: TIMEOUT });
  page.once('dialog', (d) => d.accept());
  await dep.locator('button.dep-rollback').click();
  await until(`${id} gone after the rollback`, async () =>
    (await page.locator(`#services-list tr[data-app="${id}"]`).count()) === 0
    && (await page.locator('#deployments').count()) === 0);
}]);

scenarios.push(['groups fold and unfold', async () => {
  const id = '/ui-group/inner';
  await page.evaluate((id) => fetch('/service/marathon/v2/apps', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ id, cmd: 'sleep 1000', cpus: 0.01, mem: 8, instances: 0 }),
  }), id);
  await page.click('a.nav-services');
  const group = page.locator('#services-list tr[data-group="/ui-group"]');
  const row = page.locator(`#services-list tr[data-app="${id}"]`);
  await until('the group and its app', async () => (await group.count()) === 1 && (await row.count()) === 1);
  // Each row names its app by the last part of its id (at the root and inside a group).
  const linkText = async (appId) =>
    (await page.locator(`#services-list tr[data-app="${appId}"] a.app-link`).first().textContent())?.trim();
  const rootApp = await page.locator('#services-list tr[data-app]').first().getAttribute('data-app');
  if ((await linkText(rootApp)) !== rootApp.slice(rootApp.lastIndexOf('/') + 1)) {
    throw new Error(`the row of ${rootApp} names it ${await linkText(rootApp)}`);
  }
  if ((await linkText(id)) !== 'inner') throw new Error(`the row of ${id} names it ${await linkText(id)}`);
  await group.locator('button.group-toggle').click();
  await until('the app folded away', async () => (await row.count()) === 0
    && (await group.locator('button.group-toggle').getAttribute('aria-expanded')) === 'false');
  await shot('21-group-folded');
  await group.locator('button.group-toggle').click();
  await until('the app shown again', async () => (await row.count()) === 1);
  await page.evaluate((id) => fetch(`/service/marathon/v2/apps${id}?force=true`, { method: 'DELETE' }), id);
}]);

// The event stream's source dies (the harness gives the apps daemon's pid; its supervisor
// starts it again): the console says so, then recovers by itself and is live again.
const BREAK_PID = Number(env('UI_BREAK_STREAM_PID', '0'));
if (BREAK_PID) scenarios.push(['the live stream breaks and recovers', async () => {
  await page.click('a.nav-services');
  await page.locator('#services-list').waitFor();
  await until('the live stream up', async () => page.locator('#live-banner').isHidden());
  process.kill(BREAK_PID, 'SIGKILL');
  await until('the broken-stream banner', async () => page.locator('#live-banner').isVisible(), 30000);
  await shot('19-stream-broken');
  await until('the stream back and the banner gone', async () => page.locator('#live-banner').isHidden());
  // Live again: a service created through the API appears without a reload.
  const id = '/ui-after-stream';
  await until('apps answering again', async () => page.evaluate(async (id) => {
    const r = await fetch('/service/marathon/v2/apps', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ id, cmd: 'sleep 1000', cpus: 0.01, mem: 8, instances: 0 }),
    });
    return r.status === 201 || r.status === 409;
  }, id));
  await until(`${id} listed live`, async () => (await page.locator(`#services-list tr[data-app="${id}"]`).count()) === 1);
  await shot('20-stream-recovered');
  await page.evaluate((id) => fetch(`/service/marathon/v2/apps${id}?force=true`, { method: 'DELETE' }), id);
}]);

// Drain the last agent from the nodes page, then undo it (last: nothing is started there
// afterwards).
scenarios.push(['drain a node', async () => {
  await page.click('a.nav-nodes');
  const card = page.locator('#nodes .node').last();
  await card.waitFor();
  const agent = await card.getAttribute('data-agent');
  page.once('dialog', (d) => d.accept());
  await card.locator('button.node-drain').click();
  const same = page.locator(`#nodes .node[data-agent="${agent}"]`);
  await until(`${agent} draining`, async () => (await same.getAttribute('data-state', { timeout: 1000 })) === 'draining');
  await shot('22-node-draining');
  // Undo: the drained node is reactivated and takes tasks again.
  await same.locator('button.node-reactivate').click();
  await until(`${agent} active again`, async () => (await same.getAttribute('data-state', { timeout: 1000 })) === 'active');
  await shot('23-node-reactivated');
}]);

let failed = null;
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1280, height: 800 },
  // The cluster's CA is not in the browser's store: an https router is taken as it is.
  ignoreHTTPSErrors: BASE.startsWith('https:'),
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  page = browser.pages()[0] ?? await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(`uncaught: ${e.message}`));
  for (const [name, run] of scenarios) {
    step = name;
    const t0 = Date.now();
    await run();
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  }
} catch (e) {
  failed = e;
  try {
    await shot('failure');
  } catch { /* the page may be gone */ }
} finally {
  await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}

if (failed) {
  console.error(`FAIL ${step}: ${failed.message}`);
  if (!(failed instanceof Failure)) console.error(failed.stack);
  if (consoleErrors.length) console.error(`browser console errors:\n  ${consoleErrors.slice(-20).join('\n  ')}`);
  console.error(`screenshot of the page: ${join(SHOTS, 'failure.png')}`);
  process.exit(1);
}
console.log(`all ${scenarios.length} scenarios passed; screenshots in ${SHOTS}`);
