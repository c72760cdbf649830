"""Print the package sources pip is configured with as `uv pip install` arguments, one per line.

Why: uv reads neither pip.conf nor PIP_* variables, and on machines whose packages lie in local
indexes and find-links folders (or behind a company index) an install must look where pip looks.
`pip config list` already merges the files and the environment (the environment wins), so this
reads its output and maps each setting to uv's flag:

    index-url -> --index-url          extra-index-url -> --extra-index-url (pip's order kept)
    find-links -> --find-links        constraint -> --constraint
    no-index -> --no-index            cert -> SSL_CERT_FILE (printed as env:SSL_CERT_FILE=...)
    trusted-host -> --allow-insecure-host

Usage: python scripts/pip_sources.py [PIP_CONFIG_LIST_OUTPUT_FILE]  (default: run `pip config list`)
"""

from __future__ import annotations

import re
import subprocess
import sys

_LINE = re.compile(r"^(?P<scope>[^.]*)\.(?P<key>[a-z-]+)='(?P<value>.*)'$")
# pip's precedence among the scopes `pip config list` shows: environment > install section > global.
_RANK = {":env:": 3, "install": 2, "global": 1}
_FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}


def merged_settings(config_list: str) -> dict[str, str]:
    """The value pip uses for each key, from the text of `pip config list`."""
    best: dict[str, tuple[int, str]] = {}
    for line in config_list.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        rank = _RANK.get(match["scope"], 0)
        if rank == 0:
            continue
        key = match["key"]
        if key not in best or rank >= best[key][0]:
            best[key] = (rank, match["value"])
    return {key: value for key, (_, value) in best.items()}


def uv_arguments(settings: dict[str, str]) -> list[str]:
    """uv flags (and env:NAME=VALUE lines) that make uv read the sources pip reads."""
    args: list[str] = []
    # pip ranks no index above another; the install passes --index-strategy unsafe-best-match, as pip.
    for key, flag in _FLAGS.items():
        for value in settings.get(key, "").split():
            args += [flag, value]
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    if settings.get("cert"):
        args.append(f"env:SSL_CERT_FILE={settings['cert']}")
    return args


def main() -> None:
    if len(sys.argv) > 1:
        text = open(sys.argv[1], encoding="utf-8").read()
    else:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
        )
        text = done.stdout
    print("\n".join(uv_arguments(merged_settings(text))))


if __name__ == "__main__":
    main()
