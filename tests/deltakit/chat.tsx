import { fromAgnoAgents, type Message, useStreamChat } from "@deltakit/react";
import { useEffect, useRef, useState } from "react";
import { API_KEY, API_URL } from "./config"; // ".../api/chat-agno-background-task/" and a tenant's key

const auth = { Authorization: `Bearer ${API_KEY}` };

// The run this tab follows, with the cancel URL its stream token opens: stop()
// POSTs cancelApi with no headers, so the key cannot go there but the token can.
// sessionStorage keeps both across a reload.
const RUN_KEY = "chat-background-run";
type SavedRun = { id: string; cancelUrl: string };
const savedRun = (): SavedRun | null => JSON.parse(sessionStorage.getItem(RUN_KEY) ?? "null");

export function Chat() {
  const [history, setHistory] = useState<Message[] | null>(null);
  const [resume, setResume] = useState<string | null>(null);

  useEffect(() => {
    fetch(API_URL, { headers: auth })
      .then((response) => response.json())
      .then((messages: Array<{ job_id?: string; in_progress?: boolean }>) => {
        // Resume the saved run only while the history says it is in progress
        // (its question comes marked so); a run that ended meanwhile is in the history.
        const saved = savedRun();
        const live = messages.some((m) => m.in_progress && m.job_id === saved?.id);
        if (!live) sessionStorage.removeItem(RUN_KEY);
        setResume(live ? saved!.id : null);
        setHistory(fromAgnoAgents(messages));
      })
      // No history (offline, refused): an empty page; the saved run waits for the next load.
      .catch(() => setHistory([]));
  }, []);

  return history ? <Conversation history={history} resume={resume} /> : <p>Loading…</p>;
}

function Conversation({ history, resume }: { history: Message[]; resume: string | null }) {
  const [activeRunId, setActiveRunId] = useState(resume);
  const [draft, setDraft] = useState("");
  const broken = useRef(false);

  const { messages, sendMessage, stop, isLoading, error } = useStreamChat({
    initialMessages: history,
    transport: "background-sse",
    transportOptions: {
      backgroundSSE: {
        startApi: `${API_URL}jobs`,
        startHeaders: auth,
        eventsApi: (id) => `${API_URL}jobs/${id}/events`,
        eventHeaders: auth,
        cancelApi: (id) => savedRun()?.cancelUrl ?? `${API_URL}jobs/${id}/cancel`,
        resolveRunId: (started) => {
          const { job_id, cancel_url } = started as { job_id: string; cancel_url: string };
          sessionStorage.setItem(RUN_KEY, JSON.stringify({ id: job_id, cancelUrl: cancel_url }));
          broken.current = false;
          return job_id;
        },
        runId: activeRunId,
        onRunIdChange: (id) => {
          // DeltaKit says null when the stream ends and when it breaks (a deploy past
          // its grace, a network drop): only the end forgets the run, so a reload resumes it.
          if (id === null && !broken.current) sessionStorage.removeItem(RUN_KEY);
          setActiveRunId(id);
        },
      },
    },
    onError: () => {
      broken.current = true;
    },
    onEvent: (event, { appendText }) => {
      if (event.type === "text_delta") appendText(event.delta);
    },
  });

  return (
    <main>
      {messages.map((message) => (
        <article key={message.id} data-role={message.role}>
          {message.parts.map((part) => (part.type === "text" ? part.text : "")).join("")}
        </article>
      ))}
      {isLoading && <p aria-busy="true">…</p>}
      {error && <p role="alert">The answer was interrupted. Reload the page to resume it.</p>}
      <form
        onSubmit={(event) => {
          event.preventDefault();
          sendMessage(draft);
          setDraft("");
        }}
      >
        <input value={draft} onChange={(event) => setDraft(event.target.value)} />
        <button type="submit" disabled={isLoading}>Send</button>
        <button type="button" onClick={stop} disabled={!isLoading}>Stop</button>
      </form>
    </main>
  );
}
