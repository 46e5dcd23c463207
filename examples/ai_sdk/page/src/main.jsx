// The React front end of examples/ai_sdk: the AI SDK's useChat({ resume: true }) with the
// router's chat transport (served at /api/chat/~/chat-transport.js, left out of the bundle).
//
// - The chat id is in the URL (?chat=...): a reload, or the same URL in a second tab, is the
//   same chat. On load useChat resumes the running answer (GET /api/chat/{id}/stream: the
//   answer from its start, then live; 204 when none runs).
// - The messages are kept in localStorage per chat (a real app loads them from its database):
//   a resumed answer replaces the stored part of itself, by message id, so nothing doubles.
// - Stop is useChat's stop(): the transport also POSTs /api/chat/{id}/cancel, so the server
//   stops generating. A question sent while an answer runs supersedes it on the server.

import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport } from "ai";
import { useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { streamhubTransport } from "/api/chat/~/chat-transport.js";

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

const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

function Chat() {
  const { messages, sendMessage, status, stop, error } = useChat({
    id: CHAT_ID,
    messages: storedMessages(CHAT_ID),
    resume: true,
    transport,
  });
  const [input, setInput] = useState("");

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
    // Sent even while an answer runs: the server cancels that answer and answers this one.
    sendMessage({ text });
  };

  return (
    <>
      <ol id="messages">
        {messages.map((m) => (
          <li key={m.id} data-id={m.id} data-role={m.role} data-text-parts={m.parts.filter((p) => p.type === "text").length}>
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
