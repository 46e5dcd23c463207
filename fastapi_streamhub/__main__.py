"""``python -m fastapi_streamhub``: the command line (see :mod:`._cli`)."""

from ._cli import main

if __name__ == "__main__":
    main()
