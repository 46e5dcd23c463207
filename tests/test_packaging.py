"""The package as users get it: its data files are installed, and which copy the suite imported.

``scripts/test --installed`` builds the wheel, installs it (not editable) into a clean venv and
runs the suite from a folder without the sources, with ``STREAMHUB_EXPECT_INSTALLED=1``: then
the test below proves the suite imported that installed copy, not the checkout.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sysconfig
from pathlib import Path

import pytest

import fastapi_streamhub

PACKAGE = Path(fastapi_streamhub.__file__).resolve().parent
CHECKOUT = Path(__file__).resolve().parents[1]


def test_data_files_are_in_the_package() -> None:
    """The Lua scripts, the browser helper and the typing marker ship with the code."""
    scripts = {p.name for p in (PACKAGE / "backends" / "lua").glob("*.lua")}
    assert {"append.lua", "claim.lua", "close.lua", "compact.lua", "message.lua"} <= scripts
    assert {"_ds_lib.lua", "ds_append.lua", "ds_create.lua", "ds_fork_take.lua"} <= scripts
    assert (PACKAGE / "static" / "streamhub.js").read_text().strip()
    assert (PACKAGE / "py.typed").exists()


@pytest.mark.skipif(
    os.environ.get("STREAMHUB_EXPECT_INSTALLED") != "1",
    reason="only under scripts/test --installed (the checkout is imported otherwise)",
)
def test_the_suite_imported_the_installed_wheel() -> None:
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert PACKAGE.is_relative_to(site_packages), PACKAGE
    assert not PACKAGE.is_relative_to(CHECKOUT), PACKAGE
    dist = importlib.metadata.distribution("fastapi-streamhub")
    direct_url = dist.read_text("direct_url.json")
    # Installed from a wheel file, not as an editable link to a source tree.
    assert direct_url is not None
    origin = json.loads(direct_url)
    assert origin["url"].endswith(".whl"), origin
    assert not origin.get("dir_info", {}).get("editable", False)
    assert dist.version == fastapi_streamhub.__version__
