// Drives chat.tsx (DeltaKit's own useStreamChat, unmodified, from vendor/) in React's
// test renderer, as a user on a page from another origin would. One JSON command a
// line on stdin; one JSON answer a line on stdout, with what the page shows:
//   {"do": "mount"}                       open the page (history first, then resume)
//   {"do": "send", "text": "..."}         type a message and submit it
//   {"do": "wait_text", "chars": 20}      until the answer being written has that many characters
//   {"do": "wait_idle"}                   until nothing is loading and the last turn has an answer or an alert
//   {"do": "stop"}                        press Stop
//   {"do": "unmount"}                     leave the page (a reload is unmount + mount)
import { createInterface } from "node:readline";
import TestRenderer, { type ReactTestInstance, type ReactTestRenderer } from "react-test-renderer";
import { installBrowser } from "./browser";
import { Chat } from "./chat";

// Real network I/O drives the updates: the page is driven like a user drives it,
// not inside act() scopes (legacy mode renders each update as it happens).
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = false;

const PAGE_ORIGIN = process.env.RUNSTREAM_DELTAKIT_PAGE_ORIGIN as string;
const WAIT_MS = 30_000;
const browser = installBrowser(PAGE_ORIGIN);
let page: ReactTestRenderer | null = null;

type Shown = { role: string; text: string };

function textOf(node: ReactTestInstance | string): string {
  return typeof node === "string" ? node : node.children.map(textOf).join("");
}

function snapshot() {
  const root = page?.root;
  const find = (predicate: (node: ReactTestInstance) => boolean) => root?.findAll(predicate) ?? [];
  const messages: Shown[] = find((n) => n.type === "article").map((n) => ({
    role: n.props["data-role"],
    text: textOf(n),
  }));
  return {
    mounted: page !== null,
    loaded: find((n) => n.type === "main").length > 0,
    messages,
    loading: find((n) => n.type === "p" && n.props["aria-busy"] === "true").length > 0,
    alert: find((n) => n.type === "p" && n.props.role === "alert").map(textOf)[0] ?? null,
    saved_run: JSON.parse(sessionStorage.getItem("chat-background-run") ?? "null"),
    browser,
  };
}

async function until(what: string, done: (shown: ReturnType<typeof snapshot>) => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!done(snapshot())) {
    if (Date.now() > deadline) throw new Error(`not within ${WAIT_MS} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const lastAnswer = (shown: ReturnType<typeof snapshot>) => {
  const last = shown.messages[shown.messages.length - 1];
  return last?.role === "assistant" ? last.text : "";
};

function button(label: string): ReactTestInstance {
  return page!.root.find((n) => n.type === "button" && textOf(n) === label);
}

const commands: Record<string, (command: { text?: string; chars?: number }) => Promise<void>> = {
  async mount() {
    page = TestRenderer.create(<Chat />);
    await until("the history loaded", (shown) => shown.loaded);
  },
  async send({ text }) {
    page!.root.findByType("input").props.onChange({ target: { value: text } });
    page!.root.findByType("form").props.onSubmit({ preventDefault() {} });
  },
  async wait_text({ chars }) {
    await until(`${chars} characters of answer`, (shown) => lastAnswer(shown).length >= chars!);
  },
  async wait_idle() {
    await until("the run settled", (shown) => !shown.loading && (lastAnswer(shown) !== "" || shown.alert !== null));
  },
  async stop() {
    button("Stop").props.onClick();
  },
  async unmount() {
    page!.unmount();
    page = null;
  },
};

async function main() {
  for await (const line of createInterface({ input: process.stdin })) {
    const command = JSON.parse(line);
    try {
      await commands[command.do](command);
      console.log(JSON.stringify({ ok: true, page: snapshot() }));
    } catch (error) {
      console.log(JSON.stringify({ ok: false, error: String(error), page: snapshot() }));
    }
  }
  process.exit(0);
}

void main();
