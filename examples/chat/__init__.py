"""Chat demo: a fake LLM streamed resumably over SSE."""
