/** The web view's entry: picks the page by path (the server answers every page route with this bundle). */
import { render, type ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { Api } from "./api.ts";
import { FleetPage } from "./pages/fleet.tsx";
import { JobPage } from "./pages/job.tsx";
import { JobsPage } from "./pages/jobs.tsx";
import { LoginPage } from "./pages/login.tsx";
import "./app.css";

function Layout(props: { api: Api; current: "jobs" | "fleet" | "job"; children: ComponentChildren }) {
  const [error, setError] = useState<string | null>(null);
  const signOut = async () => {
    try {
      await props.api.signOut();
      location.assign("/login");
    } catch (err) {
      setError(`Sign-out failed: ${(err as Error).message}`);
    }
  };
  return (
    <>
      <header class="top">
        <a class="brand" href="/">Delta CI</a>
        <nav aria-label="Main">
          <a href="/" aria-current={props.current === "jobs" ? "page" : undefined}>Jobs</a>
          <a href="/fleet" aria-current={props.current === "fleet" ? "page" : undefined}>Fleet</a>
        </nav>
        <button type="button" class="signout" onClick={() => void signOut()}>Sign out</button>
      </header>
      {error && <p role="alert" class="error">{error}</p>}
      <main>{props.children}</main>
    </>
  );
}

function App({ api }: { api: Api }) {
  const path = location.pathname;
  if (path === "/login") return <LoginPage api={api} />;
  const job = /^\/jobs\/([A-Za-z0-9_-]{1,128})$/.exec(path);
  if (job?.[1]) return <Layout api={api} current="job"><JobPage api={api} jobId={job[1]} /></Layout>;
  if (path === "/fleet") return <Layout api={api} current="fleet"><FleetPage api={api} /></Layout>;
  return <Layout api={api} current="jobs"><JobsPage api={api} /></Layout>;
}

const root = document.getElementById("app");
if (root) {
  root.textContent = "";
  render(<App api={new Api()} />, root);
}
