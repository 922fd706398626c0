// The REST API, with the token the user signed in with. The token lives in
// this tab's session storage only: closing the tab forgets it.

const TOKEN_KEY = "walletwatch.token";

export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// Called when the server refuses the token (revoked, expired).
let onRefused = () => {};
export function whenRefused(handler) {
  onRefused = handler;
}

// Calls `path` under /api; returns the JSON answer or throws an ApiFailure
// carrying the API's error code and message.
export async function api(path, { method = "GET", body, tokenOverride } = {}) {
  const headers = { Authorization: `Bearer ${tokenOverride ?? token() ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`/api${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiFailure(0, "unreachable", "walletwatch cannot be reached; retrying when you act again");
  }
  let payload = null;
  const text = await response.text();
  if (text) {
    try {
      payload = JSON.parse(text);
    } catch (error) {
      payload = null;
    }
  }
  if (!response.ok) {
    const code = payload?.error?.code ?? `http_${response.status}`;
    const message = payload?.error?.message ?? `${response.status} ${response.statusText}`;
    const failure = new ApiFailure(response.status, code, message);
    if (response.status === 401 && tokenOverride === undefined) onRefused(failure);
    throw failure;
  }
  return payload;
}

// The `/ws` URL for `params` (the token goes in the query: browsers cannot
// set headers on a WebSocket).
export function wsUrl(params) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ token: token() ?? "", ...params });
  return `${scheme}//${location.host}/ws?${query}`;
}

// A path segment for a wallet address and its `?chain=` query.
export function walletPath(chain, address, suffix = "") {
  return `/wallets/${encodeURIComponent(address)}${suffix}?chain=${encodeURIComponent(chain)}`;
}
