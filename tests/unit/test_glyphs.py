"""The glyph dataset: class lists, font selection, rendering, archive, manifest and loader.

Fonts come from matplotlib's own copy of DejaVu (matplotlib is a dependency), so these tests
do not depend on the fonts installed on the machine.
"""

import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from fontTools.ttLib import TTFont
from PIL import ImageFont

from sdm.builders import glyphs
from sdm.builders.glyphs import (
    CLASS_CHARACTERS,
    EXCLUDED_LOOK_ALIKES,
    RenderedFont,
    build_glyph_dataset,
    render_font,
    select_fonts,
)
from sdm.data.embedded import load_embedded_arrays

MATPLOTLIB_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
SANS, SANS_BOLD, SERIF = "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf"
SIZE = 16

GREEK_ALPHABET = [chr(code) for code in range(0x391, 0x3AA) if code != 0x3A2] + [
    chr(code) for code in range(0x3B1, 0x3CA)
]
RUSSIAN_ALPHABET = [chr(code) for code in range(0x410, 0x450)] + ["Ё", "ё"]


def _font_dir(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "fonts"
    folder.mkdir()
    for name in names:
        shutil.copy(MATPLOTLIB_FONTS / name, folder / name)
    return folder


def _build(root: Path, font_dir: Path, workers: int = 1) -> tuple[dict, dict]:
    archive = build_glyph_dataset(root, size=SIZE, font_dirs=[font_dir], workers=workers)
    with np.load(archive) as arrays:
        data = {name: arrays[name] for name in arrays.files}
    manifest = json.loads((root / "glyphs" / "manifest.json").read_text())
    return data, manifest


def _image(data: dict, font_id: int, character: str) -> np.ndarray:
    class_id = CLASS_CHARACTERS.index(character)
    (index,) = np.flatnonzero((data["font_ids"] == font_id) & (data["labels"] == class_id))
    return data["images"][index]


def _ink_rows(image: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(image.max(axis=1) > 127)
    return int(rows[0]), int(rows[-1])


@pytest.fixture(scope="module")
def sans_and_serif(tmp_path_factory):
    """One build from DejaVu Sans, its Bold sibling and DejaVu Serif."""
    tmp_path = tmp_path_factory.mktemp("glyphs")
    font_dir = _font_dir(tmp_path, SANS, SANS_BOLD, SERIF)
    data, manifest = _build(tmp_path / "data", font_dir)
    return tmp_path, font_dir, data, manifest


def test_class_lists_are_latin_then_greek_then_cyrillic_without_look_alikes():
    assert len(CLASS_CHARACTERS) == len(set(CLASS_CHARACTERS)) == 62 + 10 + 19 + 16 + 24
    assert CLASS_CHARACTERS[:62] == (
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    )
    assert list(CLASS_CHARACTERS) == sorted(CLASS_CHARACTERS)  # class ids = sorted names
    non_latin = CLASS_CHARACTERS[62:]
    assert all(0x391 <= ord(c) <= 0x3C9 for c in non_latin[:29])
    assert all(0x410 <= ord(c) <= 0x44F for c in non_latin[29:])
    # Every Greek and Russian letter is either a class or excluded with a reason, never both.
    for letter in GREEK_ALPHABET + RUSSIAN_ALPHABET:
        assert (letter in CLASS_CHARACTERS) != (letter in EXCLUDED_LOOK_ALIKES), letter
    assert set(EXCLUDED_LOOK_ALIKES) <= set(GREEK_ALPHABET + RUSSIAN_ALPHABET)
    for look_alike in "ΑΒΕΗΙΚΜΝΟΡΤΥΧοАВЕКМНОРСТХаеорсух" + "ѕіј":
        assert look_alike not in CLASS_CHARACTERS, look_alike
    for kept in "ΓΔΘΛΞΠΣΦΨΩαβγδλπσωБДЖИЛЦЧШЩЭЮЯбвгджилмнптфцчшщъыьэюя":
        assert kept in CLASS_CHARACTERS, kept


def test_build_keeps_one_font_per_family_with_the_regular_style(sans_and_serif):
    _, _, data, manifest = sans_and_serif
    assert [(font["family"], font["style"]) for font in manifest["fonts"]] == [
        ("DejaVu Sans", "Book"),
        ("DejaVu Serif", "Book"),
    ]
    assert [Path(font["path"]).name for font in manifest["fonts"]] == [SANS, SERIF]
    assert manifest["dropped_font_files"] == {
        "picture_font": 0,
        "same_family": 1,
        "pixel_identical": 0,
        "not_all_latin": 0,
    }
    assert sorted(set(data["font_ids"].tolist())) == [0, 1]


def test_build_arrays_hold_every_class_character_each_font_maps(sans_and_serif):
    _, font_dir, data, manifest = sans_and_serif
    assert data["images"].dtype == np.uint8 and data["images"].shape[1:] == (SIZE, SIZE)
    assert data["labels"].dtype == np.int64 and data["font_ids"].dtype == np.int64
    assert data["class_names"].tolist() == list(CLASS_CHARACTERS)
    for font_id, name in enumerate([SANS, SERIF]):
        code_points = TTFont(font_dir / name)["cmap"].getBestCmap()
        expected = [i for i, c in enumerate(CLASS_CHARACTERS) if ord(c) in code_points]
        assert data["labels"][data["font_ids"] == font_id].tolist() == expected
        assert manifest["fonts"][font_id]["num_characters"] == len(expected)
    # Font-major order: font 0's samples first, each font's in class id order.
    assert data["font_ids"].tolist() == sorted(data["font_ids"].tolist())


def test_manifest_counts_and_rendering_parameters(sans_and_serif):
    _, font_dir, data, manifest = sans_and_serif
    counts = np.bincount(data["labels"], minlength=len(CLASS_CHARACTERS))
    assert manifest["counts_per_class"] == dict(zip(CLASS_CHARACTERS, counts.tolist(), strict=True))
    assert manifest["counts_per_class"]["A"] == 2
    assert manifest["num_images"] == len(data["labels"]) == counts.sum()
    assert manifest["num_classes"] == 131 and manifest["num_fonts"] == 2
    assert manifest["build_version"] == glyphs.GLYPHS_BUILD_VERSION
    assert manifest["rendering"]["size"] == SIZE
    assert manifest["rendering"]["em_size_px"] == glyphs.EM_PER_IMAGE_SIZE * SIZE
    assert manifest["font_dirs"] == [str(font_dir)]
    if shutil.which("dpkg"):  # copies in a temporary folder belong to no package
        assert manifest["packages"] == []
        assert all("package" not in font for font in manifest["fonts"])


def test_renders_keep_case_apart_on_a_shared_baseline(sans_and_serif):
    _, _, data, _ = sans_and_serif
    for font_id in (0, 1):
        for small, capital in [("o", "O"), ("x", "X"), ("s", "S")]:
            small_top, small_bottom = _ink_rows(_image(data, font_id, small))
            capital_top, capital_bottom = _ink_rows(_image(data, font_id, capital))
            assert small_top > capital_top  # the x-height is below the cap height
            assert abs(small_bottom - capital_bottom) <= 1  # both sit on the baseline
        _, o_bottom = _ink_rows(_image(data, font_id, "o"))
        _, p_bottom = _ink_rows(_image(data, font_id, "p"))
        assert p_bottom > o_bottom + 1  # descenders go below the baseline
        # White glyph on black: the corners are background.
        o_image = _image(data, font_id, "O")
        assert o_image[0, 0] == o_image[-1, -1] == 0 and o_image.max() == 255


def test_build_is_deterministic_across_runs_and_worker_counts(sans_and_serif, tmp_path):
    _, font_dir, data, manifest = sans_and_serif
    again, manifest_again = _build(tmp_path / "again", font_dir, workers=2)
    for name in ("images", "labels", "font_ids", "class_names"):
        np.testing.assert_array_equal(again[name], data[name])
    assert manifest_again == manifest


def test_a_copy_under_another_name_is_dropped(tmp_path):
    font_dir = _font_dir(tmp_path, SANS)
    shutil.copy(font_dir / SANS, font_dir / "copy-of-sans.ttf")
    data, manifest = _build(tmp_path / "data", font_dir)
    assert [Path(font["path"]).name for font in manifest["fonts"]] == [SANS]
    assert set(data["font_ids"].tolist()) == {0}


def test_pixel_identical_fonts_of_different_families_are_dropped(tmp_path):
    font_dir = _font_dir(tmp_path, SANS, SERIF)
    renamed = TTFont(font_dir / SANS)
    for record in renamed["name"].names:
        if record.nameID in (1, 3, 4, 6, 16):
            record.string = "Renamed Sans"
    renamed.save(font_dir / "renamed.ttf")
    assert ImageFont.truetype(str(font_dir / "renamed.ttf"), 10).getname()[0] == "Renamed Sans"
    _, manifest = _build(tmp_path / "data", font_dir)
    assert [Path(font["path"]).name for font in manifest["fonts"]] == [SANS, SERIF]
    assert manifest["dropped_font_files"]["pixel_identical"] == 1
    assert manifest["dropped_font_files"]["same_family"] == 0


def test_a_capitals_only_font_is_not_used(tmp_path):
    font_dir = _font_dir(tmp_path, SANS)
    capitals_only = TTFont(font_dir / SANS)
    for table in capitals_only["cmap"].tables:
        if table.isUnicode():
            for small in "abcdefghijklmnopqrstuvwxyz":
                table.cmap[ord(small)] = table.cmap[ord(small.upper())]
    capitals_only.save(tmp_path / "capitals.ttf")
    assert render_font(tmp_path / "capitals.ttf", SIZE) is None
    assert render_font(font_dir / SANS, SIZE) is not None


def test_select_fonts_prefers_regular_styles_and_drops_picture_fonts():
    def font(path: str, family: str, style: str, seed: int) -> RenderedFont:
        rng = np.random.default_rng(seed)
        images = {i: rng.integers(0, 256, (4, 4), dtype=np.uint8) for i in range(62)}
        return RenderedFont(Path(path), family, style, images)

    fonts = [
        font("/f/a-bold.ttf", "A", "Bold", 0),
        font("/f/a-regular.ttf", "A", "Regular", 1),
        font("/f/a-italic.ttf", "A", "Italic", 2),
        font("/f/b-bolditalic.ttf", "B", "Bold Italic", 3),
        font("/f/b-book.ttf", "B", "Book", 4),
        font("/f/c.ttf", "C", "Medium", 5),
        font("/f/c-light.ttf", "C", "Light Condensed", 6),
        font("/f/dingbats.ttf", "D050000L", "Regular", 7),
    ]
    kept, dropped = select_fonts(fonts)
    assert [str(f.path) for f in kept] == ["/f/a-regular.ttf", "/f/b-book.ttf", "/f/c.ttf"]
    assert dropped == {"picture_font": 1, "same_family": 4, "pixel_identical": 0}


def test_no_font_covering_latin_is_a_clear_error(tmp_path):
    empty = tmp_path / "no-fonts"
    empty.mkdir()
    (empty / "broken.ttf").write_bytes(b"not a font")
    with pytest.raises(FileNotFoundError, match="no font that draws all 62 Latin") as error:
        build_glyph_dataset(tmp_path / "data", size=SIZE, font_dirs=[empty], workers=1)
    assert str(empty) in str(error.value) and "install_fonts.sh" in str(error.value)
    assert not (tmp_path / "data" / "glyphs").exists()


def test_existing_build_is_kept_unless_forced(tmp_path):
    root = tmp_path / "data"
    font_dir = _font_dir(tmp_path, SANS)
    archive = build_glyph_dataset(root, size=SIZE, font_dirs=[font_dir], workers=1)
    first_bytes = archive.read_bytes()
    (font_dir / SANS).unlink()  # a rebuild now would fail: no fonts left
    assert build_glyph_dataset(root, size=SIZE, font_dirs=[font_dir]) == archive
    assert archive.read_bytes() == first_bytes
    with pytest.raises(FileNotFoundError):
        build_glyph_dataset(root, size=SIZE, font_dirs=[font_dir], force=True)
    assert sorted(p.name for p in archive.parent.iterdir()) == ["glyphs.npz", "manifest.json"]


def test_a_failed_write_leaves_no_archive_and_no_temporary_file(tmp_path, monkeypatch):
    font_dir = _font_dir(tmp_path, SANS)

    def fail_midway(out, **arrays):
        out.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(glyphs.np, "savez_compressed", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        build_glyph_dataset(tmp_path / "data", size=SIZE, font_dirs=[font_dir], workers=1)
    assert sorted(p.name for p in (tmp_path / "data" / "glyphs").iterdir()) == ["manifest.json"]
    with pytest.raises(FileNotFoundError):
        load_embedded_arrays("glyphs", tmp_path / "data")


def test_loader_returns_the_archive_arrays(sans_and_serif):
    tmp_path, _, data, _ = sans_and_serif
    images, labels, class_names = load_embedded_arrays("glyphs", tmp_path / "data")
    np.testing.assert_array_equal(images, data["images"])
    np.testing.assert_array_equal(labels, data["labels"])
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    assert class_names == list(CLASS_CHARACTERS)


def test_loader_names_the_missing_path_and_the_command_that_builds_it(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_embedded_arrays("glyphs", tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "glyphs" / "glyphs.npz") in message
    assert f"sdm data glyphs --dataset-root {tmp_path / 'nowhere'}" in message
    assert "make demo" in message
