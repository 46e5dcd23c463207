"""The lowest versions pyproject.toml declares, for ``scripts/test --lowest``.

``python scripts/_floors.py pyproject.toml --extras hiredis,client`` prints one ``name==floor``
per dependency of the package and of the named extras (every one must have a ``>=`` floor).
With ``--strip-lock FILE`` it prints that lock instead, without those packages and without
hashes, so the test tools keep their locked versions around the floors.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib

_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")
_FLOOR = re.compile(r">=\s*([0-9][0-9A-Za-z.]*)")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def floors(pyproject: str, extras: list[str]) -> dict[str, str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project["optional-dependencies"][extra]
    result: dict[str, str] = {}
    for spec in specs:
        name = _NAME.match(spec)
        floor = _FLOOR.search(spec)
        if name is None or floor is None:
            sys.exit(f"scripts/_floors.py: {spec!r} declares no '>=' floor")
        result[_normal(name.group(1))] = floor.group(1)
    return result


def strip_lock(lock: str, drop: set[str]) -> str:
    kept: list[str] = []
    with open(lock) as f:
        text = f.read()
    for line in text.replace("\\\n", " ").splitlines():
        requirement = line.split("--hash", 1)[0].strip()
        name = _NAME.match(requirement)
        if name is None or _normal(name.group(1)) in drop:
            continue
        kept.append(requirement)
    return "\n".join(kept) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject")
    parser.add_argument("--extras", default="")
    parser.add_argument("--strip-lock")
    args = parser.parse_args()
    found = floors(args.pyproject, [e for e in args.extras.split(",") if e])
    if args.strip_lock:
        sys.stdout.write(strip_lock(args.strip_lock, set(found)))
    else:
        print(" ".join(f"{name}=={version}" for name, version in sorted(found.items())))


if __name__ == "__main__":
    main()
