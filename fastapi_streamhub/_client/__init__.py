"""The HTTP client layer (the ``[client]`` extra): the only code that imports httpx.

It depends on the kernel alone (``_types``, ``_errors``), never on the engine or the FastAPI
layer, so a program that only consumes streams needs neither FastAPI nor Redis.
``fastapi_streamhub.client`` is its public facade.
"""
