// Runstream's chat page: plain JS, no build step, nothing fetched but our own API.
//
// The stream is read the way DeltaKit's background-sse transport reads it: fetch(),
// split the body on "\n\n", JSON.parse each `data:` line. Unlike EventSource, fetch
// lets us send `Last-Event-ID` as a header on the first request after a reload.
//
// Exact resume: the rendered state of the open run and the id of the last event
// folded into it are saved together, in one sessionStorage write, after each chunk.
// A reload restores that snapshot and asks for the events after its id, so every
// event is rendered exactly once whenever the page dies.
"use strict";

(() => {
  // Relative to the page, so it works wherever Runstream is mounted (/, /agents/, ...).
  const API = "api";
  const STORE = {
    session: "runstream.session", // this tab's session id
    run: "runstream.run", // {jobId, lastEventId, ...rendered state} of the open run
    apiKey: "runstream.apiKey", // the API key typed into this tab, if the API wants one
  };
  // Job statuses come from statuses.js (generated from the server's enum).
  const S = JOB_STATUS;
  const TERMINAL = new Set(TERMINAL_STATUSES);
  // "idle" is the page's own state (no run open), not a job's.
  const STATUS_LABEL = {
    idle: "idle", [S.PENDING]: "queued", [S.RUNNING]: "running", [S.PAUSED]: "waiting for you",
    [S.COMPLETED]: "completed", [S.FAILED]: "failed", [S.CANCELLED]: "cancelled",
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    runs: $("runs"), runsEmpty: $("runs-empty"), sessionId: $("session-id"), newRun: $("new-run"),
    runLabel: $("run-label"), streamState: $("stream-state"), attempt: $("attempt"),
    status: $("status"), stop: $("stop"), thread: $("thread"), empty: $("empty"), run: $("run"),
    message: $("message"), notice: $("notice"), activity: $("activity"), answer: $("answer"),
    outcome: $("outcome"), composer: $("composer"), prompt: $("prompt"), send: $("send"),
    composerError: $("composer-error"), keyForm: $("key-form"), apiKey: $("api-key"),
    keySet: $("key-set"), forgetKey: $("forget-key"), agent: $("agent"),
  };

  // ---- identity and auth ---------------------------------------------------------

  // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
  function uuid4() {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // An API key is typed into the page and kept in sessionStorage: this tab only,
  // gone when the tab closes. Never in localStorage (kept on disk, shared by every
  // tab) nor in a URL (history, server logs, referrers). A `?key=` of an old link
  // is not used, only taken out of the address bar, and a key older versions of
  // this page left in localStorage is deleted.
  const url = new URL(location.href);
  localStorage.removeItem(STORE.apiKey);
  if (url.searchParams.has("key")) {
    url.searchParams.delete("key");
    history.replaceState(null, "", url);
  }
  function authHeaders() {
    const key = sessionStorage.getItem(STORE.apiKey);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function showKeyState() {
    const hasKey = Boolean(sessionStorage.getItem(STORE.apiKey));
    el.keySet.hidden = !hasKey;
    if (hasKey) el.keyForm.hidden = true;
  }

  // The API answered 401: no key, or a wrong one.
  function askForKey() {
    if (!el.keyForm.hidden) return; // already asking
    const refused = Boolean(sessionStorage.getItem(STORE.apiKey));
    sessionStorage.removeItem(STORE.apiKey);
    showKeyState();
    el.keyForm.hidden = false;
    showError(refused ? "That API key was refused: enter another one." : "This Runstream needs an API key: enter it on the left.");
    el.apiKey.focus();
  }

  let sessionId = sessionStorage.getItem(STORE.session);
  const freshTab = !sessionId;
  if (!sessionId) {
    sessionId = uuid4();
    sessionStorage.setItem(STORE.session, sessionId);
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json", ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(API + path, {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await res.json().catch(() => null);
    if (res.status === 401) askForKey();
    if (!res.ok) throw new ApiError(res.status, data?.error?.message || `HTTP ${res.status}`);
    return data;
  }

  // ---- the open run: state, events, persistence ------------------------------------

  function newView(jobId, job = {}) {
    return {
      jobId,
      lastEventId: -1,
      message: job.message ?? "",
      status: job.status ?? S.PENDING,
      attempt: job.attempt ?? 0,
      items: [], // reasoning blocks and tool calls, in arrival order
      answer: "",
      notice: null, // {attempt, reason} after a retry event
      error: null,
      ended: false, // the terminal event has been rendered
    };
  }

  let view = null; // the run on screen
  let generation = 0; // bumped when another run opens: an older stream loop stops
  let controller = null; // aborts the open run's fetch

  function loadSaved() {
    try {
      return JSON.parse(sessionStorage.getItem(STORE.run) || "null");
    } catch {
      return null;
    }
  }

  // One setItem holds both the rendered state and its last event id, so they
  // can never disagree, whenever the tab is closed or reloaded.
  function persist() {
    if (view) sessionStorage.setItem(STORE.run, JSON.stringify(view));
    else sessionStorage.removeItem(STORE.run);
  }

  function note(role, label, text, done) {
    return { kind: "note", role, label, text, done };
  }

  function memberLabel(ev) {
    return ev.step ? `${ev.member ?? "member"} · ${ev.step}` : ev.member ?? "member";
  }

  // A member run's note, by run id (created if its start was not seen).
  function memberNote(v, ev) {
    let n = v.items.find((it) => it.kind === "note" && it.role === "member" && it.runId === (ev.run_id ?? null));
    if (!n) {
      n = { ...note("member", memberLabel(ev), "", false), runId: ev.run_id ?? null };
      v.items.push(n);
    }
    return n;
  }

  function addToolCall(v, ev, name) {
    v.items.push({ kind: "tool", callId: ev.call_id ?? null, name, argument: ev.argument ?? "", output: null });
  }

  function addToolResult(v, ev) {
    // Paired by call_id; a result without one goes to the newest open call.
    const open = v.items.filter((it) => it.kind === "tool" && it.output === null);
    const call = open.reverse().find((it) => ev.call_id == null || it.callId === ev.call_id);
    if (call) call.output = ev.output ?? "";
    else v.items.push({ kind: "tool", callId: ev.call_id ?? null, name: "tool", argument: "", output: ev.output ?? "" });
  }

  function applyEvent(v, id, ev) {
    switch (ev.type) {
      case "text_delta":
        v.answer += ev.delta ?? "";
        break;
      case "reasoning": {
        // Reasoning streams in pieces: consecutive pieces form one block.
        const last = v.items[v.items.length - 1];
        if (last && last.kind === "reasoning") last.text += ev.text ?? "";
        else v.items.push({ kind: "reasoning", text: ev.text ?? "" });
        break;
      }
      case "tool_call":
        addToolCall(v, ev, ev.tool_name ?? "tool");
        break;
      case "tool_result":
        addToolResult(v, ev);
        break;
      // Additive types (docs/events.md): what a team's members and a workflow's
      // steps do, and a structured answer. Shown as notes beside the answer.
      case "delegation":
        v.items.push(note("delegation", `Delegated to ${ev.member ?? "the team"}`, ev.task ?? "", true));
        break;
      case "member_started":
        v.items.push({ ...note("member", memberLabel(ev), "", false), runId: ev.run_id ?? null });
        break;
      case "member_delta":
        memberNote(v, ev).text += ev.delta ?? "";
        break;
      case "member_completed": {
        const n = memberNote(v, ev);
        n.text = ev.content || n.text;
        n.done = true;
        break;
      }
      case "member_error": {
        const n = memberNote(v, ev);
        n.text += `\n${ev.message ?? "failed"}`;
        n.done = true;
        break;
      }
      case "member_tool_call":
        addToolCall(v, ev, `${ev.member ?? "member"} · ${ev.tool_name ?? "tool"}`);
        break;
      case "member_tool_result":
        addToolResult(v, ev);
        break;
      case "step_started":
        v.items.push({ ...note("step", `Step ${(ev.index ?? 0) + 1} · ${ev.step ?? ""}`, "", false), step: ev.step });
        break;
      case "step_completed": {
        const n = v.items.find((it) => it.kind === "note" && it.role === "step" && it.step === ev.step && !it.done);
        if (n) {
          n.text = ev.content ?? "";
          n.done = true;
        }
        break;
      }
      case "output":
        v.items.push(note("output", "Structured output", JSON.stringify(ev.content, null, 2), true));
        break;
      // Human in the loop: the run waits for answers (POST /jobs/{id}/continue).
      case "input_required":
        v.items.push({ kind: "request", eventId: id, requirements: ev.requirements ?? [], answers: null });
        v.status = S.PAUSED;
        break;
      case "input_received": {
        const open = v.items.filter((it) => it.kind === "request" && it.answers === null).pop();
        if (open) open.answers = ev.answers ?? [];
        v.status = S.RUNNING;
        break;
      }
      case "retry":
        // A new attempt starts from scratch: what the failed one produced is discarded.
        v.items = [];
        v.answer = "";
        v.attempt = ev.attempt ?? v.attempt + 1;
        v.notice = { attempt: v.attempt, reason: ev.reason ?? "" };
        v.status = S.RUNNING;
        break;
      case "done":
        v.status = ev.status === S.CANCELLED ? S.CANCELLED : S.COMPLETED;
        v.ended = true;
        break;
      case "error":
        v.status = S.FAILED;
        v.error = ev.message ?? "the run failed";
        v.ended = true;
        break;
      default:
        break; // an event type this page does not know: skip it, keep the id
    }
    if (!v.ended && v.status === S.PENDING) v.status = S.RUNNING;
    v.lastEventId = id;
  }

  // One SSE block → {id, data}, or null for comments, `retry:` and empty blocks.
  function parseBlock(block) {
    let id = null;
    let data = null;
    for (const line of block.split("\n")) {
      if (line.startsWith("id:")) id = Number.parseInt(line.slice(3).trim(), 10);
      else if (line.startsWith("data:")) data = line.slice(5).trim();
    }
    if (data === null || id === null || Number.isNaN(id)) return null;
    return { id, data: JSON.parse(data) };
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function follow(gen) {
    let backoff = 500;
    while (gen === generation && view && !view.ended) {
      const ctrl = new AbortController();
      controller = ctrl;
      setStream(view.lastEventId >= 0 ? "resuming" : "connecting");
      try {
        const headers = { Accept: "text/event-stream", ...authHeaders() };
        // The header, as EventSource sends it on reconnect; the server starts after it.
        if (view.lastEventId >= 0) headers["Last-Event-ID"] = String(view.lastEventId);
        const res = await fetch(`${API}/jobs/${encodeURIComponent(view.jobId)}/events`, {
          headers, signal: ctrl.signal, cache: "no-store",
        });
        if (res.status === 404) return notFound();
        if (res.status === 401) askForKey();
        if (!res.ok) throw new ApiError(res.status, `HTTP ${res.status}`);
        setStream("live");
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done || gen !== generation) break;
          buffer += value;
          const blocks = buffer.split("\n\n");
          buffer = blocks.pop(); // an incomplete block waits for the next chunk
          let changed = false;
          try {
            for (const block of blocks) {
              const frame = parseBlock(block);
              if (!frame || frame.id <= view.lastEventId) continue; // already rendered
              if (frame.id !== view.lastEventId + 1) {
                // Ids are gap-free; a gap means something was lost: ask again from ours.
                throw new Error(`event ${frame.id} after ${view.lastEventId}`);
              }
              applyEvent(view, frame.id, frame.data);
              changed = true;
            }
          } finally {
            if (changed) {
              persist();
              scheduleRender();
            }
          }
          backoff = 500;
          if (view.ended) break;
        }
        ctrl.abort();
      } catch (err) {
        if (gen !== generation) return;
        if (err instanceof ApiError && err.status === 400) return notFound();
        console.warn("runstream: stream interrupted, resuming", err);
      }
      if (gen !== generation) return;
      if (view.ended) break;
      // The server ended the response without a terminal event (restart, network):
      // reconnect from the last rendered event.
      setStream("reconnecting");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 8000);
    }
    if (gen === generation && view?.ended) {
      setStream("ended");
      refreshStatus(gen);
      loadRuns();
    }
  }

  async function refreshStatus(gen) {
    try {
      const job = await api(`/jobs/${encodeURIComponent(view.jobId)}`);
      if (gen !== generation) return;
      view.message = job.message;
      view.attempt = Math.max(view.attempt, job.attempt);
      // The event log decides the end: the row may say "completed" while the last
      // events are still on their way, and the page must not claim it before it
      // has rendered them.
      if (!view.ended && !TERMINAL.has(job.status)) view.status = job.status;
      if (freshTab && !adopted && job.session_id && !loadedRuns) adoptSession(job.session_id);
      persist();
      scheduleRender();
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 400)) notFound();
    }
  }

  function notFound() {
    generation += 1;
    view = null;
    persist();
    setUrlJob(null);
    render();
    showError("That run does not exist (or is not yours).");
  }

  // A tab opened on someone's run link (/?job=…) joins that run's session, so its
  // sidebar shows the conversation the run belongs to.
  let adopted = false;
  function adoptSession(id) {
    adopted = true;
    if (id === sessionId) return;
    sessionId = id;
    sessionStorage.setItem(STORE.session, id);
    showSession();
    loadRuns();
  }

  function showSession() {
    el.sessionId.textContent = sessionId.slice(0, 8);
    el.sessionId.title = sessionId;
  }

  function openRun(jobId, job) {
    generation += 1;
    controller?.abort();
    const saved = loadSaved();
    // Reopening the run this tab was showing: continue from the saved snapshot.
    view = saved && saved.jobId === jobId ? saved : newView(jobId, job);
    persist();
    setUrlJob(jobId);
    showError(null);
    render();
    const gen = generation;
    refreshStatus(gen);
    if (view.ended) setStream("ended");
    else follow(gen);
    highlightRuns();
  }

  function closeRun() {
    generation += 1;
    controller?.abort();
    view = null;
    persist();
    setUrlJob(null);
    render();
    el.prompt.focus();
  }

  function setUrlJob(jobId) {
    const next = new URL(location.href);
    if (jobId) next.searchParams.set("job", jobId);
    else next.searchParams.delete("job");
    if (next.href !== location.href) history.replaceState(null, "", next);
  }

  // ---- actions ------------------------------------------------------------------

  async function send(message) {
    showError(null);
    el.send.disabled = true;
    try {
      const body = { message, session_id: sessionId };
      if (el.agent.value) body.agent = el.agent.value;
      const job = await api("/jobs", { method: "POST", body });
      sessionStorage.removeItem(STORE.run);
      el.prompt.value = "";
      autosize();
      openRun(job.job_id, job);
      loadRuns();
    } catch (err) {
      showError(`Could not start the run: ${err.message}`);
    } finally {
      updateComposer();
    }
  }

  async function stop() {
    if (!view || view.ended) return;
    el.stop.disabled = true;
    el.stop.dataset.state = "stopping";
    try {
      await api(`/jobs/${encodeURIComponent(view.jobId)}/cancel`, { method: "POST" });
      // The `done` event with status cancelled ends the stream and the run.
    } catch (err) {
      el.stop.disabled = false;
      delete el.stop.dataset.state;
      showError(`Could not stop the run: ${err.message}`);
    }
  }

  // ---- the session's runs --------------------------------------------------------

  let loadedRuns = false;
  let runsRequest = 0;

  async function loadRuns() {
    const mine = ++runsRequest;
    try {
      const data = await api(`/jobs?session_id=${encodeURIComponent(sessionId)}&limit=50`);
      if (mine !== runsRequest) return; // a newer list is on its way
      loadedRuns = data.jobs.length > 0;
      renderRuns(data.jobs);
    } catch (err) {
      console.warn("runstream: cannot list runs", err);
    }
  }

  function renderRuns(jobs) {
    el.runs.replaceChildren(
      ...jobs.map((job) => {
        const li = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "run-item";
        button.dataset.role = "run-item";
        button.dataset.jobId = job.job_id;
        button.dataset.status = job.status;
        const title = document.createElement("span");
        title.className = "run-item-title";
        title.textContent = job.message;
        const meta = document.createElement("span");
        meta.className = "run-item-meta";
        const dot = document.createElement("span");
        dot.className = "dot";
        dot.dataset.status = job.status;
        meta.append(dot, `${STATUS_LABEL[job.status] ?? job.status} · ${ago(job.created_at)}`);
        button.append(title, meta);
        button.addEventListener("click", () => openRun(job.job_id, job));
        li.append(button);
        return li;
      }),
    );
    el.runsEmpty.hidden = jobs.length > 0;
    highlightRuns();
  }

  function highlightRuns() {
    for (const item of el.runs.querySelectorAll("[data-role=run-item]")) {
      item.classList.toggle("active", item.dataset.jobId === view?.jobId);
      if (item.dataset.jobId === view?.jobId && TERMINAL.has(view.status) && view.ended) {
        item.dataset.status = view.status;
        item.querySelector(".dot").dataset.status = view.status;
      }
    }
  }

  function ago(iso) {
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 45) return "just now";
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(iso).toLocaleDateString();
  }

  // ---- rendering -----------------------------------------------------------------

  let frameRequested = false;
  function scheduleRender() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => {
      frameRequested = false;
      render();
    });
  }

  function setStream(state) {
    el.run.dataset.stream = state;
    const label = { connecting: "connecting…", resuming: "resuming…", live: "live", reconnecting: "reconnecting…" };
    el.streamState.textContent = label[state] ?? "";
    el.streamState.dataset.state = state;
  }

  function render() {
    const v = view;
    el.empty.hidden = !!v;
    el.run.hidden = !v;
    const status = v ? v.status : "idle";
    el.status.dataset.status = status;
    el.status.textContent = STATUS_LABEL[status] ?? status;
    if (!v) {
      el.runLabel.textContent = "No run open";
      el.attempt.hidden = true;
      el.stop.hidden = true;
      setStream("idle");
      highlightRuns();
      updateComposer();
      return;
    }
    const nearBottom = el.thread.scrollHeight - el.thread.scrollTop - el.thread.clientHeight < 80;

    el.runLabel.textContent = `Run ${v.jobId.slice(0, 8)}`;
    el.runLabel.title = v.jobId;
    el.run.dataset.jobId = v.jobId;
    el.run.dataset.lastEventId = String(v.lastEventId);
    el.attempt.hidden = !(v.attempt >= 1);
    el.attempt.textContent = `attempt ${v.attempt}`;
    el.attempt.dataset.attempt = String(v.attempt);
    el.stop.hidden = v.ended || TERMINAL.has(v.status);
    if (el.stop.hidden) {
      el.stop.disabled = false;
      delete el.stop.dataset.state;
    }
    el.message.textContent = v.message;

    el.notice.hidden = !v.notice;
    if (v.notice) {
      el.notice.textContent =
        `Attempt ${v.notice.attempt} started after a transient error` +
        (v.notice.reason ? ` (${v.notice.reason})` : "") + ". The partial answer was discarded.";
    }

    renderActivity(v.items);

    el.answer.textContent = v.answer;
    el.answer.classList.toggle("streaming", !v.ended);
    el.answer.classList.toggle("waiting", !v.ended && !v.answer && v.items.length === 0);

    el.outcome.hidden = !v.ended;
    el.outcome.dataset.kind = v.ended ? v.status : "";
    if (v.ended) {
      el.outcome.textContent = {
        [S.COMPLETED]: "Completed",
        [S.CANCELLED]: "Stopped. The run was cancelled.",
        [S.FAILED]: `Failed: ${v.error ?? "the run failed"}`,
      }[v.status];
    }
    highlightRuns();
    updateComposer();
    if (nearBottom) el.thread.scrollTop = el.thread.scrollHeight;
  }

  // Items are appended or updated, never reordered: reuse their nodes, so a
  // reasoning block the user folded stays folded while the run streams on.
  function renderActivity(items) {
    const box = el.activity;
    items.forEach((item, i) => {
      let node = box.children[i];
      if (!node || node.dataset.kind !== item.kind) {
        const fresh =
          item.kind === "reasoning" ? reasoningNode()
          : item.kind === "note" ? noteNode()
          : item.kind === "request" ? requestNode(item)
          : toolNode();
        if (node) box.replaceChild(fresh, node);
        else box.append(fresh);
        node = fresh;
      }
      if (item.kind === "reasoning") {
        node.querySelector(".reasoning-text").textContent = item.text;
      } else if (item.kind === "request") {
        updateRequest(node, item);
      } else if (item.kind === "note") {
        node.dataset.note = item.role;
        node.dataset.state = item.done ? "done" : "running";
        node.querySelector("[data-role=note-label]").textContent = item.label;
        node.querySelector("[data-role=note-state]").textContent = item.done ? "" : "running…";
        node.querySelector("[data-role=note-text]").textContent = item.text;
      } else {
        updateTool(node, item);
      }
    });
    while (box.children.length > items.length) box.lastElementChild.remove();
  }

  function reasoningNode() {
    const d = document.createElement("details");
    d.className = "reasoning";
    d.dataset.kind = "reasoning";
    d.dataset.role = "reasoning";
    d.open = true;
    const s = document.createElement("summary");
    s.textContent = "Reasoning";
    const t = document.createElement("div");
    t.className = "reasoning-text";
    d.append(s, t);
    return d;
  }

  function noteNode() {
    const d = document.createElement("details");
    d.className = "tool note";
    d.dataset.kind = "note";
    d.dataset.role = "note";
    d.open = true;
    d.innerHTML =
      '<summary><span class="tool-name" data-role="note-label"></span>' +
      '<span class="tool-state" data-role="note-state"></span></summary>' +
      '<pre class="tool-result" data-role="note-text"></pre>';
    return d;
  }

  function toolNode() {
    const d = document.createElement("details");
    d.className = "tool";
    d.dataset.kind = "tool";
    d.dataset.role = "tool-call";
    d.open = true;
    d.innerHTML =
      '<summary><span class="tool-icon" aria-hidden="true"></span>' +
      '<span class="tool-name" data-role="tool-name"></span>' +
      '<span class="tool-state" data-role="tool-state"></span></summary>' +
      '<div class="tool-body"><div class="tool-label">Arguments</div>' +
      '<pre class="tool-args" data-role="tool-args"></pre>' +
      '<div class="tool-label tool-result-label">Result</div>' +
      '<pre class="tool-result" data-role="tool-result"></pre></div>';
    return d;
  }

  function updateTool(node, item) {
    node.dataset.callId = item.callId ?? "";
    node.dataset.state = item.output === null ? "running" : "done";
    node.querySelector("[data-role=tool-name]").textContent = item.name;
    node.querySelector("[data-role=tool-state]").textContent = item.output === null ? "running…" : "done";
    node.querySelector("[data-role=tool-args]").textContent = prettyJson(item.argument);
    const done = item.output !== null;
    node.querySelector(".tool-result-label").hidden = !done;
    const result = node.querySelector("[data-role=tool-result]");
    result.hidden = !done;
    result.textContent = done ? prettyJson(item.output) : "";
  }

  // A paused run's requirements: Approve / Reject for a confirmation, a form for
  // user input, a result box for an external execution. The answers go out
  // together once every requirement has one.
  const KIND_LABEL = {
    confirmation: "Needs your approval",
    user_input: "Needs your input",
    external_execution: "Needs a result from you",
  };

  function requestNode(item) {
    const box = document.createElement("section");
    box.className = "request";
    box.dataset.kind = "request";
    box.dataset.role = "input-request";
    box.dataset.eventId = String(item.eventId);
    const chosen = {}; // requirement id → answer, until all are given
    for (const req of item.requirements) {
      const part = document.createElement("div");
      part.className = "requirement";
      part.dataset.role = "requirement";
      part.dataset.requirementId = req.id;
      part.dataset.requirementKind = req.kind;
      const head = document.createElement("div");
      head.className = "requirement-head";
      head.textContent = `${KIND_LABEL[req.kind] ?? "Needs you"}: ${req.tool_name ?? "tool"}`;
      const args = document.createElement("pre");
      args.className = "tool-args";
      args.textContent = JSON.stringify(req.tool_args ?? {}, null, 2);
      const controls = document.createElement("div");
      controls.className = "requirement-controls";
      const give = (answer) => {
        chosen[req.id] = { id: req.id, ...answer };
        part.dataset.state = "chosen";
        if (item.requirements.every((r) => chosen[r.id])) answerRun(box, item, Object.values(chosen));
      };
      if (req.kind === "confirmation") {
        const noteInput = input("note", "Note (optional)");
        const approve = button("Approve", "approve", () => give({ confirmed: true }));
        const reject = button("Reject", "reject", () => give({ confirmed: false, note: noteInput.value || null }));
        controls.append(approve, reject, noteInput);
      } else if (req.kind === "user_input") {
        const inputs = (req.fields ?? []).map((f) => {
          const field = input(`field-${f.name}`, f.description ? `${f.name}: ${f.description}` : f.name);
          field.dataset.field = f.name;
          field.dataset.type = f.type;
          return field;
        });
        const submit = button("Send", "send-input", () => {
          const values = {};
          for (const field of inputs) values[field.dataset.field] = typed(field.value, field.dataset.type);
          give({ values });
        });
        controls.append(...inputs, submit);
      } else {
        const result = document.createElement("textarea");
        result.dataset.role = "external-result";
        result.placeholder = "What came of it";
        const submit = button("Send result", "send-result", () => give({ result: result.value }));
        controls.append(result, submit);
      }
      const outcome = document.createElement("div");
      outcome.className = "requirement-outcome";
      outcome.dataset.role = "requirement-outcome";
      part.append(head, args, controls, outcome);
      box.append(part);
    }
    const error = document.createElement("div");
    error.className = "request-error";
    error.dataset.role = "request-error";
    error.hidden = true;
    box.append(error);
    return box;
  }

  function input(role, placeholder) {
    const field = document.createElement("input");
    field.type = "text";
    field.dataset.role = role;
    field.placeholder = placeholder;
    return field;
  }

  function button(label, role, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.role = role;
    b.addEventListener("click", onClick);
    return b;
  }

  // A field's text as the JSON value its declared type takes.
  function typed(text, type) {
    if (type === "int") return Number.parseInt(text, 10);
    if (type === "float") return Number.parseFloat(text);
    if (type === "bool") return text === "true" || text === "yes";
    return text;
  }

  async function answerRun(box, item, answers) {
    const error = box.querySelector("[data-role=request-error]");
    for (const b of box.querySelectorAll("button")) b.disabled = true;
    try {
      await api(`/jobs/${encodeURIComponent(view.jobId)}/continue`, { method: "POST", body: { answers } });
      error.hidden = true;
      // The stream, still open, brings input_received and the rest of the answer.
    } catch (err) {
      error.hidden = false;
      error.textContent = `Could not send the answer: ${err.message}`;
      for (const b of box.querySelectorAll("button")) b.disabled = false;
      for (const part of box.querySelectorAll("[data-role=requirement]")) delete part.dataset.state;
    }
  }

  function updateRequest(node, item) {
    const answered = item.answers !== null;
    node.dataset.state = answered ? "answered" : view?.ended ? "closed" : "waiting";
    for (const part of node.querySelectorAll("[data-role=requirement]")) {
      const answer = (item.answers ?? []).find((a) => a.id === part.dataset.requirementId);
      part.querySelector(".requirement-controls").hidden = answered || !!view?.ended;
      const outcome = part.querySelector("[data-role=requirement-outcome]");
      outcome.textContent = !answer ? (view?.ended ? "Not answered." : "")
        : answer.kind === "confirmation" ? (answer.confirmed ? "Approved" : `Rejected${answer.note ? `: ${answer.note}` : ""}`)
        : answer.kind === "user_input" ? `Answered: ${JSON.stringify(answer.values)}`
        : `Result: ${answer.result}`;
    }
  }

  function prettyJson(text) {
    try {
      const value = JSON.parse(text);
      return typeof value === "object" && value !== null ? JSON.stringify(value, null, 2) : String(text);
    } catch {
      return String(text);
    }
  }

  function showError(message) {
    el.composerError.hidden = !message;
    el.composerError.textContent = message ?? "";
  }

  // ---- composer -----------------------------------------------------------------

  function updateComposer() {
    el.send.disabled = !el.prompt.value.trim();
  }

  function autosize() {
    el.prompt.style.height = "auto";
    el.prompt.style.height = `${Math.min(el.prompt.scrollHeight, 200)}px`;
  }

  el.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const message = el.prompt.value.trim();
    if (message) send(message);
  });
  el.prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      el.composer.requestSubmit();
    }
  });
  el.prompt.addEventListener("input", () => {
    autosize();
    updateComposer();
  });
  el.keyForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const key = el.apiKey.value.trim();
    el.apiKey.value = "";
    if (!key) return;
    sessionStorage.setItem(STORE.apiKey, key);
    showKeyState();
    showError(null);
    loadRuns();
    if (view && !view.ended) openRun(view.jobId);
    el.prompt.focus();
  });
  el.forgetKey.addEventListener("click", () => {
    sessionStorage.removeItem(STORE.apiKey);
    showKeyState();
    el.keyForm.hidden = false;
  });
  el.stop.addEventListener("click", stop);
  el.newRun.addEventListener("click", closeRun);
  for (const s of document.querySelectorAll(".suggestion")) {
    s.addEventListener("click", () => {
      el.prompt.value = s.textContent;
      autosize();
      updateComposer();
      el.prompt.focus();
    });
  }

  // The agents this deployment serves (GET /api/agents); the picker stays hidden
  // when there is only one, and an empty value means the default agent.
  async function loadAgents() {
    try {
      const { agents } = await api("/agents");
      if (agents.length < 2) return;
      for (const a of agents) {
        const option = document.createElement("option");
        option.value = a.default ? "" : a.name;
        option.textContent = a.kind ? `${a.name} (${a.kind})` : a.name;
        if (a.description) option.title = a.description;
        if (a.default) el.agent.prepend(option);
        else el.agent.append(option);
      }
      el.agent.value = "";
      el.agent.hidden = false;
    } catch (err) {
      console.warn("runstream: no agent list", err);
    }
  }

  // ---- start ---------------------------------------------------------------------

  showSession();
  showKeyState();
  loadAgents();
  const linked = url.searchParams.get("job");
  const saved = loadSaved();
  if (linked) openRun(linked);
  else if (saved?.jobId) openRun(saved.jobId);
  else render();
  loadRuns();
  el.prompt.focus();
})();
