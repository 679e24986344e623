"""The icon dataset: theme and icon selection, rendering, same-drawing rules, archive, manifest.

Every test builds its own tiny theme tree and passes it as the only icon root, so nothing
depends on the icon themes installed on the machine. The tree (see `_theme_tree`):

- alpha, beta, gamma, delta, epsilon: five designers. beta draws SVGs (needs rsvg-convert).
- alpha-blue: alpha's drawings in another colour (a recoloured variant, left out).
- gnome-wise: a GNOME-Colors theme (known recolouring, left out); hicolor: the fallback theme.
- gtk-copy: a link to (or a copy of) edit-copy in alpha to delta: an alias, not a class.
- epsilon's folder is a copy of delta's, its user-home delta's recoloured, its network-wired a
  copy of alpha's edit-copy; gamma's weather-clear is near-white (faint).
- rare: drawn by alpha, beta, gamma only (delta's file is unreadable): not a class.
- view-refresh-symbolic and alpha's symbolic folder: symbolic icons, never read.
"""

import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdm.builders import icons
from sdm.builders.icons import (
    Render,
    build_icon_dataset,
    find_icon_themes,
    find_variant_themes,
    index_theme_icons,
    render_icon,
    select_images,
)
from sdm.data.embedded import load_embedded_arrays

DESIGNERS = ("alpha", "beta", "delta", "epsilon", "gamma")
COMMON = ["battery-caution", "edit-copy", "folder", "network-wired", "user-home", "weather-clear"]
EXPECTED_CLASSES = {
    "battery-caution": ["alpha", "beta", "delta", "epsilon", "gamma"],
    "edit-copy": ["alpha", "beta", "delta", "epsilon", "gamma"],
    "folder": ["alpha", "beta", "delta", "gamma"],
    "network-wired": ["alpha", "beta", "delta", "gamma"],
    "user-home": ["alpha", "beta", "delta", "gamma"],
    "weather-clear": ["alpha", "beta", "delta", "epsilon"],
}
NUM_IMAGES = 26
CANVAS = 48
RED, BLUE, GREEN, NEAR_WHITE = (200, 30, 30), (30, 30, 200), (40, 140, 60), (235, 235, 235)


def _polygon(seed_text: str) -> list[tuple[int, int]]:
    rng = np.random.default_rng(zlib.crc32(seed_text.encode()))
    return [tuple(int(v) for v in rng.integers(2, CANVAS - 2, 2)) for _ in range(6)]


def _png(path: Path, seed_text: str, colour=RED, side: int = CANVAS) -> None:
    """A random polygon (from `seed_text`) in `colour` on a transparent `side` px square."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    ImageDraw.Draw(picture).polygon(_polygon(seed_text), fill=(*colour, 255))
    picture.resize((side, side), Image.Resampling.NEAREST).save(path)


def _svg(path: Path, seed_text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    points = " ".join(f"{x},{y}" for x, y in _polygon(seed_text))
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CANVAS}" height="{CANVAS}">'
        f'<polygon points="{points}" fill="#1e8c1e"/></svg>'
    )


def _index(theme: Path, directories: dict[str, str], inherits: str = "") -> None:
    """index.theme listing `directories` (folder -> extra keys such as "Size=48")."""
    theme.mkdir(parents=True, exist_ok=True)
    lines = ["[Icon Theme]", f"Name={theme.name.title()}", f"Inherits={inherits}"]
    lines.append("Directories=" + ",".join(directories))
    for folder, keys in directories.items():
        lines += ["", f"[{folder}]", *keys.split(";"), "Type=Fixed"]
    (theme / "index.theme").write_text("\n".join(lines) + "\n")


def _plain_theme(root: Path, theme: str, names: list[str], inherits: str = "") -> Path:
    """A theme drawing each of `names` once at 48 px, plus a symbolic icon."""
    _index(root / theme, {"48x48/actions": "Size=48"}, inherits)
    for name in names:
        _png(root / theme / "48x48/actions" / f"{name}.png", f"{theme}/{name}")
    _png(root / theme / "48x48/actions/view-refresh-symbolic.png", f"{theme}/refresh")
    return root / theme


def _theme_tree(root: Path) -> Path:
    """The tree the module docstring describes; returns the icon root."""
    # alpha: 16 and 48 px PNGs (48 must win) and a symbolic folder of larger icons.
    alpha = root / "alpha"
    _index(alpha, {"16x16/actions": "Size=16", "48x48/actions": "Size=48",
                   "symbolic/actions": "Size=256"})  # fmt: skip
    for name in [*COMMON, "rare"]:
        _png(alpha / "16x16/actions" / f"{name}.png", f"alpha/{name}/16", side=16)
        _png(alpha / "48x48/actions" / f"{name}.png", f"alpha/{name}")
        _png(alpha / "symbolic/actions" / f"{name}.png", f"alpha/{name}/symbolic", side=256)
    _png(alpha / "48x48/actions/view-refresh-symbolic.png", "alpha/refresh")
    os.symlink("edit-copy.png", alpha / "48x48/actions/gtk-copy.png")
    # alpha-blue: the same drawings in blue (symbolic links stay links).
    blue = root / "alpha-blue"
    _index(blue, {"48x48/actions": "Size=48"}, inherits="alpha")
    for name in [*COMMON, "rare"]:
        _png(blue / "48x48/actions" / f"{name}.png", f"alpha/{name}", colour=BLUE)
    os.symlink("edit-copy.png", blue / "48x48/actions/gtk-copy.png")
    # beta: SVGs (scalable, Size 48) beside 48 px PNGs of other drawings: the SVG wins the tie.
    beta = root / "beta"
    _index(beta, {"48x48/actions": "Size=48", "scalable/actions": "Size=48"})
    for name in [*COMMON, "rare"]:
        _png(beta / "48x48/actions" / f"{name}.png", f"beta/{name}/png")
        _svg(beta / "scalable/actions" / f"{name}.svg", f"beta/{name}")
    os.symlink("edit-copy.svg", beta / "scalable/actions/gtk-copy.svg")
    # gamma: 48 px and 32 px at scale 2 (nominal 64, which wins); weather-clear near-white.
    gamma = root / "gamma"
    _index(gamma, {"48x48/actions": "Size=48", "32x32@2x/actions": "Size=32;Scale=2"})
    for name in [*COMMON, "rare"]:
        colour = NEAR_WHITE if name == "weather-clear" else RED
        _png(gamma / "48x48/actions" / f"{name}.png", f"gamma/{name}/48")
        _png(gamma / "32x32@2x/actions" / f"{name}.png", f"gamma/{name}", colour, side=64)
    os.symlink("edit-copy.png", gamma / "32x32@2x/actions/gtk-copy.png")
    # delta: gtk-copy is a byte copy of edit-copy; rare cannot be read.
    delta = _plain_theme(root, "delta", COMMON)
    actions = delta / "48x48/actions"
    shutil.copy(actions / "edit-copy.png", actions / "gtk-copy.png")
    (actions / "rare.png").write_bytes(b"not a png")
    # epsilon: copies of delta's folder and alpha's edit-copy, delta's user-home recoloured.
    epsilon = _plain_theme(root, "epsilon", ["battery-caution", "edit-copy", "gtk-copy",
                                             "weather-clear"])  # fmt: skip
    shutil.copy(actions / "folder.png", epsilon / "48x48/actions/folder.png")
    shutil.copy(alpha / "48x48/actions/edit-copy.png", epsilon / "48x48/actions/network-wired.png")
    _png(epsilon / "48x48/actions/user-home.png", "delta/user-home", GREEN)
    # Left out whatever they draw.
    _plain_theme(root, "gnome-wise", [*COMMON, "rare", "gtk-copy"], inherits="gnome")
    _plain_theme(root, "hicolor", [*COMMON, "rare", "gtk-copy"])
    _png(root / "not-a-theme/48x48/actions/rare.png", "not-a-theme/rare")  # no index.theme
    return root


def _build(root: Path, icon_root: Path, **options) -> tuple[dict, dict]:
    archive = build_icon_dataset(root, icon_roots=[icon_root], **options)
    with np.load(archive) as arrays:
        data = {name: arrays[name] for name in arrays.files}
    manifest = json.loads((root / "icons" / "manifest.json").read_text())
    return data, manifest


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if shutil.which("rsvg-convert") is None:
        message = "rsvg-convert (Debian's librsvg2-bin) renders SVG icons and is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run installs it")
        pytest.skip(f"SKIPPING THE ICON BUILD TESTS: {message}")
    tmp_path = tmp_path_factory.mktemp("icons")
    icon_root = _theme_tree(tmp_path / "themes")
    data, manifest = _build(tmp_path / "data", icon_root)
    return icon_root, data, manifest


def test_the_data_commands_build_check_and_load_the_icon_set(built, tmp_path, capsys):
    from sdm.cli import main
    from sdm.data.datasets import load_dataset

    icon_root, data, _ = built
    assert main(["data", "icons", "--dataset-root", str(tmp_path),
                 "--icon-roots", str(icon_root)]) == 0
    dataset = load_dataset("icons", tmp_path)
    assert len(dataset) == NUM_IMAGES and dataset.load_image(0).mode == "RGB"
    assert [dataset.class_names[c] for c in dataset.classes] == data["class_names"].tolist()
    assert main(["data", "check", "icons", "--dataset-root", str(tmp_path)]) == 0
    assert f"images: {NUM_IMAGES}" in capsys.readouterr().out


def test_build_keeps_names_drawn_by_four_distinct_themes(built):
    _, data, manifest = built
    assert data["class_names"].tolist() == sorted(EXPECTED_CLASSES)
    pairs = [(entry["class"], entry["theme"]) for entry in manifest["images"]]
    expected = [(name, theme) for name, themes in EXPECTED_CLASSES.items() for theme in themes]
    assert pairs == expected  # class order, then theme folder order
    assert data["labels"].tolist() == [sorted(EXPECTED_CLASSES).index(name) for name, _ in pairs]
    themes = [theme["folder"] for theme in manifest["themes"]]
    assert themes == list(DESIGNERS)
    assert [themes[i] for i in data["theme_ids"]] == [theme for _, theme in pairs]
    assert manifest["counts_per_class"] == {name: len(t) for name, t in EXPECTED_CLASSES.items()}
    assert manifest["images_per_class"] == {"min": 4, "median": 4.0, "max": 5}
    assert manifest["num_images"] == NUM_IMAGES and manifest["num_classes"] == 6
    assert manifest["num_themes"] == 5


def test_build_leaves_out_recoloured_fallback_and_copied_drawings(built):
    _, _, manifest = built
    excluded = manifest["excluded_themes"]
    assert sorted(excluded) == ["alpha-blue", "gnome-wise", "hicolor"]
    assert excluded["alpha-blue"].startswith("variant of alpha (draws more names): median")
    assert excluded["gnome-wise"] == "known recolouring (GNOME-Colors family)"
    assert excluded["hicolor"].startswith("fallback theme")
    assert manifest["dropped_images"] == {
        "unreadable": 1,  # delta's rare.png
        "faint_on_white": 1,  # gamma's weather-clear
        "alias_of_another_name": 5,  # gtk-copy of alpha to delta, epsilon's network-wired
        "same_drawing_in_class": 2,  # epsilon's folder and user-home
        "in_classes_under_min_themes": 4,  # rare (3 themes), epsilon's own gtk-copy
    }


def test_build_uses_the_largest_file_and_renders_64_px_on_white(built):
    icon_root, data, manifest = built
    images = data["images"]
    assert images.dtype == np.uint8 and images.shape == (NUM_IMAGES, 64, 64, 3)
    assert (images[:, 0, 0] == 255).all() and (images[:, -1, -1] == 255).all()
    expected_files = {
        "alpha": "48x48/actions/folder.png",  # not 16 px, not the symbolic folder's 256 px
        "beta": "scalable/actions/folder.svg",  # SVG before PNG at equal size
        "delta": "48x48/actions/folder.png",
        "gamma": "32x32@2x/actions/folder.png",  # Size 32 x Scale 2
    }
    for entry, image in zip(manifest["images"], images, strict=True):
        if entry["class"] == "folder":
            path = icon_root / entry["theme"] / expected_files[entry["theme"]]
            assert entry["file"] == entry["drawing"] == str(path)
            np.testing.assert_array_equal(image, render_icon(path, 64).image)
            assert entry["nominal_size"] == {"gamma": 64}.get(entry["theme"], 48)
    beta_folder = images[
        [e["class"] == "folder" and e["theme"] == "beta" for e in manifest["images"]]
    ]
    assert (beta_folder[..., 1] > beta_folder[..., 0] + 60).any()  # the SVG's green is drawn


def test_manifest_records_inputs_rendering_and_packages(built):
    icon_root, _, manifest = built
    assert manifest["build_version"] == icons.ICONS_BUILD_VERSION
    assert manifest["rendering"]["size"] == 64
    assert manifest["rules"]["min_themes_per_class"] == icons.MIN_THEMES_PER_CLASS == 4
    assert [(theme["name"], theme["inherits"]) for theme in manifest["themes"]] == [
        (folder.title(), []) for folder in DESIGNERS
    ]
    inputs = manifest["inputs"]
    assert inputs["icon_roots"] == [str(icon_root)] and inputs["size"] == 64
    assert [theme["folder"] for theme in inputs["themes"]] == sorted(
        [*DESIGNERS, "alpha-blue", "gnome-wise", "hicolor"]
    )
    assert inputs["renderers"]["svg"].startswith("rsvg-convert")
    entry = manifest["images"][0]
    assert set(entry) == {
        "id", "class", "theme", "file", "drawing", "nominal_size", "package", "version", "licence"
    }  # fmt: skip
    # Files in a temporary folder belong to no Debian package.
    assert all(e["package"] is e["version"] is e["licence"] is None for e in manifest["images"])
    assert manifest["packages"] == []


def test_build_is_deterministic_skipped_when_built_and_rebuilt_on_change(built, tmp_path):
    icon_root, data, manifest = built
    again, manifest_again = _build(tmp_path / "again", icon_root, workers=1)
    for name in ("images", "labels", "class_names", "theme_ids"):
        np.testing.assert_array_equal(again[name], data[name])
    assert manifest_again == manifest
    archive = tmp_path / "again" / "icons" / "icons.npz"
    built_at = archive.stat().st_mtime_ns
    build_icon_dataset(tmp_path / "again", icon_roots=[icon_root])
    assert archive.stat().st_mtime_ns == built_at  # same inputs: nothing done
    build_icon_dataset(tmp_path / "again", icon_roots=[icon_root], force=True)
    assert archive.stat().st_mtime_ns != built_at
    images, labels, class_names = load_embedded_arrays("icons", tmp_path / "again")
    np.testing.assert_array_equal(images, data["images"])
    np.testing.assert_array_equal(labels, data["labels"])
    assert class_names == sorted(EXPECTED_CLASSES)


def test_a_changed_theme_triggers_a_rebuild(tmp_path):
    icon_root = tmp_path / "themes"
    for theme in ("a", "b", "c", "d"):
        _plain_theme(icon_root, theme, ["edit-copy", "folder"])
    _build(tmp_path / "data", icon_root)
    archive = tmp_path / "data" / "icons" / "icons.npz"
    built_at = archive.stat().st_mtime_ns
    _plain_theme(icon_root, "e", ["edit-copy"])
    data, manifest = _build(tmp_path / "data", icon_root)
    assert archive.stat().st_mtime_ns != built_at
    assert manifest["counts_per_class"] == {"edit-copy": 5, "folder": 4}
    assert data["images"].shape == (9, 64, 64, 3)


def test_index_reads_listed_non_symbolic_directories_and_picks_the_largest(tmp_path):
    root = tmp_path / "themes"
    theme = root / "t"
    _index(theme, {"16x16/apps": "Size=16", "24x24/apps": "Size=24", "symbolic/apps": "Size=99"})
    _png(theme / "16x16/apps/app.png", "small", side=16)
    _png(theme / "24x24/apps/app.png", "large", side=24)
    _png(theme / "16x16/apps/only-small.png", "only", side=16)
    _png(theme / "symbolic/apps/app.png", "symbolic")
    _png(theme / "24x24/apps/app-symbolic.png", "symbolic")
    _png(theme / "24x24/apps/go-next-symbolic-rtl.png", "symbolic")
    _png(theme / "24x24/apps/app.symbolic.png", "symbolic")
    _png(theme / "96x96/apps/app.png", "unlisted", side=96)  # not in index.theme
    os.symlink("missing.png", theme / "24x24/apps/only-small.png")  # broken: ignored
    (theme / "24x24/apps/notes.txt").write_text("not an icon")
    (found,) = find_icon_themes([root, tmp_path / "no-such-root"])
    assert (found.folder, found.name, found.inherits) == ("t", "T", ())
    sources = index_theme_icons(found)
    assert sorted(sources) == ["app", "only-small"]
    assert sources["app"].path == theme / "24x24/apps/app.png"
    assert sources["app"].nominal_size == 24
    assert sources["only-small"].path == theme / "16x16/apps/only-small.png"


def test_render_fits_keeping_the_aspect_ratio_and_rejects_blank_or_broken_files(tmp_path):
    wide = Image.new("RGBA", (40, 20), (0, 0, 255, 255))
    wide.save(tmp_path / "wide.png")
    render = render_icon(tmp_path / "wide.png", 64)
    assert render.image.shape == (64, 64, 3) and render.image.dtype == np.uint8
    blue_rows = np.flatnonzero((render.image[:, 32] == (0, 0, 255)).all(axis=1))
    assert (blue_rows[0], blue_rows[-1]) == (16, 47)  # 64 x 32, centred, white above and below
    assert (render.image[:16] == 255).all() and (render.image[48:] == 255).all()
    Image.new("RGBA", (48, 48), (0, 0, 0, 0)).save(tmp_path / "blank.png")
    assert render_icon(tmp_path / "blank.png", 64) is None
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    assert render_icon(tmp_path / "broken.png", 64) is None


def _square(cell: int, colour=RED) -> Render:
    """A 32 px white image with an 8 px square in grid cell `cell` (0..15)."""
    image = np.full((32, 32, 3), 255, dtype=np.uint8)
    row, column = divmod(cell, 4)
    image[8 * row : 8 * row + 8, 8 * column : 8 * column + 8] = colour
    return Render.of(image)


def test_edge_maps_match_recolourings_not_other_drawings_and_faint_renders_are_flagged():
    red, blue, moved = _square(5), _square(5, BLUE), _square(6)
    assert red.correlation(blue) == pytest.approx(1.0)
    assert red.correlation(moved) < 0.5
    assert not red.faint and _square(5, NEAR_WHITE).faint
    flat = Render.of(np.full((32, 32, 3), 90, dtype=np.uint8))
    assert not flat.edges.any() and flat.correlation(red) == 0.0


def test_select_images_keeps_aliases_under_the_most_drawn_name_and_drops_same_drawings():
    renders = {
        "a": {"copy": _square(0), "gtk-copy": _square(0), "cut": _square(15)},
        "b": {"copy": _square(2), "gtk-copy": _square(2), "cut": _square(13)},
        "c": {"copy": _square(5), "cut": _square(5, BLUE)},  # cut: c's copy recoloured
        "d": {"copy": _square(8), "cut": _square(10)},
        "e": {"copy": _square(8), "cut": _square(15, GREEN)},  # d's copy; a's cut recoloured
        "f": {"copy": _square(3, NEAR_WHITE), "cut": _square(7)},
    }
    selection = select_images(renders, list("abcdef"))
    assert selection.images == {"copy": list("abcd"), "cut": list("abcdf")}
    assert selection.dropped == {
        "faint_on_white": 1,
        "alias_of_another_name": 2,
        "same_drawing_in_class": 2,
        "in_classes_under_min_themes": 0,
    }


def test_select_images_drops_names_under_four_themes():
    renders = {theme: {"x": _square(i), "y": _square(8 + i)} for i, theme in enumerate("abcd")}
    renders["d"]["y"] = _square(9, GREEN)  # b's y recoloured
    selection = select_images(renders, list("abcd"))
    assert selection.images == {"x": list("abcd")}
    assert selection.dropped == {
        "faint_on_white": 0,
        "alias_of_another_name": 0,
        "same_drawing_in_class": 1,
        "in_classes_under_min_themes": 3,
    }


def test_variants_are_themes_drawing_like_an_earlier_theme():
    names = [f"name{i}" for i in range(10)]
    big = {name: _square(i) for i, name in enumerate(names)}
    renders = {
        "big": big,
        "recolour": {**{name: _square(i, BLUE) for i, name in enumerate(names)},
                     "name0": _square(15)},  # 9 of 10 drawings alike
        "fork": {name: _square(10 + i) if i < 6 else big[name] for i, name in
                 enumerate(names)},  # 4 of 10 alike: a theme of its own
        "tiny": {name: big[name] for name in names[:7]},  # too few shared names to judge
    }  # fmt: skip
    renders["copy-of-fork"] = {name: renders["fork"][name] for name in names[:8]}
    order = ["big", "recolour", "fork", "tiny", "copy-of-fork"]
    assert find_variant_themes(renders, order) == {
        "recolour": ("big", 1.0),
        "copy-of-fork": ("fork", 1.0),
    }


def test_missing_renderer_and_missing_themes_are_explained(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no icon theme"):
        build_icon_dataset(tmp_path / "data", icon_roots=[tmp_path / "empty"])
    icon_root = tmp_path / "themes"
    for theme in ("a", "b", "c", "d"):
        _index(icon_root / theme, {"scalable/apps": "Size=48"})
        _svg(icon_root / theme / "scalable/apps/app.svg", theme)
    real_which = shutil.which
    monkeypatch.setattr(
        icons.shutil, "which", lambda name: None if name == "rsvg-convert" else real_which(name)
    )
    with pytest.raises(FileNotFoundError, match="librsvg2-bin"):
        build_icon_dataset(tmp_path / "data", icon_roots=[icon_root])


def test_load_explains_how_to_build_a_missing_dataset(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_embedded_arrays("icons", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "icons" / "icons.npz") in message
    assert "sdm data icons" in message and "scripts/install_icons.sh" in message
