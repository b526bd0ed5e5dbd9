"""Writing a benchmark's result: the JSON file every benchmark script leaves, in one format."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(result: Any, path: str, announce: bool = True) -> None:
    """`result` as indented JSON at `path` (its folder made; values JSON cannot hold written as
    strings), ending in a newline; with `announce`, "wrote PATH" on stdout."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2, default=str)
        f.write("\n")
    if announce:
        print(f"wrote {path}")


__all__ = ["write_json"]
