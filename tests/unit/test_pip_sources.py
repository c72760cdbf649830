"""scripts/pip_sources.py: uv looks where pip looks (pip's scopes merged, pip's order kept)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pip_sources", ROOT / "scripts" / "pip_sources.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG = """\
:env:.cert='/etc/ssl/certs/ca.crt'
:env:.find-links='/opt/wheels'
:env:.default-timeout='180'
global.cert='/etc/other.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/srv/ignored-by-env'
global.index-url='https://global.example/simple'
install.index-url='https://install.example/simple'
install.trusted-host='install.example'
user.no-index='true'
not a setting line
"""


def test_each_scope_is_ranked_as_pip_ranks_it() -> None:
    settings = _module().merged_settings(CONFIG)
    assert settings["find-links"] == "/opt/wheels"  # the environment beats global
    assert settings["cert"] == "/etc/ssl/certs/ca.crt"
    assert settings["index-url"] == "https://install.example/simple"  # install beats global
    assert "no-index" not in settings  # a scope pip config list never shows is not guessed at


def test_settings_become_uv_flags_in_pips_order() -> None:
    args = _module().uv_arguments(_module().merged_settings(CONFIG))
    assert args == [
        "--index-url", "https://install.example/simple",
        "--extra-index-url", "file:///opt/pypi/simple",
        "--extra-index-url", "file:///opt/pypi-more/simple",
        "--find-links", "/opt/wheels",
        "--constraint", "/etc/xdg/pip/constraints.txt",
        "--allow-insecure-host", "install.example",
        "env:SSL_CERT_FILE=/etc/ssl/certs/ca.crt",
    ]  # fmt: skip


def test_no_index_and_an_empty_config() -> None:
    module = _module()
    assert module.uv_arguments(module.merged_settings(":env:.no-index='1'\n")) == ["--no-index"]
    assert module.uv_arguments(module.merged_settings("")) == []
