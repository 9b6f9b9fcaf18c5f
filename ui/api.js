// The registry's public HTTP API as the UI uses it: the distribution API and the
// `_signet` extensions, nothing else. With authentication on, requests follow the
// standard token flow: a 401 names the token service and the scope it wants, the UI
// asks the token service (with the user's credentials, or none for anonymous access)
// and retries with the bearer token. A password lives in this page's memory only; when
// the registry issues refresh tokens (a configured token key), the refresh token is kept
// in the tab's session storage instead, so a reload or a link opened anew stays signed
// in until the tab closes or the user signs out (which revokes it on the server).
//
// Names and references come from the page's URL, which anyone can write: each is checked
// against the registry's grammar before any request and every path segment is encoded,
// and a token is asked for the scope the page needs, never for what a 401 names, so a
// crafted link cannot aim the signed-in user's token at another endpoint.

/** The registry refused the credentials, or wants some. */
export class AuthRequired extends Error {}

/** An OCI error answer (`{"errors":[{code,message}]}`) or a failed request. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

const session = {
  /** `true` when the registry answers `/v2/` with a challenge. */
  authEnabled: false,
  /** `{ username, password }` or `{ username, refresh }` once signed in; else `null`. */
  credentials: null,
  /** Bearer tokens by scope: `{ token, expires }`. */
  tokens: new Map(),
  /** The user chose to browse without signing in. */
  anonymous: false,
  /** Repository names from the catalog, kept until sign-in changes who is asking. */
  catalog: null,
};

export function authEnabled() { return session.authEnabled; }
export function username() { return session.credentials?.username ?? null; }
/** Whether requests may go out: auth is off, or the user signed in or chose not to. */
export function ready() { return !session.authEnabled || session.credentials !== null || session.anonymous; }

/** Goes on without credentials: the registry shows what anonymous callers may pull. */
export function browseAnonymously() {
  forget();
  session.credentials = null;
  session.anonymous = true;
}

const STORED = "signet-ui-session";

/** Asks `/v2/` whether the registry wants credentials; picks up a stored session. */
export async function probe() {
  const res = await fetch("/v2/", { cache: "no-store", credentials: "omit" });
  session.authEnabled = res.status === 401;
  if (session.authEnabled) {
    try {
      const stored = JSON.parse(sessionStorage.getItem(STORED));
      if (stored?.username && stored?.refresh) session.credentials = stored;
    } catch {
      sessionStorage.removeItem(STORED);
    }
  }
  return { authEnabled: session.authEnabled };
}

/**
 * Checks the credentials with the token service (the OAuth2 password grant, asking
 * for a refresh token), then keeps the refresh token, or else the password.
 */
export async function signIn(user, password) {
  const challenge = await baseChallenge();
  forget();
  const body = await tokenRequest(challenge, "registry:catalog:*", {
    grant_type: "password",
    username: user,
    password,
    access_type: "offline",
    client_id: "signet-ui",
  }, "Wrong user name or password");
  if (body.refresh_token) {
    session.credentials = { username: user, refresh: body.refresh_token };
    sessionStorage.setItem(STORED, JSON.stringify(session.credentials));
  } else {
    session.credentials = { username: user, password };
  }
  session.anonymous = false;
}

export function signOut() {
  const refresh = session.credentials?.refresh;
  forget();
  sessionStorage.removeItem(STORED);
  session.credentials = null;
  session.anonymous = false;
  if (refresh) {
    // The server forgets the refresh token too: a copy left anywhere stops working.
    const form = new URLSearchParams({ token: refresh, token_type_hint: "refresh_token" });
    fetch("/v2/token/revoke", { method: "POST", body: form, cache: "no-store", credentials: "omit" })
      .catch(() => {});
  }
}

function forget() {
  session.tokens.clear();
  session.catalog = null;
}

async function baseChallenge() {
  const res = await fetch("/v2/", { cache: "no-store", credentials: "omit" });
  const challenge = parseChallenge(res.headers.get("WWW-Authenticate"));
  if (!challenge) throw new ApiError(res.status, "", "The registry sent no token service to sign in with");
  return challenge;
}

/** `Bearer realm="…",service="…",scope="…"` as an object. */
export function parseChallenge(header) {
  if (!header || !/^bearer\s/i.test(header)) return null;
  const params = {};
  for (const [, key, value] of header.matchAll(/(\w+)="([^"]*)"/g)) params[key] = value;
  return params.realm ? params : null;
}

function basic({ username: user, password }) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return `Basic ${btoa(binary)}`;
}

function tokenService(challenge) {
  const url = new URL(challenge.realm, location.origin);
  // Credentials go only to this registry's own token service.
  if (url.origin !== location.origin) {
    throw new ApiError(0, "", `The token service ${url.origin} is on another origin; the web UI signs in only with this registry's own`);
  }
  return url;
}

/** A POST to the token service (an OAuth2 grant); its JSON, or `AuthRequired`. */
async function tokenRequest(challenge, scope, grant, refusal) {
  const form = new URLSearchParams(grant);
  if (challenge.service) form.set("service", challenge.service);
  for (const s of (scope || "").split(" ").filter(Boolean)) form.append("scope", s);
  const res = await fetch(tokenService(challenge), { method: "POST", body: form, cache: "no-store", credentials: "omit" });
  if (res.status === 401) throw new AuthRequired(refusal);
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

/** Refreshes one at a time: each use of a refresh token returns the next one. */
let refreshing = Promise.resolve();

/** A token for `scope` from the refresh token, which is replaced by the one returned. */
function refreshedToken(challenge, scope) {
  const run = refreshing.then(async () => {
    const credentials = session.credentials;
    if (!credentials?.refresh) throw new AuthRequired("Sign in to continue");
    const body = await tokenRequest(challenge, scope, {
      grant_type: "refresh_token",
      refresh_token: credentials.refresh,
      client_id: "signet-ui",
    }, "Your session has ended: sign in again");
    if (body.refresh_token && session.credentials === credentials) {
      credentials.refresh = body.refresh_token;
      sessionStorage.setItem(STORED, JSON.stringify(credentials));
    }
    return body;
  });
  refreshing = run.catch(() => {});
  return run;
}

async function fetchToken(challenge, scope) {
  const credentials = session.credentials;
  let body;
  if (credentials?.refresh) {
    try {
      body = await refreshedToken(challenge, scope);
    } catch (e) {
      if (e instanceof AuthRequired) signOut();
      throw e;
    }
  } else {
    const url = tokenService(challenge);
    if (challenge.service) url.searchParams.set("service", challenge.service);
    for (const s of (scope || "").split(" ").filter(Boolean)) {
      url.searchParams.append("scope", s);
    }
    const headers = credentials ? { Authorization: basic(credentials) } : {};
    const res = await fetch(url, { headers, cache: "no-store", credentials: "omit" });
    if (res.status === 401) throw new AuthRequired(credentials ? "Wrong user name or password" : "Sign in to continue");
    if (!res.ok) throw await errorOf(res);
    body = await res.json();
  }
  const ttl = Math.max(Number(body.expires_in) || 60, 20);
  const token = { token: body.token || body.access_token, expires: Date.now() + (ttl - 10) * 1000 };
  session.tokens.set(scope, token);
  return token.token;
}

async function errorOf(res) {
  try {
    const body = await res.json();
    const first = body.errors?.[0];
    if (first) return new ApiError(res.status, first.code, first.message || first.code);
  } catch {
    // Not an OCI error body.
  }
  return new ApiError(res.status, "", `HTTP ${res.status} ${res.statusText}`);
}

/**
 * A GET on the registry. `scope` is the token scope the request needs, and the only one
 * asked for (a 401 naming another is not followed); the token is reused until it expires.
 */
export async function request(path, { scope, accept } = {}) {
  const headers = accept ? { Accept: accept } : {};
  const cached = session.tokens.get(scope);
  if (cached && cached.expires > Date.now()) headers.Authorization = `Bearer ${cached.token}`;
  let res = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  if (res.status === 401) {
    const challenge = parseChallenge(res.headers.get("WWW-Authenticate"));
    if (!challenge) throw await errorOf(res);
    headers.Authorization = `Bearer ${await fetchToken(challenge, scope)}`;
    res = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    if (res.status === 401) {
      throw new AuthRequired(session.credentials ? "Your account may not read this" : "Sign in to continue");
    }
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}

function pullScope(name) { return `repository:${repoName(name)}:pull`; }

// The distribution spec's grammar: path components of lower-case letters and digits,
// joined by ".", "_", "__" or dashes; tags; digests.
const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** Whether `name` is a repository name the registry could hold. */
export function isRepositoryName(name) {
  return typeof name === "string" && name.length > 0 && name.length <= 255
    && name.split("/").every((c) => COMPONENT.test(c));
}

/** `name`, checked, for a scope: a name outside the grammar never reaches a request. */
function repoName(name) {
  if (!isRepositoryName(name)) throw new ApiError(404, "NAME_INVALID", `Not a repository name: ${String(name).slice(0, 80)}`);
  return name;
}

/** `name` as a URL path: checked, each segment encoded. */
function repoPath(name) {
  return repoName(name).split("/").map(encodeURIComponent).join("/");
}

/** A tag or a digest, checked, as one encoded path segment. */
function referencePath(reference) {
  if (typeof reference !== "string" || !(TAG.test(reference) || DIGEST.test(reference))) {
    throw new ApiError(404, "MANIFEST_UNKNOWN", `Not a tag or digest: ${String(reference).slice(0, 80)}`);
  }
  return encodeURIComponent(reference);
}

/** A digest, checked, as one encoded path segment. */
function digestPath(digest) {
  if (typeof digest !== "string" || !DIGEST.test(digest)) {
    throw new ApiError(404, "DIGEST_INVALID", `Not a digest: ${String(digest).slice(0, 80)}`);
  }
  return encodeURIComponent(digest);
}

/** The `last` of a `Link: <…?n=…&last=…>; rel="next"` header, or `null`. */
export function nextLast(res) {
  const link = res.headers.get("Link");
  const match = link && link.match(/<([^>]+)>\s*;\s*rel="?next"?/);
  return match ? new URL(match[1], location.origin).searchParams.get("last") : null;
}

/** Every repository the caller may pull, read in pages of 1000 names. */
export async function repositories() {
  if (session.catalog) return session.catalog;
  const names = [];
  let last = null;
  do {
    const query = new URLSearchParams({ n: "1000" });
    if (last) query.set("last", last);
    const res = await request(`/v2/_catalog?${query}`, { scope: "registry:catalog:*" });
    const body = await res.json();
    names.push(...(body.repositories || []));
    last = nextLast(res);
  } while (last);
  session.catalog = names;
  return names;
}

/**
 * One page of tags with digest, media type, size, push time and platforms; without
 * `withAttachments`, tags that only carry signatures and other attachments are left out.
 */
export async function tagPage(name, n, last, withAttachments) {
  const query = new URLSearchParams({ n: String(n), attachments: String(Boolean(withAttachments)), signatures: "true" });
  if (last) query.set("last", last);
  const res = await request(`/v2/${repoPath(name)}/_signet/tags?${query}`, { scope: pullScope(name) });
  const body = await res.json();
  return { tags: body.tags || [], next: nextLast(res) };
}

/** The manifest and, for an index, each child's: attachments with their verdicts. */
export async function coverage(name, reference) {
  const path = `/v2/${repoPath(name)}/_signet/attachments/${referencePath(reference)}?recursive=true`;
  const res = await request(path, { scope: pullScope(name) });
  return res.json();
}

export async function manifest(name, reference) {
  const res = await request(`/v2/${repoPath(name)}/manifests/${referencePath(reference)}`, {
    scope: pullScope(name),
    accept: MANIFEST_TYPES,
  });
  const text = await res.text();
  return {
    digest: res.headers.get("Docker-Content-Digest"),
    mediaType: res.headers.get("Content-Type"),
    text,
    json: JSON.parse(text),
  };
}

/** A blob's bytes, refused above `max` bytes: the UI shows documents, not layers. */
export async function blob(name, digest, max) {
  const res = await request(`/v2/${repoPath(name)}/blobs/${digestPath(digest)}`, { scope: pullScope(name) });
  const length = Number(res.headers.get("Content-Length"));
  if (length > max) {
    res.body?.cancel();
    throw new ApiError(0, "", `Too large to show here (${length} bytes)`);
  }
  return new Uint8Array(await res.arrayBuffer());
}
