/**
 * The browser's side of `/web/api`: JSON reads, CSRF-carrying writes, server-push
 * subscriptions. The session is an HttpOnly cookie the page never sees; a 401 goes to /login.
 */
export class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

async function errorOf(r: Response): Promise<ApiError> {
  try {
    const body = (await r.json()) as { error?: { message?: string } };
    return new ApiError(r.status, body.error?.message ?? r.statusText);
  } catch {
    return new ApiError(r.status, r.statusText);
  }
}

export class Api {
  private csrf: string | null = null;

  async get<T>(path: string): Promise<T> {
    const r = await fetch(path, { credentials: "same-origin", headers: { accept: "application/json" } });
    if (r.status === 401) this.toLogin();
    if (!r.ok) throw await errorOf(r);
    return (await r.json()) as T;
  }

  /** A state-changing request: JSON body, same origin, with the session's CSRF token. */
  async post<T>(path: string, body: unknown): Promise<T | null> {
    this.csrf ??= (await this.get<{ csrf: string }>("/web/api/session")).csrf;
    const r = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", accept: "application/json", "x-deltaci-csrf": this.csrf },
      body: JSON.stringify(body),
    });
    if (r.status === 401) this.toLogin();
    if (!r.ok) throw await errorOf(r);
    return r.status === 204 ? null : ((await r.json()) as T);
  }

  /** Server push: `onData` gets each `event`'s JSON; returns the unsubscribe. */
  subscribe<T>(path: string, event: string, onData: (data: T) => void, onState?: (live: boolean) => void): () => void {
    const es = new EventSource(path, { withCredentials: true });
    es.addEventListener(event, (e) => onData(JSON.parse((e as MessageEvent<string>).data) as T));
    es.addEventListener("open", () => onState?.(true));
    es.addEventListener("error", () => {
      onState?.(false);
      // A closed stream after a sign-out or an expired session: check once, then go sign in.
      if (es.readyState === EventSource.CLOSED) void this.get("/web/api/session").catch(() => undefined);
    });
    return () => es.close();
  }

  async signIn(token: string): Promise<void> {
    const r = await fetch("/web/session", {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ token }),
    });
    if (!r.ok) throw await errorOf(r);
    this.csrf = ((await r.json()) as { csrf: string }).csrf;
  }

  async signOut(): Promise<void> {
    await this.post("/web/session/end", {});
    this.csrf = null;
  }

  private toLogin(): never {
    location.assign("/login");
    throw new ApiError(401, "not signed in");
  }
}
