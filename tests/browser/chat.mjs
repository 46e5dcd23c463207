// Drives Debian's Chromium (through playwright-core) against the chat example.
//
//   node chat.mjs <scenario> '<json config>'
//
// Scenarios: "reload" (reload the page mid-stream), "stop" (the Stop button), "steer" (the
// "add instruction" box mid-stream), "history" (the answers saved through on_finish, listed
// after each end and after a server restart), "reconnect" (the browser's own EventSource
// reconnect after the serving instance restarts); "react_*" drive the React page of
// examples/ai_sdk (useChat({ resume: true }) with the router's chat transport). Prints one line
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

// The answers the chat page lists under "Saved answers" (GET /history), newest first.
const savedAnswers = (page) => page.evaluate(() => [...document.querySelectorAll("#saved li")].map((li) => ({
  sessionId: li.dataset.sessionId,
  meta: li.querySelector(".meta").textContent,
  text: li.querySelector(".text").textContent,
})));

const waitSaved = (page, n) => page.waitForFunction(
  (n) => document.querySelectorAll("#saved li").length >= n, n, { timeout });

// The React page of examples/ai_sdk: its messages as rendered, and useChat's status.
const chatView = (page) => page.evaluate(() => ({
  chatId: new URLSearchParams(location.search).get("chat"),
  status: document.body.dataset.status ?? null,
  messages: [...document.querySelectorAll("#messages li")].map((li) => ({
    id: li.dataset.id, role: li.dataset.role, text: li.textContent, textParts: Number(li.dataset.textParts),
    stopped: li.dataset.stopped === "true",
  })),
}));

// Wait until the last message is the assistant's `full` answer and useChat is ready again.
async function waitAnswered(page, full, what) {
  try {
    await page.waitForFunction((full) => {
      const items = [...document.querySelectorAll("#messages li")];
      const last = items[items.length - 1];
      return document.body.dataset.status === "ready" && last?.dataset.role === "assistant"
        && last.textContent === full;
    }, full, { timeout });
  } catch (err) {
    throw new Error(`${what}: the answer did not end whole: ${JSON.stringify(await chatView(page))}\n${err}`);
  }
}

async function askReact(page, prompt, minChars) {
  await page.fill("#prompt", prompt);
  await page.click("#send");
  await page.waitForFunction((n) => {
    const items = [...document.querySelectorAll("#messages li")];
    const last = items[items.length - 1];
    return last?.dataset.role === "assistant" && last.textContent.length >= n;
  }, minChars, { timeout });
}

// The server's view of a chat (GET /api/chat/{id}/status), asked from the page.
const serverStatus = (page, chatId) => page.evaluate(async (id) => {
  const response = await fetch(`/api/chat/${encodeURIComponent(id)}/status`);
  return response.status === 200 ? response.json() : { httpStatus: response.status };
}, chatId);

// Poll the server until the chat's state is `state`; how long it took, in ms.
async function waitServerState(page, chatId, state) {
  const started = Date.now();
  for (;;) {
    const status = await serverStatus(page, chatId);
    if (status.state === state) return { elapsedMs: Date.now() - started, status };
    if (Date.now() - started > timeout) throw new Error(`chat ${chatId} never reached ${state}: ${JSON.stringify(status)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// Stop through the page's Stop button (useChat's stop()); the server must say `cancelled`,
// and its chunk count must stay put afterwards.
async function stopReact(page, chatId) {
  const before = await chatView(page);
  await page.click("#stop");
  const cancelled = await waitServerState(page, chatId, "cancelled");
  await page.waitForSelector("body[data-status=ready]", { timeout });
  await new Promise((r) => setTimeout(r, cfgSettle));
  const later = await serverStatus(page, chatId);
  return {
    charsBeforeStop: before.messages.at(-1).text.length,
    cancelMs: cancelled.elapsedMs,
    chunksAtCancel: cancelled.status.chunks,
    chunksLater: later.chunks,
    stateLater: later.state,
    stopped: await chatView(page),
  };
}
const cfgSettle = config.settle_ms ?? 1000;

// Per document: the chunks its EventSources received (message and json events: a follower
// of chunks) and the text the AI SDK's streams brought (text-delta parts of fetch responses
// under /api/chat), so a scenario can tell how many times a tab received each answer.
function countChunks() {
  const seen = { follower: 0, deltaChars: 0, deltas: 0 };
  window.__streamhubChunks = seen;
  const Source = window.EventSource;
  window.EventSource = class extends Source {
    constructor(...args) {
      super(...args);
      for (const type of ["message", "json"]) this.addEventListener(type, () => { seen.follower += 1; });
    }
  };
  const fetchOriginal = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetchOriginal(...args);
    const url = new URL(args[0] instanceof Request ? args[0].url : String(args[0]), location.href);
    // Chromium gives a 204 an (empty) body, which a Response built here could not carry.
    if (response.status !== 200 || !response.body || !/^\/api\/chat(\/|$)/.test(url.pathname)) return response;
    const [mine, theirs] = response.body.tee();
    (async () => {
      const reader = theirs.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let at;
        while ((at = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, at);
          buffer = buffer.slice(at + 1);
          if (!line.startsWith("data: {")) continue;
          const part = JSON.parse(line.slice(6));
          if (part.type === "text-delta") { seen.deltas += 1; seen.deltaChars += part.delta.length; }
        }
      }
    })().catch(() => {});
    return new Response(mine, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}

const chunkCounts = (page) => page.evaluate(() => ({ ...window.__streamhubChunks }));

const scenarios = {

  // Another device (a browser context of its own: no shared localStorage) opens the chat
  // mid-answer: it shows the running turn, question first, and the next turn asked on A; a
  // third device opening it after the end shows the last turn (taken from the follower).
  async react_other_device(page, cfg) {
    await page.goto(cfg.base + "/");
    await askReact(page, cfg.prompt, cfg.join_after_chars);
    const device = async () => {
      const other = await (await page.context().browser().newContext()).newPage();
      other.on("pageerror", (e) => otherErrors.push(String(e)));
      await other.goto(page.url());
      return other;
    };
    const otherErrors = [];
    const b = await device();
    await waitAnswered(b, cfg.full, "the first turn on device B");
    await waitAnswered(page, cfg.full, "the first turn on A");
    const bFirst = await chatView(b);
    await askReact(page, cfg.second_prompt, 1);
    await waitAnswered(page, cfg.second_full, "the second turn on A");
    await waitAnswered(b, cfg.second_full, "the second turn on device B");
    const c = await device();
    await waitAnswered(c, cfg.second_full, "the last turn on device C");
    return { bFirst, a: await chatView(page), b: await chatView(b), c: await chatView(c), otherErrors,
      server: await serverStatus(page, bFirst.chatId) };
  },

  // Conversations: tab B has the chat open when tab A asks a new question; B shows the
  // question and follows its answer through useChat (reloaded mid-answer on the way).
  async react_conversation(page, cfg) {
    await page.context().addInitScript(countChunks);
    await page.goto(cfg.base + "/");
    await askReact(page, cfg.prompt, 1);
    await waitAnswered(page, cfg.full, "first turn in tab A");
    const other = await page.context().newPage();
    const otherErrors = [];
    other.on("pageerror", (e) => otherErrors.push(String(e)));
    await other.goto(page.url());
    await other.waitForFunction(() => document.querySelectorAll("#messages li").length === 2, null, { timeout });
    const bBefore = await chatView(other);
    await askReact(page, cfg.second_prompt, 1);
    // The new turn in tab B: its question, then its answer growing (the 4th message).
    await other.waitForFunction((n) => {
      const items = document.querySelectorAll("#messages li");
      return items.length === 4 && items[3].textContent.length >= n;
    }, cfg.reload_after_chars, { timeout });
    const bMidTurn = await chatView(other);
    await other.reload();
    await waitAnswered(other, cfg.second_full, "second turn in tab B");
    await waitAnswered(page, cfg.second_full, "second turn in tab A");
    return { bBefore, bMidTurn, a: await chatView(page), b: await chatView(other), otherErrors,
      server: await serverStatus(page, bBefore.chatId),
      chunks: { a: await chunkCounts(page), b: await chunkCounts(other) } };
  },

  // The chat example's saved answers: one answered whole (with a reload mid-answer), one
  // stopped, one asked after the Stop; listed after each end, and again after the server
  // restarts (STEP).
  async history(page, cfg) {
    await ask(page, cfg.base, cfg.prompt, cfg.reload_after_chars);
    await page.reload();
    await page.waitForSelector("body[data-state=done]", { timeout });
    await waitSaved(page, 1);
    const first = { ...(await answer(page)), saved: await savedAnswers(page) };
    await ask(page, cfg.base, cfg.second_prompt, cfg.stop_after_chars);
    await page.click("#stop");
    await page.waitForSelector("body[data-state=cancelled]", { timeout });
    await waitSaved(page, 2);
    const second = { ...(await answer(page)), saved: await savedAnswers(page) };
    await ask(page, cfg.base, cfg.third_prompt, 1); // asked again after Stop
    await page.waitForSelector("body[data-state=done]", { timeout });
    await waitSaved(page, 3);
    const third = { ...(await answer(page)), saved: await savedAnswers(page) };
    emit("STEP", { step: "restart" });
    const reply = await readLine(timeout);
    if (reply !== "restarted") throw new Error(`unexpected answer on stdin: ${reply}`);
    await page.reload();
    await waitSaved(page, 3);
    return { first, second, third, afterRestart: await savedAnswers(page) };
  },

  // useChat: ask, reload mid-answer (it resumes from the answer's start and replaces the
  // stored part by id), then reload once more after the end (204: nothing to resume).
  async react_reload(page, cfg) {
    await page.goto(cfg.base + "/");
    await askReact(page, cfg.prompt, cfg.reload_after_chars);
    const before = await chatView(page);
    await page.reload();
    await page.waitForSelector("#messages li", { timeout }); // React's first render
    const restored = await chatView(page);
    await waitAnswered(page, cfg.full, "after the reload");
    const after = await chatView(page);
    const resume = page.waitForResponse((r) => new URL(r.url()).pathname.endsWith("/stream"), { timeout });
    await page.reload();
    const resumeStatus = (await resume).status();
    await page.waitForSelector("#messages li", { timeout });
    await new Promise((r) => setTimeout(r, 300)); // a late duplicate would show by now
    return { before, restored, after, resumeStatus, afterEnd: await chatView(page),
      server: await serverStatus(page, after.chatId) };
  },

  // A second tab opens the chat's URL mid-answer: it joins the running answer.
  async react_two_tabs(page, cfg) {
    await page.goto(cfg.base + "/");
    await askReact(page, cfg.prompt, cfg.join_after_chars);
    const second = await page.context().newPage();
    await second.goto(page.url());
    await second.waitForFunction(() => document.querySelectorAll("#messages li").length >= 1, null, { timeout });
    const joined = await chatView(second);
    await waitAnswered(page, cfg.full, "first tab");
    await waitAnswered(second, cfg.full, "second tab");
    return { joined, first: await chatView(page), second: await chatView(second),
      server: await serverStatus(page, joined.chatId) };
  },

  // Stop, then a new question in the same chat: it is answered; the stopped answer stays.
  // A second tab follows the answer: Stop in the first tab shows there as stopped too, and the
  // next question reaches it as well.
  async react_stop_then_ask(page, cfg) {
    await page.goto(cfg.base + "/");
    await askReact(page, cfg.prompt, cfg.stop_after_chars);
    const { chatId } = await chatView(page);
    const other = await page.context().newPage();
    await other.goto(page.url());
    await other.waitForFunction(() => document.querySelector("#messages li[data-role=assistant]")?.textContent.length > 0,
      null, { timeout });
    const stop = await stopReact(page, chatId);
    await other.waitForSelector("#messages li[data-role=assistant][data-stopped]", { timeout });
    const otherStopped = await chatView(other);
    await page.fill("#prompt", cfg.second_prompt);
    await page.click("#send");
    await waitAnswered(page, cfg.second_full, "the question after Stop");
    await waitAnswered(other, cfg.second_full, "the question after Stop, in the second tab");
    return { ...stop, otherStopped, after: await chatView(page), otherAfter: await chatView(other),
      server: await serverStatus(page, chatId) };
  },

  // A new question while an answer still runs: the server supersedes the running answer and
  // answers the new question.
  async react_supersede(page, cfg) {
    await page.goto(cfg.base + "/");
    await askReact(page, cfg.prompt, cfg.ask_after_chars);
    const before = await chatView(page);
    await page.fill("#prompt", cfg.second_prompt);
    await page.click("#send");
    await waitAnswered(page, cfg.second_full, "the second question");
    return { before, after: await chatView(page), server: await serverStatus(page, before.chatId) };
  },
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
      const entry = entries.get(r.request());
      if (entry) entry.status = r.status();
      const path = new URL(r.url()).pathname;
      if (path === "/streams/~/streamhub.js" || path === "/api/chat/~/chat-transport.js") {
        modules.push({ path, status: r.status(), contentType: r.headers()["content-type"] ?? null });
      }
    });
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (!/^\/(chat|streams|api\/chat)(\/|$)/.test(u.pathname) || u.pathname.includes("/~/")) return;
      // headers() are the ones the page set (EventSource adds Last-Event-ID itself);
      // allHeaders() adds the network stack's, but fails for a request that never connected.
      const entry = {
        method: r.method(),
        path: u.pathname + u.search,
        lastEventId: r.headers()["last-event-id"] ?? null,
        failure: null,
        status: null,
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
