// Formatting and DOM helpers. Every text that comes from the relay (event text,
// registration names, reasons) goes into the page through text nodes only:
// nothing here ever parses a string as markup.

/** An element with properties, attributes (`attrs`) and children (strings are text). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  const { attrs, dataset, ...rest } = props;
  Object.assign(node, rest);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  Object.assign(node.dataset, dataset || {});
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** A namespaced SVG element (charts). */
export function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

export function count(n) {
  if (n === null || n === undefined) return "-";
  return Number(n).toLocaleString("en-US");
}

export function rate(n) {
  if (n === null || n === undefined) return "-";
  return n >= 100 ? Math.round(n).toLocaleString("en-US") : String(Math.round(n * 10) / 10);
}

export function size(bytes) {
  if (bytes === null || bytes === undefined) return "-";
  let value = bytes;
  for (const unit of ["B", "KiB", "MiB", "GiB"]) {
    if (value < 1024 || unit === "GiB") return unit === "B" ? `${value} B` : `${value.toFixed(1)} ${unit}`;
    value /= 1024;
  }
  return `${value.toFixed(1)} TiB`;
}

/** `45s`, `3m05s`, `2h07m`, `4d03h` (as `cfylogs status` prints them). */
export function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.max(Math.floor(seconds), 0);
  const two = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${two(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${two(Math.floor((s % 86400) / 3600))}h`;
}

/** Unix time -> `2024-05-01 12:00:00` UTC. */
export function utc(unix) {
  if (unix === null || unix === undefined) return "-";
  return new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19);
}

/** Unix time -> `12:00` UTC (chart axes). */
export function clock(unix) {
  return new Date(unix * 1000).toISOString().slice(11, 16);
}

/** `time level deployment node message`, as `cfylogs tail --format pretty` shows an event. */
export function prettyFields(event) {
  if (event === null || typeof event !== "object" || Array.isArray(event)) {
    return { raw: JSON.stringify(event) };
  }
  const context = event.context && typeof event.context === "object" ? event.context : {};
  const message = event.message;
  const text = message && typeof message === "object" ? message.text : message;
  if (Object.keys(context).length === 0 && text === undefined) {
    return { raw: JSON.stringify(event) };
  }
  const level = String(event.level || event.event_type || "event");
  return {
    when: String(event["@timestamp"] || event.timestamp || ""),
    level: level.toUpperCase(),
    levelClass: "lv-" + ("level" in event ? level.toLowerCase() : "event").replace(/[^a-z]/g, ""),
    deployment: String(context.deployment_id || "-"),
    node: String(context.node_id || context.node_name || "-"),
    text: text === undefined || text === null ? "" : String(text),
  };
}

/** One line of text summing up an event (dead letters). */
export function summary(event) {
  const fields = prettyFields(event);
  const line = fields.raw ?? [fields.level, fields.deployment, fields.text].join(" ");
  return line.length > 160 ? line.slice(0, 160) + "…" : line;
}

/** Ask for a confirmation in the page's dialog; resolves to true for OK. */
export function confirmDialog(text, okLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  ok.textContent = okLabel;
  return new Promise((resolve) => {
    const done = (answer) => {
      ok.onclick = cancel.onclick = dialog.oncancel = null;
      dialog.close();
      resolve(answer);
    };
    ok.onclick = () => done(true);
    cancel.onclick = () => done(false);
    dialog.oncancel = () => done(false);
    dialog.showModal();
  });
}

/** Run `task` now and again `ms` after each run ends, until the returned stop() is called. */
export function every(ms, task) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    try {
      await task();
    } catch (error) {
      console.error(error); // shown again at the next run; a 401 has left the view already
    } finally {
      if (!stopped) timer = setTimeout(run, ms);
    }
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
