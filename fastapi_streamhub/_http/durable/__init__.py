"""The Durable Streams protocol (ElectricSQL's open HTTP protocol for resumable append-only
streams) served from the hub's backend: ``create_durable_streams_router``."""

from .mount import create_durable_streams_router

__all__ = ["create_durable_streams_router"]
