// streamhub.js: follow a fastapi-streamhub session in the browser and survive page reloads.
// One dependency-free ES module, served by the router at GET {prefix}/~/streamhub.js.
//
//   import { ResumableStream } from "/streams/~/streamhub.js";
//   const stream = new ResumableStream({ storageKey: "my-chat", onText: (text) => show(text) });
//   stream.resume();                                 // on page load: carry on where it stopped
//   stream.start(sid, { url: `/chat/${sid}?prompt=hi` });   // a new session
//
// The record {sessionId, url, text, cursor, state, reason, extra} is written to localStorage
// after every event, text and cursor together, so a reload reconnects with
// ?last_event_id=<cursor> (EventSource cannot send a header on its first request) and appends
// only what is missing. Its own reconnects (a dropped connection) send Last-Event-ID.
//
// Chunks are decoded by the rules of fastapi_streamhub/_http/sse.py: a "message" event is text; a
// "json" event whose value is a string is text (it held CR or NUL), any other "json" value is
// a JSON chunk; "metadata", "reset" and "end" are control events; any other name is a chunk
// the producer named (EventSource only reports names it listens to: list them in `events`).
//
// Conversations: `conversation: true` follows the session across its generations (a chat's
// turns: GET {prefix}/{sid}?follow=conversation) until close(). Each generation starts with
// onGeneration({generation}) (the record's text starts over; the user's turn, when the app
// sets it as the generation's metadata, follows as onMetadata) and ends with
// onGenerationEnd({generation, state, reason}); the record stays "streaming" and a reload
// resumes across turns by cursor. `turns: true` (GET {prefix}/{sid}?follow=turns) follows the
// same way with onGeneration({generation, turn}) and onGenerationEnd only, no chunk nor
// metadata: for a page that streams each answer by other means (the AI SDK's useChat) and only
// needs to learn of turns started elsewhere.

const CONTROL = new Set(["message", "json", "metadata", "reset", "end", "generation", "generation-end"]);
const FINISHED = new Set(["done", "cancelled", "failed"]);
const RECORD_VERSION = 1;

function noop() {}

/** A JSON chunk ({kind: "json"}) or a text chunk ({kind: "text"}) from a "json" event. */
export function decodeJsonEvent(data) {
  const value = JSON.parse(data);
  return typeof value === "string" ? { kind: "text", data: value } : { kind: "json", data: value };
}

export class ResumableStream {
  /**
   * @param {object} [options]
   * @param {string} [options.prefix] the router's prefix ("/streams")
   * @param {string} [options.storageKey] the localStorage key of the record ("streamhub")
   * @param {Storage} [options.storage] where the record lives (localStorage)
   * @param {string[]} [options.events] custom event names the producer sends chunks under
   * @param {(text: string, delta: string) => void} [options.onText] after every text chunk
   * @param {(chunk: {id: string, event: string, kind: string, data: any}) => void} [options.onChunk]
   * @param {(value: any) => void} [options.onMetadata]
   * @param {(reset: {reason: string, generation: number}) => void} [options.onReset]
   * @param {(end: {state: string, reason: string | null}) => void} [options.onEnd]
   * @param {(status: string) => void} [options.onStatus] "connecting", "streaming", "reconnecting"
   * @param {boolean} [options.conversation] follow every generation of the session (see above)
   * @param {boolean} [options.turns] follow every generation's start and end only (see above)
   * @param {(start: {generation: number, turn: string | null}) => void} [options.onGeneration] a generation starts
   * @param {(end: {generation: number, state: string, reason: string | null}) => void} [options.onGenerationEnd]
   * @param {(error: Error) => void} [options.onError] a record that could not be saved or read
   */
  constructor(options = {}) {
    this.prefix = (options.prefix ?? "/streams").replace(/\/+$/, "");
    this.storageKey = options.storageKey ?? "streamhub";
    this.storage = options.storage ?? globalThis.localStorage;
    this.events = [...(options.events ?? [])];
    for (const name of this.events) {
      if (CONTROL.has(name)) throw new Error(`"${name}" is not a custom event name`);
    }
    this.onText = options.onText ?? noop;
    this.onChunk = options.onChunk ?? noop;
    this.onMetadata = options.onMetadata ?? noop;
    this.onReset = options.onReset ?? noop;
    this.onEnd = options.onEnd ?? noop;
    this.onStatus = options.onStatus ?? noop;
    this.conversation = options.conversation ?? false;
    this.turns = options.turns ?? false;
    if (this.conversation && this.turns) throw new Error("conversation and turns exclude each other");
    this.onGeneration = options.onGeneration ?? noop;
    this.onGenerationEnd = options.onGenerationEnd ?? noop;
    this.onError = options.onError ?? ((err) => console.error("streamhub:", err));
    this.record = null;
    this.source = null;
    this.suspended = false; // the page is being left: its stream is closed, not failed
    if (typeof window !== "undefined") {
      const suspend = () => {
        if (this.source) {
          this.suspended = true;
          this.source.close();
          this.source = null;
        }
      };
      // Leaving the page closes the stream, and Chromium reports that as an error between
      // "beforeunload" and "pagehide": close it first, so the record is not marked failed.
      window.addEventListener("beforeunload", suspend);
      window.addEventListener("pagehide", suspend);
      // A page restored from the back/forward cache keeps its state but not its stream.
      window.addEventListener("pageshow", (e) => {
        if (e.persisted && this.suspended) this.resume();
      });
    }
  }

  /** The stored record, or null. */
  load() {
    let raw;
    try {
      raw = this.storage.getItem(this.storageKey);
    } catch (err) {
      this.onError(err);
      return null;
    }
    if (raw == null) return null;
    try {
      const record = JSON.parse(raw);
      if (record && record.version === RECORD_VERSION && typeof record.sessionId === "string") {
        return record;
      }
    } catch {
      // fall through: a record this module did not write
    }
    this.onError(new Error(`ignoring the unreadable record under "${this.storageKey}"`));
    return null;
  }

  /** Follow a new session from its start; `url` (default {prefix}/{sid}) may start it. */
  start(sessionId, { url, extra = null } = {}) {
    this.record = {
      version: RECORD_VERSION,
      sessionId,
      url: url ?? this.streamUrl(sessionId),
      text: "",
      cursor: "",
      state: "streaming",
      reason: null,
      extra,
    };
    this.save();
    this.connect(this.record.url);
    return this.record;
  }

  /**
   * Pick up the stored session: an unfinished one reconnects after its cursor (or through its
   * start url when no chunk arrived yet). Its text is reported at once; a finished one is
   * reported with onText and onEnd and not reconnected. Returns the record, or null.
   */
  resume() {
    this.suspended = false;
    this.record = this.load();
    if (!this.record) return null;
    this.onText(this.record.text, this.record.text);
    if (FINISHED.has(this.record.state)) {
      this.onEnd({ state: this.record.state, reason: this.record.reason });
      return this.record;
    }
    const { sessionId, cursor } = this.record;
    this.connect(cursor ? this.streamUrl(sessionId, cursor) : this.record.url);
    return this.record;
  }

  /** Stop following (the producer keeps running; resume() carries on later). */
  close() {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
  }

  /** Ask the server to stop the producer; the "end" event (cancelled) follows on the stream. */
  async cancel({ wait } = {}) {
    if (!this.record) throw new Error("no session to cancel");
    const query = wait == null ? "" : `?wait=${encodeURIComponent(wait)}`;
    const url = `${this.prefix}/${encodeURIComponent(this.record.sessionId)}/cancel${query}`;
    const res = await fetch(url, { method: "POST" });
    if (!res.ok) throw new Error(`cancel answered HTTP ${res.status}`);
    return res.json();
  }

  /** Stop following and remove the stored record. */
  forget() {
    this.close();
    this.record = null;
    try {
      this.storage.removeItem(this.storageKey);
    } catch (err) {
      this.onError(err);
    }
  }

  streamUrl(sessionId, cursor = "") {
    const base = `${this.prefix}/${encodeURIComponent(sessionId)}`;
    const query = [];
    if (this.conversation) query.push("follow=conversation");
    if (this.turns) query.push("follow=turns");
    if (cursor) query.push(`last_event_id=${encodeURIComponent(cursor)}`);
    return query.length ? `${base}?${query.join("&")}` : base;
  }

  save() {
    try {
      this.storage.setItem(this.storageKey, JSON.stringify(this.record));
    } catch (err) {
      this.onError(err); // quota, or storage disabled: the stream goes on, a reload will not
    }
  }

  connect(url) {
    this.close();
    const source = new EventSource(url);
    this.source = source;
    const mine = (handler) => (e) => {
      if (this.source === source) handler(e);
    };
    this.onStatus("connecting");
    source.onopen = mine(() => this.onStatus("streaming"));
    source.onmessage = mine((e) => this.chunk(e, "message", { kind: "text", data: e.data }));
    source.addEventListener("json", mine((e) => this.chunk(e, "json", decodeJsonEvent(e.data))));
    for (const name of this.events) {
      source.addEventListener(name, mine((e) => {
        this.chunk(e, name, { kind: "json", data: JSON.parse(e.data) });
      }));
    }
    source.addEventListener("metadata", mine((e) => this.onMetadata(JSON.parse(e.data))));
    source.addEventListener("reset", mine((e) => {
      // The cursor could not be honoured: the replay that follows starts from the beginning.
      this.record.text = "";
      this.record.cursor = "";
      this.save();
      this.onReset(JSON.parse(e.data));
      this.onText("", "");
    }));
    source.addEventListener("generation", mine((e) => {
      // A conversation's next generation: its text starts over.
      const start = JSON.parse(e.data);
      this.record.cursor = e.lastEventId;
      this.record.text = "";
      this.record.generation = start.generation;
      this.save();
      this.onGeneration(start);
      this.onText("", "");
    }));
    source.addEventListener("generation-end", mine((e) => {
      const end = JSON.parse(e.data);
      this.record.cursor = e.lastEventId; // resumes after it: waits for the next generation
      this.record.lastEnd = end;
      this.save();
      this.onGenerationEnd(end);
    }));
    source.addEventListener("end", mine((e) => {
      const end = JSON.parse(e.data);
      this.close(); // or EventSource reconnects when the server closes the response
      this.finish(end.state, end.reason ?? null);
    }));
    source.onerror = mine(() => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up: an error status (404 for a session that expired, 400, ...).
        this.close();
        this.finish("failed", "the stream is not available");
      } else {
        this.onStatus("reconnecting"); // it reconnects by itself, with Last-Event-ID
      }
    });
  }

  chunk(e, event, { kind, data }) {
    const record = this.record;
    if (e.lastEventId) record.cursor = e.lastEventId;
    if (kind === "text") {
      record.text += data;
      this.save();
      this.onText(record.text, data);
    } else {
      this.save();
    }
    this.onChunk({ id: e.lastEventId, event, kind, data });
  }

  finish(state, reason) {
    this.record.state = state;
    this.record.reason = reason;
    this.save();
    this.onEnd({ state, reason });
  }
}
