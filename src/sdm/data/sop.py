"""Stanford Online Products (SOP): all 120,053 images listed in Ebay_info.txt.

Official layout below the dataset root (Stanford_Online_Products.zip extracted there):
``Stanford_Online_Products/Ebay_info.txt`` with the header ``image_id class_id
super_class_id path`` and then one line per image, e.g. ``1 1 1 bicycle_final/111085122871_0.JPG``,
paths relative to the Stanford_Online_Products folder. As in MLRC, the official
Ebay_train.txt/Ebay_test.txt split is ignored: every image is used, labelled by its class_id
(1..22634), and the MLRC split divides the class ids.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from sdm.constants import DEFAULT_DATASET_ROOT, RESIZE, SOP, SOP_FOLDER, SOP_INFO
from sdm.data.base import FileImageDataset, benchmark_dataset, present_images, safe_relative
from sdm.data.images import DatasetError

SOP_HEADER = ("image_id", "class_id", "super_class_id", "path")


def load_sop(
    dataset_root: str | Path = DEFAULT_DATASET_ROOT,
    allow_partial: bool = False,
    use_cache: bool = True,
    cache_size: int = RESIZE,
) -> FileImageDataset:
    """All SOP images listed in Ebay_info.txt, labels = their class_id.

    Class names are "<super class folder>/<class_id>", e.g. "bicycle_final/1". With
    `use_cache`, a valid resized cache built at shorter side `cache_size` is used.
    """
    root = Path(dataset_root)
    info_path = root / SOP_INFO
    if not info_path.is_file():
        raise DatasetError(_missing_message(root, info_path))
    sop_dir = root / SOP_FOLDER
    relative_paths, labels = read_sop_info(info_path)
    paths = [sop_dir / relative for relative in relative_paths]
    fix = (
        f"extract Stanford_Online_Products.zip into {root}/ so that the images it lists "
        f"are below {sop_dir}/"
    )
    present = present_images(paths, info_path, fix, allow_partial)
    class_names = {labels[i]: f"{relative_paths[i].parent}/{labels[i]}" for i in present}
    return benchmark_dataset(SOP, root, sop_dir, [paths[i] for i in present],
                             [labels[i] for i in present], class_names,
                             allow_partial=allow_partial, use_cache=use_cache,
                             cache_size=cache_size)


def read_sop_info(info_path: Path) -> tuple[list[PurePosixPath], list[int]]:
    """(image paths relative to the SOP folder, class ids) of the lines of an Ebay_*.txt file.

    The first line must be the header `image_id class_id super_class_id path`; a line that is
    not three integers and a path below the folder raises DatasetError naming its number.
    """
    lines = info_path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split()) != SOP_HEADER:
        found = repr(lines[0]) if lines else "an empty file"
        raise DatasetError(
            f"{info_path} must start with the header line {' '.join(SOP_HEADER)!r}, found "
            f"{found}; is it the Ebay_info.txt of Stanford_Online_Products.zip?"
        )
    relative_paths: list[PurePosixPath] = []
    labels: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(SOP_HEADER) or not all(map(_is_id, fields[:3])):
            raise DatasetError(
                f"{info_path}, line {number}: expected '{' '.join(SOP_HEADER)}' (three "
                f"integers and a path), found {line!r}"
            )
        relative_paths.append(safe_relative(fields[3], info_path))
        labels.append(int(fields[1]))
    return relative_paths, labels


def _missing_message(root: Path, info_path: Path) -> str:
    return (
        f"Stanford Online Products not found: looked for {info_path}; expected layout "
        f"<dataset_root>/{SOP_INFO} with the images below <dataset_root>/{SOP_FOLDER}/ "
        f"(e.g. bicycle_final/111085122871_0.JPG); download Stanford_Online_Products.zip and "
        f"extract it into {root}/ so that {info_path} exists"
    )


def _is_id(text: str) -> bool:
    """Whether `text` is a non-negative integer in ASCII digits."""
    return text.isascii() and text.isdigit()
