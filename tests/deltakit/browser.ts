// What a browser page has and Node lacks, for the parts the chat uses: sessionStorage,
// and fetch as a page on another origin sees it (CORS enforced: a preflight for
// non-simple requests, and a TypeError, like a browser's, when the API does not allow
// the page's origin). Node's own fetch does the network I/O.

export type BrowserLog = { preflights: number; refused: string[]; unhandled: string[] };

class MemoryStorage {
  private items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, String(value));
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}

const SAFELISTED_HEADERS = new Set(["accept", "accept-language", "content-language", "content-type"]);
const SIMPLE_CONTENT_TYPES = new Set(["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]);
const SIMPLE_METHODS = new Set(["GET", "HEAD", "POST"]);

function listHeader(response: Response, name: string): string[] {
  return (response.headers.get(name) ?? "").split(",").map((item) => item.trim().toLowerCase()).filter(Boolean);
}

export function installBrowser(pageOrigin: string): BrowserLog {
  const log: BrowserLog = { preflights: 0, refused: [], unhandled: [] };
  const networkFetch = globalThis.fetch;

  const allowsOrigin = (response: Response) => response.headers.get("access-control-allow-origin") === pageOrigin;
  const refuse = (url: URL, why: string): never => {
    log.refused.push(`${url.pathname}: ${why}`);
    throw new TypeError("Failed to fetch");
  };

  globalThis.fetch = async (input: string | URL | Request, init: RequestInit = {}) => {
    const url = new URL(String(input));
    if (url.origin === pageOrigin) return networkFetch(url, init);
    const method = (init.method ?? "GET").toUpperCase();
    const headers = new Headers(init.headers);
    const unsafe = [...headers.entries()]
      .filter(([name, value]) =>
        name === "content-type"
          ? !SIMPLE_CONTENT_TYPES.has(value.split(";")[0].trim().toLowerCase())
          : !SAFELISTED_HEADERS.has(name),
      )
      .map(([name]) => name)
      .sort();
    if (!SIMPLE_METHODS.has(method) || unsafe.length > 0) {
      const preflight = await networkFetch(url, {
        method: "OPTIONS",
        headers: {
          Origin: pageOrigin,
          "Access-Control-Request-Method": method,
          ...(unsafe.length > 0 ? { "Access-Control-Request-Headers": unsafe.join(",") } : {}),
        },
        signal: init.signal,
      });
      await preflight.arrayBuffer();
      if (!preflight.ok || !allowsOrigin(preflight)) refuse(url, `preflight ${preflight.status}, origin not allowed`);
      const methods = listHeader(preflight, "access-control-allow-methods");
      if (!SIMPLE_METHODS.has(method) && !methods.includes(method.toLowerCase())) refuse(url, `method ${method}`);
      const allowed = listHeader(preflight, "access-control-allow-headers");
      const missing = unsafe.filter((name) => !allowed.includes(name));
      if (missing.length > 0) refuse(url, `headers ${missing.join(",")}`);
      log.preflights += 1;
    }
    headers.set("Origin", pageOrigin);
    const response = await networkFetch(url, { ...init, headers });
    if (!allowsOrigin(response)) {
      await response.body?.cancel();
      refuse(url, `response ${response.status} without Access-Control-Allow-Origin`);
    }
    return response;
  };

  Object.defineProperty(globalThis, "sessionStorage", { value: new MemoryStorage() });
  // A browser logs a rejected promise nobody awaited (stop()'s cancel POST is one); Node would exit.
  process.on("unhandledRejection", (reason) => {
    log.unhandled.push(String(reason));
  });
  return log;
}
