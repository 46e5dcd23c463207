// Drives Debian's Chromium (through playwright-core) against the chat example.
//
//   node chat.mjs <scenario> '<json config>'
//
// Scenarios: "reload" (reload the page mid-stream), "stop" (the Stop button), "steer" (the
// "add instruction" box mid-stream), "reconnect" (the
// browser's own EventSource reconnect after the serving instance restarts). Prints one line
// "RESULT {json}" at the end. "reconnect" also prints "STEP {json}" when the test should
// restart the instance, and waits for a line on stdin before going on. Any failure prints
// "ERROR {json}" and exits with status 1. Assertions are left to tests/test_browser.py.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const [scenario, rawConfig] = process.argv.slice(2);
const config = JSON.parse(rawConfig || "{}");
const timeout = config.timeout_ms ?? 30000;

function emit(kind, value) {
  process.stdout.write(`${kind} ${JSON.stringify(value)}\n`);
}

const stdinLines = [];
const stdinWaiters = [];
createInterface({ input: process.stdin }).on("line", (line) => {
  const waiter = stdinWaiters.shift();
  if (waiter) waiter(line);
  else stdinLines.push(line);
});

function readLine(ms) {
  if (stdinLines.length) return Promise.resolve(stdinLines.shift());
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer on stdin within ${ms} ms`)), ms);
    stdinWaiters.push((line) => { clearTimeout(timer); resolve(line); });
  });
}

const answer = (page) => page.evaluate(() => ({
  text: document.querySelector("#answer").textContent,
  state: document.body.dataset.state,
  status: document.querySelector("#status").textContent,
  stored: JSON.parse(localStorage.getItem("streamhub-chat")),
}));

async function ask(page, base, prompt, minChars) {
  await page.goto(base + "/");
  await page.fill("#prompt", prompt);
  await page.click("#send");
  await page.waitForFunction(
    (n) => document.querySelector("#answer").textContent.length >= n, minChars, { timeout });
}

// What a scenario that waits for the page's end reports about it.
const ending = (after, started) => ({
  finalLength: after.text.length,
  text: after.text,
  state: after.state,
  status: after.status,
  stored: after.stored,
  elapsedMs: Date.now() - started,
});

const scenarios = {
  // Send, reload while the answer streams, wait for the end: the text must be whole.
  async reload(page, cfg) {
    const started = Date.now();
    await ask(page, cfg.base, cfg.prompt, cfg.reload_after_chars);
    const before = await answer(page);
    await page.reload();
    const restored = await answer(page);
    await page.waitForSelector("body[data-state=done]", { timeout });
    const after = await answer(page);
    return {
      charsBeforeReload: before.text.length,
      stateBeforeReload: before.state,
      cursorBeforeReload: before.stored.cursor,
      storedCharsBeforeReload: before.stored.text.length,
      restoredText: restored.text,
      charsAfterReload: restored.text.length,
      ...ending(after, started),
    };
  },

  // Send, press Stop while the answer streams: the page ends "cancelled" with a prefix.
  async stop(page, cfg) {
    const started = Date.now();
    await ask(page, cfg.base, cfg.prompt, cfg.stop_after_chars);
    const before = await answer(page);
    await page.click("#stop");
    await page.waitForSelector("body[data-state=cancelled]", { timeout });
    const after = await answer(page);
    return { charsBeforeStop: before.text.length, ...ending(after, started) };
  },

  // Send, add an instruction while the answer streams, wait for the end: the fake LLM must
  // have echoed it and changed topic.
  async steer(page, cfg) {
    const started = Date.now();
    await ask(page, cfg.base, cfg.prompt, cfg.steer_after_chars);
    const before = await answer(page);
    await page.fill("#instruction", cfg.instruction);
    await page.click("#steer");
    await page.waitForFunction(() => document.querySelector("#instruction").value === "", null, { timeout });
    await page.waitForSelector("body[data-state=done]", { timeout });
    const after = await answer(page);
    return { charsBeforeSteer: before.text.length, ...ending(after, started) };
  },

  // The browser helper on its own, against tests/http_app.py: every kind of chunk is decoded
  // exactly; then the record is given a cursor of an older generation and resume() must take
  // the server's reset, drop the stored text and rebuild it from the start.
  async module(page, cfg) {
    await page.goto(cfg.base + "/healthz");
    return page.evaluate(async (cfg) => {
      const { ResumableStream } = await import("/streams/~/streamhub.js");
      const follow = (act) => new Promise((resolve, reject) => {
        const seen = { chunks: [], metadata: [], resets: [], statuses: [], texts: 0 };
        const stream = new ResumableStream({
          storageKey: "module-test",
          events: ["note", "tool"],
          onChunk: (c) => seen.chunks.push(c),
          onText: () => { seen.texts += 1; },
          onMetadata: (v) => seen.metadata.push(v),
          onReset: (r) => seen.resets.push(r),
          onStatus: (s) => seen.statuses.push(s),
          onError: (err) => reject(err),
          onEnd: (end) => resolve({ ...seen, end, text: stream.record.text, closed: stream.source === null }),
        });
        act(stream);
      });
      const first = await follow((s) => s.start(cfg.sid, { url: cfg.url, extra: { n: 1 } }));
      const stored = JSON.parse(localStorage.getItem("module-test"));
      localStorage.setItem("module-test", JSON.stringify({
        ...stored, state: "streaming", text: "stale text that must go", cursor: "1-3",
      }));
      const second = await follow((s) => s.resume());
      const storedAfterReset = JSON.parse(localStorage.getItem("module-test"));
      return { first, stored, second, storedAfterReset };
    }, cfg);
  },

  // The producer runs on instance A; a plain EventSource follows the session on instance B
  // (the page's origin). The test restarts B mid-stream; the browser reconnects by itself with
  // Last-Event-ID and the text must come out whole.
  async reconnect(page, cfg) {
    const started = Date.now();
    await page.goto(cfg.follower + "/");
    // Start the producer on A, then hang up: it keeps running, detached from this request.
    const url = `${cfg.producer}/chat/${cfg.sid}?prompt=${encodeURIComponent(cfg.prompt)}`;
    const controller = new AbortController();
    const res = await fetch(url, { signal: controller.signal });
    if (res.status !== 200) throw new Error(`producer answered ${res.status}`);
    await res.body.getReader().read();
    controller.abort();
    await page.evaluate((sid) => {
      Object.assign(window, { __text: "", __ended: null, __opens: [], __errors: 0, __resets: 0 });
      const es = new EventSource("/streams/" + sid);
      es.onopen = () => window.__opens.push(window.__text.length);
      es.onerror = () => { window.__errors += 1; };
      es.onmessage = (e) => { window.__text += e.data; };
      es.addEventListener("json", (e) => {
        const value = JSON.parse(e.data);
        if (typeof value === "string") window.__text += value;
      });
      es.addEventListener("reset", () => { window.__resets += 1; window.__text = ""; });
      es.addEventListener("end", (e) => { window.__ended = JSON.parse(e.data); es.close(); });
    }, cfg.sid);
    await page.waitForFunction((n) => window.__text.length >= n, cfg.restart_after_chars, { timeout });
    const charsBeforeRestart = await page.evaluate(() => window.__text.length);
    emit("STEP", { step: "restart", chars: charsBeforeRestart });
    const reply = await readLine(timeout);
    if (reply !== "restarted") throw new Error(`unexpected answer on stdin: ${reply}`);
    const charsAtRestart = await page.evaluate(() => window.__text.length);
    await page.waitForFunction(() => window.__ended !== null, null, { timeout });
    const final = await page.evaluate(() => ({
      text: window.__text, ended: window.__ended, opens: window.__opens,
      errors: window.__errors, resets: window.__resets,
    }));
    return {
      charsBeforeRestart,
      charsAtRestart,
      finalLength: final.text.length,
      text: final.text,
      end: final.ended,
      opensAtChars: final.opens,
      errors: final.errors,
      resets: final.resets,
      elapsedMs: Date.now() - started,
    };
  },
};

async function main() {
  if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`);
  const browser = await chromium.launch({
    executablePath: config.chromium || "/usr/bin/chromium",
    args: CHROMIUM_ARGS,
    timeout,
  });
  try {
    const page = await (await browser.newContext()).newPage();
    page.setDefaultTimeout(timeout);
    const consoleErrors = [];
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    // Every stream request the page makes, with the Last-Event-ID the browser sent.
    const requests = [];
    const entries = new Map();
    page.on("requestfailed", (r) => {
      const entry = entries.get(r);
      if (entry) entry.failure = r.failure()?.errorText ?? "failed";
    });
    // The browser helper module, as the page loaded it.
    const modules = [];
    page.on("response", (r) => {
      if (new URL(r.url()).pathname === "/streams/~/streamhub.js") {
        modules.push({ status: r.status(), contentType: r.headers()["content-type"] ?? null });
      }
    });
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (!/^\/(chat|streams)\//.test(u.pathname) || u.pathname.startsWith("/streams/~/")) return;
      // headers() are the ones the page set (EventSource adds Last-Event-ID itself);
      // allHeaders() adds the network stack's, but fails for a request that never connected.
      const entry = {
        method: r.method(),
        path: u.pathname + u.search,
        lastEventId: r.headers()["last-event-id"] ?? null,
        failure: null,
      };
      requests.push(entry);
      entries.set(r, entry);
      r.allHeaders().then((h) => { entry.lastEventId = h["last-event-id"] ?? entry.lastEventId; }, () => {});
    });
    const result = await scenarios[scenario](page, config);
    emit("RESULT", { scenario, ...result, requests, modules, consoleErrors, pageErrors });
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => { emit("ERROR", { message: String(err && err.stack || err) }); process.exit(1); },
);
