// Overview: health, store, uptime, version; rates and backlog over the last hour.

import { api, history, session } from "./api.js";
import { LineChart } from "./chart.js";
import { age, count, el, every, rate, size } from "./format.js";

const $ = (id) => document.getElementById(id);

export class OverviewView {
  constructor() {
    this.rates = null;
    this.backlog = null;
    this.stop = null;
  }

  show() {
    if (!this.rates) {
      this.rates = new LineChart($("chart-rates"), [
        { key: "received_per_sec", label: "in", className: "s-received" },
        { key: "delivered_per_sec", label: "delivered", className: "s-delivered" },
        { key: "acknowledged_per_sec", label: "acknowledged", className: "s-acknowledged" },
      ], rate);
      this.backlog = new LineChart($("chart-backlog"), [
        { key: "backlog_events", label: "backlog", className: "s-backlog" },
      ], count);
    }
    this.stop = every(5000, () => this.refresh());
  }

  hide() {
    if (this.stop) this.stop();
    this.stop = null;
  }

  async refresh() {
    const [health, list] = await Promise.all([
      api("/health", { accept: [503] }),
      api("/api/v1/registration"),
      history.refresh(),
    ]);
    this.cards(health, list.registrations);
    const s = history.series;
    this.rates.update(history.times, s);
    this.backlog.update(history.times, s);
    const interval = session.info.history.interval_sec;
    $("overview-note").textContent =
      `One sample every ${interval} s, the last ${age(interval * session.info.history.capacity)} ` +
      "kept in the relay's memory (a restart starts them again). Times are UTC.";
  }

  cards(health, registrations) {
    const store = health.storage || {};
    const backlog = registrations.reduce((sum, r) => sum + r.backlog_events, 0);
    const items = [
      ["Health", health.status, health.status === "ok" ? "ok" : "bad"],
      ["Storage", store.detail ? `${store.backend} (${store.detail})` : store.backend],
      ["Version", health.version],
      ["Uptime", age(health.uptime_sec)],
      ["Disk used", size(store.disk_bytes)],
      ["Disk free", size(store.free_bytes)],
      ["Stored events", count(store.events)],
      ["Registrations", count(registrations.length)],
      ["Backlog", `${count(backlog)} events`],
    ];
    $("overview-cards").replaceChildren(
      ...items.map(([label, value, state]) =>
        el("div", { dataset: { card: label.toLowerCase().replace(/ /g, "-") } },
          el("dt", {}, label),
          el("dd", { className: state || "" }, String(value ?? "-")))),
    );
  }
}
