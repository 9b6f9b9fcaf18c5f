// The UI's pages: the repository list, a repository's tags, one image with its
// signature tree, the sign-in form and the attachment viewer. Each renders into
// `<main>` from the registry's public API (see api.js).

import * as api from "./api.js";
import { h, replace, announce, copyField, formatBytes, formatTime, platformName, shortDigest } from "./dom.js";
import { signatureTree, signatureSummary, verdictView } from "./tree.js";
import { signerOfPem } from "./x509.js";

/** Tags per page: enough to scan, small enough to answer fast for any repository. */
const TAGS_PER_PAGE = 50;
/** Repositories shown before "Show more". */
const REPOS_SHOWN = 100;
/** Attachment documents larger than this are not loaded into the page. */
const MAX_DOCUMENT = 2 * 1024 * 1024;
/** Text beyond this is cut, to keep the page responsive. */
const MAX_TEXT = 256 * 1024;
/** cosign's annotation carrying a keyless signature's certificate. */
const CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate";

export const link = {
  repos: (q) => (q ? `/ui/?${new URLSearchParams({ q })}` : "/ui/"),
  repo: (name, last, all) => {
    const query = new URLSearchParams({ name });
    if (all) query.set("all", "1");
    if (last) query.set("last", last);
    return `/ui/repo?${query}`;
  },
  image: (name, ref) => `/ui/image?${new URLSearchParams({ name, ref })}`,
};

/** The control to focus again once its page is drawn anew (a toggle that reloads it). */
let refocus = null;

/** An in-app link: the router (app.js) handles clicks on `data-nav` anchors. */
function nav(href, ...children) {
  return h("a", { href, "data-nav": true }, children);
}

function setTitle(main, text) {
  document.title = text ? `${text} · Signet` : "Signet";
  main.focus({ preventScroll: true });
}

export function crumbs(items) {
  const list = document.getElementById("crumbs");
  replace(list, items.map(([label, href], i) =>
    h("li", {}, i === items.length - 1
      ? h("span", { "aria-current": "page" }, label)
      : nav(href, label))));
}

function mediaTypeName(mediaType) {
  const names = {
    "application/vnd.oci.image.index.v1+json": "OCI index",
    "application/vnd.oci.image.manifest.v1+json": "OCI manifest",
    "application/vnd.docker.distribution.manifest.list.v2+json": "Docker manifest list",
    "application/vnd.docker.distribution.manifest.v2+json": "Docker manifest",
  };
  return names[mediaType] || mediaType;
}

// ---------------------------------------------------------------------------------
// Repositories
// ---------------------------------------------------------------------------------

export async function repositories(main, params) {
  crumbs([["Repositories", link.repos()]]);
  const q = params.get("q") || "";
  const names = await api.repositories();
  const input = h("input", { id: "search", type: "search", value: q, autocomplete: "off", spellcheck: "false", "aria-describedby": "repo-count" });
  const count = h("p", { id: "repo-count", class: "muted", "aria-live": "polite" });
  const list = h("ul", { class: "repos", "aria-label": "Repositories" });
  const more = h("button", { type: "button", class: "ghost" }, "Show more");
  let shown = REPOS_SHOWN;
  let matches = [];

  const render = () => {
    const words = input.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    matches = names.filter((n) => words.every((w) => n.toLowerCase().includes(w)));
    replace(list, matches.slice(0, shown).map((name) => h("li", {}, nav(link.repo(name), name))));
    count.textContent = names.length === 0
      ? "No repositories you may read."
      : `${matches.length} of ${names.length} repositories${matches.length > shown ? `, showing ${shown}` : ""}`;
    more.hidden = matches.length <= shown;
  };
  let timer;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      shown = REPOS_SHOWN;
      render();
      history.replaceState(null, "", link.repos(input.value.trim()));
    }, 120);
  });
  more.addEventListener("click", () => { shown += REPOS_SHOWN; render(); });
  replace(main,
    h("h1", {}, "Repositories"),
    h("form", { role: "search", class: "search", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "search" }, "Search repositories"), input),
    count, list, more);
  render();
  setTitle(main, "Repositories");
  if (q) input.focus();
}

// ---------------------------------------------------------------------------------
// Tags of a repository
// ---------------------------------------------------------------------------------

/** A tag's signature status at a glance (the `signature` of `_signet/tags?signatures=true`). */
function signatureCell(signature) {
  if (!signature || signature.status === "attachment") return h("span", { class: "muted" }, "—");
  const labels = {
    verified: ["valid", signature.roots?.length ? `Verified (${signature.roots.join(", ")})` : "Verified"],
    invalid: ["invalid", "Invalid"],
    unverified: ["no-trust-root", "Signed, not verified"],
    unsigned: ["none", "Unsigned"],
  };
  const [style, text] = labels[signature.status] || ["none", signature.status];
  const platforms = signature.platforms;
  return [h("span", { class: `verdict verdict-${style}` }, text),
    platforms ? h("span", { class: "muted" }, ` ${platforms.covered} of ${platforms.total} platforms covered`) : null];
}

export async function repository(main, params) {
  const name = params.get("name");
  if (!name) throw new api.ApiError(400, "NAME_INVALID", "No repository named in the address");
  const last = params.get("last");
  const all = params.get("all") === "1";
  crumbs([["Repositories", link.repos()], [name, link.repo(name)]]);
  const page = await api.tagPage(name, TAGS_PER_PAGE, last, all);
  const rows = page.tags.map((t) => h("tr", {},
    h("th", { scope: "row", "data-label": "Tag" }, nav(link.image(name, t.tag), t.tag)),
    h("td", { "data-label": "Digest" }, h("code", { class: "mono", title: t.digest }, shortDigest(t.digest))),
    h("td", { "data-label": "Type" }, t.artifactType ? `${mediaTypeName(t.mediaType)} (${t.artifactType})` : mediaTypeName(t.mediaType)),
    h("td", { "data-label": "Size", class: "num" }, formatBytes(t.size)),
    h("td", { "data-label": "Platforms" }, t.platforms.length ? t.platforms.map(platformName).join(", ") : h("span", { class: "muted" }, "—")),
    h("td", { "data-label": "Signature" }, signatureCell(t.signature)),
    h("td", { "data-label": "Pushed" }, h("time", { datetime: t.pushedAt }, formatTime(t.pushedAt)))));
  const pager = h("nav", { class: "pager", "aria-label": "Tag pages" },
    last ? nav(link.repo(name, null, all), "First page") : null,
    page.next ? nav(link.repo(name, page.next, all), "Next page") : null);
  const toggle = h("input", { id: "all-tags", type: "checkbox", checked: all });
  // The tree of an image shows its attachments; listing their tags is opt-in.
  toggle.addEventListener("change", () => {
    refocus = toggle.id;
    history.pushState(null, "", link.repo(name, null, toggle.checked));
    window.dispatchEvent(new PopStateEvent("popstate"));
  });
  replace(main,
    h("h1", {}, name),
    h("p", {}, copyField("Pull command", `docker pull ${location.host}/${name}:<tag>`)),
    h("div", { class: "check" }, toggle, h("label", { for: "all-tags" }, "Show signature and attachment tags")),
    page.tags.length
      ? h("div", { class: "table-wrap" }, h("table", { class: "tags" },
        h("caption", {}, last ? `Tags after “${last}”` : "Tags"),
        h("thead", {}, h("tr", {}, ["Tag", "Digest", "Type", "Size", "Platforms", "Signature", "Pushed"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows)))
      : h("p", { class: "muted" }, "No tags."),
    pager);
  setTitle(main, name);
  if (refocus) {
    document.getElementById(refocus)?.focus();
    refocus = null;
  }
  announce(`${page.tags.length} tags${page.next ? ", more on the next page" : ""}`);
}

// ---------------------------------------------------------------------------------
// One image
// ---------------------------------------------------------------------------------

function platformSummary(report) {
  const children = report.children || [];
  if (!children.length) return null;
  const rows = children.map((child) => {
    const s = signatureSummary(child);
    let status;
    if (s.valid) {
      status = [h("span", { class: "verdict verdict-valid" }, `Signed (${s.valid} valid)`),
        s.invalid ? h("span", { class: "verdict verdict-invalid" }, `${s.invalid} invalid`) : null];
    }
    else if (s.invalid) status = h("span", { class: "verdict verdict-invalid" }, "Only invalid signatures");
    else if (s["no-trust-root"] || s.unsupported || s.unverified) status = h("span", { class: "verdict verdict-no-trust-root" }, "Signed, not verified");
    else status = h("span", { class: "verdict verdict-none" }, "Unsigned");
    return h("tr", {},
      h("th", { scope: "row", "data-label": "Platform" }, platformName(child.platform) || "unknown"),
      h("td", { "data-label": "Digest" }, h("code", { class: "mono", title: child.digest }, shortDigest(child.digest))),
      h("td", { "data-label": "Signatures" }, status));
  });
  return h("div", { class: "table-wrap" }, h("table", { class: "platforms" },
    h("caption", {}, "Platforms and their signatures (own and from the index)"),
    h("thead", {}, h("tr", {}, ["Platform", "Digest", "Signatures"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows)));
}

export async function image(main, params) {
  const name = params.get("name");
  const ref = params.get("ref");
  if (!name || !ref) throw new api.ApiError(400, "NAME_INVALID", "No image named in the address");
  crumbs([["Repositories", link.repos()], [name, link.repo(name)], [shortDigest(ref), link.image(name, ref)]]);
  const report = await api.coverage(name, ref);
  const byDigest = ref.includes(":");
  const host = location.host;
  const signers = new Map();
  const ctx = {
    view: (entry, kind) => openViewer(name, entry, kind),
    // One manifest read per attachment, however often the tree shows it.
    signer: (entry) => {
      if (!signers.has(entry.digest)) signers.set(entry.digest, certificateSigner(name, entry.digest));
      return signers.get(entry.digest);
    },
  };
  replace(main,
    h("h1", {}, `${name}${byDigest ? "@" : ":"}${byDigest ? shortDigest(ref) : ref}`),
    h("dl", { class: "facts" },
      h("dt", {}, "Digest"), h("dd", {}, h("code", { class: "mono break" }, report.digest)),
      h("dt", {}, "Media type"), h("dd", {}, mediaTypeName(report.mediaType))),
    h("section", { class: "pull", "aria-labelledby": "pull-title" },
      h("h2", { id: "pull-title" }, "Pull"),
      byDigest ? null : copyField("Pull by tag", `docker pull ${host}/${name}:${ref}`),
      copyField("Pull by digest", `docker pull ${host}/${name}@${report.digest}`)),
    platformSummary(report),
    signatureTree(report, ctx));
  setTitle(main, `${name} ${ref}`);
}

// ---------------------------------------------------------------------------------
// Attachment viewer
// ---------------------------------------------------------------------------------

function decodeBase64(text) {
  const binary = atob(text);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** base64url without padding (JWS) as text. */
function decodeBase64Url(text) {
  const std = text.replace(/-/g, "+").replace(/_/g, "/");
  return new TextDecoder().decode(decodeBase64(std + "=".repeat((4 - (std.length % 4)) % 4)));
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return null; }
}

/** What a layer's bytes say, as readable text: DSSE payloads decoded, JSON indented. */
function readable(bytes) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return { label: "Binary", text: `${bytes.length} bytes of binary data` };
  }
  let json = null;
  try { json = JSON.parse(text); } catch { /* plain text */ }
  const envelope = json?.payloadType ? json : json?.dsseEnvelope;
  if (envelope?.payload) {
    const payload = new TextDecoder().decode(decodeBase64(envelope.payload));
    return { label: `DSSE payload (${envelope.payloadType})`, text: pretty(payload) || payload };
  }
  // A Notary Project JWS envelope: its signed header and payload, decoded.
  if (typeof json?.protected === "string" && typeof json?.payload === "string" && json?.signature) {
    try {
      const header = decodeBase64Url(json.protected);
      const payload = decodeBase64Url(json.payload);
      return {
        label: "Notary Project JWS envelope: protected header and payload",
        text: `${pretty(header) || header}\n\n${pretty(payload) || payload}`,
      };
    } catch { /* not base64url: shown as JSON */ }
  }
  if (json) return { label: "JSON", text: JSON.stringify(json, null, 2) };
  return { label: "Text", text };
}

function pre(text) {
  const cut = text.length > MAX_TEXT;
  return [h("pre", { class: "doc", tabindex: "0" }, cut ? text.slice(0, MAX_TEXT) : text),
    cut ? h("p", { class: "muted" }, `Showing the first ${MAX_TEXT} characters.`) : null];
}

/** The signer a cosign attachment's certificate names, or `null`. */
async function certificateSigner(name, digest) {
  try {
    const m = await api.manifest(name, digest);
    const pem = (m.json.layers || []).map((l) => l.annotations?.[CERTIFICATE_ANNOTATION]).find(Boolean);
    return pem ? signerOfPem(pem) : null;
  } catch {
    return null;
  }
}

async function openViewer(name, entry, kind) {
  const dialog = document.getElementById("viewer");
  const body = document.getElementById("viewer-body");
  document.getElementById("viewer-title").textContent = `${kind === "sbom" ? "SBOM" : kind[0].toUpperCase() + kind.slice(1)} ${shortDigest(entry.digest)}`;
  replace(body, h("p", { class: "muted" }, "Loading…"));
  if (!dialog.open) dialog.showModal();
  try {
    replace(body, await viewerContent(name, entry));
  } catch (e) {
    replace(body, h("p", { role: "alert", class: "error" }, e.message));
  }
}

async function viewerContent(name, entry) {
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "Digest"), h("dd", {}, h("code", { class: "mono break" }, entry.digest)),
    h("dt", {}, "Format"), h("dd", {}, entry.format),
    entry.artifactType ? [h("dt", {}, "Artifact type"), h("dd", {}, entry.artifactType)] : null,
    entry.tag ? [h("dt", {}, "Tag"), h("dd", {}, entry.tag)] : null,
    entry.predicateTypes?.length ? [h("dt", {}, "Predicate types"), h("dd", { class: "mono break" }, entry.predicateTypes.join(", "))] : null,
    entry.carriedBy ? [h("dt", {}, "Carried by index"), h("dd", {}, h("code", { class: "mono break" }, entry.carriedBy))] : null,
    h("dt", {}, "Attached"), h("dd", {}, formatTime(entry.created)));
  const verdict = entry.verification ? h("p", {}, verdictView(entry.verification)) : null;
  if (!entry.mediaType) {
    return [facts, verdict, h("p", {}, "A simple-signing signature, stored beside the image rather than as a manifest.")];
  }
  const m = await api.manifest(name, entry.digest);
  const layers = m.json.layers || m.json.blobs || [];
  const pem = layers.map((l) => l.annotations?.[CERTIFICATE_ANNOTATION]).find(Boolean);
  const signer = pem ? signerOfPem(pem) : null;
  if (signer?.identity) {
    facts.append(h("dt", {}, "Certificate for"), h("dd", { class: "break" }, signer.identity));
    if (signer.issuer) facts.append(h("dt", {}, "Issuer"), h("dd", { class: "break" }, signer.issuer));
  }
  const sections = [];
  for (const layer of layers.slice(0, 5)) {
    const annotations = Object.entries(layer.annotations || {});
    const head = h("h3", {}, `${layer.mediaType} · ${formatBytes(layer.size)}`);
    let content;
    if (layer.size > MAX_DOCUMENT) {
      content = h("p", { class: "muted" }, "Too large to show here.");
    } else {
      const doc = readable(await api.blob(name, layer.digest, MAX_DOCUMENT));
      content = [h("p", { class: "muted" }, doc.label), pre(doc.text)];
    }
    sections.push(h("section", { class: "layer" }, head, content,
      annotations.length ? h("details", {}, h("summary", {}, `Annotations (${annotations.length})`),
        h("dl", { class: "facts" }, annotations.map(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono break" }, v)]))) : null));
  }
  if (layers.length > 5) sections.push(h("p", { class: "muted" }, `${layers.length - 5} more layers not shown.`));
  return [facts, verdict, sections,
    h("details", {}, h("summary", {}, "Manifest"), pre(pretty(m.text) || m.text))];
}

export function setupViewer() {
  const dialog = document.getElementById("viewer");
  document.getElementById("viewer-close").addEventListener("click", () => dialog.close());
  // A click on the backdrop closes it too.
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
}

// ---------------------------------------------------------------------------------
// Sign in
// ---------------------------------------------------------------------------------

export function signIn(main, message, onDone) {
  crumbs([["Sign in", location.href]]);
  const error = h("p", { id: "signin-error", class: "error", role: "alert" }, message || "");
  const user = h("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const password = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "signin", "aria-describedby": "signin-error" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "This registry asks who you are; you will see the repositories you may pull."),
    h("label", { for: "username" }, "User name"), user,
    h("label", { for: "password" }, "Password or token"), password,
    error, submit,
    h("p", {}, h("button", {
      type: "button",
      class: "ghost",
      onclick: () => { api.browseAnonymously(); onDone(); },
    }, "Continue without signing in")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      await api.signIn(user.value, password.value);
      onDone();
    } catch (err) {
      error.textContent = err.message;
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  replace(main, form);
  setTitle(main, "Sign in");
  user.focus();
}
