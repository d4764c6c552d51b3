// The dashboard's entry point: sign-in with an API key, then a #fragment router. Each view
// renders into <main> and gets an AbortSignal that fires when the user navigates away, which
// stops its polling and closes its event streams.
import { api, ApiError, session } from "./api.js";
import { errorBox, h } from "./dom.js";
import { datasetsView } from "./datasets.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { queuesView } from "./queues.js";
import { sweepsView } from "./sweeps.js";

const main = document.getElementById("content");
const nav = document.getElementById("nav");
let current;

const ROUTES = [
  [/^#\/jobs\/([0-9a-f-]{36})$/, (signal, [, id]) => jobView(main, id, signal)],
  [/^#\/jobs$/, (signal) => jobsView(main, signal)],
  [/^#\/datasets$/, (signal) => datasetsView(main, signal)],
  [/^#\/sweeps(?:\/([0-9a-f-]{36}))?$/, (signal, [, id]) => sweepsView(main, id, signal)],
  [/^#\/queues$/, (signal) => queuesView(main, signal)],
];

function signInView(message) {
  nav.hidden = true;
  const input = h("input", { id: "api-key", name: "api-key", type: "password", autocomplete: "off", required: true, "aria-describedby": "sign-in-help" });
  const feedback = h("div", { id: "sign-in-feedback" }, message ? errorBox({ message }) : undefined);
  const form = h(
    "form",
    { class: "stack", "aria-labelledby": "sign-in-title", onsubmit: (event) => signIn(event, input, feedback) },
    h("h2", { id: "sign-in-title" }, "Sign in"),
    h("label", { for: "api-key" }, "API key", input),
    h("p", { id: "sign-in-help", class: "muted" }, "Kept in this tab's session storage only and sent as the Bearer header."),
    h("button", { type: "submit" }, "Sign in"),
    feedback,
  );
  main.replaceChildren(form);
  input.focus();
}

async function signIn(event, input, feedback) {
  event.preventDefault();
  const key = input.value.trim();
  feedback.replaceChildren(h("p", { class: "muted" }, "Checking the key…"));
  // A wrong key is a 200 answer here ({valid: false, error}), so the browser logs no failed request.
  let rejection;
  try {
    const answer = await api("/ui/session", { method: "POST", key });
    if (!answer.valid) rejection = { message: `This API key was not accepted: ${answer.error.message}.`, code: answer.error.code };
  } catch (error) {
    rejection = { message: error.message, code: error.code };
  }
  if (rejection) {
    feedback.replaceChildren(errorBox(rejection));
    input.focus();
    return;
  }
  session.signIn(key);
  if (!location.hash || location.hash === "#/") location.hash = "#/jobs";
  else route();
}

function route() {
  current?.abort();
  current = new AbortController();
  if (!session.key()) return signInView();
  nav.hidden = false;
  const hash = location.hash || "#/jobs";
  for (const link of nav.querySelectorAll("a")) {
    if (hash.startsWith(link.getAttribute("href"))) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const match = ROUTES.map(([pattern, view]) => [pattern.exec(hash), view]).find(([found]) => found);
  if (!match) {
    location.hash = "#/jobs";
    return;
  }
  const [found, view] = match;
  const signal = current.signal;
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  view(signal, found).catch((error) => {
    if (signal.aborted || error.name === "AbortError") return;
    // A key revoked mid-session: back to sign-in, saying why.
    if (error instanceof ApiError && error.status === 401) {
      session.signOut();
      return signInView("The API key is no longer accepted; sign in again.");
    }
    main.replaceChildren(errorBox(error));
  });
  main.focus();
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  route();
});
window.addEventListener("hashchange", route);
route();
