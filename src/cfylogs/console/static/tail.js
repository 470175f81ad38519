// Live tail: long polls GET /api/v1/console/tail with a cursor and shows each event
// like `cfylogs tail --format pretty`. Watching changes nothing on the relay.

import { api, Unauthorized } from "./api.js";
import { count, el, prettyFields, size } from "./format.js";

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 1000;
const WAIT_SEC = 20;
// After an answer with events, wait this long before the next poll: nobody reads
// faster, and a viewer kept busy by a fast stream would cost the relay a poll per event.
const PAUSE_MS = 250;

export class TailView {
  constructor() {
    this.cursor = null;
    this.running = false;
    this.paused = false;
    this.held = [];
    this.heldMissed = 0;
    this.shown = 0;
    this.missed = 0;
    this.generation = 0;
    this.controller = null;
    let debounce = null;
    const changed = () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => this.restart(), 300);
    };
    for (const id of ["tail-type", "tail-level"]) $(id).addEventListener("change", changed);
    for (const id of ["tail-deployment", "tail-text"]) $(id).addEventListener("input", changed);
    $("tail-filters").addEventListener("submit", (e) => e.preventDefault());
    $("tail-pause").addEventListener("click", () => this.togglePause());
    $("tail-clear").addEventListener("click", () => this.clear());
  }

  show() {
    this.running = true;
    this.loop();
  }

  hide() {
    this.running = false;
    this.generation++;
    if (this.controller) this.controller.abort();
  }

  /** Filters changed: show what the relay still holds that matches them, then follow. */
  restart() {
    if (!this.running) return;
    this.hide();
    this.clear();
    this.cursor = null;
    this.show();
  }

  clear() {
    $("tail-events").replaceChildren();
    this.shown = this.missed = 0;
    this.status();
  }

  togglePause() {
    this.paused = !this.paused;
    $("tail-pause").textContent = this.paused ? "Resume" : "Pause";
    if (!this.paused) {
      if (this.heldMissed) this.gap(this.heldMissed, "while paused");
      this.append(this.held);
      this.held = [];
      this.heldMissed = 0;
    }
    this.status();
  }

  query() {
    const params = new URLSearchParams({ wait: String(WAIT_SEC), limit: "200" });
    if (this.cursor !== null) params.set("after", String(this.cursor));
    const filters = { type: "tail-type", level: "tail-level", deployment: "tail-deployment", q: "tail-text" };
    for (const [name, id] of Object.entries(filters)) {
      const value = $(id).value.trim();
      if (value) params.set(name, value);
    }
    return params.toString();
  }

  async loop() {
    const generation = ++this.generation;
    this.status();
    while (this.running && generation === this.generation) {
      this.controller = new AbortController();
      try {
        const page = await api(`/api/v1/console/tail?${this.query()}`, { signal: this.controller.signal });
        if (generation !== this.generation) return;
        this.cursor = page.last;
        this.receive(page);
        if (page.events.length || page.missed) await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
      } catch (error) {
        if (error.name === "AbortError" || error instanceof Unauthorized) return;
        $("tail-status").textContent = `The relay did not answer (${error.message}); trying again.`;
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    }
  }

  receive(page) {
    if (this.paused) {
      this.held = this.held.concat(page.events);
      this.heldMissed += page.missed;
      const over = this.held.length - MAX_ROWS;
      if (over > 0) {
        this.held = this.held.slice(over);
        this.heldMissed += over;
      }
    } else {
      if (page.missed) this.gap(page.missed, "the relay's ring moved on before this page asked");
      this.append(page.events);
    }
    this.status();
  }

  status() {
    const state = this.paused
      ? `Paused: ${count(this.held.length)} new event(s) held, shown on resume.`
      : this.running ? "Watching." : "Stopped.";
    $("tail-status").textContent = `${state} ${count(this.shown)} shown, ${count(this.missed)} missed.`;
  }

  gap(missed, why) {
    this.missed += missed;
    this.add([el("div", { className: "row gap" }, `… ${count(missed)} event(s) missed (${why})`)]);
  }

  append(events) {
    this.shown += events.length;
    this.add(events.map((item) => this.row(item)));
  }

  add(rows) {
    if (!rows.length) return;
    const box = $("tail-events");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    box.append(...rows);
    while (box.childElementCount > MAX_ROWS) box.firstElementChild.remove();
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  row(item) {
    const row = el("div", { className: "row", dataset: { seq: String(item.seq) } });
    if (item.event === null) {
      row.append(`(an event of ${size(item.size)}: too large for the live tail)`);
      return row;
    }
    const f = prettyFields(item.event);
    if (f.raw !== undefined) {
      row.append(el("span", { className: "raw" }, f.raw));
    } else {
      row.append(
        el("span", { className: "when" }, f.when),
        el("span", { className: `level ${f.levelClass}` }, f.level),
        el("span", { className: "deployment" }, f.deployment),
        el("span", { className: "node" }, f.node),
        el("span", { className: "text" }, f.text),
      );
    }
    row.addEventListener("click", (event) => {
      if (event.target.closest("pre")) return; // selecting text in the JSON
      const open = row.querySelector("pre");
      if (open) open.remove();
      else row.append(el("pre", { className: "json" }, JSON.stringify(item.event, null, 2)));
    });
    return row;
  }
}
