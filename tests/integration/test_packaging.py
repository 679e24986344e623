"""The package as users install it: a wheel, installed without the repository beside it."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "constraints.txt"
# The big ones: a clean install takes each of these from the machine's disk (pip's local
# indexes), never from the network.
FROM_DISK = ("torch", "torchvision")
EXTRAS = ("test", "glyphs", "search", "postgres", "export", "timm", "mlflow", "docs")


def _pins() -> dict[str, str]:
    """constraints.txt as {canonical name: exact version}."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def _requirements(wheel: Path) -> list[Requirement]:
    return [Requirement(line) for line in _metadata(wheel).get_all("Requires-Dist")]


def _extras_of(requirement: Requirement) -> set[str]:
    """The extras whose marker selects `requirement`; empty for a plain dependency."""
    if requirement.marker is None:
        return set()
    return {extra for extra in EXTRAS if requirement.marker.evaluate({"extra": extra})}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a clean copy of the sources (no stale build/ folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", str(source), "-w", str(tmp / "dist")],
                   check=True, capture_output=True, timeout=300)
    [built] = (tmp / "dist").glob("*.whl")
    return built


def test_an_installed_package_runs_the_demo_command_and_finds_its_configs(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = subprocess.run([str(site / "bin" / "sdm"), "demo", "--help"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "--quick" in shown.stdout
    check = (
        "import sdm, sdm.demo\n"
        "from sdm.config import load_config\n"
        f"assert sdm.__file__.startswith({str(site)!r}), sdm.__file__\n"
        "for file in sdm.demo.DEMO_CONFIGS.values():\n"
        "    print(load_config([sdm.demo.CONFIG_FOLDER / file]).name)\n"
        "print(load_config(['exp_configs/cub_ms.yaml']).loss.name)\n")
    loaded = subprocess.run([sys.executable, "-c", check], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["demo_ms", "demo_ms_sdm", "multi_similarity"]


def test_optional_dependencies_are_extras_and_nothing_is_pinned_exactly(wheel):
    metadata = _metadata(wheel)
    assert set(metadata.get_all("Provides-Extra")) == set(EXTRAS)
    requirements = _requirements(wheel)
    pinned = [str(r) for r in requirements if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"exact pins belong in constraints.txt, not the package: {pinned}"
    by_name: dict[str, list[Requirement]] = {}
    for requirement in requirements:
        by_name.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    torch = [r for r in by_name["torch"] if r.marker is None]
    assert torch and all(r.specifier.contains("2.14.1") for r in torch)
    for package, extra in (("fonttools", "glyphs"), ("faiss-cpu", "search"), ("onnx", "export"),
                           ("onnxruntime", "export"), ("psycopg2-binary", "postgres"),
                           ("timm", "timm"), ("mlflow", "mlflow")):
        extras = set().union(*(_extras_of(r) for r in by_name[package]))
        assert all(r.marker is not None for r in by_name[package]), package
        # In its own extra, and in `test` (which `make test` installs), nowhere else.
        assert extras == {extra, "test"}, (package, extras)


def test_the_wheel_carries_the_mit_licence(wheel):
    metadata = _metadata(wheel)
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    with zipfile.ZipFile(wheel) as archive:
        [licence] = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        text = archive.read(licence).decode()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 The SDM metric-learning project contributors" in text
    assert text == (REPO / "LICENSE").read_text()


def test_constraints_pin_every_requirement_inside_its_declared_range(wheel):
    pins = _pins()
    for requirement in _requirements(wheel):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a requirement but has no pin in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]} outside {requirement}"
        )


def test_citation_file_names_the_project_the_sdm_paper_and_mlrc():
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0"
    assert citation["type"] == "software"
    assert citation["license"] == "MIT"
    assert citation["title"].startswith("sdm-metric-learning")
    assert citation["authors"] == [{"name": "The SDM metric-learning project contributors"}]
    references = {reference["title"]: reference for reference in citation["references"]}
    assert set(references) == {
        "Sensitivity-aware Distance Measurement for Boosting Metric Learning",
        "A Metric Learning Reality Check",
    }
    mlrc = references["A Metric Learning Reality Check"]
    assert [a["family-names"] for a in mlrc["authors"]] == ["Musgrave", "Belongie", "Lim"]
    assert mlrc["year"] == 2020 and "ECCV" in mlrc["conference"]["name"]
    for reference in references.values():
        assert reference["type"] and reference["authors"]  # required by the CFF schema


def _pip(venv: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """This venv's pip (a current one), run on the clean venv's interpreter."""
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                           *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def clean_venv(wheel, tmp_path_factory) -> Iterator[Path]:
    """A new venv (no site packages) with the wheel installed as the constraints pin it.

    Installs torch and its CUDA wheels (about 6 GB unpacked, about a minute): first a dry run
    checks that torch and torchvision would come from the machine's disk, so that a missing
    local release fails here instead of downloading several GB."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    report = venv.parent / "report.json"
    planned = _pip(venv, "install", "-q", "--dry-run", "--report", str(report),
                   "-c", str(CONSTRAINTS), str(wheel))
    assert planned.returncode == 0, planned.stderr[-3000:]
    install = {canonicalize_name(item["metadata"]["name"]): item
               for item in json.loads(report.read_text())["install"]}
    pins = _pins()
    for name in FROM_DISK:
        assert install[name]["metadata"]["version"] == pins[name], name
        url = install[name]["download_info"]["url"]
        assert url.startswith("file:"), f"{name} would be downloaded from {url}"
    # --no-compile: no bytecode for torch's thousands of modules (time, not what is tested)
    done = _pip(venv, "install", "-q", "--no-compile", "-c", str(CONSTRAINTS), str(wheel))
    assert done.returncode == 0, done.stderr[-3000:]
    yield venv
    shutil.rmtree(venv.parent, ignore_errors=True)  # about 6 GB: pytest keeps its last 3 runs


def test_a_clean_venv_installs_the_wheel_and_takes_torch_from_the_constraints(clean_venv,
                                                                              tmp_path):
    pins = _pins()
    for name in FROM_DISK:
        shown = _pip(clean_venv, "show", name, timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert f"Version: {pins[name]}" in shown.stdout.splitlines()
    sdm = clean_venv / "bin" / "sdm"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    for command in (["--help"], ["demo", "--help"], ["data", "--help"]):
        shown = subprocess.run([str(sdm), *command], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=300)
        assert shown.returncode == 0, (command, shown.stderr)
    assert "--quick" in subprocess.run([str(sdm), "demo", "--help"], cwd=tmp_path, env=env,
                                       capture_output=True, text=True, timeout=300).stdout


@pytest.mark.parametrize("command", [["--help"], ["demo", "--help"], ["data", "--help"],
                                     ["data", "glyphs"]])
def test_without_fonttools_the_cli_runs_and_the_glyph_builder_names_the_extra(command, tmp_path):
    """fontTools is only the `glyphs` extra's (matplotlib happens to install it too): with it
    unimportable the commands still start, and building the glyphs says what to install."""
    blocked = (
        "import sys\n"
        "sys.modules['fontTools'] = sys.modules['fontTools.ttLib'] = None\n"
        "from sdm.cli import main\n"
        f"sys.exit(main({command!r} + sys.argv[1:]))\n")
    extra = ["--dataset-root", str(tmp_path / "data")] if command == ["data", "glyphs"] else []
    ran = subprocess.run([sys.executable, "-c", blocked, *extra], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    if command[-1] == "--help":
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.startswith("usage: sdm")
    else:
        assert ran.returncode != 0
        assert ran.stderr.strip().endswith("pip install 'sdm-metric-learning[glyphs]'"), ran.stderr
        assert "Traceback" not in ran.stderr
        assert not (tmp_path / "data").exists()


def test_installing_the_wheel_without_constraints_keeps_the_installed_torch(clean_venv, wheel):
    """Beside a user's torch: the declared ranges accept it, so pip neither upgrades nor
    replaces it (a dry run, after taking the package itself out again)."""
    removed = _pip(clean_venv, "uninstall", "-y", "-q", "sdm-metric-learning", timeout=300)
    assert removed.returncode == 0, removed.stderr
    report = clean_venv.parent / "unconstrained.json"
    try:
        planned = _pip(clean_venv, "install", "-q", "--dry-run", "--report", str(report),
                       str(wheel))
        assert planned.returncode == 0, planned.stderr[-3000:]
        names = {canonicalize_name(item["metadata"]["name"])
                 for item in json.loads(report.read_text())["install"]}
        assert names == {"sdm-metric-learning"}, names
    finally:
        _pip(clean_venv, "install", "-q", "--no-deps", "--no-compile", str(wheel), timeout=300)
