// The REST calls the dashboard makes. They resolve to plain results and never throw, so a
// server that is down shows up as a message, not as an unhandled rejection. They carry the
// login's token when the server asks for one (login.js).

import { authFetch } from "./login.js";

/**
 * POST /api/commands/{id}.
 * @returns {Promise<{ok: true, id: string, topic: string} | {ok: false, reason: string}>}
 */
export async function sendCommand(deviceId, command) {
  let response;
  try {
    response = await authFetch(`/api/commands/${encodeURIComponent(deviceId)}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ command }),
    });
  } catch (error) {
    return { ok: false, reason: `server unreachable (${error.message})` };
  }
  const body = await response.json().catch(() => null);
  if (response.ok) return { ok: true, id: body.id, topic: body.topic };
  return { ok: false, reason: `${response.status}: ${describe(body?.detail) ?? response.statusText}` };
}

/**
 * GET a JSON endpoint. /api/health answers 503 with a full report when a component is down,
 * so any JSON body counts.
 * @returns {Promise<{ok: boolean, body: object | null, reason?: string}>}
 */
export async function getJson(path) {
  try {
    const response = await authFetch(path, { cache: "no-store" });
    return { ok: response.ok, body: await response.json() };
  } catch (error) {
    return { ok: false, body: null, reason: error.message };
  }
}

/**
 * GET a page of the history API.
 * @returns {Promise<{ok: true, body: object} | {ok: false, status: number | null, reason: string}>}
 *   `status` 503 means the lake is off or failing; null, that the server was not reached.
 */
export async function getHistory(path, signal) {
  let response;
  try {
    response = await authFetch(path, { cache: "no-store", signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    return { ok: false, status: null, reason: `server unreachable (${error.message})` };
  }
  const body = await response.json().catch(() => null);
  if (response.ok && body) return { ok: true, body };
  return { ok: false, status: response.status, reason: describe(body?.detail) ?? response.statusText };
}

/** FastAPI's `detail`: a string for our own errors, a list of problems for validation errors. */
function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((problem) => problem.msg ?? JSON.stringify(problem)).join("; ");
  }
  return null;
}

/**
 * GET an analytics route (trips, stops, summary, heatmap, prediction): the same results as
 * `getHistory`; `status` 503 means the lake is off or failing, 422 carries the reason.
 */
export const getAnalysis = getHistory;
