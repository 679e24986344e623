"""Where a built set's images come from: the Debian packages owning its source files (their
installed versions and licences, through dpkg-query), and the manifest.json written beside each
archive that records them.

Without dpkg-query (not a Debian system) nothing is known: `debian_packages` answers None and
`package_versions` an empty map, and the builders write their manifests without packages.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from sdm.storage import atomic_write

# Stay well below the kernel's limit on one command line.
_DPKG_ARGUMENT_BYTES = 500_000


def debian_packages(paths: Sequence[Path]) -> dict[str, str] | None:
    """Map paths to the Debian package(s) owning them ("a, b" when several), with as few
    `dpkg-query -S` calls as the argument length allows; None without dpkg-query or without
    paths. Paths no package owns are absent from the map."""
    if shutil.which("dpkg-query") is None or not paths:
        return None
    wanted = {str(path) for path in paths}
    owners: dict[str, str] = {}
    for chunk in _chunks(sorted(wanted)):
        patterns = [re.sub(r"([][*?\\])", r"\\\1", path) for path in chunk]  # literal
        result = subprocess.run(
            ["dpkg-query", "-S", *patterns], capture_output=True, text=True, check=False
        )
        for line in result.stdout.splitlines():
            package, separator, path = line.partition(": ")
            if separator and path in wanted:
                owners[path] = package
    return owners


def package_versions(packages: set[str]) -> dict[str, str]:
    """Installed versions of `packages` (entries "a, b" name several: versions joined)."""
    names = sorted({name.strip() for entry in packages for name in entry.split(",")})
    if not names or shutil.which("dpkg-query") is None:
        return {}
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\\t${Version}\\n", *names],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    single = dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)
    return {
        entry: ", ".join(single.get(name.strip(), "?") for name in entry.split(","))
        for entry in packages
    }


def licence(package: str) -> str | None:
    """The first License: field of the (first) package's /usr/share/doc copyright file."""
    name = package.split(",")[0].strip().split(":")[0]
    try:
        text = Path("/usr/share/doc", name, "copyright").read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"^License:[ \t]*(\S.*)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else None


def write_manifest(path: Path, manifest: dict) -> None:
    """Write `manifest` to `path` atomically: JSON, indented by one space, keys in the dict's
    order, a final newline."""
    atomic_write(path, lambda out: out.write(json.dumps(manifest, indent=1).encode() + b"\n"))


def built_inputs(path: Path) -> dict | None:
    """The "inputs" a manifest records; None when the manifest is missing or unreadable."""
    try:
        return json.loads(path.read_text())["inputs"]
    except (OSError, ValueError, KeyError):
        return None


def _chunks(paths: list[str]) -> Iterable[list[str]]:
    chunk: list[str] = []
    length = 0
    for path in paths:
        if chunk and length + len(path) > _DPKG_ARGUMENT_BYTES:
            yield chunk
            chunk, length = [], 0
        chunk.append(path)
        length += len(path) + 1
    if chunk:
        yield chunk
