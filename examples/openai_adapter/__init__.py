"""Adapter for OpenAI-compatible chat-completion streams, plus a local stand-in provider."""
