"""The lock files pin the whole dependency tree with hashes, and agree with the hand-edited requirements.

`bin/setup-venv` installs `requirements.lock` / `requirements-dev.lock` with `pip install --require-hashes`;
`requirements.txt` / `requirements-dev.txt` name the direct dependencies. These tests fail when someone edits a
requirements file without regenerating its lock (docs/RELEASING.md), or hand-edits a lock into an unpinned or
unhashed entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"requirements.txt": "requirements.lock", "requirements-dev.txt": "requirements-dev.lock"}
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*$")
_HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Locked:
    version: str
    hashes: tuple[str, ...]


def read_lock(text: str) -> dict[str, Locked]:
    """Each entry of a pip-compile lock: `name==version \\` then one `--hash=sha256:…` per line.

    Raises AssertionError naming the first entry that is not pinned with `==` or has no sha256 hash.
    """
    entries: dict[str, Locked] = {}
    logical = re.sub(r"\\\n", " ", text)  # pip's line continuations
    for line in logical.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        pin = _PIN.match(requirement)
        assert pin, f"not pinned with ==: {line!r}"
        assert options and all(_HASH.match(option) for option in options), f"no sha256 hash on: {line!r}"
        entries[canonicalize_name(pin["name"])] = Locked(pin["version"], tuple(options))
    return entries


def direct_requirements(path: Path) -> dict[str, str]:
    """name -> pinned version, following `-r` includes; an entry not pinned with == fails."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            pins.update(direct_requirements(path.parent / line[3:].strip()))
            continue
        pin = _PIN.match(line)
        assert pin, f"{path.name}: not pinned with ==: {line!r}"
        pins[canonicalize_name(pin["name"])] = pin["version"]
    return pins


@pytest.mark.parametrize("requirements", sorted(LOCKS))
def test_every_direct_requirement_is_in_its_lock_at_the_same_version(requirements: str) -> None:
    locked = read_lock((ROOT / LOCKS[requirements]).read_text())
    wanted = direct_requirements(ROOT / requirements)

    stale = {name: (version, locked[name].version if name in locked else None)
             for name, version in wanted.items() if name not in locked or locked[name].version != version}
    assert stale == {}, f"regenerate {LOCKS[requirements]} (docs/RELEASING.md): {stale}"


def test_the_dev_lock_pins_the_runtime_tree_at_the_same_versions() -> None:
    runtime = read_lock((ROOT / "requirements.lock").read_text())
    dev = read_lock((ROOT / "requirements-dev.lock").read_text())

    assert {name: entry.version for name, entry in runtime.items()} == \
        {name: dev[name].version for name in runtime if name in dev}


@pytest.mark.parametrize("lock", sorted(LOCKS.values()))
def test_the_lock_is_closed_under_the_dependencies_its_packages_declare(lock: str) -> None:
    """Every dependency a locked package declares (for this interpreter, no extras) is locked too: otherwise
    `pip install --require-hashes` stops with "hashes are required … but missing" on a fresh machine."""
    locked = read_lock((ROOT / lock).read_text())
    missing: dict[str, list[str]] = {}
    for name in locked:
        for declared in metadata.requires(name) or []:
            requirement = Requirement(declared)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(requirement.name) not in locked:
                missing.setdefault(name, []).append(requirement.name)
    assert missing == {}


def test_a_lock_entry_without_pin_or_hash_is_refused() -> None:
    good = "aiohttp==3.14.5 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via -r requirements.txt\n"
    assert read_lock(good) == {"aiohttp": Locked("3.14.5", ("--hash=sha256:" + "a" * 64,))}
    with pytest.raises(AssertionError, match="no sha256 hash"):
        read_lock("aiohttp==3.14.5\n")
    with pytest.raises(AssertionError, match="not pinned"):
        read_lock("aiohttp>=3.14 \\\n    --hash=sha256:" + "a" * 64 + "\n")
