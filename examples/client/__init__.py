"""A command-line chat client built on ``fastapi_streamhub.client`` (see ``__main__.py``)."""
