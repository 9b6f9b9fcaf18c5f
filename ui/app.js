// Entry point: routes on the location (the server answers every page path with this
// document, so deep links and reloads work) and keeps the sign-in state in the header.

import * as api from "./api.js";
import { h, replace } from "./dom.js";
import * as views from "./views.js";

const main = document.getElementById("main");

const routes = {
  "/ui/": views.repositories,
  "/ui/repo": views.repository,
  "/ui/image": views.image,
};

function renderSession() {
  const box = document.getElementById("session");
  if (!api.authEnabled()) return replace(box);
  const user = api.username();
  if (user) {
    replace(box, h("span", { class: "muted" }, "Signed in as ", h("strong", {}, user)),
      h("button", { type: "button", class: "ghost", onclick: signOut }, "Sign out"));
  } else {
    replace(box, h("button", { type: "button", class: "ghost", onclick: () => showSignIn() }, "Sign in"));
  }
}

/** Signing out leaves the page that user was reading for the start page. */
function signOut() {
  api.signOut();
  history.pushState(null, "", "/ui/");
  render();
}

function showSignIn(message) {
  // The form is the page: no second "Sign in" in the header.
  replace(document.getElementById("session"));
  views.signIn(main, message, () => { renderSession(); render(); });
}

async function render() {
  renderSession();
  const view = routes[location.pathname] || routes[location.pathname.replace(/\/+$/, "")];
  const params = new URLSearchParams(location.search);
  main.setAttribute("aria-busy", "true");
  try {
    if (!api.ready()) {
      showSignIn();
      return;
    }
    if (!view) {
      replace(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/ui/", "data-nav": true }, "All repositories")));
      return;
    }
    await view(main, params);
  } catch (e) {
    if (e instanceof api.AuthRequired) {
      showSignIn(e.message);
    } else {
      const heading = { 403: "Not allowed", 404: "Not found" }[e.status] || "Something went wrong";
      replace(main, h("h1", {}, heading),
        h("p", { role: "alert", class: "error" }, e.code ? `${e.code}: ${e.message}` : e.message),
        h("p", {}, h("a", { href: "/ui/", "data-nav": true }, "All repositories")));
    }
  } finally {
    main.removeAttribute("aria-busy");
  }
}

/** In-app links change the page without reloading it. */
document.addEventListener("click", (e) => {
  const a = e.target.closest?.("a[data-nav]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  if (a.href !== location.href) history.pushState(null, "", a.href);
  render();
});
window.addEventListener("popstate", render);

views.setupViewer();
api.probe()
  .then(render)
  .catch((e) => replace(main, h("p", { role: "alert", class: "error" }, `The registry did not answer: ${e.message}`)));
