// The cluster's public APIs as the router serves them, for the console: JSON fetches with the
// session cookie, Cosmos' media types, errors turned into messages (and Marathon's 422 details
// into per-field ones), and who is logged in.

export class ApiError extends Error {
  constructor(status, body, message, details = []) {
    super(message);
    this.status = status;
    this.body = body;
    this.details = details;
  }
}

let onUnauthorized = () => {};
/** Called on any 401 (the session expired or was never there). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function messageOf(status, body) {
  if (body && typeof body === 'object') {
    const m = body.message ?? body.description ?? body.title ?? body.error;
    if (typeof m === 'string' && m) return `${m} (HTTP ${status})`;
  }
  if (typeof body === 'string' && body && body.length < 300) return `${body} (HTTP ${status})`;
  return `HTTP ${status}`;
}

/** Marathon's 422 `details`: [{path, errors: [..]}] → ["/id: must be ...", ...]. */
export function detailsOf(body) {
  const out = [];
  for (const d of body?.details ?? []) {
    const errs = d.errors ?? (d.error ? [d.error] : []);
    for (const e of errs) out.push(`${d.path ?? ''}: ${e}`.replace(/^: /, ''));
  }
  return out;
}

/** fetch + JSON; throws ApiError for non-2xx. */
export async function api(path, { method = 'GET', body, headers = {}, signal } = {}) {
  const h = { Accept: 'application/json', ...headers };
  let payload = body;
  if (body !== undefined && typeof body !== 'string') {
    payload = JSON.stringify(body);
    h['Content-Type'] ??= 'application/json';
  }
  const r = await fetch(path, { method, headers: h, body: payload, credentials: 'same-origin', signal });
  const text = await r.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (r.status === 401 && !path.startsWith('/acs/api/v1/auth/')) onUnauthorized();
  if (!r.ok) throw new ApiError(r.status, data, messageOf(r.status, data), detailsOf(data));
  return data;
}

export const marathon = (p) => `/service/marathon${p}`;
export const appPath = (id) => id.split('/').filter(Boolean).map(encodeURIComponent).join('/');

/** A Cosmos call: `POST /package/<endpoint>` with its request and response media types. */
export function cosmos(endpoint, body = {}, version = 'v1') {
  const type = (kind, v) => `application/vnd.dcos.package.${endpoint}-${kind}+json;charset=utf-8;version=${v}`;
  return api(`/package/${endpoint}`, {
    method: 'POST',
    body,
    headers: { 'Content-Type': type('request', 'v1'), Accept: type('response', version) },
  });
}

function cookie(name) {
  for (const c of document.cookie.split(';')) {
    const [k, ...v] = c.trim().split('=');
    if (k === name) return v.join('=');
  }
  return '';
}

/** Who is logged in, from the readable info cookie (the token cookie is HttpOnly). */
export function whoami() {
  const info = cookie('dcos-acs-info-cookie');
  if (!info) return null;
  try {
    const b64 = info.replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
  } catch {
    return null;
  }
}

export async function login(uid, password) {
  return api('/acs/api/v1/auth/login', { method: 'POST', body: { uid, password } });
}

export async function logout() {
  await api('/acs/api/v1/auth/logout', { method: 'POST' }).catch(() => {});
}

/** The apps list with what the services pages show, and the queue (why apps wait). */
export async function appsAndQueue() {
  const [apps, queue] = await Promise.all([
    api(marathon('/v2/apps?embed=apps.counts&embed=apps.deployments&embed=apps.lastTaskFailure')),
    api(marathon('/v2/queue')).catch(() => ({ queue: [] })),
  ]);
  return { apps: apps?.apps ?? [], queue: queue?.queue ?? [] };
}

/** An app's state in words: delayed, waiting (queued for more than 5 s), deploying, suspended,
 *  unhealthy, running. */
export function appStatus(app, queue = []) {
  const q = queue.find((e) => (e.app?.id ?? e.pod?.id) === app.id);
  const running = app.tasksRunning ?? 0;
  // Queued (offers do not fit yet) says more than "deploying" about a deployment that waits.
  if (q && (q.delay?.timeLeftSeconds ?? 0) > 0) return 'delayed';
  if (q && (q.since ? Date.now() - Date.parse(q.since) > 5000 : true)) return 'waiting';
  if ((app.deployments ?? []).length > 0) return 'deploying';
  if (app.instances === 0) return 'suspended';
  if ((app.tasksUnhealthy ?? 0) > 0) return 'unhealthy';
  if (running < app.instances) return 'waiting';
  return 'running';
}

/** Health in words from the counts. */
export function appHealth(app) {
  if (!(app.healthChecks ?? []).length) return 'no checks';
  const ok = app.tasksHealthy ?? 0;
  const bad = app.tasksUnhealthy ?? 0;
  if (bad > 0) return `${bad} unhealthy`;
  return `${ok} healthy`;
}
