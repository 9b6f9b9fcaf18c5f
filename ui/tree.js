// The signature tree of one image: the manifest (an index or a single image), its
// attachments, and for an index each platform manifest with its own attachments and
// those of the index that cover it. Built from the coverage extension's JSON
// (`/_signet/attachments/<ref>?recursive=true`), whose `verification` fields carry the
// registry's verdicts.
//
// Nodes are disclosure buttons (`aria-expanded`) over nested lists: Tab, Enter and
// Space work as everywhere, and in the tree the arrow keys move between nodes (Up,
// Down, Home, End), open (Right) and close (Left) them.

import { h, platformName, shortDigest, formatBytes, formatTime } from "./dom.js";

const KINDS = [
  ["signature", "Signature", "Signatures"],
  ["attestation", "Attestation", "Attestations"],
  ["sbom", "SBOM", "SBOMs"],
  ["other", "Referrer", "Other referrers"],
];

let ids = 0;
const nextId = () => `node-${++ids}`;

/** The verdict of one signature or attestation, as a badge and its explanation. */
export function verdictView(verification) {
  if (!verification) return null;
  const { verdict, root, reason, predicateType } = verification;
  const labels = {
    valid: "Valid",
    invalid: "Invalid",
    "no-trust-root": "No trust root",
    unsupported: "Not verifiable",
    unsigned: "Unsigned statement",
  };
  const parts = [h("span", { class: `verdict verdict-${verdict}` }, labels[verdict] || verdict)];
  // A BuildKit statement: nothing wrong, nothing to verify; its predicate types follow.
  if (verdict === "unsigned") {
    parts.push(h("span", { class: "muted" }, "no signature of its own: a valid signature on the index that carries it vouches for it"));
    return h("span", { class: "verdict-line" }, parts);
  }
  const signer = verification.identity || verification.subject || verification.signer;
  if (verdict === "valid") {
    parts.push(h("span", { class: "signer" }, signer ? `signed by ${signer}` : "", root ? ` verified with trust root “${root}”` : ""));
  } else if (signer) {
    parts.push(h("span", { class: "signer" }, `signer ${signer}`));
  }
  if (verification.issuer) parts.push(h("span", { class: "signer" }, `issuer ${verification.issuer}`));
  if (reason) parts.push(h("span", { class: "reason" }, reason));
  if (predicateType) parts.push(h("span", { class: "muted" }, `predicate ${predicateType}`));
  if (verdict === "no-trust-root" && !reason) {
    parts.push(h("span", { class: "reason" }, "no trust root of the registry applies to this repository"));
  }
  return h("span", { class: "verdict-line" }, parts);
}

/** Counts of verdicts over signatures (own or covering) of a coverage node. */
export function signatureSummary(node) {
  const count = { valid: 0, invalid: 0, "no-trust-root": 0, unsupported: 0, unsigned: 0, unverified: 0 };
  const add = (entries) => {
    for (const e of entries || []) count[e.verification?.verdict ?? "unverified"] += 1;
  };
  add(node.attachments?.signature);
  for (const c of node.coveredBy || []) add(c.attachments?.signature);
  return count;
}

function attachmentItem(entry, kind, ctx, covering) {
  const [, singular] = KINDS.find(([k]) => k === kind);
  const nested = entry.attachments && Object.keys(entry.attachments).length > 0;
  const title = entry.artifactType || entry.mediaType || "";
  const item = h("li", { class: `att att-${kind}`, "data-kind": kind, "data-digest": entry.digest },
    h("div", { class: "att-head" },
      h("span", { class: `kind kind-${kind}` }, singular),
      h("code", { class: "mono", title: entry.digest }, shortDigest(entry.digest)),
      h("span", { class: "muted" }, entry.format, entry.size ? ` · ${formatBytes(entry.size)}` : "", entry.created ? ` · ${formatTime(entry.created)}` : ""),
      covering ? h("span", { class: "covers" }, `covers this platform through index ${shortDigest(covering)}`) : null,
      h("button", {
        type: "button",
        class: "ghost small",
        "aria-label": `View ${singular.toLowerCase()} ${shortDigest(entry.digest)}`,
        title,
        onclick: () => ctx.view(entry, kind),
      }, "View"),
    ),
    verdictView(entry.verification),
    statementLine(entry));
  if ((kind === "signature" || kind === "attestation") && entry.format === "cosign" && ctx.signer) {
    // Keyless signatures name their signer in a certificate on the attachment.
    ctx.signer(entry).then((signer) => {
      if (!signer?.identity) return;
      item.querySelector(".att-head").after(h("div", { class: "signer-line" },
        "Certificate for ", h("strong", { class: "signer" }, signer.identity),
        signer.issuer ? ` (issuer ${signer.issuer})` : ""));
    });
  }
  if (nested) item.append(h("ul", { class: "atts" }, attachmentItems(entry.attachments, ctx)));
  return item;
}

/** What an attestation manifest of in-toto statements (BuildKit's) states, and the index that carries it. */
function statementLine(entry) {
  const types = entry.predicateTypes || [];
  if (!types.length && !entry.carriedBy) return null;
  return h("div", { class: "statement-line" },
    types.length ? [h("span", {}, types.length > 1 ? "Predicate types " : "Predicate type "),
      types.map((t, i) => [i ? ", " : "", h("code", { class: "mono break" }, t)])] : null,
    entry.carriedBy ? h("span", { class: "muted" }, ` · in index ${shortDigest(entry.carriedBy)}`) : null);
}

function attachmentItems(byKind, ctx, covering) {
  const out = [];
  for (const [kind] of KINDS) {
    for (const entry of byKind?.[kind] || []) out.push(attachmentItem(entry, kind, ctx, covering));
  }
  return out;
}

function countOf(byKind) {
  return KINDS.reduce((n, [k]) => n + (byKind?.[k]?.length || 0), 0);
}

/** A disclosure node: a toggle button and the list it opens. */
function treeNode(label, details, body, { expanded = false, level = 1, className = "" } = {}) {
  const id = nextId();
  const list = h("ul", { id, class: "node-body" }, body);
  list.hidden = !expanded;
  const toggle = h("button", {
    type: "button",
    class: "toggle",
    "aria-expanded": String(expanded),
    "aria-controls": id,
    "data-level": level,
    onclick: () => setExpanded(toggle, toggle.getAttribute("aria-expanded") !== "true"),
  }, h("span", { class: "chevron", "aria-hidden": "true" }), label);
  return h("li", { class: `node ${className}` }, h("div", { class: "node-head" }, toggle, details), list);
}

function setExpanded(toggle, open) {
  toggle.setAttribute("aria-expanded", String(open));
  document.getElementById(toggle.getAttribute("aria-controls")).hidden = !open;
}

function manifestNode(node, ctx, level, isChild) {
  const platform = platformName(node.platform);
  const kindLabel = /index|list/.test(node.mediaType) ? "Index" : isChild ? "Platform" : "Image";
  const label = h("span", { class: "node-label" },
    h("strong", {}, platform ? `${kindLabel} ${platform}` : kindLabel), " ",
    h("code", { class: "mono", title: node.digest }, shortDigest(node.digest)));
  const summary = signatureSummary(node);
  const badges = [];
  if (summary.valid) badges.push(h("span", { class: "verdict verdict-valid" }, `${summary.valid} valid`));
  if (summary.invalid) badges.push(h("span", { class: "verdict verdict-invalid" }, `${summary.invalid} invalid`));
  if (summary["no-trust-root"]) badges.push(h("span", { class: "verdict verdict-no-trust-root" }, `${summary["no-trust-root"]} untrusted`));
  if (!summary.valid && !summary.invalid && !summary["no-trust-root"] && !summary.unsupported && !summary.unverified) {
    badges.push(h("span", { class: "verdict verdict-none" }, "unsigned"));
  }
  const body = [];
  const own = countOf(node.attachments);
  body.push(h("li", { class: "group" },
    h("h3", {}, own ? `Attached to this ${kindLabel.toLowerCase()} (${own})` : `Nothing attached to this ${kindLabel.toLowerCase()}`),
    own ? h("ul", { class: "atts" }, attachmentItems(node.attachments, ctx)) : null));
  for (const c of node.coveredBy || []) {
    const n = countOf(c.attachments);
    if (!n) continue;
    body.push(h("li", { class: "group covered" },
      h("h3", {}, `Covering from index ${shortDigest(c.index)} (${n})`),
      h("ul", { class: "atts" }, attachmentItems(c.attachments, ctx, c.index))));
  }
  for (const child of node.children || []) body.push(manifestNode(child, ctx, level + 1, true));
  return treeNode(label, h("span", { class: "badges" }, badges), body, {
    expanded: level === 1,
    level,
    className: isChild ? "platform" : "root",
  });
}

/** Moves focus and opens or closes nodes with the arrow keys. */
function onKey(event) {
  const toggle = event.target.closest?.(".toggle");
  if (!toggle) return;
  const tree = event.currentTarget;
  const visible = [...tree.querySelectorAll(".toggle")].filter((t) => t.offsetParent !== null);
  const at = visible.indexOf(toggle);
  const open = toggle.getAttribute("aria-expanded") === "true";
  let target = null;
  switch (event.key) {
    case "ArrowDown": target = visible[at + 1]; break;
    case "ArrowUp": target = visible[at - 1]; break;
    case "Home": target = visible[0]; break;
    case "End": target = visible[visible.length - 1]; break;
    case "ArrowRight":
      if (!open) setExpanded(toggle, true);
      else target = visible[at + 1];
      break;
    case "ArrowLeft":
      if (open) setExpanded(toggle, false);
      else target = toggle.closest(".node-body")?.closest(".node")?.querySelector(":scope > .node-head > .toggle");
      break;
    default: return;
  }
  event.preventDefault();
  target?.focus();
}

/**
 * The tree of `report` (a coverage report). `ctx.view(entry, kind)` opens an
 * attachment's contents.
 */
export function signatureTree(report, ctx) {
  const tree = h("ul", { class: "tree", "aria-label": "Signature tree", onkeydown: onKey },
    manifestNode(report, ctx, 1, false));
  const all = (open) => tree.querySelectorAll(".toggle").forEach((t) => setExpanded(t, open));
  const tools = h("div", { class: "tools" },
    h("button", { type: "button", class: "ghost", onclick: () => all(true) }, "Expand all"),
    h("button", { type: "button", class: "ghost", onclick: () => all(false) }, "Collapse all"));
  return h("section", { class: "tree-wrap", "aria-labelledby": "tree-title" },
    h("div", { class: "section-head" }, h("h2", { id: "tree-title" }, "Signature tree"), tools),
    tree);
}
