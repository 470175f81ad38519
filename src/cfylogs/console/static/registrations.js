// Registrations: GET /api/v1/registration as a sortable table, a backlog line per
// registration, a mark on the ones falling behind or not seen; unregister.

import { api, ApiError, history, serverNow, session } from "./api.js";
import { sparkline } from "./chart.js";
import { age, confirmDialog, count, el, every, size, utc } from "./format.js";

const $ = (id) => document.getElementById(id);

// key, header, value to sort by, cell text, numeric
const COLUMNS = [
  ["name", "Name", (r) => r.name || "", (r) => r.name || "-"],
  ["id", "ID", (r) => r.id, (r) => (r.id.length > 13 ? r.id.slice(0, 8) + "…" : r.id)],
  ["created", "Created (UTC)", (r) => r.created, (r) => utc(r.created)],
  ["last_seen", "Last seen", (r) => -r.last_seen, (r) => `${age(serverNow() - r.last_seen)} ago`],
  ["backlog_events", "Backlog", (r) => r.backlog_events, (r) => count(r.backlog_events), true],
  ["backlog_bytes", "Bytes", (r) => r.backlog_bytes, (r) => size(r.backlog_bytes), true],
  ["oldest", "Oldest unacked", (r) => -(r.oldest_unacked_at ?? Infinity),
    (r) => (r.oldest_unacked_at ? age(serverNow() - r.oldest_unacked_at) : "-"), true],
  ["pending", "Pending", (r) => r.pending_batch_id ?? -1,
    (r) => (r.pending_batch_id === null ? "-" : `#${r.pending_batch_id} ×${r.pending_deliveries}`), true],
  ["redeliveries", "Redeliv.", (r) => r.redeliveries, (r) => count(r.redeliveries), true],
  ["dropped", "Dropped", (r) => r.dropped_events, (r) => count(r.dropped_events), true],
];

/** "ok", "behind" (oldest unacknowledged event too old) or "unseen" (no request lately). */
export function state(reg) {
  const marks = session.info.marks;
  const now = serverNow();
  if (now - reg.last_seen > marks.unseen_sec) return "unseen";
  if (reg.oldest_unacked_at !== null && now - reg.oldest_unacked_at > marks.behind_sec) return "behind";
  return "ok";
}

function markText(reg, kind) {
  const marks = session.info.marks;
  if (kind === "unseen") return [`not seen for ${age(serverNow() - reg.last_seen)}`, `no request for over ${marks.unseen_sec} s`];
  if (kind === "behind") return ["falling behind", `oldest unacknowledged event older than ${marks.behind_sec} s`];
  return ["ok", "keeping up"];
}

export class RegistrationsView {
  constructor() {
    this.sortKey = "created";
    this.descending = false;
    this.rows = [];
    this.stop = null;
    const head = $("registrations-table").tHead.rows[0];
    for (const [key, label] of COLUMNS) {
      const th = el("th", { className: "sortable", dataset: { key } }, label);
      th.addEventListener("click", () => this.sortBy(key));
      head.append(th);
    }
    head.append(el("th", { title: "Backlog (events) over the last hour" }, "Trend"), el("th", {}, "State"), el("th", {}, ""));
  }

  show() {
    this.stop = every(2000, () => this.refresh());
  }

  hide() {
    if (this.stop) this.stop();
    this.stop = null;
  }

  sortBy(key) {
    this.descending = this.sortKey === key ? !this.descending : false;
    this.sortKey = key;
    this.render();
  }

  async refresh() {
    const [list] = await Promise.all([api("/api/v1/registration"), history.refresh()]);
    this.rows = list.registrations;
    this.render();
  }

  render() {
    const column = COLUMNS.find(([key]) => key === this.sortKey);
    const rows = [...this.rows].sort((a, b) => {
      const [x, y] = [column[2](a), column[2](b)];
      const order = x < y ? -1 : x > y ? 1 : 0;
      return this.descending ? -order : order;
    });
    for (const th of $("registrations-table").tHead.rows[0].cells) {
      if (th.dataset.key === this.sortKey) th.setAttribute("aria-sort", this.descending ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    }
    $("registrations-count").textContent = `(${rows.length})`;
    $("registrations-empty").hidden = rows.length > 0;
    $("registrations-table").tBodies[0].replaceChildren(...rows.map((r) => this.row(r)));
  }

  row(reg) {
    const kind = state(reg);
    const [mark, why] = markText(reg, kind);
    const tr = el("tr", { className: kind, dataset: { id: reg.id } });
    for (const [key, , , text, numeric] of COLUMNS) {
      const cell = el("td", { className: numeric ? "num" : key, dataset: { col: key } }, text(reg));
      if (key === "id") cell.title = reg.id;
      tr.append(cell);
    }
    const trend = sparkline(history.registrations[reg.id] || []);
    tr.append(
      el("td", {}, trend || "-"),
      el("td", {}, el("span", { className: `mark ${kind}`, title: why }, mark)),
    );
    const button = el("button", { type: "button", className: "danger" }, "Unregister");
    button.addEventListener("click", () => this.unregister(reg));
    tr.append(el("td", {}, button));
    return tr;
  }

  async unregister(reg) {
    const who = reg.name ? `${reg.name} (${reg.id})` : reg.id;
    const question =
      `Unregister ${who}? Its backlog of ${count(reg.backlog_events)} events is deleted for good, ` +
      "and that orchestrator gets a 404 until it registers again.";
    if (!(await confirmDialog(question, "Unregister"))) return;
    const message = $("registrations-message");
    try {
      await api(`/api/v1/registration/${encodeURIComponent(reg.id)}`, { method: "DELETE" });
      message.textContent = `Unregistered ${who}.`;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      message.textContent = `Could not unregister ${who}: ${error.message}`;
    }
    message.hidden = false;
    await this.refresh();
  }
}
