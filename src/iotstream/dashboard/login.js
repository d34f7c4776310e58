// Credentials for a server that requires them. With auth off nothing here shows and nothing
// is added to a request, so the dashboard works as it always did.
//
// The token from POST /api/auth/token lives in sessionStorage (this tab, until it closes) and
// goes out as `Authorization: Bearer` on REST calls and, since a browser's WebSocket cannot
// set headers, as the subprotocol `bearer.<token>` beside `iotstream`. A 401 from any call,
// a WebSocket the server closes because the token expired, or the token's own expiry brings
// up the login form; whoever waits for a session (`whenSignedIn`) goes on after logging in.

const STORAGE_KEY = "iotstream.session";

let session = load();
let waiters = [];
const listeners = new Set();
let expiryTimer = 0;

function load() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null");
    return stored && stored.expiresAt > Date.now() ? stored : null;
  } catch {
    return null;
  }
}

function save(next) {
  session = next;
  if (next) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(next));
  else sessionStorage.removeItem(STORAGE_KEY);
  clearTimeout(expiryTimer);
  if (next) expiryTimer = setTimeout(() => signOut("Your session expired; log in again."), next.expiresAt - Date.now());
  showUser();
}

/** Headers that carry the session's token; none without a session. */
export function authHeaders() {
  return session ? { authorization: `Bearer ${session.token}` } : {};
}

/** The subprotocols to open the /coordinates WebSocket with; none without a session. */
export function webSocketProtocols() {
  return session ? ["iotstream", `bearer.${session.token}`] : undefined;
}

/** `fetch` with the session's token; a 401 asks the user to log in (again). */
export async function authFetch(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...init.headers, ...authHeaders() } });
  if (response.status === 401) signOut(session ? "Your session ended; log in again." : "");
  return response;
}

/** Call `listener` after each login (to reconnect what the old session could not). */
export function onSignIn(listener) {
  listeners.add(listener);
}

/**
 * Resolves once the dashboard may read the API: at once when the server does not ask for
 * credentials or the stored session still works, else after the user logged in.
 */
export async function whenSignedIn() {
  let response;
  try {
    response = await authFetch("/api/stats", { cache: "no-store" });
  } catch {
    return; // the server is down: the views say so, and retry on their own
  }
  if (response.status !== 401) {
    if (session) save(session); // arms the expiry timer and shows who is logged in
    return;
  }
  await new Promise((resolve) => waiters.push(resolve));
}

/** Forget the session and show the login form with `message`. */
export function signOut(message = "") {
  if (session) save(null);
  const dialog = document.getElementById("login");
  dialog.querySelector(".login-error").textContent = message;
  if (!dialog.open) dialog.showModal();
  dialog.querySelector("input[name=username]").focus();
}

function showUser() {
  const user = document.getElementById("user");
  user.hidden = !session;
  user.querySelector(".name").textContent = session ? `${session.name} · ${session.role}` : "";
}

async function logIn(form) {
  const error = form.querySelector(".login-error");
  const data = new FormData(form);
  error.textContent = "";
  let response;
  try {
    response = await fetch("/api/auth/token", {
      method: "POST",
      body: new URLSearchParams({ username: data.get("username"), password: data.get("password") }),
    });
  } catch (failure) {
    error.textContent = `server unreachable (${failure.message})`;
    return;
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    error.textContent =
      response.status === 429
        ? `Too many failed logins; try again in ${response.headers.get("retry-after") ?? 60} s.`
        : typeof body?.detail === "string"
          ? body.detail
          : `login failed (${response.status})`;
    return;
  }
  form.reset();
  save({
    token: body.access_token,
    name: data.get("username"),
    role: body.role,
    expiresAt: Date.now() + body.expires_in * 1000,
  });
  document.getElementById("login").close();
  const waiting = waiters;
  waiters = [];
  for (const resolve of waiting) resolve();
  for (const listener of listeners) listener();
}

const form = document.querySelector("#login form");
form.addEventListener("submit", (event) => {
  event.preventDefault();
  logIn(form);
});
// The form is the only way on: Escape does not dismiss it.
document.getElementById("login").addEventListener("cancel", (event) => event.preventDefault());
document.querySelector("#user [data-action=logout]").addEventListener("click", () => signOut());
