"""The glyph dataset: characters rendered from the typefaces installed on this machine.

Classes are characters (`CLASS_CHARACTERS`, class id = position): the 62 Latin digits and
letters, then the Greek and the Russian Cyrillic letters that do not look like a Latin letter
or digit, nor like a Greek letter already kept (`EXCLUDED_LOOK_ALIKES` lists every letter of
those alphabets that was left out, with the reason). Within each block characters are in code
point order, so the class ids are also the sorted order of the class names.

Samples are fonts. A font file is used only if it draws all 62 Latin characters and draws no
letter's capital and small form alike (capitals-only fonts are dropped; coincidences a typeface
really has, such as 0 and O or 1 and l, stay), and is not a picture font (`PICTURE_FONT_FAMILIES`).
Of each family (FreeType's family name) one file stays, the one whose style is most "Regular";
a font whose 62 Latin images equal an earlier font's, pixel for pixel, is dropped. A font adds a
sample for every other class character that its Unicode cmap maps to a real glyph (not empty,
not its .notdef glyph).

Rendering, per font: glyphs are drawn with FreeType (Pillow, basic layout) at an em size of
`EM_PER_IMAGE_SIZE * size` pixels, white (255) on black (0). All glyphs of a font share one
square frame: its top and bottom are the highest and lowest ink of the font's 62 Latin glyphs,
relative to the baseline, and its side is the larger of that height and the widest Latin ink,
plus `FRAME_MARGIN` of the side on each edge. So 'o' and 'O' keep their own size and height on
the baseline. Each glyph is centred horizontally on its ink, area-averaged (box filter) down to
`size` x `size` pixels, uint8. Ink outside the frame (rare non-Latin extremes) is clipped.
Only .ttf and .otf files are read (their Unicode cmap is read with fontTools); Debian's Type 1
files (.pfb, .t1) duplicate the OpenType files of fonts-urw-base35 and are not read.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sdm.builders.provenance import debian_packages, write_manifest
from sdm.constants import GLYPHS_ARCHIVE, GLYPHS_MANIFEST
from sdm.errors import UserInputError
from sdm.storage import atomic_write

logger = logging.getLogger(__name__)

# Bumped whenever the classes, the font selection or the rendering change.
GLYPHS_BUILD_VERSION = 1

LATIN_DIGITS = "0123456789"
LATIN_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LATIN_LOWER = "abcdefghijklmnopqrstuvwxyz"
LATIN = LATIN_DIGITS + LATIN_UPPER + LATIN_LOWER

GREEK_UPPER = "ΓΔΘΛΞΠΣΦΨΩ"
GREEK_LOWER = "αβγδεζηθκλμξπςστφψω"
CYRILLIC_UPPER = "БДЖИЙЛУЦЧШЩЪЫЭЮЯ"
CYRILLIC_LOWER = "бвгджзийлмнптфцчшщъыьэюя"

CLASS_CHARACTERS = LATIN + GREEK_UPPER + GREEK_LOWER + CYRILLIC_UPPER + CYRILLIC_LOWER

# Every letter of the Greek and the Russian alphabets that is not a class, and why.
EXCLUDED_LOOK_ALIKES = {
    "Α": "Latin A", "Β": "Latin B", "Ε": "Latin E", "Ζ": "Latin Z", "Η": "Latin H", "Ι": "Latin I",
    "Κ": "Latin K", "Μ": "Latin M", "Ν": "Latin N", "Ο": "Latin O", "Ρ": "Latin P", "Τ": "Latin T",
    "Υ": "Latin Y", "Χ": "Latin X", "ι": "Latin i without its dot", "ν": "Latin v", "ο": "Latin o",
    "ρ": "Latin p", "υ": "Latin u", "χ": "Latin x", "А": "Latin A", "В": "Latin B", "Е": "Latin E",
    "К": "Latin K", "М": "Latin M", "Н": "Latin H", "О": "Latin O", "Р": "Latin P", "С": "Latin C",
    "Т": "Latin T", "Х": "Latin X", "а": "Latin a", "е": "Latin e", "о": "Latin o", "р": "Latin p",
    "с": "Latin c", "у": "Latin y", "х": "Latin x", "Ё": "Latin E with diaeresis",
    "ё": "Latin e with diaeresis", "З": "digit 3", "Ь": "Latin b", "Г": "Greek Γ", "П": "Greek Π",
    "Ф": "Greek Φ", "к": "Greek κ",
}  # fmt: skip

# Families whose "letters" are pictures (dingbats, ornaments, patterns) or other scripts' letters,
# found by looking at the renders of every font in scripts/font-packages.txt.
PICTURE_FONT_FAMILIES = frozenset(
    {
        "D050000L",  # URW Dingbats
        "Standard Symbols PS",  # draws Greek letters and symbols at Latin code points
        "90 Stars BRK",
        "Bandwidth BRK",
        "Binary 01s BRK",
        "Bit Blocks TTF BRK",
        "Code Of Life BRK",
        "Entangled Layer B BRK",
        "Faux Snow BRK",
        "Head-Ding Maker BRK",
        "Line Dings BRK",
        "Skull Capz BRK",
        "Symmetry BRK",
    }
)

EM_PER_IMAGE_SIZE = 3
FRAME_MARGIN = 0.05
DEFAULT_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts")
FONT_SUFFIXES = (".ttf", ".otf")
DEFAULT_WORKERS = 2

# A code point that no font maps: drawing it draws the font's .notdef glyph.
_UNMAPPED_CHARACTER = "\uffff"
_REGULAR_STYLE_WORDS = ("regular", "book", "roman", "normal", "plain")
_NON_REGULAR_STYLE_WORDS = (
    "italic", "oblique", "slant", "bold", "black", "heavy", "light", "thin", "hairline",
    "medium", "demi", "semi", "extra", "ultra", "cond", "narrow", "extended", "expanded",
    "outline", "inline", "shadow",
)  # fmt: skip


@dataclass(frozen=True)
class RenderedFont:
    """One font's images: `images[class_id]` is a (size, size) uint8 array."""

    path: Path
    family: str
    style: str
    images: dict[int, np.ndarray]

    def latin_digest(self) -> str:
        """SHA-256 of the 62 Latin images, equal only for pixel-identical renders."""
        digest = hashlib.sha256()
        for class_id in range(len(LATIN)):
            digest.update(self.images[class_id].tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class _Ink:
    """A glyph's inked pixels and the height of their top row relative to the baseline."""

    bitmap: Image.Image
    top: int

    @property
    def bottom(self) -> int:
        return self.top + self.bitmap.height

    def same_as(self, other: _Ink) -> bool:
        return self.bitmap.size == other.bitmap.size and (
            self.bitmap.tobytes() == other.bitmap.tobytes()
        )


def find_font_files(font_dirs: Sequence[str | os.PathLike[str]] | None = None) -> list[Path]:
    """All .ttf/.otf files below `font_dirs` (default: the system font folders), sorted."""
    folders = [Path(folder).expanduser() for folder in _or_default(font_dirs)]
    files = {
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.rglob("*")
        if path.suffix.lower() in FONT_SUFFIXES and path.is_file()
    }
    return sorted(files)


def render_font(path: Path, size: int) -> RenderedFont | None:
    """Render every class character `path` draws at `size` px; None unless it draws all Latin."""
    cmap = _unicode_code_points(path)
    if not all(ord(character) in cmap for character in LATIN):
        return None
    try:
        font = ImageFont.truetype(
            str(path), EM_PER_IMAGE_SIZE * size, layout_engine=ImageFont.Layout.BASIC
        )
    except OSError:
        return None
    notdef = _draw_ink(font, _UNMAPPED_CHARACTER)
    inks: dict[int, _Ink] = {}
    for class_id, character in enumerate(CLASS_CHARACTERS):
        if ord(character) not in cmap:
            continue
        ink = _draw_ink(font, character)
        if ink is None or (notdef is not None and ink.same_as(notdef)):
            if class_id < len(LATIN):
                return None
            continue
        inks[class_id] = ink
    images = _frame_images(inks, size)
    if _draws_a_letter_case_alike(images):
        return None
    family, style = font.getname()
    return RenderedFont(path, family or path.stem, style or "", images)


def select_fonts(rendered: Sequence[RenderedFont]) -> tuple[list[RenderedFont], dict[str, int]]:
    """Drop picture fonts, keep one font per family, then drop pixel-identical ones.

    The family's font is the one with the most regular style name (fewest non-regular words,
    then a regular word present, then the shortest name, then the path). Among pixel-identical
    fonts the first by path stays. Returns the fonts in path order and how many were dropped
    for each reason.
    """
    letter_fonts = [font for font in rendered if font.family not in PICTURE_FONT_FAMILIES]
    by_family: dict[str, list[RenderedFont]] = {}
    for font in letter_fonts:
        by_family.setdefault(font.family, []).append(font)
    one_per_family = sorted(
        (
            min(fonts, key=lambda font: (_style_rank(font.style), str(font.path)))
            for fonts in by_family.values()
        ),
        key=lambda font: str(font.path),
    )
    kept: list[RenderedFont] = []
    seen_digests: set[str] = set()
    for font in one_per_family:
        digest = font.latin_digest()
        if digest not in seen_digests:
            seen_digests.add(digest)
            kept.append(font)
    dropped = {
        "picture_font": len(rendered) - len(letter_fonts),
        "same_family": len(letter_fonts) - len(one_per_family),
        "pixel_identical": len(one_per_family) - len(kept),
    }
    return kept, dropped


def build_glyph_dataset(
    dataset_root: str | os.PathLike[str] = "data",
    size: int = 32,
    font_dirs: Sequence[str | os.PathLike[str]] | None = None,
    force: bool = False,
    workers: int = DEFAULT_WORKERS,
) -> Path:
    """Render the glyph dataset into `<dataset_root>/glyphs/` and return the archive's path.

    Writes glyphs.npz (images uint8 (N, size, size), labels int64 (N,), class_names (C,),
    font_ids int64 (N,) indexing the manifest's fonts) and manifest.json, each atomically.
    Does nothing when both exist, unless `force`. Deterministic for a given set of font files.
    `workers` > 1 renders fonts in that many processes. Raises FileNotFoundError when no font
    below `font_dirs` (default: the system font folders) draws all 62 Latin characters.
    """
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    archive = Path(dataset_root) / GLYPHS_ARCHIVE
    manifest_path = Path(dataset_root) / GLYPHS_MANIFEST
    if archive.exists() and manifest_path.exists() and not force:
        logger.info("glyph dataset already built at %s (force=True rebuilds it)", archive)
        return archive
    _tt_font_class()  # fails here, before any rendering, when fontTools is not installed
    searched = [str(Path(folder).expanduser()) for folder in _or_default(font_dirs)]
    files = find_font_files(searched)
    logger.info("rendering %d font files at %d px with %d worker(s)", len(files), size, workers)
    rendered = [font for font in _render_all(files, size, workers) if font is not None]
    if not rendered:
        raise FileNotFoundError(
            f"no font that draws all 62 Latin letters and digits among {len(files)} .ttf/.otf "
            f"files below {', '.join(searched)}; install fonts (as root on Debian: "
            "`bash scripts/install_fonts.sh`, or at least `apt-get install fonts-dejavu-core`) "
            "or pass other font folders"
        )
    fonts, dropped = select_fonts(rendered)
    dropped["not_all_latin"] = len(files) - len(rendered)
    images, labels, font_ids = _stack_samples(fonts, size)
    manifest = _manifest(fonts, labels, size, searched, dropped)
    archive.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest_path, manifest)
    atomic_write(
        archive,
        lambda out: np.savez_compressed(
            out,
            images=images,
            labels=labels,
            class_names=np.array(list(CLASS_CHARACTERS)),
            font_ids=font_ids,
        ),
    )
    logger.info(
        "glyph dataset: %d images, %d classes (%d..%d per class), %d fonts -> %s",
        len(labels), len(CLASS_CHARACTERS), min(manifest["counts_per_class"].values()),
        max(manifest["counts_per_class"].values()), len(fonts), archive,
    )  # fmt: skip
    return archive


def _or_default(
    font_dirs: Sequence[str | os.PathLike[str]] | None,
) -> Sequence[str | os.PathLike[str]]:
    return DEFAULT_FONT_DIRS if font_dirs is None else font_dirs


def _render_all(files: list[Path], size: int, workers: int) -> list[RenderedFont | None]:
    if workers <= 1 or len(files) < 2:
        return [render_font(path, size) for path in files]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(render_font, files, [size] * len(files), chunksize=8))


def _draws_a_letter_case_alike(images: dict[int, np.ndarray]) -> bool:
    """Whether some Latin letter's capital and small images are identical (capitals-only)."""
    return any(
        np.array_equal(
            images[CLASS_CHARACTERS.index(capital)], images[CLASS_CHARACTERS.index(small)]
        )
        for capital, small in zip(LATIN_UPPER, LATIN_LOWER, strict=True)
    )


def _tt_font_class() -> type:
    """fontTools' ``TTFont``: fontTools is an optional dependency (the ``glyphs`` extra)."""
    try:
        from fontTools.ttLib import TTFont
    except ImportError as error:
        raise UserInputError(
            "building the glyph dataset needs fontTools, which is not installed: "
            "pip install 'sdm-metric-learning[glyphs]'"
        ) from error
    return TTFont


def _unicode_code_points(path: Path) -> set[int]:
    """Code points of the font's Unicode cmap; empty when fontTools cannot read the font."""
    tt_font = _tt_font_class()
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    try:
        with tt_font(path, lazy=True, fontNumber=0) as font:
            return set(font.getBestCmap() or {})
    except Exception:  # fontTools raises many types on malformed or unsupported files
        return set()


def _draw_ink(font: ImageFont.FreeTypeFont, character: str) -> _Ink | None:
    """Draw one character with its pen on the baseline; None when it leaves no ink."""
    left, top, right, bottom = font.getbbox(character, anchor="ls")
    pad = font.size
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    pen = (pad - left, pad - top)
    ImageDraw.Draw(canvas).text(pen, character, font=font, fill=255, anchor="ls")
    ink_box = canvas.getbbox()
    if ink_box is None:
        return None
    return _Ink(canvas.crop(ink_box), ink_box[1] - pen[1])


def _frame_images(inks: dict[int, _Ink], size: int) -> dict[int, np.ndarray]:
    """Place every ink in the font's square frame (from its Latin inks) and shrink to `size`."""
    latin = [inks[class_id] for class_id in range(len(LATIN))]
    frame_top = min(ink.top for ink in latin)
    frame_height = max(ink.bottom for ink in latin) - frame_top
    widest = max(ink.bitmap.width for ink in latin)
    side = round(max(frame_height, widest) * (1 + 2 * FRAME_MARGIN))
    top_offset = (side - frame_height) // 2 - frame_top
    images = {}
    for class_id, ink in inks.items():
        canvas = Image.new("L", (side, side), 0)
        canvas.paste(ink.bitmap, ((side - ink.bitmap.width) // 2, ink.top + top_offset))
        shrunk = canvas.resize((size, size), Image.Resampling.BOX)
        images[class_id] = np.asarray(shrunk, dtype=np.uint8)
    return images


def _style_rank(style: str) -> tuple[int, int, int]:
    lowered = style.lower()
    non_regular = sum(word in lowered for word in _NON_REGULAR_STYLE_WORDS)
    regular = any(word in lowered for word in _REGULAR_STYLE_WORDS)
    return (non_regular, 0 if regular else 1, len(style))


def _stack_samples(
    fonts: list[RenderedFont], size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples in font order, then class id order: images, labels and font ids."""
    pairs = [(font_id, class_id) for font_id, font in enumerate(fonts) for class_id in font.images]
    images = np.empty((len(pairs), size, size), dtype=np.uint8)
    for index, (font_id, class_id) in enumerate(pairs):
        images[index] = fonts[font_id].images[class_id]
    labels = np.array([class_id for _, class_id in pairs], dtype=np.int64)
    font_ids = np.array([font_id for font_id, _ in pairs], dtype=np.int64)
    return images, labels, font_ids


def _manifest(
    fonts: list[RenderedFont],
    labels: np.ndarray,
    size: int,
    searched: list[str],
    dropped: dict[str, int],
) -> dict:
    packages = debian_packages([font.path for font in fonts])
    counts = np.bincount(labels, minlength=len(CLASS_CHARACTERS))
    font_entries = []
    for font_id, font in enumerate(fonts):
        entry = {
            "id": font_id,
            "path": str(font.path),
            "family": font.family,
            "style": font.style,
            "num_characters": len(font.images),
        }
        if packages and str(font.path) in packages:
            entry["package"] = packages[str(font.path)]
        font_entries.append(entry)
    manifest = {
        "build_version": GLYPHS_BUILD_VERSION,
        "num_images": int(len(labels)),
        "num_classes": len(CLASS_CHARACTERS),
        "num_fonts": len(fonts),
        "counts_per_class": {
            character: int(count) for character, count in zip(CLASS_CHARACTERS, counts, strict=True)
        },
        "rendering": {
            "size": size,
            "em_size_px": EM_PER_IMAGE_SIZE * size,
            "frame_margin": FRAME_MARGIN,
            "frame": "per font: square around the ink of its 62 Latin glyphs, baseline shared",
            "downsampling": "box (area average)",
            "polarity": "white glyph (255) on black (0)",
            "renderer": f"Pillow {Image.__version__} FreeType, basic layout",
        },
        "font_dirs": searched,
        "dropped_font_files": dropped,
        "fonts": font_entries,
    }
    if packages is not None:
        manifest["packages"] = sorted(set(packages.values()))
    return manifest
