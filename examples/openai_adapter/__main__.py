"""``python -m examples.openai_adapter``: run the adapter app with uvicorn on ``HOST``/``PORT``."""

from .app import main

main()
