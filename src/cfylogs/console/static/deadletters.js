// Dead letters (ingest.accept: cloudify): list with reason and time, the event on
// demand, replay or purge of the selected ones.

import { api, ApiError, session } from "./api.js";
import { confirmDialog, count, el, summary, utc } from "./format.js";

const $ = (id) => document.getElementById(id);
const PAGE = 100;

export class DeadLettersView {
  constructor() {
    this.letters = [];
    this.nextAfter = null;
    this.selected = new Set();
    $("dead-letters-refresh").addEventListener("click", () => this.load());
    $("dead-letters-more").addEventListener("click", () => this.more());
    $("dead-letters-replay").addEventListener("click", () => this.replay());
    $("dead-letters-purge").addEventListener("click", () => this.purge());
    $("dead-letters-all").addEventListener("change", (e) => {
      for (const letter of this.letters) {
        if (e.target.checked) this.selected.add(letter.id);
        else this.selected.delete(letter.id);
      }
      for (const box of document.querySelectorAll("#dead-letters-table tbody input")) box.checked = e.target.checked;
      this.controls();
    });
  }

  show() {
    const off = session.info.accept !== "cloudify";
    $("dead-letters-off").hidden = !off;
    $("dead-letters-off").textContent = off
      ? `ingest.accept is "${session.info.accept}": every valid JSON event goes to the consumers and ` +
        "none is kept as a dead letter. Those listed here were kept while it was \"cloudify\"."
      : "";
    this.load();
  }

  hide() {}

  async load() {
    const page = await api(`/api/v1/dead-letters?limit=${PAGE}`);
    this.letters = page.dead_letters;
    this.nextAfter = page.next_after;
    this.total = page.total;
    const shown = new Set(this.letters.map((d) => d.id));
    this.selected = new Set([...this.selected].filter((id) => shown.has(id)));
    this.render();
  }

  async more() {
    const page = await api(`/api/v1/dead-letters?limit=${PAGE}&after=${this.nextAfter}`);
    this.letters = this.letters.concat(page.dead_letters);
    this.nextAfter = page.next_after;
    this.total = page.total;
    this.render();
  }

  render() {
    $("dead-letters-count").textContent = `(${count(this.total)})`;
    $("dead-letters-more").hidden = this.nextAfter === null;
    $("dead-letters-table").tBodies[0].replaceChildren(...this.letters.flatMap((d) => this.rows(d)));
    this.controls();
  }

  /** The buttons and the select-all box, after the selection changed (rows stay as they are). */
  controls() {
    $("dead-letters-replay").disabled = $("dead-letters-purge").disabled = this.selected.size === 0;
    $("dead-letters-all").checked = this.letters.length > 0 && this.selected.size === this.letters.length;
  }

  rows(letter) {
    const box = el("input", { type: "checkbox", checked: this.selected.has(letter.id), attrs: { "aria-label": `Select dead letter ${letter.id}` } });
    box.addEventListener("change", () => {
      if (box.checked) this.selected.add(letter.id);
      else this.selected.delete(letter.id);
      this.controls();
    });
    const detail = el("tr", { hidden: true, className: "detail" },
      el("td", { colSpan: 6 }, el("pre", { className: "json" }, JSON.stringify(letter.event, null, 2))));
    const toggle = el("button", { type: "button" }, "Show");
    toggle.addEventListener("click", () => {
      detail.hidden = !detail.hidden;
      toggle.textContent = detail.hidden ? "Show" : "Hide";
    });
    const row = el("tr", { dataset: { id: String(letter.id) } },
      el("td", {}, box),
      el("td", { className: "num" }, String(letter.id)),
      el("td", {}, utc(letter.received)),
      el("td", {}, letter.reason),
      el("td", { className: "summary" }, summary(letter.event)),
      el("td", {}, toggle));
    return [row, detail];
  }

  async replay() {
    const ids = [...this.selected];
    await this.act(async () => {
      const done = await api("/api/v1/dead-letters/replay", { method: "POST", body: { ids } });
      const kept = done.kept_no_registration ? `; ${done.kept_no_registration} kept: no registration to receive them` : "";
      return `Replayed ${done.replayed} into the stream${kept}.`;
    });
  }

  async purge() {
    const ids = [...this.selected];
    if (!(await confirmDialog(`Delete ${ids.length} dead letter(s) for good?`, "Purge"))) return;
    await this.act(async () => {
      const done = await api(`/api/v1/dead-letters?ids=${ids.join(",")}`, { method: "DELETE" });
      return `Purged ${done.purged}.`;
    });
  }

  async act(action) {
    const message = $("dead-letters-message");
    try {
      message.textContent = await action();
      this.selected.clear();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      message.textContent = `Refused: ${error.message}`;
    }
    await this.load();
  }
}
