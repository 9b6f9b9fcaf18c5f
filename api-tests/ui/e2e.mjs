// Drives Signet's web UI in headless Debian chromium with playwright-core, for
// api-tests/tests/ui.rs. Usage: node e2e.mjs <scenario.json>
//
// The scenario names the registry, what the Rust test pushed and where screenshots
// go. Each step asserts what a person would see; the first failure exits non-zero
// with its message (and a screenshot of the page as it was).

import { createRequire } from "node:module";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";

const scenario = JSON.parse(readFileSync(process.argv[2], "utf8"));
// playwright-core lives with the other npm clients of the tests (api-tests/js).
const require = createRequire(join(scenario.jsDir, "package.json"));
const { chromium } = require("playwright-core");

const STEP_TIMEOUT = 15_000;
mkdirSync(scenario.artifacts, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "signet-ui-chromium-"));

// A fresh profile (playwright passes it as --user-data-dir).
const context = await chromium.launchPersistentContext(profile, {
  executablePath: scenario.chromium || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 900 },
  // The copy buttons write to the clipboard; the test reads it back.
  permissions: ["clipboard-read", "clipboard-write"],
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = context.pages()[0] ?? await context.newPage();
page.setDefaultTimeout(STEP_TIMEOUT);
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));

let shots = 0;
const shot = async (name) => {
  await page.screenshot({ path: join(scenario.artifacts, `${name}.png`), fullPage: true });
  shots += 1;
};
const ui = (path) => `${scenario.url}${path}`;

async function signedScenario() {
  const s = scenario;
  // The repository list, searched.
  await page.goto(ui("/ui/"));
  await page.getByRole("searchbox", { name: "Search repositories" }).waitFor();
  await shot("01-repositories");
  await page.getByRole("searchbox", { name: "Search repositories" }).fill(s.search);
  const repoLink = page.getByRole("link", { name: s.repo, exact: true });
  await repoLink.waitFor();
  for (const other of s.filteredOut) {
    await page.getByRole("link", { name: other, exact: true }).waitFor({ state: "detached" });
  }
  assert.match(page.url(), /\?q=/, "the search is kept in the address");
  await shot("02-search");

  // The tags of the repository, with their details.
  await repoLink.click();
  const row = page.getByRole("row").filter({ has: page.getByRole("link", { name: s.tag, exact: true }) });
  await row.waitFor();
  const rowText = await row.innerText();
  for (const expected of ["OCI index", "linux/amd64, linux/arm64", s.indexDigest.slice(0, 19), "Verified (release-key)", "2 of 2 platforms covered"]) {
    assert.ok(rowText.includes(expected), `tag row shows ${expected}: ${rowText}`);
  }
  // Tags that only carry attachments are hidden until asked for.
  assert.equal(await page.locator("table.tags tbody tr").count(), 1, "only v1 by default");
  await shot("03-tags");
  await page.getByLabel("Show signature and attachment tags").check();
  await page.getByRole("link", { name: /\.sig$/ }).first().waitFor();
  assert.equal(await page.locator("table.tags tbody tr").count(), 6, "v1 with its .sig and .att, each platform's .sig, the SBOM's .sig");
  assert.equal(await page.evaluate(() => document.activeElement.id), "all-tags", "focus stays on the checkbox");
  await page.getByLabel("Show signature and attachment tags").uncheck();
  await page.locator("table.tags tbody tr").nth(1).waitFor({ state: "detached" });

  // The image: pull commands, the platform summary, the tree.
  await row.getByRole("link", { name: s.tag, exact: true }).click();
  await page.getByRole("heading", { name: "Signature tree" }).waitFor();
  const byTag = await page.getByRole("textbox", { name: "Pull by tag" }).inputValue();
  const byDigest = await page.getByRole("textbox", { name: "Pull by digest" }).inputValue();
  assert.equal(byTag, `docker pull ${s.host}/${s.repo}:${s.tag}`);
  assert.equal(byDigest, `docker pull ${s.host}/${s.repo}@${s.indexDigest}`);
  const copy = page.getByRole("button", { name: "Copy pull by digest" });
  await copy.click();
  await copy.filter({ hasText: "Copied" }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), byDigest, "the copy button copies");

  const summary = page.getByRole("table", { name: /Platforms and their signatures/ });
  // amd64: the index's signature and its own tampered one; arm64: the index's and its own.
  for (const [platform, expected] of [["linux/amd64", /Signed \(1 valid\)\s*1 invalid/], ["linux/arm64", /Signed \(2 valid\)/]]) {
    const text = await summary.getByRole("row").filter({ hasText: platform }).innerText();
    assert.match(text, expected, `${platform}: ${text}`);
  }

  // Keyboard: from the index node, Down reaches the first platform, Right opens it.
  const tree = page.getByRole("list", { name: "Signature tree" });
  const toggles = tree.locator("button.toggle");
  assert.equal(await toggles.count(), 3, "one index and two platform nodes");
  assert.equal(await toggles.nth(0).getAttribute("aria-expanded"), "true", "the index node starts open");
  assert.equal(await toggles.nth(1).getAttribute("aria-expanded"), "false", "platform nodes start closed");
  await toggles.nth(0).focus();
  await page.keyboard.press("ArrowDown");
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute("aria-expanded")), "false");
  await page.keyboard.press("ArrowRight");
  assert.equal(await toggles.nth(1).getAttribute("aria-expanded"), "true", "ArrowRight opens the focused node");
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("Enter");
  assert.equal(await toggles.nth(2).getAttribute("aria-expanded"), "true", "Enter opens the second platform");

  // Each platform shows the index's signature as covering it, valid, with its root.
  for (const child of s.platforms) {
    const node = tree.locator("li.platform").filter({ has: page.locator(`code[title="${child.digest}"]`) });
    const covering = node.locator(`li.att[data-digest="${s.indexSignature}"]`);
    await covering.waitFor();
    const text = await covering.innerText();
    assert.match(text, /covers this platform through index/, text);
    assert.match(text, /Valid/, text);
    assert.ok(text.includes(s.root), `the signer's trust root is named: ${text}`);
  }
  // The tampered signature: invalid, with the reason.
  const tampered = tree.locator(`li.att[data-digest="${s.tamperedSignature}"]`);
  const tamperedText = await tampered.innerText();
  assert.match(tamperedText, /Invalid/, tamperedText);
  assert.match(tamperedText, /bad signature/, tamperedText);
  // The SBOM's own signature sits under the SBOM, verified.
  const sbomSignature = tree.locator(`li.att[data-digest="${s.sbom}"] li.att[data-digest="${s.sbomSignature}"]`).first();
  assert.match(await sbomSignature.innerText(), /Valid/);

  // A keyless-style signature names its signer from its certificate.
  const certified = tree.locator(`li.att[data-digest="${s.certificateSignature}"]`);
  await certified.getByText(s.certificateSigner).waitFor();
  await shot("04-tree");

  // The attestation's statement and the SBOM's document can be read.
  await tree.locator(`li.att[data-digest="${s.attestation}"]`).first().getByRole("button", { name: /^View attestation/ }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByText("DSSE payload").waitFor();
  assert.ok((await dialog.innerText()).includes(s.predicateType), "the in-toto statement is decoded");
  await shot("05-attestation");
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
  await tree.locator(`li.att[data-digest="${s.sbom}"]`).first().getByRole("button", { name: /^View sbom/ }).click();
  await dialog.getByText(s.sbomMarker).first().waitFor();
  await shot("06-sbom");
  await dialog.getByRole("button", { name: "Close" }).click();

  // A deep link opens the same page on a fresh load (the server answers with the UI).
  await page.goto(ui(`/ui/image?name=${encodeURIComponent(s.repo)}&ref=${encodeURIComponent(s.indexDigest)}`));
  await page.getByRole("heading", { name: "Signature tree" }).waitFor();

  // Readable at 360 px: nothing wider than the screen.
  await page.setViewportSize({ width: 360, height: 800 });
  await page.getByRole("button", { name: "Expand all" }).click();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px at 360px`);
  await shot("07-narrow-360");

  // BuildKit's attestations: no platforms of their own, each under the platform it
  // attests with its predicate types, and readable in the viewer.
  await page.setViewportSize({ width: 1280, height: 900 });
  const b = s.built;
  await page.goto(ui(`/ui/image?name=${encodeURIComponent(b.repo)}&ref=v1`));
  const builtSummary = page.getByRole("table", { name: /Platforms and their signatures/ });
  await builtSummary.waitFor();
  assert.equal(await builtSummary.locator("tbody tr").count(), 2, "two platforms, no unknown/unknown");
  assert.ok(!(await builtSummary.innerText()).includes("unknown"), "attestation entries are no platforms");
  await page.getByRole("button", { name: "Expand all" }).click();
  const builtTree = page.getByRole("list", { name: "Signature tree" });
  for (const [i, platform] of b.platforms.entries()) {
    const node = builtTree.locator("li.platform").filter({ has: page.locator(`code[title="${platform}"]`) });
    const item = node.locator(`li.att[data-digest="${b.attestations[i]}"]`);
    const text = await item.innerText();
    for (const p of b.predicateTypes) assert.ok(text.includes(p), `the predicate types are shown: ${text}`);
    assert.match(text, /Unsigned statement/, text);
  }
  await shot("08-buildkit");
  await builtTree.locator(`li.att[data-digest="${b.attestations[0]}"]`).getByRole("button", { name: /^View attestation/ }).click();
  await dialog.getByText("Predicate types").waitFor();
  const statementText = await dialog.innerText();
  assert.ok(statementText.includes("spdxVersion") && statementText.includes("buildType"), "both statements are shown");
  await shot("09-buildkit-statement");
  await dialog.getByRole("button", { name: "Close" }).click();

  // A Notary Project signature: verified, its signer's subject shown, and its JWS
  // envelope decoded in the viewer.
  const n = s.notary;
  await page.goto(ui(`/ui/image?name=${encodeURIComponent(n.repo)}&ref=v1`));
  await page.getByRole("button", { name: "Expand all" }).click();
  const notaryItem = page.getByRole("list", { name: "Signature tree" }).locator(`li.att[data-digest="${n.signature}"]`);
  await notaryItem.waitFor();
  const notaryText = await notaryItem.innerText();
  assert.match(notaryText, /notation/, notaryText);
  assert.match(notaryText, /Valid/, notaryText);
  assert.ok(notaryText.includes(n.signer) && notaryText.includes(n.root), `signer and root are shown: ${notaryText}`);
  await notaryItem.getByRole("button", { name: /^View signature/ }).click();
  await dialog.getByText("Notary Project JWS envelope", { exact: false }).waitFor();
  const envelopeText = await dialog.innerText();
  assert.ok(envelopeText.includes("notary.x509") && envelopeText.includes("targetArtifact"), "the envelope is decoded");
  await shot("09b-notation");
  await dialog.getByRole("button", { name: "Close" }).click();

  // Many tags: one page at a time.
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(ui(`/ui/repo?name=${encodeURIComponent(s.manyTagsRepo)}`));
  await page.getByRole("navigation", { name: "Tag pages" }).getByRole("link", { name: "Next page" }).waitFor();
  assert.equal(await page.locator("table.tags tbody tr").count(), 50, "a page holds 50 tags");
  await page.getByRole("link", { name: "Next page" }).click();
  await page.getByRole("link", { name: "First page" }).waitFor();
  await shot("10-tag-pages");

  // The other pages at 360 px too.
  await page.setViewportSize({ width: 360, height: 800 });
  for (const path of [`/ui/repo?name=${encodeURIComponent(s.repo)}&all=1`, "/ui/"]) {
    await page.goto(ui(path));
    await page.locator("main h1").waitFor();
    await page.waitForFunction(() => !document.getElementById("main").hasAttribute("aria-busy"));
    const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(wide <= 0, `${path} scrolls sideways by ${wide}px at 360px`);
  }
  await shot("11-narrow-repositories");
}

async function authScenario() {
  const s = scenario;
  await page.goto(ui("/ui/"));
  const user = page.getByLabel("User name");
  await user.waitFor();
  await shot("01-sign-in");
  await user.fill(s.user);
  await page.getByLabel("Password or token").fill("wrong password");
  await page.getByRole("main").getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "Wrong user name or password" }).waitFor();

  await page.getByLabel("Password or token").fill(s.password);
  await page.getByRole("main").getByRole("button", { name: "Sign in" }).click();
  await page.getByText(`Signed in as ${s.user}`).waitFor();
  await page.getByRole("link", { name: s.ownRepo, exact: true }).waitFor();
  const listed = await page.getByRole("list", { name: "Repositories" }).getByRole("link").allInnerTexts();
  assert.deepEqual(listed, s.visible, "the list holds only what the user may pull");
  await shot("02-own-repositories");

  await page.getByRole("link", { name: s.ownRepo, exact: true }).click();
  await page.getByRole("link", { name: s.tag, exact: true }).click();
  await page.getByRole("heading", { name: "Signature tree" }).waitFor();
  await shot("03-own-image");
  // Links inside the UI keep the session (the credentials live in the page).
  await page.getByRole("link", { name: "Signet" }).click();
  await page.getByRole("link", { name: s.ownRepo, exact: true }).waitFor();
  await page.getByText(`Signed in as ${s.user}`).waitFor();

  // A reload keeps the session only where the registry issues refresh tokens.
  await page.reload();
  if (s.persistent) {
    await page.getByText(`Signed in as ${s.user}`).waitFor();
    await page.getByRole("link", { name: s.ownRepo, exact: true }).waitFor();
    const stored = await page.evaluate(() => JSON.stringify(sessionStorage));
    assert.ok(stored.includes("refresh"), `a refresh token is kept: ${stored}`);
    assert.ok(!stored.includes(s.password), "the password is never stored");
  } else {
    await page.getByLabel("User name").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0, "nothing is stored");
  }

  // Another user's repository, by a typed address: refused by the registry.
  await page.goto(ui(`/ui/repo?name=${encodeURIComponent(s.otherRepo)}`));
  if (!s.persistent) {
    // A fresh page load forgot the password: sign in again, then read the refusal.
    await page.getByLabel("User name").fill(s.user);
    await page.getByLabel("Password or token").fill(s.password);
    await page.getByRole("main").getByRole("button", { name: "Sign in" }).click();
  }
  await page.getByRole("alert").filter({ hasText: "DENIED" }).waitFor();
  assert.equal(await page.getByRole("table").count(), 0, "no tags of the other repository are shown");
  await shot("04-other-refused");

  if (s.persistent) {
    // Crafted links, opened signed in, cannot aim the user's token anywhere else: a name
    // or reference outside the registry's grammar is refused before any request.
    const asked = [];
    page.on("request", (r) => asked.push(new URL(r.url()).pathname));
    for (const path of [
      "/ui/repo?name=_signet/sync/jobs%23",
      "/ui/repo?name=..%2F..%2Fmetrics%23",
      `/ui/image?name=${encodeURIComponent(s.ownRepo)}&ref=..%2F..%2F..%2Fmetrics`,
    ]) {
      await page.goto(ui(path));
      await page.getByRole("alert").filter({ hasText: /Not a (repository name|tag or digest)/ }).waitFor();
    }
    const strays = asked.filter((p) => p.startsWith("/v2/_signet/sync") || p === "/metrics" || p.includes(".."));
    assert.deepEqual(strays, [], "no request left the pages' own API paths");
    await shot("05-crafted-links-refused");
  }

  const refresh = await page.evaluate(() => JSON.parse(sessionStorage.getItem("signet-ui-session") || "{}").refresh || null);
  const revoked = s.persistent
    ? page.waitForResponse((r) => new URL(r.url()).pathname === "/v2/token/revoke")
    : null;
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("User name").waitFor();
  if (s.persistent) {
    // Signing out revoked the refresh token on the server: a copy of it is worthless.
    assert.ok(refresh, "a refresh token was kept while signed in");
    assert.equal((await revoked).status(), 200);
    const status = await page.evaluate(async (token) => {
      const res = await fetch("/v2/token", {
        method: "POST",
        body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: token, service: "signet" }),
      });
      return res.status;
    }, refresh);
    assert.equal(status, 401, "the revoked refresh token is refused");
  }
  // Signed out stays signed out across a reload.
  await page.reload();
  await page.getByLabel("User name").waitFor();

  // Without signing in: what anonymous callers may pull, and nothing else.
  await page.getByRole("button", { name: "Continue without signing in" }).click();
  await page.getByRole("link", { name: s.anonymousVisible[0], exact: true }).waitFor();
  const anonymous = await page.getByRole("list", { name: "Repositories" }).getByRole("link").allInnerTexts();
  assert.deepEqual(anonymous, s.anonymousVisible, "anonymous callers see only public repositories");
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  await shot("06-anonymous");
}

let failed = null;
try {
  if (scenario.kind === "signed") await signedScenario();
  else if (scenario.kind === "auth") await authScenario();
  else throw new Error(`unknown scenario ${scenario.kind}`);
  assert.deepEqual(consoleErrors.filter((e) => !/status of 40[13]/.test(e)), [], "no script errors in the page");
} catch (e) {
  failed = e;
  await shot("failure").catch(() => {});
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
if (failed) {
  console.error(failed.stack || String(failed));
  process.exit(1);
}
console.log(`ok, screenshots: ${shots}`);
