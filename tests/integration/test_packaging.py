"""The package as users install it: a wheel, installed without the repository beside it."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a clean copy of the sources (no stale build/ folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
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


def test_faiss_and_onnx_are_optional_extras(wheel):
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requirements = [line for line in archive.read(metadata).decode().splitlines()
                        if line.startswith("Requires-Dist:")]
    for package, extra in (("faiss", "search"), ("onnx", "export")):
        lines = [line for line in requirements if line.startswith(f"Requires-Dist: {package}")]
        assert lines and all('extra == "' in line for line in lines), package
        assert any(f'extra == "{extra}"' in line for line in lines), package
    assert any(line.startswith("Requires-Dist: torch==") for line in requirements)
