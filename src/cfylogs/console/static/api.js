// Talking to the relay: the token, the JSON calls, the shared history of samples.

const TOKEN_KEY = "cfylogs.consumer_token";

export const session = {
  // sessionStorage: this tab only, gone when it closes; never in a URL or a cookie.
  token: sessionStorage.getItem(TOKEN_KEY),
  /** GET /api/v1/console: version, accept mode, bounds, thresholds. */
  info: null,
  /** Server clock minus browser clock, in seconds (ages are counted on the server's clock). */
  offset: 0,
};

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let unauthorizedHandler = () => {};

export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

export function saveToken(token) {
  session.token = token || null;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function serverNow() {
  return Date.now() / 1000 + session.offset;
}

/** A JSON call; 401 calls the unauthorized handler and throws Unauthorized. */
export async function api(path, { method = "GET", body, signal, accept = [] } = {}) {
  const headers = { Accept: "application/json" };
  if (session.token) headers.Authorization = "Bearer " + session.token;
  const init = { method, headers, signal, cache: "no-store", credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    unauthorizedHandler();
    throw new Unauthorized("the relay asks for the consumer token");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok && !accept.includes(response.status)) {
    throw new ApiError(response.status, data?.error?.message || `HTTP ${response.status}`);
  }
  return data;
}

/** The relay's samples (GET /api/v1/console/history), fetched incrementally, shared by views. */
class HistoryStore {
  constructor() {
    this.times = [];
    this.series = {};
    this.registrations = {};
    this.fetchedAt = 0;
  }

  async refresh() {
    if (Date.now() - this.fetchedAt < 2000) return;
    const last = this.times[this.times.length - 1];
    const data = await api("/api/v1/console/history" + (last ? `?after=${last}` : ""));
    this.fetchedAt = Date.now();
    const before = this.times.length;
    this.times = this.times.concat(data.time);
    for (const key of ["received_per_sec", "delivered_per_sec", "acknowledged_per_sec", "backlog_events", "backlog_bytes"]) {
      this.series[key] = (this.series[key] || []).concat(data[key]);
    }
    const registrations = {};
    for (const [id, values] of Object.entries(data.registrations)) {
      const known = this.registrations[id] || new Array(before).fill(null);
      registrations[id] = known.concat(values);
    }
    this.registrations = registrations; // one gone from the relay's list is gone here too
    const capacity = session.info?.history?.capacity || 720;
    const extra = this.times.length - capacity;
    if (extra > 0) {
      this.times = this.times.slice(extra);
      for (const key of Object.keys(this.series)) this.series[key] = this.series[key].slice(extra);
      for (const id of Object.keys(this.registrations)) this.registrations[id] = this.registrations[id].slice(extra);
    }
  }
}

export const history = new HistoryStore();
