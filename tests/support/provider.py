"""A stand-in LLM provider: the OpenAI (Chat Completions, Responses) and Anthropic (Messages)
streaming endpoints, replaying recorded-shaped SSE streams over real HTTP.

Each stream holds text, a tool call whose input arrives in fragments, reasoning (where the API
has it) and usage, shaped as the providers send them on the wire. A request whose ``model``
starts with ``hold-`` stops right after the first fragment of the tool call's input and waits
until ``POST /release/{model}``: a test can then read up to the middle of a tool call, cut its
connection and resume, while the answer is still being produced. A Responses stream ends
with ``response.failed`` for a ``fail-`` model and with ``response.incomplete`` for an
``incomplete-`` one; a Chat Completions stream for a ``badjson-`` model breaks the JSON of its
first tool call. ``POST /closed/{model}`` tells whether a client closed its stream early.

``router`` is mounted by ``tests/adapters_app.py`` under ``/provider``; the SDKs get that URL as
their ``base_url``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

HOLD = object()  # where a held stream waits for its release

router = APIRouter()
_gates: dict[str, anyio.Event] = {}
_closed: dict[str, anyio.Event] = {}


def _gate(model: str) -> anyio.Event:
    return _gates.setdefault(model, anyio.Event())


def _closed_early(model: str) -> anyio.Event:
    return _closed.setdefault(model, anyio.Event())


def _chat_chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": 1765000000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def _chat_usage(model: str, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": 1765000000,
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 8},
            "completion_tokens_details": {"reasoning_tokens": 11},
        },
    }


TOOL_ANSWER = ["It is 18 °C ", "in Paris."]


def chat_answer_stream(model: str) -> list[Any]:
    """The second turn, once the conversation holds the tools' results: a plain answer."""
    return [
        _chat_chunk(model, {"role": "assistant", "content": ""}),
        *(_chat_chunk(model, {"content": text}) for text in TOOL_ANSWER),
        _chat_chunk(model, {}, "stop"),
        _chat_usage(model, 60, 9),
    ]


def chat_stream(model: str) -> list[Any]:
    """``chat.completion.chunk`` objects, ``[DONE]`` excluded."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return _chat_chunk(model, delta, finish)

    def call(index: int, arguments: str, head: tuple[str, str] | None = None) -> dict[str, Any]:
        fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
        if head is not None:
            fragment.update(id=head[0], type="function")
            fragment["function"]["name"] = head[1]
        return chunk({"tool_calls": [fragment]})

    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "The user wants the weather;"}),
        chunk({"reasoning_content": " one tool call."}),
        chunk({"content": "Let me check "}),
        chunk({"content": "the weather\nin Paris."}),
        call(0, "", ("call_w1", "get_weather")),
        call(0, '{"city": "Pa'),
        HOLD,
        call(0, 'ris", "unit": '),
        # A model that breaks its JSON: the stand-in's "badjson-" models.
        call(0, '"celsius"' if model.startswith("badjson-") else '"celsius"}'),
        call(1, '{"tz": ', ("call_t2", "get_time")),
        call(1, '"Europe/Paris"}'),
        chunk({}, "tool_calls"),
        _chat_usage(model, 31, 42),
    ]


def responses_stream(model: str) -> list[Any]:
    """Responses API events (their ``type`` is also the SSE event name)."""
    response = {
        "id": "resp_standin",
        "object": "response",
        "created_at": 1765000000,
        "model": model,
        "status": "in_progress",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_w1",
        "name": "get_weather",
        "arguments": "",
        "status": "in_progress",
    }
    message = {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress"}
    events: list[Any] = [
        {"type": "response.created", "response": response},
        {"type": "response.in_progress", "response": response},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "reasoning", "id": "rs_1", "summary": []},
        },
    ]
    summary = {"item_id": "rs_1", "output_index": 0, "summary_index": 0}
    events += [
        {
            **summary,
            "type": "response.reasoning_summary_part.added",
            "part": {"type": "summary_text", "text": ""},
        },
        {**summary, "type": "response.reasoning_summary_text.delta", "delta": "Weather asked;"},
        {**summary, "type": "response.reasoning_summary_text.delta", "delta": " call the tool."},
        {
            **summary,
            "type": "response.reasoning_summary_text.done",
            "text": "Weather asked; call the tool.",
        },
        {
            **summary,
            "type": "response.reasoning_summary_part.done",
            "part": {"type": "summary_text", "text": "Weather asked; call the tool."},
        },
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "Weather asked; call the tool."}],
            },
        },
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {**message, "content": []},
        },
    ]
    text = {"item_id": "msg_1", "output_index": 1, "content_index": 0}
    events += [
        {
            **text,
            "type": "response.content_part.added",
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
        {**text, "type": "response.output_text.delta", "delta": "Checking ", "logprobs": []},
        {**text, "type": "response.output_text.delta", "delta": "Paris.\r\n", "logprobs": []},
        {
            **text,
            "type": "response.output_text.done",
            "text": "Checking Paris.\r\n",
            "logprobs": [],
        },
        {
            "type": "response.output_item.done",
            "output_index": 1,
            "item": {
                **message,
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "Checking Paris.\r\n", "annotations": []}
                ],
            },
        },
        {"type": "response.output_item.added", "output_index": 2, "item": call},
    ]
    args = {"item_id": "fc_1", "output_index": 2}
    arguments = '{"city": "Paris", "unit": "celsius"}'
    events += [
        {**args, "type": "response.function_call_arguments.delta", "delta": '{"city": "Pa'},
        HOLD,
        {**args, "type": "response.function_call_arguments.delta", "delta": 'ris", "unit": '},
        {**args, "type": "response.function_call_arguments.delta", "delta": '"celsius"}'},
        {**args, "type": "response.function_call_arguments.done", "arguments": arguments},
        {
            "type": "response.output_item.done",
            "output_index": 2,
            "item": {**call, "arguments": arguments, "status": "completed"},
        },
    ]
    if model.startswith("fail-"):
        failed = {"code": "server_error", "message": "the stand-in failed on purpose"}
        events.append({"type": "response.failed", "response": {**response, "error": failed}})
    elif model.startswith("incomplete-"):
        details = {"reason": "max_output_tokens"}
        incomplete = {**response, "status": "incomplete", "incomplete_details": details}
        events.append({"type": "response.incomplete", "response": incomplete})
    else:
        events.append(
            {
                "type": "response.completed",
                "response": {
                    **response,
                    "status": "completed",
                    "usage": {
                        "input_tokens": 20,
                        "output_tokens": 30,
                        "total_tokens": 50,
                        "input_tokens_details": {"cached_tokens": 4},
                        "output_tokens_details": {"reasoning_tokens": 12},
                    },
                },
            }
        )
    return events


def anthropic_stream(model: str) -> list[Any]:
    """Messages API events (their ``type`` is also the SSE event name)."""

    def delta(index: int, body: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": index, "delta": body}

    def start(index: int, block: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_start", "index": index, "content_block": block}

    return [
        {
            "type": "message_start",
            "message": {
                "id": "msg_standin",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5},
            },
        },
        start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, {"type": "thinking_delta", "thinking": "The user wants"}),
        delta(0, {"type": "thinking_delta", "thinking": " the weather."}),
        delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM-standin-signature"}),
        {"type": "content_block_stop", "index": 0},
        {"type": "ping"},
        start(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": "Let me check "}),
        delta(1, {"type": "text_delta", "text": "the weather\x00."}),
        {"type": "content_block_stop", "index": 1},
        start(2, {"type": "tool_use", "id": "toolu_w1", "name": "get_weather", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": ""}),
        delta(2, {"type": "input_json_delta", "partial_json": '{"city": "Pa'}),
        HOLD,
        delta(2, {"type": "input_json_delta", "partial_json": 'ris", "unit": '}),
        delta(2, {"type": "input_json_delta", "partial_json": '"celsius"}'}),
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 48},
        },
        {"type": "message_stop"},
    ]


async def _replay(model: str, events: list[Any], named: bool) -> AsyncIterator[bytes]:
    finished = False
    try:
        for event in events:
            if event is HOLD:
                if model.startswith("hold-"):
                    await _gate(model).wait()
                continue
            head = f"event: {event['type']}\n".encode() if named else b""
            yield head + b"data: " + orjson.dumps(event) + b"\n\n"
        if not named:
            yield b"data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:
            # The client went away mid-stream (its SDK closed the response).
            _closed_early(model).set()


def _sse(model: str, events: list[Any], named: bool) -> StreamingResponse:
    return StreamingResponse(
        _replay(model, events, named),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
    )


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> StreamingResponse:
    """Always streams (the adapters are the only callers); answers in text once the
    conversation holds tool results (agents call the model again after running the tools)."""
    body = await request.json()
    model = str(body["model"])
    if any(message.get("role") == "tool" for message in body.get("messages", ())):
        return _sse(model, chat_answer_stream(model), named=False)
    return _sse(model, chat_stream(model), named=False)


@router.post("/v1/responses")
async def responses(request: Request) -> StreamingResponse:
    model = str((await request.json())["model"])
    return _sse(model, responses_stream(model), named=True)


@router.post("/v1/messages")
async def messages(request: Request) -> StreamingResponse:
    model = str((await request.json())["model"])
    return _sse(model, anthropic_stream(model), named=True)


@router.post("/closed/{model}")
async def closed(model: str) -> dict[str, bool]:
    """Whether the stream of ``model`` was closed by its client before its end (waits up to
    10 s for it)."""
    with anyio.move_on_after(10):
        await _closed_early(model).wait()
    return {"closed": _closed_early(model).is_set()}


@router.post("/release/{model}")
async def release(model: str) -> dict[str, bool]:
    """Let the held stream of ``model`` go on."""
    _gate(model).set()
    return {"released": True}
