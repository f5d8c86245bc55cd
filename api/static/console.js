// Runstream's operator console: plain JS, no build step, nothing fetched but our own API.
//
// Three views, by the address's hash: #/runs (the job list), #/runs/<job id> (one
// run's timeline) and #/analytics (charts drawn as SVG here). Every number comes
// from the API: GET /api/jobs, /api/analytics/*, a job's events as JSON pages, and
// the tenant's transitions stream, which keeps the open view current.
"use strict";

(() => {
  const API = "/api";
  // The same key as the chat page: one key per tab serves both pages.
  const KEY_STORE = "runstream.apiKey";
  // Job statuses come from statuses.js (generated from the server's enum).
  const S = JOB_STATUS;
  const STATUSES = Object.values(S);
  const TERMINAL = new Set(TERMINAL_STATUSES);
  // The runs chart stacks the statuses jobs ended in first, then those still in progress.
  const OUTCOMES = [...TERMINAL_STATUSES, ...STATUSES.filter((s) => !TERMINAL.has(s))];
  // How many of the counts ``by`` (a status → count object) ended.
  const ended = (by) => TERMINAL_STATUSES.reduce((n, s) => n + (by[s] || 0), 0);
  // Rows per page: 25, or ?limit= in the address (1 to 100, as the API allows).
  const PAGE_SIZE = Math.min(100, Math.max(1, Number(new URL(location.href).searchParams.get("limit")) || 25));
  // Transitions arrive in bursts (a run's claim and finish are milliseconds
  // apart): the view is read again once per burst.
  const REFRESH_DELAY_MS = 150;
  const RECONNECT_MS = 1000;
  const RUNNING_POLL_MS = 1000;

  const $ = (id) => document.getElementById(id);

  // ---- auth: a key typed in, kept in this tab's sessionStorage only --------------

  function authHeaders() {
    const key = sessionStorage.getItem(KEY_STORE);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  // The form shows only once the API has asked for a key (an open API needs none).
  function showKeyState() {
    const hasKey = Boolean(sessionStorage.getItem(KEY_STORE));
    $("key-set").hidden = !hasKey;
    if (hasKey) $("key-form").hidden = true;
  }

  // The API answered 401: no key, or a wrong one.
  function askForKey() {
    if (!$("key-form").hidden) return; // already asking
    const refused = Boolean(sessionStorage.getItem(KEY_STORE));
    sessionStorage.removeItem(KEY_STORE);
    showKeyState();
    $("key-form").hidden = false;
    showError(refused ? "That API key was refused: enter another one." : "This Runstream needs an API key: enter it above.");
    $("api-key").focus();
  }

  function showError(text) {
    $("error").hidden = !text;
    $("error").textContent = text || "";
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, { method = "GET", body, accept = "application/json" } = {}) {
    const headers = { Accept: accept, ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(API + path, {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await res.json().catch(() => null);
    if (res.status === 401) {
      askForKey();
      stopLive();
    }
    if (!res.ok) throw new ApiError(res.status, data?.error?.code, data?.error?.message || `HTTP ${res.status}`);
    return data;
  }

  const query = (params) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    const s = q.toString();
    return s ? `?${s}` : "";
  };

  // ---- formatting -------------------------------------------------------------------

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 1) return `${Math.round(value * 1000)} ms`;
    if (value < 60) return `${value.toFixed(2)} s`;
    if (value < 3600) return `${Math.floor(value / 60)} m ${Math.round(value % 60)} s`;
    if (value < 86400) return `${Math.floor(value / 3600)} h ${Math.round((value % 3600) / 60)} m`;
    return `${Math.floor(value / 86400)} d ${Math.round((value % 86400) / 3600)} h`;
  }

  function clock(iso) {
    const d = new Date(iso);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`;
  }

  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "className") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function badge(status) {
    return h("span", { className: `badge s-${status}`, dataset: { status } }, status);
  }

  // ---- the transitions stream: live updates for every view --------------------------
  //
  // Read with fetch (it can send the key as a header, EventSource cannot), split on
  // blank lines. A reconnect sends Last-Event-ID: the stream resumes exactly.

  let live = null; // {controller}
  let lastTransitionId = null;
  let refreshTimer = null;
  const transitionListeners = new Set();

  function setLive(state) {
    $("live").dataset.state = state;
  }

  function stopLive() {
    if (live) live.controller.abort();
    live = null;
    setLive("off");
  }

  async function startLive() {
    if (live) return;
    const me = { controller: new AbortController() };
    live = me;
    while (live === me) {
      try {
        const headers = { Accept: "text/event-stream", ...authHeaders() };
        if (lastTransitionId !== null) headers["Last-Event-ID"] = String(lastTransitionId);
        const res = await fetch(`${API}/jobs/transitions`, { headers, signal: me.controller.signal, cache: "no-store" });
        if (res.status === 401) {
          askForKey();
          stopLive();
          return;
        }
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        setLive("live");
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          const blocks = buffer.split("\n\n");
          buffer = blocks.pop();
          const got = [];
          for (const block of blocks) {
            let id = null;
            let data = null;
            for (const line of block.split("\n")) {
              if (line.startsWith("id:")) id = Number(line.slice(3).trim());
              else if (line.startsWith("data:")) data = JSON.parse(line.slice(5));
            }
            if (id !== null) lastTransitionId = id;
            if (data) got.push(data);
          }
          if (got.length) {
            document.body.dataset.transitions = String(Number(document.body.dataset.transitions || 0) + got.length);
            for (const listener of transitionListeners) listener(got);
          }
        }
      } catch (err) {
        if (err.name === "AbortError") return;
      }
      if (live !== me) return;
      setLive("reconnecting");
      await new Promise((r) => setTimeout(r, RECONNECT_MS));
    }
  }

  function refreshSoon(fn) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(fn, REFRESH_DELAY_MS);
  }

  // ---- the runs view ---------------------------------------------------------------

  const runs = {
    cursors: [null], // cursor of each page seen so far; the last one is shown
    nextCursor: null,
    loading: 0,
  };

  // A datetime-local input's value is the browser's local time: sent as an instant.
  const instant = (input) => (input.value ? new Date(input.value).toISOString() : "");

  function listFilters() {
    const choice = $("f-window").value;
    const custom = choice === "custom";
    $("f-range").hidden = !custom;
    const windowS = custom ? 0 : Number(choice || 0);
    return {
      status: $("f-status").value,
      agent: $("f-agent").value,
      session_id: $("f-session").value.trim(),
      created_after: custom ? instant($("f-from")) : windowS ? new Date(Date.now() - windowS * 1000).toISOString() : "",
      created_before: custom ? instant($("f-to")) : "",
    };
  }

  async function loadRuns() {
    const ticket = ++runs.loading;
    const cursor = runs.cursors[runs.cursors.length - 1];
    try {
      const page = await api(`/jobs${query({ ...listFilters(), limit: PAGE_SIZE, cursor })}`);
      const ids = page.jobs.map((j) => j.job_id);
      const timings = ids.length ? (await api(`/analytics/jobs${query({ ids: ids.join(",") })}`)).jobs : [];
      if (ticket !== runs.loading) return; // a newer load started meanwhile
      showError(null);
      runs.nextCursor = page.next_cursor;
      renderRuns(page.jobs, new Map(timings.map((t) => [t.job_id, t])));
    } catch (err) {
      if (ticket === runs.loading && err.status !== 401) showError(`Could not list runs: ${err.message}`);
    }
  }

  function renderRuns(jobs, timings) {
    const body = $("runs-body");
    body.replaceChildren(
      ...jobs.map((job) => {
        const t = timings.get(job.job_id) || {};
        const row = h(
          "tr",
          { dataset: { role: "run-row", jobId: job.job_id, status: job.status }, tabindex: "0" },
          h("td", { title: job.created_at }, clock(job.created_at)),
          h("td", {}, badge(job.status), job.queued ? h("span", { className: "tag" }, "queued") : null,
            job.interrupted ? h("span", { className: "tag" }, "interrupted") : null),
          h("td", { dataset: { role: "agent" } }, job.agent ?? "–"),
          h("td", { dataset: { role: "session" } }, job.session_id ?? "–"),
          h("td", { className: "msg", title: job.message }, job.message),
          h("td", { className: "num", dataset: { role: "attempts" } }, String(job.attempt)),
          h("td", { className: "num" }, seconds(t.queue_wait_s)),
          h("td", { className: "num", dataset: { role: "ttft" } }, seconds(t.ttft_s)),
          h("td", { className: "num" }, seconds(t.duration_s)),
        );
        row.addEventListener("click", () => (location.hash = `#/runs/${job.job_id}`));
        row.addEventListener("keydown", (e) => e.key === "Enter" && (location.hash = `#/runs/${job.job_id}`));
        return row;
      }),
    );
    $("runs-empty").hidden = jobs.length > 0;
    $("newer").disabled = runs.cursors.length < 2;
    $("older").disabled = !runs.nextCursor;
    $("page-label").textContent = `page ${runs.cursors.length}`;
    $("view-runs").dataset.loaded = String(Number($("view-runs").dataset.loaded || 0) + 1);
  }

  function restartRuns() {
    runs.cursors = [null];
    loadRuns();
  }

  for (const id of ["f-status", "f-agent", "f-window", "f-from", "f-to"]) $(id).addEventListener("change", restartRuns);
  let sessionTimer = null;
  $("f-session").addEventListener("input", () => {
    clearTimeout(sessionTimer);
    sessionTimer = setTimeout(restartRuns, 300);
  });
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    restartRuns();
  });
  $("older").addEventListener("click", () => {
    if (!runs.nextCursor) return;
    runs.cursors.push(runs.nextCursor);
    loadRuns();
  });
  $("newer").addEventListener("click", () => {
    if (runs.cursors.length < 2) return;
    runs.cursors.pop();
    loadRuns();
  });

  // ---- one run: timeline, answer, raw events, cancel and retry ----------------------

  const run = { jobId: null, job: null, events: [], after: -1, done: false, poll: null, loading: null };

  async function openRun(jobId) {
    clearTimeout(run.poll);
    Object.assign(run, { jobId, job: null, events: [], after: -1, done: false, poll: null, loading: null });
    $("run-id").textContent = jobId;
    $("timeline").replaceChildren();
    $("answer").textContent = "";
    $("raw-json").textContent = "";
    $("run-facts").replaceChildren();
    $("run-message").textContent = "";
    $("run-status").replaceChildren();
    $("view-run").dataset.jobId = jobId;
    await refreshRun();
  }

  // One refresh at a time; a call during one runs another after it.
  async function refreshRun() {
    if (run.loading) {
      run.again = true;
      return run.loading;
    }
    const jobId = run.jobId;
    run.loading = (async () => {
      try {
        const job = await api(`/jobs/${encodeURIComponent(jobId)}`);
        // Pages of the log as JSON, after the last event we have, until up to date.
        for (;;) {
          const page = await api(`/jobs/${encodeURIComponent(jobId)}/events${query({ after: run.after, limit: 1000 })}`);
          if (run.jobId !== jobId) return;
          run.events.push(...page.events);
          run.after = page.next;
          run.done = page.done;
          if (page.up_to_date) break;
        }
        if (run.jobId !== jobId) return;
        run.job = job;
        showError(null);
        renderRun();
      } catch (err) {
        if (run.jobId !== jobId) return;
        if (err.status === 404) showError("No such run for this key's tenant.");
        else if (err.status !== 401) showError(`Could not read the run: ${err.message}`);
        $("view-run").dataset.missing = String(err.status === 404);
      } finally {
        run.loading = null;
      }
      if (run.again && run.jobId === jobId) {
        run.again = false;
        await refreshRun();
      }
    })();
    await run.loading;
    // While it runs, its text streams in between transitions: read on.
    clearTimeout(run.poll);
    if (run.jobId === jobId && run.job && !TERMINAL.has(run.job.status)) {
      run.poll = setTimeout(() => currentView() === "run" && run.jobId === jobId && refreshRun(), RUNNING_POLL_MS);
    }
  }

  function offset(at, start) {
    return `+${((new Date(at) - start) / 1000).toFixed(3)} s`;
  }

  function describe(data) {
    switch (data.type) {
      case "text_delta": return JSON.stringify(data.delta);
      case "reasoning": return data.text;
      case "tool_call": return `${data.tool_name}(${data.argument ?? ""})`;
      case "tool_result": return data.output;
      case "retry": return `attempt ${data.attempt}: ${data.reason}`;
      case "done": return data.status;
      case "error": return data.message;
      case "input_required":
        return (data.requirements || []).map((r) => `${r.kind} for ${r.tool_name ?? "?"}`).join(", ") || "input required";
      case "input_received":
        return (data.answers || []).map((a) => a.kind + (a.confirmed === false ? " (rejected)" : "")).join(", ") || "input received";
      default: {
        const { type, ...rest } = data;
        return JSON.stringify(rest);
      }
    }
  }

  function renderRun() {
    const { job, events } = run;
    const status = job.status;
    $("run-status").replaceChildren(badge(status));
    $("view-run").dataset.status = status;
    $("cancel").disabled = TERMINAL.has(status);
    $("run-message").textContent = job.message;
    const facts = [
      ["agent", job.agent ?? "–"], ["session", job.session_id ?? "–"], ["attempts", String(job.attempt)],
      ["created", clock(job.created_at)], ["started", job.started_at ? clock(job.started_at) : "–"],
      ["finished", job.finished_at ? clock(job.finished_at) : "–"],
    ];
    if (job.user_id) facts.splice(1, 0, ["user", job.user_id]);
    if (job.queued) facts.push(["queued", "behind its session's active run"]);
    if (job.interrupted) facts.push(["interrupted", "by a later run of its session"]);
    if (job.cancel_requested && !TERMINAL.has(status)) facts.push(["cancel", "requested"]);
    if (job.error) facts.push(["error", job.error]);
    $("run-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { fact: k } }, v)]));

    // Offsets count from submission: the queue wait shows before the first claim.
    const start = new Date(job.created_at);
    const items = [h("li", { className: "mark", dataset: { role: "created" } }, h("span", { className: "off" }, "+0.000 s"), "submitted")];
    if (job.started_at) {
      items.push(
        h("li", { className: "attempt", dataset: { role: "attempt-start", attempt: "1" } },
          h("span", { className: "off" }, offset(job.started_at, start)), "attempt 1 started"),
      );
    }
    // A tool call's duration: from its call to the result with its call id, in its
    // attempt. A pause's: from its input_required to the input_received after it.
    const results = new Map();
    const answered = new Map();
    let attempt = 1;
    let pausedAt = null;
    for (const e of events) {
      if (e.data.type === "retry") attempt = e.data.attempt;
      if (e.data.type === "tool_result") results.set(`${attempt}:${e.data.call_id}`, e);
      if (e.data.type === "input_required") pausedAt = e.id;
      if (e.data.type === "input_received" && pausedAt !== null) {
        answered.set(pausedAt, e);
        pausedAt = null;
      }
    }
    attempt = 1;
    let answer = "";
    for (const e of events) {
      const d = e.data;
      if (d.type === "retry") {
        attempt = d.attempt;
        answer = "";
        items.push(
          h("li", { className: "attempt", dataset: { role: "attempt-start", attempt: String(d.attempt) } },
            h("span", { className: "off" }, offset(e.at, start)), `attempt ${d.attempt} started`),
        );
      } else if (d.type === "text_delta") {
        answer += d.delta;
      }
      const extra = [];
      const dataset = { role: "event", type: d.type, seq: String(e.id), attempt: String(attempt) };
      if (d.type === "tool_call") {
        const result = results.get(`${attempt}:${d.call_id}`);
        if (result) {
          const ms = new Date(result.at) - new Date(e.at);
          dataset.durationMs = String(ms);
          extra.push(h("span", { className: "dur", dataset: { role: "tool-duration" } }, seconds(ms / 1000)));
        } else {
          extra.push(h("span", { className: "dur" }, "no result"));
        }
      }
      if (d.type === "input_required") {
        const answer = answered.get(e.id);
        const ms = (answer ? new Date(answer.at) : new Date()) - new Date(e.at);
        dataset.pausedMs = String(ms);
        extra.push(h("span", { className: "dur", dataset: { role: "pause-duration" } },
          `paused ${seconds(ms / 1000)}${answer ? "" : " so far"}`));
      }
      items.push(
        h("li", { className: `ev t-${d.type}`, dataset },
          h("span", { className: "off" }, offset(e.at, start)),
          h("span", { className: "seq" }, `#${e.id}`),
          h("span", { className: "type" }, d.type),
          h("span", { className: "what" }, describe(d)),
          ...extra),
      );
    }
    if (status === S.PAUSED) {
      items.push(h("li", { className: "mark pause", dataset: { role: "paused" } }, h("span", { className: "off" }, ""), "paused: waiting for input"));
    }
    if (job.finished_at) {
      items.push(
        h("li", { className: "mark", dataset: { role: "finished" } },
          h("span", { className: "off" }, offset(job.finished_at, start)), `finished: ${status}`),
      );
    }
    $("timeline").replaceChildren(...items);
    $("answer").textContent = answer;
    $("raw-json").textContent = JSON.stringify(events.map((e) => ({ id: e.id, at: e.at, data: e.data })), null, 1);
    $("view-run").dataset.events = String(events.length);
  }

  $("cancel").addEventListener("click", async () => {
    const jobId = run.jobId;
    $("cancel").disabled = true;
    try {
      await api(`/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
      await refreshRun();
    } catch (err) {
      showError(`Cancel failed: ${err.message}`);
      $("cancel").disabled = false;
    }
  });

  $("retry").addEventListener("click", async () => {
    const { job } = run;
    if (!job) return;
    const body = { message: job.message };
    if (job.session_id) body.session_id = job.session_id;
    if (job.agent) body.agent = job.agent;
    try {
      const created = await api("/jobs", { method: "POST", body });
      location.hash = `#/runs/${created.job_id}`;
    } catch (err) {
      showError(`Retry failed: ${err.message}`);
    }
  });

  // ---- analytics: SVG charts -------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";
  // Drawing units: a chart of a half-width figure is W wide, a full-width one
  // WIDE, so that text keeps about one size whichever figure it is in.
  const W = 640;
  const WIDE = 1280;
  const H = 200;
  const PAD = { l: 40, r: 10, t: 10, b: 24 };

  function s(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, v);
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(value));
    return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= value);
  }

  function frame(name, yMax, yLabel, labels, width) {
    const svg = s("svg", { viewBox: `0 0 ${width} ${H}`, role: "img", "data-chart": name, "aria-label": name });
    for (const f of [0, 0.5, 1]) {
      const y = PAD.t + (1 - f) * (H - PAD.t - PAD.b);
      svg.append(s("line", { x1: PAD.l, x2: width - PAD.r, y1: y, y2: y, class: "grid" }));
      svg.append(s("text", { x: PAD.l - 4, y: y + 4, class: "axis", "text-anchor": "end" }, yLabel(yMax * f)));
    }
    const step = Math.max(1, Math.ceil(labels.length / (width / 110)));
    labels.forEach((label, i) => {
      if (i % step) return;
      const [x] = xy(i, labels.length, 0, 1, width);
      svg.append(s("text", { x, y: H - 6, class: "axis", "text-anchor": "middle" }, label));
    });
    return svg;
  }

  const xy = (i, n, v, max, width) => [
    PAD.l + ((i + 0.5) * (width - PAD.l - PAD.r)) / n,
    PAD.t + (1 - v / max) * (H - PAD.t - PAD.b),
  ];

  function legend(entries) {
    return h("div", { className: "legend" }, entries.map(([cls, label]) => h("span", {}, h("i", { className: cls }), label)));
  }

  function stackedBars(intervals, labels) {
    const max = niceMax(Math.max(0, ...intervals.map((b) => b.jobs)));
    const svg = frame("runs", max, (v) => String(Math.round(v)), labels, WIDE);
    const n = intervals.length;
    const bw = Math.max(1, ((WIDE - PAD.l - PAD.r) / n) * 0.7);
    intervals.forEach((b, i) => {
      let base = 0;
      for (const outcome of OUTCOMES) {
        const count = b.by_status[outcome] || 0;
        if (!count) continue;
        const [x, yTop] = xy(i, n, base + count, max, WIDE);
        const [, yBase] = xy(i, n, base, max, WIDE);
        svg.append(
          s("rect", { x: x - bw / 2, y: yTop, width: bw, height: Math.max(0.5, yBase - yTop), class: `o-${outcome}`,
                      "data-outcome": outcome, "data-count": count, "data-start": b.start },
            s("title", {}, `${labels[i]}: ${count} ${outcome}`)),
        );
        base += count;
      }
    });
    return [svg, legend(OUTCOMES.map((o) => [`o-${o}`, o]))];
  }

  function lines(name, intervals, labels, series, format) {
    const values = series.flatMap(([, get]) => intervals.map(get)).filter((v) => v !== null && v !== undefined);
    const max = niceMax(Math.max(0, ...values));
    const svg = frame(name, max, format, labels, W);
    const n = intervals.length;
    for (const [key, get, cls] of series) {
      const points = [];
      intervals.forEach((b, i) => {
        const v = get(b);
        if (v === null || v === undefined) return;
        const [x, y] = xy(i, n, v, max, W);
        points.push(`${x},${y}`);
        svg.append(s("circle", { cx: x, cy: y, r: 3, class: cls, "data-series": key, "data-value": v },
          s("title", {}, `${labels[i]}: ${key} ${format(v)}`)));
      });
      if (points.length > 1) svg.append(s("polyline", { points: points.join(" "), class: `line ${cls}`, "data-series": key }));
    }
    return [svg, legend(series.map(([key, , cls]) => [cls, key]))];
  }

  // One bar per row ({label, parts: {key: count}, note}), its parts side by side.
  function hbars(name, rows, segments, width) {
    const rowH = 26;
    const height = Math.max(1, rows.length) * rowH + 8;
    const labelW = 140;
    const noteW = 260;
    const max = niceMax(Math.max(0, ...rows.map((r) => Object.values(r.parts).reduce((a, b) => a + b, 0))));
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "data-chart": name, "aria-label": name });
    rows.forEach((r, i) => {
      const y = 4 + i * rowH;
      const g = s("g", { "data-row": r.label });
      g.append(s("text", { x: labelW - 6, y: y + 15, class: "label", "text-anchor": "end" }, r.label));
      let x = labelW;
      for (const [key, cls] of segments) {
        const count = r.parts[key] || 0;
        const w = (count / max) * (width - labelW - noteW);
        if (count) {
          g.append(s("rect", { x, y: y + 3, width: Math.max(1, w), height: rowH - 8, class: cls, [`data-${key}`]: count,
                               "data-part": key, "data-count": count }, s("title", {}, `${r.label}: ${count} ${key}`)));
        }
        x += w;
      }
      g.append(s("text", { x: x + 6, y: y + 15, class: "axis" }, r.note));
      svg.append(g);
    });
    if (!rows.length) svg.append(s("text", { x: width / 2, y: 18, class: "axis", "text-anchor": "middle" }, "none in this window"));
    return [svg, legend(segments.map(([key, cls]) => [cls, key]))];
  }

  function card(label, value, role) {
    return h("div", { className: "card", dataset: { card: role } }, h("div", { className: "v" }, value), h("div", { className: "k" }, label));
  }

  let analyticsTicket = 0;

  async function loadAnalytics() {
    const ticket = ++analyticsTicket;
    const [windowS, intervalS] = $("a-window").value.split(":").map(Number);
    // Interval-aligned, so the bars do not shift on every refresh.
    const until = new Date(Math.ceil(Date.now() / (intervalS * 1000)) * intervalS * 1000);
    const since = new Date(until - windowS * 1000);
    const scope = { since: since.toISOString(), until: until.toISOString(), agent: $("a-agent").value };
    try {
      const [summary, series] = await Promise.all([
        api(`/analytics/summary${query(scope)}`),
        api(`/analytics/series${query({ ...scope, interval_s: intervalS })}`),
      ]);
      if (ticket !== analyticsTicket) return;
      showError(null);
      renderAnalytics(summary, series.intervals, intervalS);
    } catch (err) {
      if (ticket === analyticsTicket && err.status !== 401) showError(`Could not read analytics: ${err.message}`);
    }
  }

  function renderAnalytics(summary, intervals, intervalS) {
    const labels = intervals.map((b) => {
      const d = new Date(b.start);
      return intervalS >= 86400 ? d.toLocaleDateString() : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    });
    const failed = summary.by_status[S.FAILED];
    const finished = ended(summary.by_status);
    $("cards").replaceChildren(
      card("runs", String(summary.jobs), "jobs"),
      card("completed", String(summary.by_status[S.COMPLETED]), "completed"),
      card("failure rate", percent(finished ? failed / finished : null), "failure-rate"),
      card("retry rate", percent(summary.retry_rate), "retry-rate"),
      card("first token p50 / p95", `${seconds(summary.ttft_s.p50)} / ${seconds(summary.ttft_s.p95)}`, "ttft"),
      card("duration p50 / p95", `${seconds(summary.duration_s.p50)} / ${seconds(summary.duration_s.p95)}`, "duration"),
    );
    const secondsLabel = (v) => (v >= 10 ? String(Math.round(v)) : v.toFixed(1));
    $("c-runs").replaceChildren(...stackedBars(intervals, labels));
    $("c-ttft").replaceChildren(...lines("ttft", intervals, labels, [
      ["p50", (b) => b.ttft_s.p50, "p50"], ["p95", (b) => b.ttft_s.p95, "p95"],
    ], secondsLabel));
    $("c-duration").replaceChildren(...lines("duration", intervals, labels, [
      ["p50", (b) => b.duration_s.p50, "p50"], ["p95", (b) => b.duration_s.p95, "p95"],
    ], secondsLabel));
    const rate = (num) => (b) => (b.jobs ? num(b, ended(b.by_status)) : null);
    $("c-rates").replaceChildren(...lines("rates", intervals, labels, [
      ["retry rate", rate((b) => b.retried_jobs / b.jobs), "p50"],
      ["failure rate", rate((b, finishedHere) => (finishedHere ? b.by_status[S.FAILED] / finishedHere : null)), "bad"],
    ], (v) => `${Math.round(v * 100)}%`));
    $("c-tools").replaceChildren(...hbars("tools", summary.tools.map((t) => ({
      label: t.tool_name, parts: { ok: t.calls - t.errors, errors: t.errors }, note: `${t.calls} calls, ${percent(t.error_rate)} errors`,
    })), [["ok", `o-${S.COMPLETED}`], ["errors", `o-${S.FAILED}`]], W));
    // Each agent's jobs: a count per status a job ends in (named after it), and the others.
    $("c-agents").replaceChildren(...hbars("agents", (summary.by_agent || []).map((a) => ({
      label: a.agent ?? "(none)",
      parts: { ...Object.fromEntries(TERMINAL_STATUSES.map((s) => [s, a[s]])), other: a.jobs - ended(a) },
      note: `${a.jobs} runs, duration p50 ${seconds(a.duration_p50_s)}`,
    })), [...TERMINAL_STATUSES.map((s) => [s, `o-${s}`]), ["other", `o-${S.RUNNING}`]], WIDE));
    $("view-analytics").dataset.loaded = String(Number($("view-analytics").dataset.loaded || 0) + 1);
  }

  $("a-window").addEventListener("change", loadAnalytics);
  $("a-agent").addEventListener("change", loadAnalytics);
  $("a-refresh").addEventListener("click", loadAnalytics);

  // ---- routing and wiring --------------------------------------------------------

  function currentView() {
    const hash = location.hash.replace(/^#\/?/, "");
    if (hash.startsWith("runs/")) return "run";
    if (hash === "analytics") return "analytics";
    return "runs";
  }

  function route() {
    const view = currentView();
    for (const name of ["runs", "run", "analytics"]) $(`view-${name}`).hidden = name !== view;
    for (const tab of document.querySelectorAll(".tabs a")) {
      tab.classList.toggle("active", tab.dataset.view === (view === "run" ? "runs" : view));
    }
    document.body.dataset.view = view;
    showError(null);
    clearTimeout(run.poll);
    if (view === "runs") loadRuns();
    else if (view === "analytics") loadAnalytics();
    else openRun(decodeURIComponent(location.hash.slice("#/runs/".length)));
  }

  // A transition re-reads what the open view shows: the list page (its cursor keeps
  // it in place), the open run, or the charts.
  transitionListeners.add((got) => {
    const view = currentView();
    if (view === "runs") refreshSoon(loadRuns);
    else if (view === "run" && got.some((t) => t.job_id === run.jobId)) refreshSoon(refreshRun);
    else if (view === "analytics") refreshSoon(loadAnalytics);
  });

  async function loadAgents() {
    try {
      const { agents } = await api("/agents");
      for (const select of [$("f-agent"), $("a-agent")]) {
        select.replaceChildren(h("option", { value: "" }, "any"), ...agents.map((a) => h("option", { value: a.name }, a.name)));
      }
    } catch {
      // No agent list (an older API): the filters offer "any" only.
    }
  }

  // The job list filters by any status (statuses.js).
  $("f-status").append(...STATUSES.map((status) => h("option", { value: status }, status)));

  function start() {
    showKeyState();
    loadAgents();
    startLive();
    route();
  }

  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    $("api-key").value = "";
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    showError(null);
    start();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    stopLive();
    showKeyState();
    location.reload();
  });
  window.addEventListener("hashchange", route);
  start();
})();
