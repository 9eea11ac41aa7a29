// The console's benchmark in a real browser (Debian's /usr/bin/chromium, headless, driven by
// playwright-core), run by `capstan-bench ui` against a router in front of a big simulated
// cluster. It speaks a line protocol with the harness on stdin/stdout:
//
//   → RENDER <ms> <rows>   one cold load of #/services: navigation start to the first app row
//                          with data in the DOM (UI_LOADS times)
//   → WATCH <app id>       the services page is open and watches that app's row: fail a task
//   ← KILLED <epoch ms>    the harness failed one of its tasks at that wall-clock time
//   → SEEN <ms>            the row showed the change that long after KILLED's time
//   → DONE <bytes>         the bytes the browser received for the console's own files
//   → FAIL <why>           and exit 1
//
// Env: CAPSTAN_URL, CAPSTAN_USER, CAPSTAN_PASSWORD (required), CHROMIUM (/usr/bin/chromium),
// UI_LOADS (5), UI_WATCH (app ids, comma-separated), UI_TIMEOUT_MS (60000).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const env = (k, d) => {
  const v = process.env[k];
  if (v !== undefined && v !== '') return v;
  if (d === undefined) {
    console.log(`FAIL set ${k}`);
    process.exit(2);
  }
  return d;
};

const BASE = env('CAPSTAN_URL').replace(/\/+$/, '');
const USER = env('CAPSTAN_USER');
const PASSWORD = env('CAPSTAN_PASSWORD');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const LOADS = Number(env('UI_LOADS', '5'));
const WATCH = env('UI_WATCH', '').split(',').filter(Boolean);
const TIMEOUT = Number(env('UI_TIMEOUT_MS', '60000'));

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function expect(word) {
  const { value, done } = await lines.next();
  if (done) throw new Error(`stdin closed while waiting for ${word}`);
  const [w, ...rest] = value.trim().split(' ');
  if (w !== word) throw new Error(`expected ${word}, got ${value}`);
  return rest;
}

// Before any page script: record when the first app row appears (a MutationObserver, so the
// time is the DOM change itself, not a poll), and watch one row's instances on request.
function probe() {
  window.__firstRow = null;
  const seen = () => {
    if (window.__firstRow === null && document.querySelector('#services-list tr[data-app]')) {
      window.__firstRow = performance.now();
    }
    const w = window.__watch;
    if (w && w.at === null) {
      const row = document.querySelector(`#services-list tr[data-app="${CSS.escape(w.id)}"]`);
      const now = row ? `${row.dataset.status}|${row.querySelector('.instances')?.textContent}` : 'gone';
      if (now !== w.before) w.at = performance.timeOrigin + performance.now();
    }
  };
  new MutationObserver(seen).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
}

const profile = mkdtempSync(join(tmpdir(), 'capstan-ui-bench-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1280, height: 800 },
  ignoreHTTPSErrors: BASE.startsWith('https:'),
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = null;
let step = 'starting';
try {
  await browser.addInitScript(probe);
  const login = await browser.request.post(`${BASE}/acs/api/v1/auth/login`, { data: { uid: USER, password: PASSWORD } });
  if (!login.ok()) throw new Error(`login answered ${login.status()}`);
  let assetBytes = 0;
  for (let i = 0; i < LOADS; i++) {
    // A cold load each time: a new page with the HTTP cache off (the first visit of the day).
    const page = await browser.newPage();
    const cdp = await browser.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    let bytes = 0;
    cdp.on('Network.loadingFinished', (e) => { bytes += e.encodedDataLength; });
    const urls = new Map();
    cdp.on('Network.responseReceived', (e) => urls.set(e.requestId, e.response.url));
    const own = new Map();
    cdp.on('Network.loadingFinished', (e) => {
      const u = urls.get(e.requestId) ?? '';
      const path = new URL(u, BASE).pathname;
      if (path === '/' || path.startsWith('/assets/')) own.set(path, e.encodedDataLength);
    });
    step = `cold load ${i + 1}`;
    await page.goto(`${BASE}/#/services`);
    await page.waitForFunction(() => window.__firstRow !== null, null, { timeout: TIMEOUT });
    const ms = await page.evaluate(() => window.__firstRow);
    const rows = await page.locator('#services-list tr[data-app]').count();
    console.log(`RENDER ${ms.toFixed(1)} ${rows}`);
    if (i === LOADS - 1) {
      // Let the modules loaded later (none yet, but keep it honest) finish, then sum.
      await page.waitForTimeout(500);
      assetBytes = [...own.values()].reduce((a, b) => a + b, 0);
    }
    if (i < LOADS - 1) await page.close();
    else {
      for (const id of WATCH) {
        await page.evaluate((id) => {
          const row = document.querySelector(`#services-list tr[data-app="${CSS.escape(id)}"]`);
          const before = row ? `${row.dataset.status}|${row.querySelector('.instances')?.textContent}` : 'gone';
          window.__watch = { id, before, at: null };
        }, id);
        console.log(`WATCH ${id}`);
        step = `the change of ${id}`;
        const [killed] = await expect('KILLED');
        await page.waitForFunction(() => window.__watch.at !== null, null, { timeout: TIMEOUT });
        const at = await page.evaluate(() => window.__watch.at);
        console.log(`SEEN ${(at - Number(killed)).toFixed(1)}`);
      }
      await page.screenshot({ path: join(process.env.UI_SCREENSHOTS ?? tmpdir(), 'bench-services.png') }).catch(() => {});
    }
  }
  console.log(`DONE ${assetBytes}`);
} catch (e) {
  failed = e;
  for (const p of browser.pages()) {
    const t = await p.evaluate(() => document.body.innerText.slice(0, 300).replace(/\s+/g, ' ')).catch(() => '?');
    console.error(`bench.mjs: the page at ${p.url()} says: ${t}`);
    await p.screenshot({ path: join(process.env.UI_SCREENSHOTS ?? tmpdir(), 'bench-failure.png') }).catch(() => {});
  }
} finally {
  await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
if (failed) {
  console.log(`FAIL ${step}: ${String(failed.message).split('\n')[0]}`);
  process.exit(1);
}
process.exit(0);
