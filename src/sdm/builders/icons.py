"""The icon dataset: freedesktop icon names drawn by the different Debian icon themes.

Classes are icon names (edit-copy, folder-music, battery-caution, firefox, ...), samples are
themes: at most one image per (name, theme). A name is a class when at least
`MIN_THEMES_PER_CLASS` themes keep an image of it after the rules below; class ids are the
positions of the names in sorted order.

Themes. A theme is a folder with an index.theme directly below an icon root, known by its folder
name (folders of that name below several roots are one theme, described by the first root's
index.theme). Left out: `NOT_DESIGNED_THEMES` (the fallback themes that applications fill),
`KNOWN_RECOLOURED_THEMES` (the GNOME-Colors family) and variants. A variant draws another
theme's drawings, copied, recoloured or re-exported: over the names two themes both draw (at
least `VARIANT_MIN_SHARED`), the median correlation of their renders' edge maps (below) is at
least `VARIANT_CORRELATION`. Themes are taken in theme order (most names drawn first, then
folder name; names counted among those at least `MIN_THEMES_PER_CLASS` themes draw) and a theme
is the variant of the first earlier non-variant theme it matches.

Icons. Only the directories index.theme lists (Directories, ScaledDirectories) are read, and in
them only .png, .svg and .svgz files (Debian's few .xpm icons are not read). Symbolic icons are
left out: names with a "-symbolic" part or a ".symbolic" ending, and folders named "symbolic". A
theme's file for a name is the one of largest nominal size (the directory's Size x Scale); at
equal size an SVG before a PNG, then the first path. Symbolic links are followed.

Rendering. An SVG is rendered by rsvg-convert (librsvg) to fit `size` x `size` keeping its aspect
ratio; a PNG is scaled to fit (Lanczos, premultiplied alpha). The picture is centred on a
transparent square and composited over white: uint8 RGB. Renders with no opaque pixel are
dropped, and so are faint ones (light icons meant for dark panels): fewer than `MIN_INK_SHARE`
of the pixels darker than luminance `INK_LUMINANCE`. A render's edge map is its colour gradient
magnitude, averaged over 2 x 2 blocks, centred and scaled to unit norm: two renders' edge maps
correlate near 1 when they draw the same lines, whatever the colours.

Same drawings. Aliases are one drawing: a render pixel-identical to renders of other names
(links such as gtk-copy -> edit-copy, or copied files) stays only under the name the most themes
draw (ties: the first name). Within a class, a render is dropped when it is pixel-identical to
an image kept from an earlier theme (theme order) or its edge map correlates with one's at
least `SAME_DRAWING_CORRELATION` (a copy, recolouring or re-export of the same drawing).
"""

from __future__ import annotations

import configparser
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sdm.builders.provenance import (
    built_inputs,
    debian_packages,
    licence,
    package_versions,
    write_manifest,
)
from sdm.constants import ICONS_ARCHIVE, ICONS_MANIFEST
from sdm.storage import atomic_write

logger = logging.getLogger(__name__)

# Bumped whenever the theme, icon or image selection or the rendering change.
ICONS_BUILD_VERSION = 1

DEFAULT_ICON_ROOTS = ("/usr/share/icons",)
DEFAULT_WORKERS = 2
MIN_THEMES_PER_CLASS = 4
# Thresholds chosen on Debian 12's themes: the median edge-map correlation of theme pairs falls
# in 0.9-1.0 for recolourings and forks, below 0.75 for themes drawn apart; within a class,
# renders correlating at 0.9 or more are the same drawing recoloured or re-exported.
VARIANT_MIN_SHARED = 8
VARIANT_CORRELATION = 0.8
SAME_DRAWING_CORRELATION = 0.9
INK_LUMINANCE = 200
MIN_INK_SHARE = 0.01

ICON_SUFFIXES = (".png", ".svg", ".svgz")
SVG_SUFFIXES = (".svg", ".svgz")
SYMBOLIC_FOLDER = "symbolic"

NOT_DESIGNED_THEMES = {
    "hicolor": "fallback theme: holds the icons that installed applications bring",
    "locolor": "fallback theme: holds the icons that installed applications bring",
}
# The GNOME-Colors family: one drawing set, recoloured (Debian's gnome-*-icon-theme packages
# described as "variation of the GNOME-Colors icon theme", and their common icons).
KNOWN_RECOLOURED_THEMES = frozenset(
    {
        "gnome-brave", "gnome-carbonite", "gnome-colors-common", "gnome-dust", "gnome-human",
        "gnome-illustrious", "gnome-noble", "gnome-tribute", "gnome-wine", "gnome-wise",
    }
)  # fmt: skip

_LUMINANCE_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SYMBOLIC_NAME = re.compile(r"-symbolic(-|$)|\.symbolic$")
_RSVG_TIMEOUT_S = 60


@dataclass(frozen=True)
class IconTheme:
    """A theme folder: its folder name, index.theme Name= and Inherits=, and the directories
    index.theme lists that exist and are not symbolic, each with its nominal size (Size x
    Scale)."""

    folder: str
    name: str
    inherits: tuple[str, ...]
    index_file: Path
    directories: tuple[tuple[Path, int], ...]


@dataclass(frozen=True)
class IconSource:
    """A theme's file for an icon name: `path` as found in the theme, `drawing` the file it
    resolves to (they differ for symbolic links)."""

    theme: str
    icon_name: str
    path: Path
    drawing: Path
    nominal_size: int


@dataclass(frozen=True)
class Render:
    """A rendered icon: (size, size, 3) uint8 RGB on white, the SHA-256 of its pixels and its
    edge map (float32, unit norm; zeros for a flat image)."""

    image: np.ndarray
    digest: str
    edges: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray) -> Render:
        """The render of an (H, W, 3) uint8 image."""
        return cls(image, hashlib.sha256(image.tobytes()).hexdigest(), _edge_map(image))

    def correlation(self, other: Render) -> float:
        """Edge-map correlation: near 1 for the same drawing in any colours."""
        return float(self.edges @ other.edges)

    @property
    def faint(self) -> bool:
        """Whether too few pixels are dark enough to show on white (the module's rule)."""
        luminance = self.image.astype(np.float32) @ _LUMINANCE_WEIGHTS
        return int((luminance < INK_LUMINANCE).sum()) < MIN_INK_SHARE * luminance.size


@dataclass(frozen=True)
class Selection:
    """The kept images, `images[class_name]` = themes in theme order, and how many renders were
    dropped for each reason (faint, alias, same drawing in class, class under the minimum)."""

    images: dict[str, list[str]]
    dropped: dict[str, int]


def find_icon_themes(icon_roots: Sequence[str | os.PathLike[str]]) -> list[IconTheme]:
    """Every theme folder (with an index.theme) below `icon_roots`, sorted by folder name."""
    themes: dict[str, IconTheme] = {}
    roots = [Path(root).expanduser() for root in icon_roots]
    for root in roots:
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            index_file = folder / "index.theme"
            if folder.name not in themes and index_file.is_file():
                themes[folder.name] = _read_theme(folder.name, index_file, roots)
    return [themes[folder] for folder in sorted(themes)]


def index_theme_icons(theme: IconTheme) -> dict[str, IconSource]:
    """The theme's file for each non-symbolic icon name it draws (the module's rule)."""
    best: dict[str, tuple[int, int, str]] = {}
    for directory, nominal_size in theme.directories:
        for entry in os.scandir(directory):
            stem, suffix = os.path.splitext(entry.name)
            suffix = suffix.lower()
            if suffix not in ICON_SUFFIXES or _SYMBOLIC_NAME.search(stem):
                continue
            # Largest size first, then SVG before PNG, then the first path.
            key = (-nominal_size, 0 if suffix in SVG_SUFFIXES else 1, entry.path)
            if (stem not in best or key < best[stem]) and entry.is_file():
                best[stem] = key
    return {
        name: IconSource(theme.folder, name, Path(path), Path(os.path.realpath(path)), -minus_size)
        for name, (minus_size, _, path) in sorted(best.items())
    }


def render_icon(path: Path, size: int) -> Render | None:
    """Render one icon file at `size` px on white (the module's rule); None when it cannot be
    read or has no opaque pixel."""
    try:
        picture = _svg_picture(path, size) if _is_svg(path) else _png_picture(path, size)
    except (OSError, ValueError, subprocess.SubprocessError, Image.DecompressionBombError) as error:
        logger.debug("cannot render %s: %s", path, error)
        return None
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    canvas.paste(picture, ((size - picture.width) // 2, (size - picture.height) // 2))
    if not canvas.getchannel("A").getbbox():
        return None
    white = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    return Render.of(np.asarray(Image.alpha_composite(white, canvas).convert("RGB")))


def find_variant_themes(
    renders: dict[str, dict[str, Render]], theme_order: Sequence[str]
) -> dict[str, tuple[str, float]]:
    """Variant themes (the module's rule) among `renders[theme][name]`: theme -> (the theme it
    copies or recolours, the median edge-map correlation of their shared names)."""
    variants: dict[str, tuple[str, float]] = {}
    originals: list[str] = []
    for theme in theme_order:
        for original in originals:
            shared = sorted(renders[theme].keys() & renders[original].keys())
            if len(shared) < VARIANT_MIN_SHARED:
                continue
            ours = np.stack([renders[theme][name].edges for name in shared])
            theirs = np.stack([renders[original][name].edges for name in shared])
            median = float(np.median((ours * theirs).sum(axis=1)))
            if median >= VARIANT_CORRELATION:
                variants[theme] = (original, round(median, 4))
                break
        else:
            originals.append(theme)
    return variants


def select_images(renders: dict[str, dict[str, Render]], theme_order: Sequence[str]) -> Selection:
    """Drop faint renders, apply the same-drawing rules and the class threshold (the module's
    rules) to `renders[theme][name]` of the kept themes, listed in `theme_order`."""
    visible = {
        theme: {name: render for name, render in drawn.items() if not render.faint}
        for theme, drawn in renders.items()
    }
    dropped = {
        "faint_on_white": sum(map(len, renders.values())) - sum(map(len, visible.values())),
        "alias_of_another_name": 0,
        "same_drawing_in_class": 0,
        "in_classes_under_min_themes": 0,
    }
    popularity = Counter(name for drawn in visible.values() for name in drawn)
    rank = {name: (-count, name) for name, count in popularity.items()}
    home: dict[str, str] = {}
    for drawn in visible.values():
        for name, render in drawn.items():
            if render.digest not in home or rank[name] < rank[home[render.digest]]:
                home[render.digest] = name
    kept: dict[str, list[str]] = {}
    for name in sorted(popularity):
        themes: list[str] = []
        kept_renders: list[Render] = []
        for theme in theme_order:
            render = visible[theme].get(name)
            if render is None:
                continue
            if home[render.digest] != name:
                dropped["alias_of_another_name"] += 1
            elif any(_same_drawing(render, other) for other in kept_renders):
                dropped["same_drawing_in_class"] += 1
            else:
                themes.append(theme)
                kept_renders.append(render)
        if len(themes) >= MIN_THEMES_PER_CLASS:
            kept[name] = themes
        else:
            dropped["in_classes_under_min_themes"] += len(themes)
    return Selection(kept, dropped)


def build_icon_dataset(
    dataset_root: str | os.PathLike[str] = "data",
    icon_roots: Sequence[str | os.PathLike[str]] = DEFAULT_ICON_ROOTS,
    size: int = 64,
    force: bool = False,
    workers: int = DEFAULT_WORKERS,
) -> Path:
    """Render the icon dataset into `<dataset_root>/icons/` and return the archive's path.

    Writes icons.npz (images uint8 (N, size, size, 3) on white, labels int64 (N,), class_names
    (C,) sorted, theme_ids int64 (N,) indexing the manifest's themes; samples sorted by class,
    then theme folder) and manifest.json (per image: class, theme, files, Debian package,
    version and licence; the inputs; what was left out), each atomically. Does nothing when
    both exist and the manifest's inputs (build version, size, roots, renderer, every theme's
    index.theme digest and owning package version) equal the current ones, unless `force`.
    Deterministic for given inputs; `workers` threads render. Raises FileNotFoundError when the
    roots hold no theme or the result has no class, or an SVG must be rendered and
    rsvg-convert is missing.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    archive = Path(dataset_root) / ICONS_ARCHIVE
    manifest_path = Path(dataset_root) / ICONS_MANIFEST
    roots = [str(Path(root).expanduser()) for root in icon_roots]
    themes = find_icon_themes(roots)
    if not themes:
        raise FileNotFoundError(_no_icons_message(f"no icon theme (index.theme) below {roots}"))
    theme_packages = debian_packages([theme.index_file for theme in themes])
    inputs = _inputs(themes, theme_packages, roots, size)
    if not force and archive.exists() and built_inputs(manifest_path) == inputs:
        logger.info("icon dataset already built at %s (force=True rebuilds it)", archive)
        return archive
    started = time.monotonic()
    outcome = _select(themes, size, workers)
    if not outcome.images:
        raise FileNotFoundError(
            _no_icons_message(f"no icon name drawn by {MIN_THEMES_PER_CLASS} themes in {roots}")
        )
    class_names = sorted(outcome.images)
    used_themes = sorted({theme for drawn in outcome.images.values() for theme in drawn})
    pairs = [(name, theme) for name in class_names for theme in sorted(outcome.images[name])]
    manifest = _manifest(outcome, pairs, used_themes, themes, inputs)
    label_of = {name: label for label, name in enumerate(class_names)}
    theme_id_of = {theme: theme_id for theme_id, theme in enumerate(used_themes)}
    arrays = {
        "images": np.stack([outcome.renders[theme][name].image for name, theme in pairs]),
        "labels": np.array([label_of[name] for name, _ in pairs], dtype=np.int64),
        "class_names": np.array(class_names),
        "theme_ids": np.array([theme_id_of[theme] for _, theme in pairs], dtype=np.int64),
    }
    write_manifest(manifest_path, manifest)
    atomic_write(archive, lambda out: np.savez_compressed(out, **arrays))
    per_class = manifest["images_per_class"]
    logger.info(
        "icon dataset: %d images, %d classes (%d..%d per class, median %g), %d themes, "
        "%.0f s -> %s", len(pairs), len(class_names), per_class["min"], per_class["max"],
        per_class["median"], len(used_themes), time.monotonic() - started, archive,
    )  # fmt: skip
    return archive


@dataclass(frozen=True)
class _Outcome:
    """What `_select` chose: each kept theme's sources and renders, the kept images
    (`images[class_name]` = themes), the left-out themes with reasons, the dropped counts."""

    sources: dict[str, dict[str, IconSource]]
    renders: dict[str, dict[str, Render]]
    images: dict[str, list[str]]
    excluded: dict[str, str]
    dropped: dict[str, int]


def _select(themes: list[IconTheme], size: int, workers: int) -> _Outcome:
    """Apply the module's theme, icon and image rules to `themes`."""
    excluded = {
        theme.folder: reason
        for theme in themes
        if (reason := _excluded_reason(theme.folder)) is not None
    }
    sources = _candidate_sources([theme for theme in themes if theme.folder not in excluded])
    renders, unreadable = _render_sources(sources, size, workers)
    theme_order = sorted(renders, key=lambda folder: (-len(renders[folder]), folder))
    for theme, (original, median) in find_variant_themes(renders, theme_order).items():
        excluded[theme] = (
            f"variant of {original} (draws more names): median edge-map correlation {median}"
        )
    kept_order = [theme for theme in theme_order if theme not in excluded]
    selection = select_images({theme: renders[theme] for theme in kept_order}, kept_order)
    return _Outcome(
        sources=sources,
        renders=renders,
        images=selection.images,
        excluded=dict(sorted(excluded.items())),
        dropped={"unreadable": unreadable, **selection.dropped},
    )


def _read_theme(folder: str, index_file: Path, roots: list[Path]) -> IconTheme:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        parser.read_string(index_file.read_text(encoding="utf-8", errors="replace"))
    except configparser.Error as error:
        logger.warning("unreadable %s (%s): theme left without icons", index_file, error)
    header = parser["Icon Theme"] if parser.has_section("Icon Theme") else {}
    listed = [
        entry.strip()
        for key in ("Directories", "ScaledDirectories")
        for entry in header.get(key, "").split(",")
        if entry.strip()
    ]
    directories = []
    for relative in dict.fromkeys(listed):
        if SYMBOLIC_FOLDER in relative.lower().split("/"):
            continue
        nominal_size = _nominal_size(parser, relative)
        for root in roots:
            directory = root / folder / relative
            if nominal_size is not None and directory.is_dir():
                directories.append((directory, nominal_size))
    return IconTheme(
        folder=folder,
        name=header.get("Name", folder).strip(),
        inherits=tuple(
            item.strip() for item in header.get("Inherits", "").split(",") if item.strip()
        ),
        index_file=index_file,
        directories=tuple(directories),
    )


def _nominal_size(parser: configparser.ConfigParser, directory: str) -> int | None:
    """Size x Scale of an index.theme directory section; None when absent or unreadable."""
    if not parser.has_section(directory):
        return None
    try:
        return int(parser[directory]["Size"]) * int(parser[directory].get("Scale", "1"))
    except (KeyError, ValueError):
        return None


def _excluded_reason(folder: str) -> str | None:
    if folder in NOT_DESIGNED_THEMES:
        return NOT_DESIGNED_THEMES[folder]
    if folder.lower() in KNOWN_RECOLOURED_THEMES:
        return "known recolouring (GNOME-Colors family)"
    return None


def _candidate_sources(themes: Iterable[IconTheme]) -> dict[str, dict[str, IconSource]]:
    """Each theme's sources of the names that at least MIN_THEMES_PER_CLASS themes draw (no
    other name can become a class, nor take a render away from one)."""
    indexed = {theme.folder: index_theme_icons(theme) for theme in themes}
    counts = Counter(name for sources in indexed.values() for name in sources)
    return {
        folder: {name: source for name, source in sources.items()
                 if counts[name] >= MIN_THEMES_PER_CLASS}
        for folder, sources in indexed.items()
    }  # fmt: skip


def _render_sources(
    sources: dict[str, dict[str, IconSource]], size: int, workers: int
) -> tuple[dict[str, dict[str, Render]], int]:
    """Render every distinct drawing once (files with equal bytes and type are one drawing);
    returns renders[theme][name] (themes with none are absent) and how many (theme, name)
    sources could not be rendered."""
    drawings = sorted({source.drawing for drawn in sources.values() for source in drawn.values()})
    if any(_is_svg(path) for path in drawings) and shutil.which("rsvg-convert") is None:
        raise FileNotFoundError(
            "rsvg-convert is needed to render SVG icons; install librsvg2-bin "
            "(as root on Debian: `bash scripts/install_icons.sh`)"
        )
    first_of_content: dict[tuple[bool, str], Path] = {}
    same_as = {
        path: first_of_content.setdefault((_is_svg(path), _content_digest(path)), path)
        for path in drawings
    }
    distinct = list(first_of_content.values())
    logger.info(
        "rendering %d distinct icon files (of %d) at %d px with %d thread(s)",
        len(distinct), len(drawings), size, workers,
    )  # fmt: skip
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rendered = dict(
            zip(distinct, pool.map(render_icon, distinct, [size] * len(distinct)), strict=True)
        )
    renders: dict[str, dict[str, Render]] = {}
    unreadable = 0
    for theme, drawn in sources.items():
        for name, source in drawn.items():
            render = rendered[same_as[source.drawing]]
            if render is None:
                unreadable += 1
            else:
                renders.setdefault(theme, {})[name] = render
    return renders, unreadable


def _content_digest(path: Path) -> str:
    """SHA-256 of the file's bytes; the path itself when it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return str(path)


def _edge_map(image: np.ndarray) -> np.ndarray:
    """Colour gradient magnitude averaged over 2 x 2 blocks, centred, unit norm (flat: zeros)."""
    rows, columns = np.gradient(image.astype(np.float32), axis=(0, 1))
    magnitude = np.sqrt((rows**2 + columns**2).sum(axis=2))
    height, width = magnitude.shape[0] // 2 * 2, magnitude.shape[1] // 2 * 2
    blocks = magnitude[:height, :width].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    centred = blocks.ravel() - blocks.mean()
    norm = float(np.linalg.norm(centred))
    return (centred / norm if norm > 0 else centred).astype(np.float32)


def _same_drawing(render: Render, other: Render) -> bool:
    return render.digest == other.digest or render.correlation(other) >= SAME_DRAWING_CORRELATION


def _is_svg(path: Path) -> bool:
    return path.suffix.lower() in SVG_SUFFIXES


def _svg_picture(path: Path, size: int) -> Image.Image:
    result = subprocess.run(
        ["rsvg-convert", "--width", str(size), "--height", str(size), "--keep-aspect-ratio",
         "--format", "png", str(path)],
        capture_output=True, check=True, timeout=_RSVG_TIMEOUT_S,
    )  # fmt: skip
    return _fit(Image.open(io.BytesIO(result.stdout)).convert("RGBA"), size)


def _png_picture(path: Path, size: int) -> Image.Image:
    with Image.open(path) as picture:
        return _fit(picture.convert("RGBA"), size)


def _fit(picture: Image.Image, size: int) -> Image.Image:
    """Scale to fit `size` x `size` keeping the aspect ratio (Pillow premultiplies alpha)."""
    if max(picture.width, picture.height) == size:
        return picture
    scale = size / max(picture.width, picture.height)
    width = min(size, max(1, round(picture.width * scale)))
    height = min(size, max(1, round(picture.height * scale)))
    return picture.resize((width, height), Image.Resampling.LANCZOS)


def _inputs(
    themes: list[IconTheme], packages: dict[str, str] | None, roots: list[str], size: int
) -> dict:
    """What the build depends on; equal inputs give equal archives."""
    versions = package_versions(set((packages or {}).values()))
    return {
        "build_version": ICONS_BUILD_VERSION,
        "size": size,
        "icon_roots": roots,
        "renderers": {"svg": _rsvg_version(), "png": f"Pillow {Image.__version__}"},
        "themes": [
            {
                "folder": theme.folder,
                "index_sha256": hashlib.sha256(theme.index_file.read_bytes()).hexdigest(),
                "package": (package := (packages or {}).get(str(theme.index_file))),
                "version": versions.get(package) if package else None,
            }
            for theme in themes
        ],
    }


def _rsvg_version() -> str | None:
    if shutil.which("rsvg-convert") is None:
        return None
    result = subprocess.run(["rsvg-convert", "--version"], capture_output=True, text=True)
    return result.stdout.strip() or None


def _manifest(
    outcome: _Outcome,
    pairs: list[tuple[str, str]],
    used_themes: list[str],
    themes: list[IconTheme],
    inputs: dict,
) -> dict:
    chosen = [outcome.sources[theme][name] for name, theme in pairs]
    packages = debian_packages([source.drawing for source in chosen]) or {}
    versions = package_versions(set(packages.values()))
    licences = {package: licence(package) for package in sorted(set(packages.values()))}
    counts = Counter(name for name, _ in pairs)
    per_theme = Counter(theme for _, theme in pairs)
    by_folder = {theme.folder: theme for theme in themes}
    entries = []
    for index, source in enumerate(chosen):
        package = packages.get(str(source.drawing))
        entries.append(
            {
                "id": index,
                "class": source.icon_name,
                "theme": source.theme,
                "file": str(source.path),
                "drawing": str(source.drawing),
                "nominal_size": source.nominal_size,
                "package": package,
                "version": versions.get(package) if package else None,
                "licence": licences.get(package) if package else None,
            }
        )
    return {
        "build_version": ICONS_BUILD_VERSION,
        "num_images": len(pairs),
        "num_classes": len(counts),
        "num_themes": len(used_themes),
        "images_per_class": {
            "min": min(counts.values()),
            "median": float(np.median(list(counts.values()))),
            "max": max(counts.values()),
        },
        "counts_per_class": dict(sorted(counts.items())),
        "rendering": {
            "size": inputs["size"],
            "svg": f"{inputs['renderers']['svg']}: fit into size x size, aspect kept",
            "png": f"{inputs['renderers']['png']}: Lanczos fit into size x size, aspect kept",
            "background": "centred, composited over white (RGB)",
        },
        "rules": {
            "min_themes_per_class": MIN_THEMES_PER_CLASS,
            "variant_min_shared": VARIANT_MIN_SHARED,
            "variant_correlation": VARIANT_CORRELATION,
            "same_drawing_correlation": SAME_DRAWING_CORRELATION,
            "ink_luminance": INK_LUMINANCE,
            "min_ink_share": MIN_INK_SHARE,
        },
        "themes": [
            {
                "id": theme_id,
                "folder": folder,
                "name": by_folder[folder].name,
                "inherits": list(by_folder[folder].inherits),
                "num_images": per_theme[folder],
            }
            for theme_id, folder in enumerate(used_themes)
        ],
        "excluded_themes": outcome.excluded,
        "dropped_images": outcome.dropped,
        "packages": sorted(f"{package} {versions.get(package)}" for package in licences),
        "inputs": inputs,
        "images": entries,
    }


def _no_icons_message(problem: str) -> str:
    return (
        f"{problem}; install the icon themes (as root on Debian: "
        "`bash scripts/install_icons.sh`) or pass other icon roots"
    )
