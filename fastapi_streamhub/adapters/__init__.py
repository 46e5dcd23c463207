"""Adapters: the streams of LLM SDKs as streamhub chunks.

Each adapter is an async generator over the objects one SDK yields; return it from a producer
(``ResumableStreamingResponse(sid, openai_chat(stream))``, or ``async for`` it and publish).
Importing this package imports no SDK: each one is an optional extra
(``fastapi-streamhub[openai]``, ``[anthropic]``, ``[litellm]``, ``[pydantic-ai]``,
``[langgraph]``) and the adapters only read the
attributes of the objects they are given.

Chunks. Text is a plain ``str`` chunk. Everything else is a JSON chunk: a ``dict`` with a string
``type``. Where the Vercel AI SDK's UI message stream has a part for the same thing, the chunk
*is* that part, field for field (so ``protocol="ai-sdk"`` passes it through untouched):

====================== =========================================================================
``type``               fields
====================== =========================================================================
``tool-input-start``   ``toolCallId``, ``toolName``: a tool call begins
``tool-input-delta``   ``toolCallId``, ``inputTextDelta``: a fragment of its JSON input
``tool-input-available`` ``toolCallId``, ``toolName``, ``input``: the whole input, parsed
``tool-input-error``   ``toolCallId``, ``toolName``, ``input`` (the raw text), ``errorText``:
                       the model's input was not valid JSON
``tool-output-available`` ``toolCallId``, ``output``: the result of a tool the framework ran
                       (pydantic-ai, LangGraph)
``tool-output-error``  ``toolCallId``, ``errorText``: that tool failed or was retried
``reasoning-start``    ``id``: a reasoning (thinking, or reasoning summary) block begins
``reasoning-delta``    ``id``, ``delta``: its text
``reasoning-end``      ``id``, optional ``providerMetadata`` (Anthropic's
                       ``{"anthropic": {"signature": ...}}`` or ``{"redactedData": ...}``,
                       which the API wants back on the next turn)
``usage``              ``inputTokens``, ``outputTokens``, ``totalTokens`` (``None`` when the
                       provider did not say), optional ``reasoningTokens``,
                       ``cachedInputTokens``
``finish``             ``finishReason`` (``stop``, ``length``, ``tool-calls``,
                       ``content-filter``, ``error`` or ``other``), ``rawFinishReason``
                       (the provider's own word); always an adapter's last chunk
====================== =========================================================================

``usage`` and ``finish`` have no part of their own in the AI SDK: ``protocol="ai-sdk"`` sends
``usage`` as ``message-metadata`` (``{"usage": {...}}``) and puts ``finishReason`` on the
``finish`` part that ends a ``done`` generation.

Errors the provider reports inside its stream raise :class:`UpstreamError`, so the generation
ends ``failed`` with the provider's message as the reason.

Producers that already speak the AI SDK's UI message stream (pydantic-ai's ``VercelAIAdapter``,
ai-python's ``to_sse``) go through :func:`ui_message_stream`: its parts are these chunks
already, so they are parsed once and stored as chunks, never stored encoded or encoded twice.
"""

from ._anthropic import anthropic_messages
from ._chunks import FINISH_REASONS, UpstreamError
from ._langchain import langchain_events, langgraph_messages
from ._openai_chat import openai_chat
from ._openai_responses import openai_responses
from ._pydantic_ai import pydantic_ai_events
from ._ui_messages import ui_message_stream

__all__ = [
    "FINISH_REASONS",
    "UpstreamError",
    "anthropic_messages",
    "langchain_events",
    "langgraph_messages",
    "openai_chat",
    "openai_responses",
    "pydantic_ai_events",
    "ui_message_stream",
]
