// Small DOM helpers: elements are built with `h`, never from HTML strings, so nothing a
// registry returns (tag names, annotations, SBOM contents) can inject markup.

/** Builds an element: `h("a", { href: "/x", class: "k" }, "text", child)`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Tells screen readers what changed. */
export function announce(text) {
  const status = document.getElementById("status");
  status.textContent = "";
  // A fresh text node after a tick is announced even when the text repeats.
  setTimeout(() => { status.textContent = text; }, 50);
}

export function formatBytes(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** ISO time (or seconds since the epoch) as a short UTC date and time. */
export function formatTime(t) {
  const date = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  if (Number.isNaN(date.getTime())) return "";
  return date.toISOString().replace("T", " ").replace(/:\d\d\.\d+Z$/, " UTC");
}

export function shortDigest(digest) {
  const [alg, hex] = String(digest).split(":");
  return hex ? `${alg}:${hex.slice(0, 12)}` : String(digest);
}

export function platformName(p) {
  if (!p) return "";
  return [p.os, p.architecture, p.variant].filter(Boolean).join("/");
}

/** A read-only field with a button that copies its text. */
export function copyField(label, text) {
  const id = `copy-${Math.random().toString(36).slice(2)}`;
  const input = h("input", { id, class: "mono", type: "text", readonly: true, value: text });
  const button = h("button", {
    type: "button",
    class: "ghost",
    "aria-label": `Copy ${label.toLowerCase()}`,
    onclick: async () => {
      let copied = false;
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch {
        // Without clipboard permission (plain HTTP, older browsers): select the text
        // so the user can copy it with their keyboard.
        input.focus();
        input.select();
        copied = document.execCommand && document.execCommand("copy");
      }
      button.textContent = copied ? "Copied" : "Select and copy";
      announce(copied ? `${label} copied` : `${label} selected`);
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    },
  }, "Copy");
  return h("div", { class: "copy" }, h("label", { for: id }, label), h("div", { class: "copy-row" }, input, button));
}
