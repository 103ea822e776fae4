"""The shape of the house, as tests: `bot/` is platform-neutral, and only `config/` reads the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = ("slack_bolt", "slack_sdk", "discord", "adapters", "service")
COMPOSITION_ROOT = ROOT / "bot" / "__main__.py"


def modules_under(package: str) -> list[Path]:
    return sorted(path for path in (ROOT / package).rglob("*.py") if "__pycache__" not in path.parts)


def core_modules() -> list[Path]:
    return [path for path in modules_under("bot") if path != COMPOSITION_ROOT]


def imported_modules(tree: ast.AST, package: str = "") -> list[tuple[int, str]]:
    """Every module an `import` or `from … import` names, at any depth (inside functions too).

    Relative imports are resolved against `package` (the dotted package of the scanned file).
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_base(node, package)
            found.extend((node.lineno, ".".join(filter(None, [base, alias.name]))) for alias in node.names)
        elif isinstance(node, ast.Call) and _dynamic_import_target(node):
            found.append((node.lineno, _dynamic_import_target(node) or ""))
    return found


def _absolute_base(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = package.split(".") if package else []
    anchor = parts[: len(parts) - (node.level - 1)] if node.level - 1 <= len(parts) else []
    return ".".join([*anchor, *([node.module] if node.module else [])])


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).parent.parts)


def _dynamic_import_target(call: ast.Call) -> str | None:
    """`importlib.import_module("x")` / `__import__("x")` with a literal name."""
    function = call.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    if name in {"import_module", "__import__"} and call.args and isinstance(call.args[0], ast.Constant):
        value = call.args[0].value
        return value if isinstance(value, str) else None
    return None


def is_forbidden(module: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in FORBIDDEN_IN_CORE)


def environment_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """`os.environ`, `os.getenv`, `os.putenv`, and `from os import environ/getenv`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb", "getenvb"}:
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            names = {alias.name for alias in node.names}
            found.extend((node.lineno, f"from os import {name}") for name in names & {"environ", "getenv", "environb"})
    return found


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_core_has_modules_to_check() -> None:
    names = {relative(path) for path in core_modules()}

    assert {"bot/parsing.py", "bot/core.py", "bot/text.py"} <= names
    assert "bot/__main__.py" not in names


@pytest.mark.parametrize("path", core_modules(), ids=relative)
def test_core_module_imports_no_platform_sdk_or_adapter(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    imports = imported_modules(tree, package_of(path))

    offending = [f"{relative(path)}:{line} imports {module}" for line, module in imports if is_forbidden(module)]

    assert offending == []


@pytest.mark.parametrize("path", modules_under("bot") + modules_under("adapters") + modules_under("service"),
                         ids=relative)
def test_no_module_outside_config_reads_the_environment(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    assert [f"{relative(path)}:{line} {what}" for line, what in environment_reads(tree)] == []


@pytest.mark.parametrize(
    "source",
    [
        "import discord",
        "import slack_sdk.web.async_client",
        "from slack_bolt.app.async_app import AsyncApp",
        "from adapters import rendering",
        "import adapters.slack as slack",
        "def later():\n    from discord import app_commands\n",
        "class Lazy:\n    def load(self):\n        import slack_bolt\n",
        "import importlib\nimportlib.import_module('discord')",
    ],
)
def test_the_import_scan_catches_every_way_of_importing(source: str) -> None:
    assert any(is_forbidden(module) for _, module in imported_modules(ast.parse(source), "bot"))


@pytest.mark.parametrize("source", ["from .. import adapters", "from ..adapters.slack import SlackAdapter"])
def test_the_import_scan_resolves_relative_imports_out_of_the_core(source: str) -> None:
    assert any(is_forbidden(module) for _, module in imported_modules(ast.parse(source), "bot"))


@pytest.mark.parametrize(
    "source",
    ["import discordant", "from bot.adapters_table import x", "from . import adapters", "import slack_format_helpers"],
)
def test_the_import_scan_does_not_flag_lookalike_names(source: str) -> None:
    assert not any(is_forbidden(module) for _, module in imported_modules(ast.parse(source), "bot"))


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.environ['X']",
        "import os\nos.getenv('X')",
        "import os\nos.environ.get('X')",
        "from os import environ",
        "from os import getenv as read",
        "def f():\n    import os\n    return os.environ",
    ],
)
def test_the_environment_scan_catches_every_way_of_reading(source: str) -> None:
    assert environment_reads(ast.parse(source)) != []


def test_the_composition_root_is_where_the_service_is_reached() -> None:
    tree = ast.parse(COMPOSITION_ROOT.read_text(encoding="utf-8"))

    assert any(module.startswith("service") for _, module in imported_modules(tree))


@pytest.mark.parametrize("path", modules_under("adapters"), ids=relative)
def test_adapters_do_not_reach_into_the_service_that_runs_them(path: Path) -> None:
    """The service holds adapters; an adapter holds only the core (and the contract in `adapters.base`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    assert [module for _, module in imported_modules(tree, package_of(path)) if module.split(".")[0] == "service"] == []


def test_the_service_knows_no_platform_by_name() -> None:
    """Adding a platform is its module plus one line in `adapters.registry`: the service imports no adapter."""
    offending = [
        f"{relative(path)} imports {module}"
        for path in modules_under("service")
        for _, module in imported_modules(ast.parse(path.read_text(encoding="utf-8")), package_of(path))
        if module.startswith(("adapters.slack", "adapters.discord", "slack_bolt", "slack_sdk", "discord"))
        and module != "adapters.discord_commands.invite_url"  # the `discord-invite` command line
    ]

    assert offending == []
