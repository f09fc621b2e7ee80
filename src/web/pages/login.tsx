/** `/login`: trade an API token for a session cookie. The token goes in a POST body only. */
import { useState } from "preact/hooks";
import type { Api } from "../api.ts";

export function LoginPage({ api }: { api: Api }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api.signIn(token.trim());
      setToken("");
      location.assign("/");
    } catch (err) {
      setError((err as Error).message);
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <h1>Delta CI</h1>
      <form onSubmit={(e) => void submit(e)}>
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="off" spellcheck={false} required value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
        <p class="hint">The server's API token (<code>&lt;data dir&gt;/api-token</code>). It is sent once and kept by the server, not the browser.</p>
        <button type="submit" disabled={busy}>Sign in</button>
        {error && <p role="alert" class="error">{error}</p>}
      </form>
    </main>
  );
}
