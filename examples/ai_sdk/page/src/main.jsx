// The React front end of examples/ai_sdk: the AI SDK's useChat({ resume: true }) with the
// router's chat transport (served at /api/chat/~/chat-transport.js, left out of the bundle).
//
// - The chat id is in the URL (?chat=...): a reload, or the same URL in a second tab, is the
//   same chat. On load useChat resumes the running answer (GET /api/chat/{id}/stream: the
//   answer from its start, then live; 204 when none runs).
// - The messages are kept in localStorage per chat (a real app loads them from its database):
//   a resumed answer replaces the stored part of itself, by message id, so nothing doubles.
// - Stop is useChat's stop(): the transport also POSTs /api/chat/{id}/cancel, so the server
//   stops generating. A question sent while an answer runs supersedes it on the server. A
//   stopped answer (no finish part) is marked in its message metadata ({stopped: true}).
// - Turns started in another tab: useChat only knows the requests it made itself, so the page
//   also follows the chat's turns (GET /api/chat/{id}?follow=turns, through the router's
//   streamhub.js): one small event when a generation starts (its turn: "message:<id>") and one
//   when it ends, no chunk, so each tab receives each answer once, through useChat. A turn
//   this tab did not send is added as a user message (its text from the status: the
//   generation's metadata; before its answer if this tab has it already: a device that joined
//   mid-answer), and useChat resumes its answer (resumeStream(): the answer from its start,
//   then live), so answers render through the SDK with its message ids. Only an answer that
//   had ended before the resume (204: a device that opened the chat after the turn) is read
//   from the snapshot (text parts only).
//   Earlier turns are not replayed (the server keeps the current turn): a device without them
//   loads them from the app's history.

import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport } from "ai";
import { useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { streamhubTransport } from "/api/chat/~/chat-transport.js";
import { ResumableStream } from "/api/chat/~/streamhub.js";

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID(); // secure contexts only (https, localhost)
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function chatIdFromUrl() {
  const params = new URLSearchParams(location.search);
  let id = params.get("chat");
  if (!id) {
    id = newId();
    params.set("chat", id);
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }
  return id;
}

const storageKey = (id) => `streamhub-ai-sdk:${id}`;

function storedMessages(id) {
  try {
    const messages = JSON.parse(localStorage.getItem(storageKey(id)) ?? "[]");
    return Array.isArray(messages) ? messages : [];
  } catch {
    return [];
  }
}

const CHAT_ID = chatIdFromUrl();
const transport = streamhubTransport(new DefaultChatTransport({ api: "/api/chat" }));

// The follower keeps no record across reloads: it starts at the current turn each time.
function memoryStorage() {
  const items = new Map();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => items.set(key, value),
    removeItem: (key) => items.delete(key),
  };
}

const TURN = "message:"; // the server's turn of a user message: "message:<message id>"

// Follow the chat's turns: `onTurn(turn)` once a turn's user message is known, with
// turn = {id, text, generation, turn, ended}: `ended` a promise settled at the turn's end.
function followTurns(onTurn) {
  let turn = null;
  const base = `/api/chat/${encodeURIComponent(CHAT_ID)}`;
  const follower = new ResumableStream({
    prefix: "/api/chat",
    turns: true,
    storage: memoryStorage(),
    onGeneration: async ({ generation, turn: name }) => {
      let end;
      const current = { generation, turn: name, ended: new Promise((resolve) => { end = resolve; }), end };
      turn = current;
      if (typeof name !== "string" || !name.startsWith(TURN)) return;
      // The user's message is the generation's metadata, one status call away.
      const status = await fetch(`${base}/status`).then((r) => (r.ok ? r.json() : null), () => null);
      const user = status?.turn === name ? status.metadata?.user : null;
      if (typeof user?.text !== "string") return;
      current.id = name.slice(TURN.length);
      current.text = user.text;
      onTurn(current);
    },
    onGenerationEnd: () => turn?.end(),
    onEnd: () => follower.close(), // the chat was deleted
  });
  follower.start(CHAT_ID);
  return follower;
}

// The text of a turn's answer once it ended, from the snapshot (null: another turn runs now).
async function answerOf(turn) {
  const snapshot = await fetch(`/api/chat/${encodeURIComponent(CHAT_ID)}/snapshot`)
    .then((r) => (r.ok ? r.json() : null), () => null);
  return snapshot?.turn === turn.turn ? snapshot.text : null;
}

const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

function Chat() {
  const markStopped = useRef(null);
  const { messages, sendMessage, setMessages, resumeStream, status, stop, error } = useChat({
    id: CHAT_ID,
    messages: storedMessages(CHAT_ID),
    resume: true,
    transport,
    // An answer that ended without a finish part was stopped: by this tab's Stop (isAbort), or
    // on the server (another tab's Stop, a newer question: the stream ends with an abort part).
    onFinish: ({ message, isAbort, isError, isDisconnect, finishReason }) => {
      if (message.role === "assistant" && !isError && !isDisconnect && (isAbort || finishReason == null)) {
        markStopped.current?.(message.id);
      }
    },
  });
  markStopped.current = (id) => setMessages((current) => current.map((m) => m.id === id
    ? { ...m, metadata: { ...(m.metadata ?? {}), stopped: true } }
    : m));
  const [input, setInput] = useState("");
  const [elsewhere, setElsewhere] = useState([]); // user turns sent from another tab, in order
  const known = useRef(new Set()); // ids of the user messages this tab has or sent
  for (const m of messages) if (m.role === "user") known.current.add(m.id);

  // Follow the turns once the chat exists on the server (it has an answer, or a status).
  const follower = useRef(null);
  const hasAnswer = messages.some((m) => m.role === "assistant");
  useEffect(() => {
    const start = () => {
      follower.current ??= followTurns((turn) => {
        if (known.current.has(turn.id)) return;
        known.current.add(turn.id);
        setElsewhere((turns) => [...turns, turn]);
      });
    };
    if (hasAnswer) start();
    else fetch(`/api/chat/${encodeURIComponent(CHAT_ID)}/status`).then((r) => r.ok && start(), () => {});
  }, [hasAnswer]);
  useEffect(() => () => follower.current?.close(), []);

  // A turn sent elsewhere: show its question (before its answer, when this tab already has
  // that: the server's answer ids are "<chat id>-<generation>"), and resume the answer
  // through useChat once this tab is idle. An answer that had ended before the resume (204)
  // is read from the snapshot.
  useEffect(() => {
    if (status !== "ready" || elsewhere.length === 0) return;
    const [turn, ...rest] = elsewhere;
    setElsewhere(rest);
    const answerId = `${CHAT_ID}-${turn.generation}`;
    const user = { id: turn.id, role: "user", parts: [{ type: "text", text: turn.text }] };
    let answered = false;
    setMessages((current) => {
      answered = current.some((m) => m.id === answerId);
      if (current.some((m) => m.id === turn.id)) return current;
      const at = current.findIndex((m) => m.id === answerId);
      return at === -1 ? [...current, user] : [...current.slice(0, at), user, ...current.slice(at)];
    });
    if (answered) return;
    resumeStream().then(() => turn.ended).then(() => answerOf(turn)).then((text) => setMessages((current) => text == null || current.some((m) => m.id === answerId)
      ? current
      : [...current, { id: answerId, role: "assistant", parts: [{ type: "text", text }] }]));
  }, [status, elsewhere]);

  useEffect(() => {
    localStorage.setItem(storageKey(CHAT_ID), JSON.stringify(messages));
  }, [messages]);
  useEffect(() => {
    document.body.dataset.status = status;
  }, [status]);

  const busy = status === "submitted" || status === "streaming";
  const submit = (event) => {
    event.preventDefault();
    const text = input.trim();
    if (!text) return;
    setInput("");
    const id = newId();
    known.current.add(id);
    // Sent even while an answer runs: the server cancels that answer and answers this one.
    sendMessage({ id, role: "user", parts: [{ type: "text", text }] });
  };

  return (
    <>
      <ol id="messages">
        {messages.map((m) => (
          <li key={m.id} data-id={m.id} data-role={m.role} data-stopped={m.metadata?.stopped ? "true" : undefined}
            data-text-parts={m.parts.filter((p) => p.type === "text").length}>
            {textOf(m)}
          </li>
        ))}
      </ol>
      <form id="ask" onSubmit={submit}>
        <input id="prompt" autoComplete="off" placeholder="Ask something…" value={input} onChange={(e) => setInput(e.target.value)} />
        <button id="send" type="submit">Send</button>
        <button id="stop" type="button" disabled={!busy} onClick={() => stop()}>Stop</button>
      </form>
      <p id="status">{error ? `Error: ${error.message}` : busy ? "Answering… reload the page or open it in another tab: it carries on." : "Ask a question."}</p>
    </>
  );
}

createRoot(document.getElementById("root")).render(<Chat />);
