// Drives the daemon's web page in headless Chromium: sign in through the one-time login link, add a
// .torrent through the Add dialog, wait for its row to reach 100% and seeding, look at the detail
// panel, save a screenshot. Then, as another user's server on another port of the same host, check
// that the browser hands it nothing of the session, and that the daemon's page on another origin has
// no session either.
// Started by crates/spore/tests/browser.rs, which passes everything through the environment:
//   SPORE_URL         the daemon's page, http://127.0.0.1:PORT/
//   SPORE_LOGIN       the one-time login link the daemon printed
//   SPORE_TOKEN       the API token, which the page must never contain
//   SPORE_TORRENT     the .torrent file to upload
//   SPORE_ID          its expected id (v1 info-hash, hex)
//   SPORE_TRACKER     the tracker URL the torrent announces to
//   SPORE_SEED        the seeder's address (for the log)
//   SPORE_SCREENSHOT  where to save the PNG
//   CHROMIUM          the browser binary [default: /usr/bin/chromium]

import { chromium } from "playwright-core";
import http from "node:http";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const url = env("SPORE_URL");
const login = env("SPORE_LOGIN");
const apiToken = env("SPORE_TOKEN");
const torrent = env("SPORE_TORRENT");
const id = env("SPORE_ID");
const tracker = env("SPORE_TRACKER");
const seed = env("SPORE_SEED", "");
const screenshot = env("SPORE_SCREENSHOT");

const step = (msg) => console.log(`step: ${msg}`);

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
  ],
  timeout: 30_000,
});
const problems = [];
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 760 }, colorScheme: "light" });
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`);
  });
  // The page must never reach beyond the daemon (no CDN, no fonts).
  const origin = new URL(url).origin;
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith("data:")) problems.push(`request off the daemon: ${u}`);
  });

  // The page's calls to the API, to see that none goes out before it has a session.
  const apiCalls = [];
  page.on("request", (r) => {
    if (new URL(r.url()).pathname.startsWith("/api/")) apiCalls.push(r.url());
  });
  const signedOutDialog = () => page.locator("#login-dialog").evaluate((d) => d.open);
  const stored = (p) => p.evaluate(() => JSON.parse(sessionStorage.getItem("spore-session") || "null"));

  step(`open ${url} before signing in (seed at ${seed})`);
  await page.goto(url, { waitUntil: "load" });
  await page.locator("#login-dialog[open]").waitFor();
  if ((await page.locator("#login-title").textContent()) !== "Sign in") throw new Error("no sign-in dialog");
  await page.waitForTimeout(1500); // the watchdog's tick, which would poll if it thought it could
  if (apiCalls.length) throw new Error(`API calls without a session: ${apiCalls.join(", ")}`);

  step("sign in through the one-time link");
  await page.goto(login, { waitUntil: "load" });
  // The secret leaves the address bar at once.
  if (page.url() !== url) throw new Error(`the login link left ${page.url()}, not ${url}`);
  // The session carries the live stream and the calls, with no token anywhere.
  await page.locator('#conn[data-mode="live"]').waitFor({ timeout: 15_000 });
  if (await signedOutDialog()) throw new Error("the page says it is signed out");
  const session = await stored(page);
  if (!session || !/^[0-9a-f]{64}$/.test(session.token) || !/^[0-9a-f]{64}$/.test(session.stream) || session.token === session.stream)
    throw new Error(`session in sessionStorage: ${JSON.stringify(session)}`);
  const cookies = await context.cookies();
  if (cookies.length) throw new Error(`the daemon set cookies: ${JSON.stringify(cookies)}`);
  if ((await page.content()).includes(apiToken)) throw new Error("the page holds the API token");
  if ((await page.content()).includes(session.token)) throw new Error("the page's HTML holds its session token");

  step("add the .torrent through the Add dialog");
  await page.click("#add-button");
  await page.locator("#add-dialog").waitFor({ state: "visible" });
  await page.setInputFiles("#add-file-input", torrent);
  await page.fill("#add-labels", "demo, new show");
  await page.click("#add-submit");
  await page.locator("#add-dialog").waitFor({ state: "hidden" });

  const row = page.locator(`#torrents tbody tr[data-id="${id}"]`);
  await row.waitFor({ state: "visible" });
  step("the labels given in the dialog show in the row");
  const tags = await row.locator(".name .tag").allTextContents();
  if (tags.join("|") !== "demo|new show") throw new Error(`labels in the row: ${JSON.stringify(tags)}`);
  step("wait for 100% and seeding");
  await page.waitForFunction(
    (id) => {
      const tr = document.querySelector(`#torrents tbody tr[data-id="${id}"]`);
      return tr && tr.querySelector(".progress").textContent === "100%" && tr.dataset.state === "seeding";
    },
    id,
    { timeout: 60_000, polling: 200 },
  );

  step("open the detail panel");
  await row.click();
  await page.locator("#detail").waitFor({ state: "visible" });
  await page.locator("#detail-info dd", { hasText: id }).first().waitFor();
  await page.click('.tabs button[data-tab="trackers"]');
  await page.locator("#trackers tbody td", { hasText: tracker }).waitFor();
  await page.click('.tabs button[data-tab="files"]');
  await page.locator("#files tbody tr").first().waitFor();
  const files = await page.locator("#files tbody tr").count();
  const checked = await page.locator("#files tbody input.file-select:checked").count();
  const done = await page.locator("#files tbody .progress", { hasText: "100%" }).count();
  if (files === 0 || checked !== files || done !== files)
    throw new Error(`files tab: ${files} files, ${checked} selected, ${done} at 100%`);

  step("raise the first file's priority");
  const saved = page.waitForResponse((r) => r.url().endsWith(`/api/torrents/${id}`) && r.request().method() === "PUT");
  await page.locator("#files tbody select.file-priority").first().selectOption("high");
  const response = await saved;
  if (!response.ok()) throw new Error(`priority change answered ${response.status()}`);
  const view = await page.evaluate(async (tid) => {
    const { token } = JSON.parse(sessionStorage.getItem("spore-session"));
    const r = await fetch(`/api/torrents/${tid}`, { headers: { Authorization: `Bearer ${token}` } });
    return r.json();
  }, id);
  if (view.files[0].priority !== "high") throw new Error(`priority not saved: ${JSON.stringify(view.files)}`);
  // Priorities apply without a restart; the torrent must still be seeding.
  await page.locator(`tr[data-id="${id}"][data-state="seeding"]`).waitFor({ timeout: 30000 });

  step("the first file's stream link answers a range with the session's stream token");
  const href = await page.locator("#files tbody a.stream-link").first().getAttribute("href");
  const streamPath = `/stream/${id}/${view.files[0].index}`;
  if (href !== `${streamPath}?token=${session.stream}`) throw new Error(`stream link ${href}`);
  const ranged = await page.evaluate(async (url) => {
    const r = await fetch(url, { headers: { Range: "bytes=0-9" } });
    return { status: r.status, range: r.headers.get("content-range"), length: (await r.arrayBuffer()).byteLength };
  }, href);
  if (ranged.status !== 206 || ranged.length !== 10 || !/^bytes 0-9\/\d+$/.test(ranged.range || ""))
    throw new Error(`stream range: ${JSON.stringify(ranged)}`);

  step("change the labels in the detail panel");
  await page.click('.tabs button[data-tab="general"]');
  const labelled = page.waitForResponse((r) => r.url().endsWith(`/api/torrents/${id}`) && r.request().method() === "PUT");
  await page.fill("#limit-labels", "kept");
  await page.click("#limits-save");
  if (!(await labelled).ok()) throw new Error("the labels change was refused");
  await row.locator(".name .tag", { hasText: "kept" }).waitFor();
  if ((await row.locator(".name .tag").count()) !== 1) throw new Error("old labels still shown");

  // An API error shown to the user would be a failure the row alone does not reveal.
  const errors = await page.locator("#messages .msg:not(.ok)").allTextContents();
  if (errors.length) throw new Error(`the page shows errors: ${errors.join(" | ")}`);
  if (problems.length) throw new Error(problems.join("\n"));

  // Let the speed graph and the sizes settle on the last second's figures before the picture.
  await page.click('.tabs button[data-tab="general"]');
  const taken = Number(await page.locator("#speed-graph").getAttribute("data-samples"));
  await page.waitForFunction(
    (n) => Number(document.querySelector("#speed-graph").dataset.samples) >= n,
    taken + 2,
    { timeout: 10_000 },
  );
  await page.screenshot({ path: screenshot });
  console.log(`screenshot: ${screenshot}`);

  // (After the check of the page's console: the browser logs each of these refusals as an error.)
  step("without the session header, or the stream token, the page's own origin gets nothing");
  const bare = await page.evaluate(async () => (await fetch("/api/torrents", { credentials: "include" })).status);
  if (bare !== 401) throw new Error(`the API answered ${bare} to a call without the session header`);
  const tokenless = await page.evaluate(async (url) => (await fetch(url, { credentials: "include" })).status, streamPath);
  if (tokenless !== 401) throw new Error(`a stream without its token answered ${tokenless}`);

  step("another user's server on another port of this host gets nothing of the session");
  // Cookies are shared by every port of a host; origins are not. This browser (the daemon user's)
  // visits a server someone else runs on this machine: the server must receive no credential, and
  // its page must find none.
  const seen = [];
  const foreign = http.createServer((req, res) => {
    seen.push(req.headers);
    res.writeHead(200, { "Content-Type": "text/html" });
    res.end("<!doctype html><title>someone else's server</title><p>hello</p>");
  });
  await new Promise((ok) => foreign.listen(0, "127.0.0.1", ok));
  const foreignUrl = `http://127.0.0.1:${foreign.address().port}/`;
  const visit = await context.newPage();
  await visit.goto(foreignUrl);
  await visit.goto(foreignUrl + "again");
  const found = await visit.evaluate(() => ({ cookie: document.cookie, session: sessionStorage.length, local: localStorage.length }));
  await visit.close();
  foreign.close();
  if (seen.length < 2) throw new Error(`the foreign server saw ${seen.length} requests`);
  for (const h of seen) {
    if (h.cookie || h.authorization) throw new Error(`the foreign server received a credential: ${JSON.stringify(h)}`);
  }
  if (found.cookie || found.session || found.local) throw new Error(`the foreign page found: ${JSON.stringify(found)}`);

  step("the daemon's page on another origin (localhost, same port) has no session");
  const elsewhere = new URL(url);
  elsewhere.hostname = "localhost";
  const otherOrigin = await context.newPage();
  await otherOrigin.goto(elsewhere.href, { waitUntil: "load" });
  await otherOrigin.locator("#login-dialog[open]").waitFor();
  if (await stored(otherOrigin)) throw new Error("the page on another origin has a session");
  if (await otherOrigin.locator("#torrents tbody tr").count()) throw new Error("the page on another origin shows torrents");
  await otherOrigin.close();

  step("the used link signs no one in again");
  const again = await browser.newContext();
  const other = await again.newPage();
  await other.goto(login, { waitUntil: "load" });
  await other.locator("#login-dialog[open]").waitFor();
  const refusal = await other.locator("#login-error").textContent();
  if (!/not valid/.test(refusal)) throw new Error(`a used login link: ${refusal}`);
  if (await stored(other)) throw new Error("a used login link gave a session");
  if ((await again.cookies()).length) throw new Error("a used login link set a cookie");
  await again.close();
  // The first page is still signed in.
  if (await signedOutDialog()) throw new Error("the page was signed out");
  console.log("browser test passed");
} catch (e) {
  console.error(`FAILED: ${e.stack || e}`);
  for (const p of problems) console.error(p);
  if (page) {
    const failed = screenshot.replace(/\.png$/, "") + "-failed.png";
    await page.screenshot({ path: failed }).then(() => console.error(`screenshot of the failure: ${failed}`), () => {});
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
