"""One small app per LLM SDK adapter of ``fastapi_streamhub.adapters`` (see ``_app.py``)."""
