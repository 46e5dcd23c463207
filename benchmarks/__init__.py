"""Benchmarks of fastapi_streamhub: ``python -m benchmarks [--quick] [--json FILE]``.

Each figure is measured in the same run as its reference on a private ``redis-server`` started
here, and reported with the ratio to that reference. See ``runner.py`` for the list.
"""
