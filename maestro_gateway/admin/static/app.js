// maestro live view: the executions of the gateway's journal, and one execution as a timeline.
//
// Read-only. Data comes from the admin port's JSON API (/api/executions, polled every
// LIST_POLL_MS while the list is shown) and from one server-sent-events stream per open
// execution (/api/executions/{id}/events, resumed by EventSource with Last-Event-ID).
// Every value from the gateway is untrusted (inputs, labels, error messages): it is only ever
// put into the page as text (textContent, text nodes, attributes set one by one), never parsed
// as HTML.
"use strict";

const LIST_POLL_MS = 2000;
const RESTREAM_MS = 3000;
const RECENT_PAGE = 50;
const RUNNING_PAGE = 200;
const STATES = [
  "RUNNING", "COMPENSATING", "SUCCEEDED", "FAILED", "COMPENSATED", "COMPENSATION_FAILED",
];
const LIVE_STATES = new Set(["RUNNING", "COMPENSATING"]);
const EVENT_KINDS = [
  "started", "step_started", "step_retrying", "step_succeeded", "step_failed", "step_skipped",
  "compensation_started", "compensation_succeeded", "compensation_failed", "recovered",
  "finished",
];

const KIND_LABELS = {
  started: "started",
  step_started: "step started",
  step_retrying: "step retrying",
  step_succeeded: "step succeeded",
  step_failed: "step failed",
  step_skipped: "step skipped",
  compensation_started: "undo started",
  compensation_succeeded: "undo succeeded",
  compensation_failed: "undo failed",
  recovered: "recovered",
  finished: "finished",
};

// -- small helpers ---------------------------------------------------------------------------

/** An element: attributes set one by one, children appended (strings become text nodes). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "style") Object.assign(el.style, value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const ms = seconds * 1000;
  if (ms < 1) return "<1 ms";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.floor(seconds % 60);
  if (m < 60) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

function fmtOffset(seconds) {
  if (seconds < 1) return `+${Math.round(seconds * 1000)} ms`;
  return `+${seconds.toFixed(seconds < 10 ? 3 : 1)} s`;
}

function fmtClock(epoch) {
  const d = new Date(epoch * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` +
    `.${pad(d.getMilliseconds(), 3)}`;
}

function fmtAbsolute(epoch) {
  return new Date(epoch * 1000).toISOString().replace("T", " ").replace("Z", " UTC");
}

function fmtAgo(epoch, now) {
  const s = Math.max(0, now - epoch);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function statusBadge(status) {
  const label = status.toLowerCase().replace("_", " ");
  return h("span", { class: `badge s-${status.toLowerCase()}` }, h("i"), label);
}

function errorText(error) {
  if (!error) return "";
  return `${error.code}: ${error.message}`;
}

/** Seconds the gateway's clock is ahead of the browser's (from the last answer's ``time``). */
let skew = 0;
const now = () => Date.now() / 1000 + skew;

async function getJSON(url, signal) {
  const response = await fetch(url, { signal, headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  if (body && typeof body.time === "number") skew = body.time - Date.now() / 1000;
  return body;
}

function setConn(state, text) {
  $("conn").dataset.state = state;
  $("conn-text").textContent = text;
}

function setCrumbs(parts) {
  const crumbs = [h("a", { href: "#/" }, "Executions")];
  for (const part of parts) crumbs.push(h("span", { class: "sep" }, "/"), part);
  $("crumbs").replaceChildren(...crumbs);
}

// -- routing ---------------------------------------------------------------------------------

let current = null; // the view shown: { stop() }

function route() {
  if (current) current.stop();
  current = null;
  for (const id of ["list-view", "detail-view", "missing-view"]) $(id).hidden = true;
  const match = /^#\/executions\/(.+)$/.exec(location.hash);
  if (match) {
    let id;
    try {
      id = decodeURIComponent(match[1]);
    } catch (_) {
      id = match[1];
    }
    current = new DetailView(id);
  } else {
    current = new ListView();
  }
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", route);

// -- the executions list ---------------------------------------------------------------------

const listState = { workflow: "", statuses: new Set(), recentLimit: RECENT_PAGE };
const seenWorkflows = new Set();

class ListView {
  constructor() {
    $("list-view").hidden = false;
    setCrumbs([]);
    document.title = "maestro · executions";
    this.stopped = false;
    this.timer = null;
    this.abort = null;
    this.buildFilters();
    this.refresh();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.abort) this.abort.abort();
    document.removeEventListener("visibilitychange", this.onVisible);
  }

  buildFilters() {
    const input = $("filter-workflow");
    input.value = listState.workflow;
    input.oninput = () => {
      listState.workflow = input.value.trim();
      this.refresh();
    };
    const chips = STATES.map((state) => {
      const chip = h(
        "button",
        {
          type: "button",
          class: `chip s-${state.toLowerCase()}`,
          "aria-pressed": String(listState.statuses.has(state)),
          dataset: { state },
        },
        h("i"),
        state.toLowerCase().replace("_", " "),
      );
      chip.onclick = () => {
        if (listState.statuses.has(state)) listState.statuses.delete(state);
        else listState.statuses.add(state);
        chip.setAttribute("aria-pressed", String(listState.statuses.has(state)));
        listState.recentLimit = RECENT_PAGE;
        this.refresh();
      };
      return chip;
    });
    $("filter-status").replaceChildren(...chips);
    $("more").onclick = () => {
      listState.recentLimit = Math.min(1000, listState.recentLimit + RECENT_PAGE);
      this.refresh();
    };
    this.onVisible = () => {
      if (!document.hidden) this.refresh();
    };
    document.addEventListener("visibilitychange", this.onVisible);
  }

  query(statuses, size) {
    const params = new URLSearchParams();
    if (listState.workflow) params.set("workflow", listState.workflow);
    if (statuses.length) params.set("status", statuses.join(","));
    params.set("page_size", String(size));
    return `/api/executions?${params}`;
  }

  async refresh() {
    clearTimeout(this.timer);
    if (this.abort) this.abort.abort();
    if (this.stopped) return;
    const abort = (this.abort = new AbortController());
    const chosen = [...listState.statuses];
    const live = chosen.length ? chosen.filter((s) => LIVE_STATES.has(s)) : [...LIVE_STATES];
    const done = chosen.length
      ? chosen.filter((s) => !LIVE_STATES.has(s))
      : STATES.filter((s) => !LIVE_STATES.has(s));
    try {
      const [running, recent] = await Promise.all([
        live.length ? getJSON(this.query(live, RUNNING_PAGE), abort.signal) : null,
        done.length ? getJSON(this.query(done, listState.recentLimit), abort.signal) : null,
      ]);
      if (this.stopped) return;
      this.render(running, recent);
      setConn("live", `live · every ${LIST_POLL_MS / 1000}s`);
    } catch (error) {
      if (error.name === "AbortError") return;
      if (error.status === 400) {
        setConn("error", error.message);
      } else {
        setConn("down", "gateway unreachable · retrying");
      }
    }
    if (!this.stopped && !document.hidden) {
      this.timer = setTimeout(() => this.refresh(), LIST_POLL_MS);
    }
  }

  render(running, recent) {
    const t = now();
    $("running-panel").hidden = running === null;
    $("recent-panel").hidden = recent === null;
    const runningRows = running ? running.executions : [];
    const recentRows = recent ? recent.executions : [];
    $("running-rows").replaceChildren(...runningRows.map((e) => this.row(e, t)));
    $("recent-rows").replaceChildren(...recentRows.map((e) => this.row(e, t)));
    $("running-count").textContent = String(runningRows.length);
    $("recent-count").textContent = recent && recent.next_page_token
      ? `${recentRows.length}+` : String(recentRows.length);
    $("running-empty").hidden = runningRows.length > 0;
    $("recent-empty").hidden = recentRows.length > 0;
    $("more").hidden = !(recent && recent.next_page_token);
    for (const e of [...runningRows, ...recentRows]) seenWorkflows.add(e.workflow);
    $("workflow-names").replaceChildren(
      ...[...seenWorkflows].sort().map((name) => h("option", { value: name })),
    );
    const counts = {};
    for (const e of [...runningRows, ...recentRows]) counts[e.status] = (counts[e.status] || 0) + 1;
    $("stats").replaceChildren(
      ...STATES.filter((s) => counts[s]).map((s) =>
        h("span", { class: `stat s-${s.toLowerCase()}` },
          h("b", {}, String(counts[s])), s.toLowerCase().replace("_", " "))),
    );
    $("refresh-note").textContent = `updated ${fmtClock(t)}`;
  }

  row(e, t) {
    const end = e.end_time === null ? t : e.end_time;
    const link = h("a", { href: `#/executions/${encodeURIComponent(e.execution_id)}`, class: "id" },
      e.execution_id);
    const labels = Object.entries(e.labels || {}).map(([k, v]) =>
      h("span", { class: "label" }, h("span", { class: "k" }, k), h("span", { class: "v" }, v)));
    if (e.triggered_by) {
      labels.unshift(h("span", { class: "label trig", title: "started by this signal" },
        h("span", { class: "k" }, "signal"), h("span", { class: "v" }, e.triggered_by)));
    }
    const tr = h("tr", { dataset: { id: e.execution_id } },
      h("td", { class: "c-status" }, statusBadge(e.status)),
      h("td", {}, link),
      h("td", { class: "wf" }, e.workflow),
      h("td", { title: fmtAbsolute(e.start_time) },
        h("span", {}, fmtClock(e.start_time)), h("span", { class: "dim" }, ` · ${fmtAgo(e.start_time, t)}`)),
      h("td", { class: "num" }, fmtDuration(end - e.start_time)),
      h("td", { class: "num dim" }, String(e.last_sequence)),
      h("td", {}, h("div", { class: "labels" }, labels)),
    );
    tr.onclick = (event) => {
      if (event.target.closest("a")) return;
      location.hash = `#/executions/${encodeURIComponent(e.execution_id)}`;
    };
    return tr;
  }
}

// -- one execution ---------------------------------------------------------------------------

/** The timeline's rows, built from the events in sequence order. */
class Model {
  constructor(record) {
    this.t0 = record.start_time;
    this.end = record.end_time;
    this.rows = new Map(); // step path -> row
    this.markers = [];
    this.events = [];
    this.result = record.result;
  }

  row(path) {
    let row = this.rows.get(path);
    if (!row) {
      row = { path, attempts: [], waits: [], comps: [], skipped: null, status: "RUNNING" };
      this.rows.set(path, row);
    }
    return row;
  }

  add(ev) {
    this.events.push(ev);
    const find = (list, n) => {
      for (let i = list.length - 1; i >= 0; i--) if (list[i].n === n) return list[i];
      return null;
    };
    const close = (list, ev, state, extra) => {
      let a = find(list, ev.attempt);
      if (!a) {
        const start = ev.duration !== undefined ? ev.time - ev.duration : ev.time;
        a = { n: ev.attempt, start, end: null, state: "running" };
        list.push(a);
      }
      a.end = ev.time;
      a.state = state;
      Object.assign(a, extra);
    };
    switch (ev.kind) {
      case "started":
        this.t0 = Math.min(this.t0, ev.time);
        break;
      case "step_started":
        this.row(ev.step_id).attempts.push({ n: ev.attempt, start: ev.time, end: null, state: "running" });
        break;
      case "step_retrying": {
        const row = this.row(ev.step_id);
        close(row.attempts, ev, "failed", { error: ev.error });
        row.waits.push({ start: ev.time, end: ev.time + ev.delay });
        break;
      }
      case "step_succeeded": {
        const row = this.row(ev.step_id);
        close(row.attempts, ev, "ok", {});
        row.status = "SUCCEEDED";
        break;
      }
      case "step_failed": {
        const row = this.row(ev.step_id);
        close(row.attempts, ev, "failed", { error: ev.error });
        row.status = ev.status || "FAILED";
        break;
      }
      case "step_skipped": {
        const row = this.row(ev.step_id);
        row.skipped = { time: ev.time, reason: ev.reason };
        row.status = "SKIPPED";
        break;
      }
      case "compensation_started":
        this.row(ev.step_id).comps.push({ n: ev.attempt, start: ev.time, end: null, state: "running" });
        break;
      case "compensation_succeeded":
        close(this.row(ev.step_id).comps, ev, "ok", {});
        break;
      case "compensation_failed":
        close(this.row(ev.step_id).comps, ev, "failed", { error: ev.error });
        break;
      case "recovered":
        this.markers.push({ time: ev.time, reason: ev.reason });
        break;
      case "finished":
        this.end = ev.time;
        this.result = ev.result;
        break;
      default:
        break;
    }
  }
}

const LEGEND = [
  ["ok", "succeeded"], ["failed", "failed attempt"], ["running", "running"],
  ["wait", "retry backoff"], ["comp", "compensation"], ["comp-failed", "compensation failed"],
  ["skipped", "skipped"],
];

class DetailView {
  constructor(id) {
    this.id = id;
    this.stopped = false;
    this.record = null;
    this.model = null;
    this.source = null;
    this.ticker = null;
    this.lastSeq = 0;
    this.pending = false;
    $("detail-view").hidden = false;
    $("summary").replaceChildren(h("div", { class: "dim" }, "loading…"));
    $("timeline").replaceChildren();
    $("log-rows").replaceChildren();
    $("payloads").replaceChildren();
    $("error-banner").hidden = true;
    $("legend").replaceChildren(
      ...LEGEND.map(([cls, text]) => h("span", { class: "key" }, h("i", { class: `bar ${cls}` }), text)),
    );
    setCrumbs([h("span", { class: "mono" }, id)]);
    document.title = `maestro · ${id}`;
    this.load();
  }

  stop() {
    this.stopped = true;
    if (this.source) this.source.close();
    clearInterval(this.ticker);
    clearTimeout(this.restream);
  }

  async load() {
    try {
      this.record = await getJSON(`/api/executions/${encodeURIComponent(this.id)}`);
    } catch (error) {
      if (this.stopped) return;
      $("detail-view").hidden = true;
      const box = $("missing-view");
      box.hidden = false;
      box.replaceChildren(
        h("h2", {}, error.status === 404 ? "Execution not found" : "Cannot load the execution"),
        h("p", { class: "dim" }, error.message),
        h("p", {}, h("a", { href: "#/" }, "← all executions")),
      );
      setConn(error.status ? "error" : "down", error.status ? `HTTP ${error.status}` : "unreachable");
      return;
    }
    if (this.stopped) return;
    this.model = new Model(this.record);
    this.render();
    this.listen();
    this.ticker = setInterval(() => {
      if (this.model && this.model.end === null) this.render();
    }, 500);
  }

  listen() {
    // EventSource reconnects by itself after a dropped connection (sending Last-Event-ID), but
    // gives up on an HTTP error (503: too many streams, or a draining gateway): then open a new
    // one, after RESTREAM_MS, resuming after the last event this page has.
    const url = `/api/executions/${encodeURIComponent(this.id)}/events?last_event_id=${this.lastSeq}`;
    const source = (this.source = new EventSource(url));
    setConn("connecting", "connecting");
    source.onopen = () => setConn("live", "live");
    source.onerror = () => {
      if (this.stopped || (this.model && this.model.end !== null)) return;
      if (source.readyState === EventSource.CLOSED) {
        setConn("down", `stream refused · retrying in ${RESTREAM_MS / 1000}s`);
        clearTimeout(this.restream);
        this.restream = setTimeout(() => {
          if (!this.stopped && this.source === source) this.listen();
        }, RESTREAM_MS);
      } else {
        setConn("connecting", "reconnecting…");
      }
    };
    for (const kind of EVENT_KINDS) {
      source.addEventListener(kind, (message) => this.onEvent(message));
    }
  }

  onEvent(message) {
    if (this.stopped) return;
    const ev = JSON.parse(message.data);
    if (ev.sequence <= this.lastSeq) return; // a replay overlap: each event once
    this.lastSeq = ev.sequence;
    this.model.add(ev);
    this.appendLog(ev);
    if (ev.kind === "finished") {
      this.source.close();
      setConn("done", "finished");
      this.reload();
    }
    this.schedule();
  }

  async reload() {
    try {
      this.record = await getJSON(`/api/executions/${encodeURIComponent(this.id)}`);
      this.schedule();
    } catch (_) {
      /* the event already carried the result */
    }
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (!this.stopped) this.render();
    });
  }

  render() {
    this.renderSummary();
    this.renderTimeline();
    this.renderPayloads();
  }

  status() {
    const result = this.model.result;
    if (result) return result.status;
    return this.record.status === "COMPENSATING" || this.hasCompensations() ? "COMPENSATING"
      : this.record.status;
  }

  hasCompensations() {
    for (const row of this.model.rows.values()) if (row.comps.length) return true;
    return false;
  }

  renderSummary() {
    const r = this.record;
    const m = this.model;
    const end = m.end === null ? now() : m.end;
    const status = this.status();
    const facts = [
      ["Workflow", h("span", { class: "wf" }, r.workflow)],
      ["Started", h("span", { title: fmtAbsolute(r.start_time) }, fmtAbsolute(r.start_time))],
      ["Duration", h("span", { class: m.end === null ? "ticking" : "" }, fmtDuration(end - m.t0))],
      ["Steps", String(m.rows.size)],
      ["Events", String(m.events.length)],
    ];
    if (r.triggered_by) facts.push(["Signal", h("span", { class: "mono" }, r.triggered_by)]);
    const labels = Object.entries(r.labels || {});
    $("summary").replaceChildren(...[
      h("div", { class: "summary-head" },
        statusBadge(status),
        h("h1", { class: "mono", title: r.execution_id }, r.execution_id)),
      h("dl", { class: "facts" },
        facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
      labels.length ? h("div", { class: "labels" }, labels.map(([k, v]) =>
        h("span", { class: "label" }, h("span", { class: "k" }, k), h("span", { class: "v" }, v))))
        : null,
    ].filter(Boolean));
    const error = m.result && m.result.error;
    const banner = $("error-banner");
    banner.hidden = !error;
    if (error) {
      banner.className = `banner s-${status.toLowerCase()}`;
      banner.replaceChildren(
        h("b", {}, error.code),
        h("span", { class: "mono step" }, error.step_id),
        h("span", { class: "msg" }, error.message),
      );
    }
  }

  renderTimeline() {
    const m = this.model;
    const t = now();
    const t0 = m.t0;
    let t1 = m.end === null ? t : m.end;
    for (const row of m.rows.values()) {
      for (const w of row.waits) if (m.end === null) t1 = Math.max(t1, Math.min(w.end, t));
    }
    const span = Math.max(t1 - t0, 0.001);
    const pct = (x) => `${(Math.max(0, Math.min(span, x - t0)) / span) * 100}%`;
    const width = (a, b) => `${(Math.max(0, Math.min(t1, b) - Math.max(t0, a)) / span) * 100}%`;

    const ticks = [];
    const step = niceStep(span / 6);
    for (let x = 0; x <= span + 1e-9; x += step) {
      ticks.push(h("span", { class: "tick", style: { left: `${(x / span) * 100}%` } },
        fmtTick(x, step)));
    }
    const axis = h("div", { class: "tl-row tl-axis" },
      h("div", { class: "tl-label dim" }, "step"), h("div", { class: "tl-lane" }, ticks));
    const grid = ticks.map((tick) => h("span", { class: "gridline", style: { left: tick.style.left } }));

    const rows = [];
    for (const row of m.rows.values()) {
      rows.push(this.timelineRow(row, row.attempts, false, { pct, width, t, grid }));
      if (row.comps.length) rows.push(this.timelineRow(row, row.comps, true, { pct, width, t, grid }));
    }
    const markers = m.markers.map((mk) =>
      h("div", { class: "marker", style: { left: pct(mk.time) }, title: `recovered: ${mk.reason}` },
        h("span", {}, "recovered")));
    const body = h("div", { class: "tl-body" },
      rows.length ? rows : h("div", { class: "empty" }, "No step has started yet."),
      h("div", { class: "tl-overlay" }, h("div", { class: "tl-label" }), h("div", { class: "tl-lane" }, markers)));
    $("timeline").replaceChildren(axis, body);
  }

  timelineRow(row, attempts, compensation, { pct, width, t, grid }) {
    const path = row.path;
    const cut = path.lastIndexOf(".");
    const depth = (path.match(/\./g) || []).length;
    const name = compensation
      ? h("span", { class: "leaf comp-name" }, "↺ compensate")
      : [cut >= 0 ? h("span", { class: "prefix" }, path.slice(0, cut + 1)) : null,
        h("span", { class: "leaf" }, path.slice(cut + 1))];
    const tries = attempts.length > 1
      ? h("span", { class: "tries", title: `${attempts.length} attempts` }, `×${attempts.length}`) : null;
    const label = h("div", {
      class: `tl-label${compensation ? " comp" : ""}`,
      style: { paddingLeft: `${10 + depth * 14}px` },
      title: compensation ? `compensation of ${path}` : path,
    }, name, tries);
    const bars = [...grid.map((g) => g.cloneNode())];
    if (!compensation) {
      for (const w of row.waits) {
        bars.push(h("span", {
          class: "bar wait", style: { left: pct(w.start), width: width(w.start, Math.min(w.end, t)) },
          title: `retry backoff ${fmtDuration(w.end - w.start)}`,
        }));
      }
    }
    for (const a of attempts) {
      const end = a.end === null ? (this.model.end === null ? t : this.model.end) : a.end;
      const state = a.end === null && this.model.end !== null ? "cancelled" : a.state;
      const cls = compensation ? (state === "failed" ? "comp-failed" : state === "running" ? "comp running" : "comp")
        : state;
      const what = compensation ? "compensation" : "attempt";
      const tip = [`${path} · ${what} ${a.n}`, `${fmtDuration(end - a.start)}`,
        a.error ? errorText(a.error) : state].join(" · ");
      bars.push(h("span", {
        class: `bar ${cls}`,
        style: { left: pct(a.start), width: width(a.start, end) },
        title: tip,
        dataset: { step: path, attempt: String(a.n), state },
      }, attempts.length > 1 && !compensation ? h("em", {}, String(a.n)) : null));
    }
    if (row.skipped && !compensation) {
      bars.push(h("span", {
        class: "bar skipped", style: { left: pct(row.skipped.time) },
        title: `skipped: ${row.skipped.reason}`,
      }, "skipped"));
    }
    const last = attempts[attempts.length - 1];
    let took = "";
    if (last && last.end !== null) took = fmtDuration(last.end - attempts[0].start);
    else if (last && this.model.end === null) took = `${fmtDuration(t - attempts[0].start)}…`;
    return h("div", { class: `tl-row${compensation ? " tl-comp" : ""}`, dataset: { step: path } },
      label, h("div", { class: "tl-lane" }, bars), h("div", { class: "tl-took dim" }, took));
  }

  appendLog(ev) {
    const t0 = this.model.t0;
    const detail = [];
    if (ev.error) detail.push(h("span", { class: "err" }, errorText(ev.error)));
    if (ev.kind === "step_retrying") detail.push(h("span", { class: "dim" }, ` retry in ${fmtDuration(ev.delay)}`));
    if (ev.duration !== undefined) detail.push(h("span", { class: "dim" }, fmtDuration(ev.duration)));
    if (ev.reason) detail.push(h("span", {}, ev.reason));
    if (ev.kind === "started") detail.push(h("span", { class: "dim" }, ev.workflow));
    if (ev.kind === "finished" && ev.result) {
      detail.push(statusBadge(ev.result.status), h("span", { class: "dim" }, ` ${fmtDuration(ev.result.duration)}`));
    }
    const row = h("tr", { class: `k-${ev.kind}` },
      h("td", { class: "num dim" }, String(ev.sequence)),
      h("td", { class: "num dim", title: fmtAbsolute(ev.time) }, fmtOffset(Math.max(0, ev.time - t0))),
      h("td", {}, h("span", { class: `kind k-${ev.kind}`, title: ev.kind }, KIND_LABELS[ev.kind] || ev.kind)),
      h("td", { class: "mono" }, ev.step_id || ""),
      h("td", { class: "num dim" }, ev.attempt !== undefined ? String(ev.attempt) : ""),
      h("td", {}, h("div", { class: "detail" }, detail)),
    );
    const scroller = $("log-scroll");
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 24;
    $("log-rows").append(row);
    $("event-count").textContent = String(this.model.events.length);
    if (atBottom) scroller.scrollTop = scroller.scrollHeight;
  }

  renderPayloads() {
    const r = this.record;
    const result = this.model.result;
    if (!r.view_payloads) {
      $("payloads").replaceChildren(h("div", { class: "panel notice" },
        h("h2", {}, "Input and output"),
        h("p", { class: "dim" }, "Not shown: this gateway runs with --view-payloads false.")));
      return;
    }
    const key = JSON.stringify([r.input, result ? result.output : undefined, result ? result.status : ""]);
    if (key === this.payloadKey) return; // unchanged: keep the reader's selection and scroll
    this.payloadKey = key;
    const box = (title, value, note) => h("div", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", {}, title)),
      note ? h("div", { class: "empty" }, note)
        : h("pre", { class: "json", dataset: { payload: title.toLowerCase() } }, JSON.stringify(value, null, 2)));
    $("payloads").replaceChildren(
      box("Input", r.input),
      result
        ? result.output === null || result.output === undefined
          ? box("Output", null, `No output (${result.status.toLowerCase().replace("_", " ")}).`)
          : box("Output", result.output)
        : box("Output", null, "Not finished yet."),
    );
  }
}

function niceStep(raw) {
  const power = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-6))));
  for (const m of [1, 2, 5, 10]) if (raw <= m * power) return m * power;
  return 10 * power;
}

function fmtTick(x, step) {
  if (step < 0.1) return `${Math.round(x * 1000)} ms`;
  if (step < 60) return `${+x.toFixed(step < 1 ? 1 : 0)} s`;
  return fmtDuration(x);
}
