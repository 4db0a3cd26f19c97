#!/usr/bin/env python3
"""Prints every operation of the control plane's OpenAPI document as
`METHOD /path`, one per line, sorted, so it can be compared with the
routes of `control-plane/src/http.rs` and `control-plane/src/http/*.rs`.

Usage: scripts/openapi_routes.py [DOCUMENT]
(default: deploy/openapi/control-plane.json in this repository)
"""

import json
import sys
from pathlib import Path

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DEFAULT = Path(__file__).resolve().parent.parent / "deploy" / "openapi" / "control-plane.json"


def routes(document):
    return sorted(
        f"{method.upper()} {path}"
        for path, item in document.get("paths", {}).items()
        for method in item
        if method in METHODS
    )


def main(argv):
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT
    with source.open(encoding="utf-8") as f:
        document = json.load(f)
    for route in routes(document):
        print(route)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
