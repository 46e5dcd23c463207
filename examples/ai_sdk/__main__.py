"""``python -m examples.ai_sdk``: run the AI SDK backend with uvicorn on ``HOST``/``PORT``."""

from .app import main

main()
