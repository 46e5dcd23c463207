// Drives the real Vercel AI SDK (npm package "ai", pinned in package.json; `ai_package: "ai6"`
// in the config runs ai 6 instead) against the AI SDK example (examples/ai_sdk) running under
// uvicorn. No part of the SDK is mocked.
//
//   node ai_sdk.mjs <scenario> '<json config>'
//
// Scenarios:
// - "reconnect": DefaultChatTransport.sendMessages, abort after `abort_after_deltas` text
//   deltas, then reconnectToStream; the resumed stream is assembled by readUIMessageStream.
// - "chat": what useChat({ resume: true }) does across a page reload: one AbstractChat sends
//   the message and is stopped mid-answer (the page goes away); a second one, holding only the
//   user message, calls resumeStream() and must end with the whole answer.
// - "idle": reconnectToStream on a chat with nothing running must give null (HTTP 204).
// - "turns": two messages in one chat, each read to the end.
// - "cancel": the app's Stop (POST /api/chat/{id}/cancel) after `cancel_after_deltas` deltas;
//   the stream must end with an "abort" part.
// - "stop": useChat's stop() through the router's transport (`/api/chat/~/chat-transport.js`,
//   fetched and imported as a page would): the server's state and chunk count after it, and
//   the headers each request carried (a resume in between must carry sendMessage's headers).
// - "stop_elsewhere": a second tab resumes the answer and presses Stop: the first tab's
//   answer ends aborted (onFinish), not finished.
// - "stop_then_ask": Stop, then a second question in the same chat: it must be answered.
// - "ask_while_running": the plain transport drops the first request (no cancel) and posts the
//   next question at once: the running answer is superseded and the new one answered.
// - "tool_resume": against tests/adapters_app.py (an SDK adapter behind the chat route; the
//   request body names the SDK and the stand-in model): read until the first tool-input-delta,
//   drop the connection, reconnectToStream, release the held provider (POST `release_url`) and
//   read to the end; then one uninterrupted answer in another chat, for comparison.
// Prints one line "RESULT {json}", or "ERROR {json}" and exits with status 1. The assertions
// are left to tests/test_ai_sdk.py.

const [scenario, rawConfig] = process.argv.slice(2);
const config = JSON.parse(rawConfig || "{}");
// "ai" (7) by default; "ai6" (the npm alias of ai 6 in package.json) for the ai 6 lane.
const { AbstractChat, DefaultChatTransport, readUIMessageStream } = await import(config.ai_package ?? "ai");
const timeoutMs = config.timeout_ms ?? 30000;

function emit(kind, value) {
  process.stdout.write(`${kind} ${JSON.stringify(value)}\n`);
}

const transport = (body) => new DefaultChatTransport({ api: `${config.base}/api/chat`, body });

let messageCount = 0;
function userMessage(text, id = `u${++messageCount}`) {
  return { id, role: "user", parts: [{ type: "text", text }] };
}

const textOf = (message) =>
  message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

function summary(parts) {
  const counts = {};
  for (const p of parts) counts[p.type] = (counts[p.type] ?? 0) + 1;
  return counts;
}

// Every part of a UI message chunk stream, and the message readUIMessageStream builds from it.
async function readAll(stream) {
  const [forParts, forMessage] = stream.tee();
  const parts = [];
  const collect = (async () => {
    for await (const part of forParts) parts.push(part);
  })();
  let message = null;
  for await (const snapshot of readUIMessageStream({ stream: forMessage, terminateOnError: true })) {
    message = snapshot;
  }
  await collect;
  return { parts, message };
}

function send(tr, chatId, text, abortSignal) {
  return tr.sendMessages({
    chatId,
    messages: [userMessage(text)],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal,
  });
}

class State {
  constructor(messages, onChange) {
    this.messages = messages;
    this.status = "ready";
    this.error = undefined;
    this.onChange = onChange;
  }
  pushMessage(message) { this.messages = [...this.messages, message]; this.onChange(this); }
  popMessage() { this.messages = this.messages.slice(0, -1); this.onChange(this); }
  replaceMessage(index, message) {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
    this.onChange(this);
  }
  snapshot(thing) { return structuredClone(thing); }
}

class Chat extends AbstractChat {
  constructor({ messages = [], onChange = () => {}, ...init }) {
    super({ ...init, state: new State(messages, onChange) });
  }
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The router's chat transport module, as a page would import it: fetched from the server.
async function servedTransport(cfg) {
  const res = await fetch(`${cfg.base}/api/chat/~/chat-transport.js`);
  if (!res.ok) throw new Error(`chat-transport.js answered ${res.status}`);
  const source = await res.text();
  return import(`data:text/javascript;base64,${Buffer.from(source).toString("base64")}`);
}

// fetch that records what each request sent (the transport's and the cancel's).
function recordingFetch(requests) {
  return (url, init = {}) => {
    const headers = Object.fromEntries(new Headers(init.headers ?? {}).entries());
    requests.push({ url: String(url).replace(config.base, ""), method: init.method ?? "GET", headers });
    return fetch(url, init);
  };
}

async function statusOf(cfg, chatId) {
  const res = await fetch(`${cfg.base}/api/chat/${chatId}/status`);
  return res.status === 200 ? res.json() : { http: res.status };
}

// Poll the status until the state is no longer active: the time it took, and the status.
async function untilFinished(cfg, chatId, limitMs) {
  const started = Date.now();
  for (;;) {
    const status = await statusOf(cfg, chatId);
    if (status.state !== "active" || Date.now() - started > limitMs) {
      return { status, afterMs: Date.now() - started };
    }
    await sleep(10);
  }
}

function reachedChars(chars) {
  let reached;
  const promise = new Promise((resolve) => { reached = resolve; });
  const onChange = (state) => {
    const last = state.messages[state.messages.length - 1];
    if (last?.role === "assistant" && textOf(last).length >= chars) reached(textOf(last));
  };
  return { promise, onChange };
}

const scenarios = {
  // useChat's Stop through the router's transport: the answer stops on the server too.
  async stop(cfg) {
    const { streamhubTransport } = await servedTransport(cfg);
    const requests = [];
    const tr = streamhubTransport(new DefaultChatTransport({
      api: `${cfg.base}/api/chat`, headers: { "x-app": "static" }, fetch: recordingFetch(requests),
    }));
    const reached = reachedChars(cfg.stop_after_chars);
    const chat = new Chat({ id: cfg.chat_id, transport: tr, onChange: reached.onChange });
    const sending = chat.sendMessage(userMessage(cfg.prompt), { headers: { authorization: "Bearer t1" } });
    await within(reached.promise, "reading the answer");
    // A second reader of the running answer (another tab's resume): it carries the headers
    // sendMessage was given; dropping it is not a stop.
    const resumed = await tr.reconnectToStream({ chatId: cfg.chat_id });
    await resumed.cancel();
    await chat.stop();
    await within(sending, "stopping");
    const stopped = textOf(chat.messages[chat.messages.length - 1]);
    const finished = await untilFinished(cfg, cfg.chat_id, 5000);
    await sleep(cfg.settle_ms); // what is measured here is that nothing grows meanwhile
    const later = await statusOf(cfg, cfg.chat_id);
    return {
      stoppedText: stopped, status: chat.status, finished, later, requests,
      roles: chat.messages.map((m) => m.role),
    };
  },

  // Two tabs of one chat: the second resumes the running answer and presses Stop; the first,
  // still reading, must see the answer end as aborted, not finished.
  async stop_elsewhere(cfg) {
    const { streamhubTransport } = await servedTransport(cfg);
    const make = () => streamhubTransport(new DefaultChatTransport({ api: `${cfg.base}/api/chat` }));
    const reached = reachedChars(cfg.stop_after_chars);
    const finishes = [];
    const first = new Chat({
      id: cfg.chat_id, transport: make(), onChange: reached.onChange,
      onFinish: ({ isAbort, finishReason, message }) => finishes.push({ isAbort, finishReason, text: textOf(message) }),
    });
    const sending = first.sendMessage(userMessage(cfg.prompt));
    await within(reached.promise, "the first tab reading");
    const user = first.messages[0];
    const second = new Chat({ id: cfg.chat_id, messages: [user], transport: make() });
    const resuming = second.resumeStream();
    await within(new Promise((resolve) => {
      const check = () => (second.status === "streaming" ? resolve() : setTimeout(check, 10));
      check();
    }), "the second tab resuming");
    await second.stop();
    await within(resuming, "the second tab stopping");
    await within(sending, "the first tab ending");
    return {
      firstStatus: first.status, finishes,
      firstText: textOf(first.messages[first.messages.length - 1]),
      final: await statusOf(cfg, cfg.chat_id),
    };
  },

  // Stop, then a new question in the same chat: the question gets its own answer.
  async stop_then_ask(cfg) {
    const { streamhubTransport } = await servedTransport(cfg);
    const tr = streamhubTransport(new DefaultChatTransport({ api: `${cfg.base}/api/chat` }));
    const reached = reachedChars(cfg.stop_after_chars);
    const errors = [];
    const chat = new Chat({
      id: cfg.chat_id, transport: tr, onChange: reached.onChange, onError: (e) => errors.push(String(e)),
    });
    const sending = chat.sendMessage(userMessage(cfg.prompt));
    await within(reached.promise, "reading the first answer");
    await chat.stop();
    await within(sending, "stopping");
    const afterStop = await untilFinished(cfg, cfg.chat_id, 5000);
    await within(chat.sendMessage(userMessage(cfg.second_prompt)), "the second answer");
    return {
      afterStop,
      messages: chat.messages.map((m) => ({ id: m.id, role: m.role, text: textOf(m) })),
      status: chat.status, errors, final: await statusOf(cfg, cfg.chat_id),
    };
  },

  // The plain DefaultChatTransport: the first request is dropped (no cancel is sent) and the
  // next question is posted at once, while the first answer still runs on the server.
  async ask_while_running(cfg) {
    const controller = new AbortController();
    const first = await send(transport(), cfg.chat_id, cfg.prompt, controller.signal);
    const reader = first.getReader();
    const firstParts = [];
    while (firstParts.filter((p) => p.type === "text-delta").length < cfg.abort_after_deltas) {
      const { done, value } = await reader.read();
      if (done) throw new Error("the first answer ended early");
      firstParts.push(value);
    }
    controller.abort();
    await reader.cancel().catch(() => {});
    const messages = [userMessage(cfg.prompt), userMessage(cfg.second_prompt)];
    const second = await transport().sendMessages({
      chatId: cfg.chat_id, messages, trigger: "submit-message", messageId: undefined, abortSignal: undefined,
    });
    const { parts, message } = await readAll(second);
    return {
      firstMessageId: firstParts[0].messageId,
      messageId: message.id, text: textOf(message), last: parts[parts.length - 1],
      final: await statusOf(cfg, cfg.chat_id),
    };
  },


  async reconnect(cfg) {
    const controller = new AbortController();
    const first = await send(transport(), cfg.chat_id, cfg.prompt, controller.signal);
    const firstParts = [];
    const reader = first.getReader();
    let deltas = 0;
    while (deltas < cfg.abort_after_deltas) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`the first stream ended after ${deltas} deltas`);
      firstParts.push(value);
      if (value.type === "text-delta") deltas += 1;
    }
    controller.abort(); // the page goes away mid-answer: the connection is dropped
    await reader.cancel().catch(() => {});
    const resumed = await transport().reconnectToStream({ chatId: cfg.chat_id });
    if (resumed === null) throw new Error("reconnectToStream answered 204 mid-answer");
    const { parts, message } = await readAll(resumed);
    const firstText = firstParts.filter((p) => p.type === "text-delta").map((p) => p.delta).join("");
    return {
      firstParts: firstParts.length,
      firstTypes: summary(firstParts),
      firstText,
      firstMessageId: firstParts[0].type === "start" ? firstParts[0].messageId : null,
      resumedParts: parts.length,
      resumedTypes: summary(parts),
      resumedFirst: parts[0],
      resumedLast: parts[parts.length - 1],
      dataParts: parts.filter((p) => p.type.startsWith("data-")),
      messageId: message.id,
      text: textOf(message),
      messageParts: message.parts.map((p) => p.type),
    };
  },

  async chat(cfg) {
    const user = userMessage(cfg.prompt);
    let reached;
    const reachedChars = new Promise((resolve) => { reached = resolve; });
    const first = new Chat({
      id: cfg.chat_id,
      transport: transport(),
      onChange: (state) => {
        const last = state.messages[state.messages.length - 1];
        if (last?.role === "assistant" && textOf(last).length >= cfg.stop_after_chars) reached(textOf(last));
      },
    });
    const sending = first.sendMessage(user);
    const seenBeforeStop = await within(reachedChars, "first chat reading");
    await first.stop(); // as when the page is closed: the request is aborted, not the answer
    await within(sending, "first chat stopping");
    const stoppedAt = textOf(first.messages[first.messages.length - 1]);

    // The reloaded page: its messages come from the app's own store, here the user message.
    const statuses = [];
    const errors = [];
    const second = new Chat({
      id: cfg.chat_id,
      messages: [user],
      transport: transport(),
      onError: (err) => errors.push(String(err)),
    });
    const setStatus = second.setStatus.bind(second);
    second.setStatus = (s) => {
      if (statuses[statuses.length - 1] !== s.status) statuses.push(s.status);
      setStatus(s);
    };
    await within(second.resumeStream(), "second chat resuming");
    const assistant = second.messages[second.messages.length - 1];
    return {
      seenBeforeStop: seenBeforeStop.length,
      stoppedAt: stoppedAt.length,
      firstStatus: first.status,
      firstMessageId: first.messages[first.messages.length - 1].id,
      roles: second.messages.map((m) => m.role),
      messageId: assistant.id,
      text: textOf(assistant),
      messageParts: assistant.parts.map((p) => p.type),
      usage: assistant.parts.filter((p) => p.type === "data-usage").map((p) => p.data),
      status: second.status,
      statuses,
      errors,
    };
  },

  async cancel(cfg) {
    const stream = await send(transport(), cfg.chat_id, cfg.prompt);
    const parts = [];
    let cancel = null;
    for await (const part of stream) {
      parts.push(part);
      if (cancel === null && parts.filter((p) => p.type === "text-delta").length >= cfg.cancel_after_deltas) {
        cancel = fetch(`${cfg.base}/api/chat/${cfg.chat_id}/cancel`, { method: "POST" })
          .then(async (res) => ({ status: res.status, body: await res.json() }));
      }
    }
    const text = parts.filter((p) => p.type === "text-delta").map((p) => p.delta).join("");
    return { cancel: await cancel, types: summary(parts), lastParts: parts.slice(-2), text };
  },

  async tool_resume(cfg) {
    const controller = new AbortController();
    const held = transport({ sdk: cfg.sdk, model: cfg.model });
    const first = await send(held, cfg.chat_id, cfg.prompt, controller.signal);
    const reader = first.getReader();
    const firstParts = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) throw new Error("the first stream ended before a tool-input-delta");
      firstParts.push(value);
      if (value.type === "tool-input-delta") break;
    }
    controller.abort();
    await reader.cancel().catch(() => {});
    // Reconnect while the provider still holds the answer (once it ends, the route says 204).
    const resumedStream = await held.reconnectToStream({ chatId: cfg.chat_id });
    if (resumedStream === null) throw new Error("reconnectToStream answered 204 mid-answer");
    const released = await fetch(cfg.release_url, { method: "POST" });
    if (!released.ok) throw new Error(`release answered ${released.status}`);
    const resumed = await readAll(resumedStream);
    const plain = transport({ sdk: cfg.sdk, model: "standin-1" });
    const whole = await readAll(await send(plain, cfg.other_chat_id, cfg.prompt));
    return {
      firstTypes: firstParts.map((p) => p.type),
      resumedParts: resumed.parts,
      resumed: { parts: resumed.message.parts, metadata: resumed.message.metadata },
      whole: { parts: whole.message.parts, metadata: whole.message.metadata },
    };
  },

  async idle(cfg) {
    const answers = {};
    for (const chatId of cfg.chat_ids) {
      answers[chatId] = await transport().reconnectToStream({ chatId });
    }
    return { answers };
  },

  async turns(cfg) {
    const turns = [];
    for (const prompt of cfg.prompts) {
      const { parts, message } = await readAll(await send(transport(), cfg.chat_id, prompt));
      turns.push({ messageId: message.id, text: textOf(message), types: summary(parts), last: parts[parts.length - 1] });
    }
    return { turns };
  },
};

async function main() {
  if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`);
  const started = Date.now();
  const result = await within(scenarios[scenario](config), scenario);
  emit("RESULT", { scenario, ...result, elapsedMs: Date.now() - started });
}

main().then(
  () => process.exit(0),
  (err) => { emit("ERROR", { message: String((err && err.stack) || err) }); process.exit(1); },
);
