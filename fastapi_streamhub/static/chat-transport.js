// fastapi-streamhub: a chat transport for the Vercel AI SDK's useChat (ai 5, 6 and 7) whose
// stop() stops the answer on the server too, and whose reconnects carry the app's headers.
//
// Served by the router at `{prefix}/~/chat-transport.js` (and shipped as package data). It
// wraps the SDK's own transport, so it imports nothing and needs no bundler:
//
//   import { useChat } from "@ai-sdk/react";
//   import { DefaultChatTransport } from "ai";
//   import { streamhubTransport } from "/api/chat/~/chat-transport.js";
//
//   const transport = streamhubTransport(
//     new DefaultChatTransport({ api: "/api/chat", headers: () => ({ authorization }) }),
//   );
//   const chat = useChat({ id, transport, resume: true });
//
// What it adds to the transport it wraps:
// - stop(): when the SDK aborts a request of a chat (its stop(), or dispose()), the transport
//   POSTs `{api}/{chatId}/cancel`, so the producer stops wherever it runs (state `cancelled`),
//   instead of generating on for nobody. An abort the SDK makes only to replace one resume
//   request of a chat with another (a remount) is not a stop: no cancel goes out when another
//   request of the same chat starts in the same synchronous run, nor once the answer
//   ended. The next sendMessages of that chat waits for the cancel to be answered, so a
//   question asked right after Stop never races the cancel of the answer before it.
// - headers on reconnects: the headers and body a sendMessages call was given (the second
//   argument of useChat's sendMessage) are kept per chat and sent again on its resume
//   (reconnectToStream) and cancel requests, beside the transport's own `headers`.
//
// Options (second argument): `cancelUrl(chatId)` (default `{api}/{chatId}/cancel`),
// `headers`, `credentials` and `fetch` for the cancel request (default: the wrapped
// transport's), `cancelOnStop` (default true), `onCancelError(error, chatId)` (default
// console.warn).

async function resolve(value) {
  return typeof value === "function" ? await value() : await value;
}

function headersObject(headers) {
  if (headers == null) return {};
  if (typeof Headers !== "undefined" && headers instanceof Headers) {
    return Object.fromEntries(headers.entries());
  }
  return { ...headers };
}

export class StreamhubChatTransport {
  constructor(inner, options = {}) {
    if (inner == null || typeof inner.sendMessages !== "function") {
      throw new TypeError("streamhubTransport needs the SDK transport to wrap, such as new DefaultChatTransport({ api })");
    }
    this.inner = inner;
    this.options = options;
    this.api = options.api ?? inner.api ?? "/api/chat";
    this.cancelOnStop = options.cancelOnStop ?? true;
    this.requests = new Map(); // chatId -> { token, headers, body } of its latest request
    this.pendingCancels = new Map(); // chatId -> the promise of a cancel still in flight
    this.tokens = 0;
  }

  // DefaultChatTransport's streams replay the answer from its start (ai 7 reads this).
  get resumeStreamIsReplay() {
    return this.inner.resumeStreamIsReplay ?? true;
  }

  async sendMessages(options) {
    const pending = this.pendingCancels.get(options.chatId);
    if (pending) await pending;
    const request = this.begin(options.chatId, options.headers, options.body);
    const stream = await this.inner.sendMessages(options);
    return this.follow(stream, options.chatId, request, options.abortSignal);
  }

  async reconnectToStream(options) {
    const kept = this.requests.get(options.chatId);
    const headers = { ...(kept?.headers ?? {}), ...headersObject(options.headers) };
    const body = kept?.body || options.body ? { ...(kept?.body ?? {}), ...(options.body ?? {}) } : undefined;
    const request = this.begin(options.chatId, headers, body);
    const stream = await this.inner.reconnectToStream({ ...options, headers, body });
    return stream == null ? null : this.follow(stream, options.chatId, request, options.abortSignal);
  }

  close() {
    this.inner.close?.();
  }

  // POST the cancel of a chat's running answer; resolves with the response (never rejects).
  cancel(chatId) {
    const kept = this.requests.get(chatId);
    const sending = (async () => {
      const own = headersObject(await resolve(this.options.headers ?? this.inner.headers));
      const credentials = await resolve(this.options.credentials ?? this.inner.credentials);
      const url = this.options.cancelUrl
        ? this.options.cancelUrl(chatId)
        : `${this.api}/${encodeURIComponent(chatId)}/cancel`;
      const fetchImpl = this.options.fetch ?? this.inner.fetch ?? globalThis.fetch;
      const response = await fetchImpl(url, {
        method: "POST",
        headers: { ...own, ...(kept?.headers ?? {}) },
        credentials,
      });
      // 404: nothing to stop (the chat never started here, or was deleted).
      if (!response.ok && response.status !== 404) {
        throw new Error(`cancel of chat ${chatId} answered ${response.status}`);
      }
      return response;
    })().catch((error) => {
      (this.options.onCancelError ?? ((e) => console.warn("streamhub: stop did not reach the server:", e)))(error, chatId);
      return null;
    });
    const done = sending.finally(() => {
      if (this.pendingCancels.get(chatId) === done) this.pendingCancels.delete(chatId);
    });
    this.pendingCancels.set(chatId, done);
    return done;
  }

  begin(chatId, headers, body) {
    const request = { token: ++this.tokens, headers: headersObject(headers), body, ended: false };
    this.requests.set(chatId, request);
    return request;
  }

  follow(stream, chatId, request, abortSignal) {
    if (abortSignal && this.cancelOnStop) {
      abortSignal.addEventListener(
        "abort",
        () => {
          // The SDK replaces a resume request by aborting it and calling reconnectToStream in
          // the same synchronous run: a microtask later, a replacement has begun; a stop not.
          const seen = this.tokens;
          queueMicrotask(() => {
            const replaced = (this.requests.get(chatId)?.token ?? 0) > seen;
            if (!request.ended && !replaced) {
              request.ended = true;
              this.cancel(chatId);
            }
          });
        },
        { once: true },
      );
    }
    const markEnded = () => { request.ended = true; };
    return stream.pipeThrough(
      new TransformStream({
        transform(part, controller) {
          // The answer ended on the server: a later abort has nothing left to stop.
          if (part && (part.type === "finish" || part.type === "abort" || part.type === "error")) markEnded();
          controller.enqueue(part);
        },
        flush: markEnded,
      }),
    );
  }
}

export function streamhubTransport(inner, options) {
  return new StreamhubChatTransport(inner, options);
}
