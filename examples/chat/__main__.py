"""``python -m examples.chat``: run the chat demo with uvicorn on ``HOST``/``PORT``."""

from .app import main

main()
