"""The FastAPI/Starlette layer: responses, the router, SSE framing and the browser helper.

The only package code that imports fastapi, starlette or pydantic (the client has httpx, the
engine none of them; tests/test_layers.py checks it). It drives the engine through the hub's
public API.
"""
