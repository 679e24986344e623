"""Builders of tiny on-disk datasets in the real CUB-200-2011, Cars196, SOP and In-Shop layouts.

Plain functions (not pytest fixtures) so any test can call them with its own tmp_path.
Images carry a class-dependent colour and stripe pattern plus per-image noise, so a model
can learn something from them.
"""

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

CARS_FIELDS = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
SOP_SUPER_CLASSES = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle")
SOP_HEADER = "image_id class_id super_class_id path"
INSHOP_CATEGORIES = (("WOMEN", "Dresses"), ("MEN", "Denim"), ("WOMEN", "Blouses_Shirts"))
INSHOP_VIEWS = ("front", "side", "back", "full")


def class_pattern(label: int, index: int, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 array (height, width, 3) for image `index` of class `label`.

    Colour and stripe period/orientation depend on the label; noise depends on both.
    """
    width, height = size
    colour = np.array([(label * 67) % 256, (label * 131 + 50) % 256, (label * 29 + 100) % 256])
    period = 4 + label % 5
    axis = np.arange(width if label % 2 == 0 else height)
    stripes = ((axis // (period // 2 + 1)) % 2).astype(np.float64)
    stripes = stripes[None, :] if label % 2 == 0 else stripes[:, None]
    shade = 0.6 + 0.4 * np.broadcast_to(stripes, (height, width))
    noise = np.random.default_rng(1000 * label + index).normal(0, 8, (height, width, 3))
    return np.clip(shade[:, :, None] * colour + noise, 0, 255).astype(np.uint8)


def make_cub_tree(
    root: Path, num_classes: int = 8, per_class: int = 4, size: tuple[int, int] = (60, 40)
) -> Path:
    """Write a tiny CUB-200-2011 tree below `root`; return `root` (the dataset root).

    Layout: root/cub2011/CUB_200_2011/images/<NNN.Class_name>/<Class_name>_<k>.jpg with
    images.txt, image_class_labels.txt and classes.txt beside images/ (1-based ids, as in
    the official files). `size` is (width, height) in pixels.
    """
    cub = Path(root) / "cub2011" / "CUB_200_2011"
    images_lines, label_lines, class_lines = [], [], []
    image_id = 0
    for label in range(num_classes):
        class_name = f"Bird_{label:03d}"
        folder_name = f"{label + 1:03d}.{class_name}"
        class_lines.append(f"{label + 1} {folder_name}")
        (cub / "images" / folder_name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            image_id += 1
            relative = f"{folder_name}/{class_name}_{k:04d}.jpg"
            pixels = class_pattern(label, k, size)
            Image.fromarray(pixels).save(cub / "images" / relative, quality=95)
            images_lines.append(f"{image_id} {relative}")
            label_lines.append(f"{image_id} {label + 1}")
    (cub / "images.txt").write_text("\n".join(images_lines) + "\n")
    (cub / "image_class_labels.txt").write_text("\n".join(label_lines) + "\n")
    (cub / "classes.txt").write_text("\n".join(class_lines) + "\n")
    return Path(root)


def make_cars_tree(root: Path, num_classes: int = 8, per_class: int = 4) -> Path:
    """Write a tiny Cars196 tree below `root`; return `root` (the dataset root).

    root/cars196/cars_annos.mat holds a 1xN struct array `annotations` with the real fields
    (relative_im_path 'car_ims/000001.jpg', bbox_x1..bbox_y2, class 1..num_classes, test)
    and a 1xC cell `class_names`; images are root/cars196/car_ims/NNNNNN.jpg. Classes are
    interleaved (image i has class i % num_classes + 1) and image widths vary.
    """
    cars = Path(root) / "cars196"
    (cars / "car_ims").mkdir(parents=True, exist_ok=True)
    count = num_classes * per_class
    annotations = np.zeros((1, count), dtype=[(field, object) for field in CARS_FIELDS])
    for i in range(count):
        label = i % num_classes + 1
        width, height = 64 + 4 * (i % 3), 48
        relative = f"car_ims/{i + 1:06d}.jpg"
        Image.fromarray(class_pattern(label, i, (width, height))).save(cars / relative, quality=95)
        bbox = [np.uint16(v) for v in (2, 3, width - 2, height - 3)]
        annotations[0, i] = (relative, *bbox, np.uint8(label), np.uint8(i % 2))
    class_names = np.array(
        [[f"Car Maker Model {c} 2012" for c in range(1, num_classes + 1)]], dtype=object
    )
    scipy.io.savemat(
        cars / "cars_annos.mat", {"annotations": annotations, "class_names": class_names}
    )
    return Path(root)


def make_sop_tree(
    root: Path,
    num_classes: int = 12,
    per_class: int = 3,
    num_super_classes: int = 3,
    size: tuple[int, int] = (32, 24),
) -> Path:
    """Write a tiny Stanford Online Products tree below `root`; return `root`.

    As in Stanford_Online_Products.zip: root/Stanford_Online_Products/Ebay_info.txt (header
    `image_id class_id super_class_id path`, image ids 1..N, class ids 1..num_classes in
    contiguous runs per super class), Ebay_train.txt (the first ceil(n/2) classes) and
    Ebay_test.txt (the others) with the same header and ids, and the JPEGs at
    <super class>_final/<product id>_<k>.JPG. `size` is (width, height) in pixels.
    """
    sop = Path(root) / "Stanford_Online_Products"
    num_train_classes = num_classes - num_classes // 2
    parts: dict[str, list[str]] = {"Ebay_info": [], "Ebay_train": [], "Ebay_test": []}
    for class_id in range(1, num_classes + 1):
        super_id = (class_id - 1) * num_super_classes // num_classes + 1
        folder = f"{SOP_SUPER_CLASSES[super_id - 1]}_final"
        (sop / folder).mkdir(parents=True, exist_ok=True)
        official = "Ebay_train" if class_id <= num_train_classes else "Ebay_test"
        for k in range(per_class):
            relative = f"{folder}/{111085122870 + class_id}_{k}.JPG"
            Image.fromarray(class_pattern(class_id, k, size)).save(sop / relative, quality=95)
            line = f"{len(parts['Ebay_info']) + 1} {class_id} {super_id} {relative}"
            parts["Ebay_info"].append(line)
            parts[official].append(line)
    for name, lines in parts.items():
        (sop / f"{name}.txt").write_text("\n".join([SOP_HEADER, *lines]) + "\n")
    return Path(root)


def inshop_item_ids(num_train_items: int, num_test_items: int) -> tuple[list[int], list[int]]:
    """(train item numbers, query/gallery item numbers) that make_inshop_tree writes.

    Train items are 2, 5, 8, ...; query/gallery items 3, 6, 9, ... (interleaved, as in the
    official file, where train and test items alternate in id order).
    """
    return [2 + 3 * j for j in range(num_train_items)], [3 + 3 * j for j in range(num_test_items)]


def make_inshop_tree(
    root: Path,
    num_train_items: int = 10,
    num_test_items: int = 6,
    per_item: int = 3,
    size: tuple[int, int] = (24, 32),
) -> Path:
    """Write a tiny In-Shop Clothes Retrieval tree below `root`; return `root`.

    root/inshop/list_eval_partition.txt as in the official Eval/ folder: line 1 the image
    count, line 2 the header `image_name item_id evaluation_status`, then one line per image
    (`img/<GENDER>/<Category>/id_XXXXXXXX/NN_k_<view>.jpg id_XXXXXXXX <status>`), items in id
    order; images at root/inshop/img/... . Items come from inshop_item_ids; the images of a
    train item are "train", those of a query/gallery item alternate "query" (k even) and
    "gallery" (k odd). `size` is (width, height) in pixels.
    """
    inshop = Path(root) / "inshop"
    train_items, test_items = inshop_item_ids(num_train_items, num_test_items)
    lines: list[str] = []
    for index, number in enumerate(sorted(train_items + test_items)):
        gender, category = INSHOP_CATEGORIES[index % len(INSHOP_CATEGORIES)]
        item = f"id_{number:08d}"
        (inshop / "img" / gender / category / item).mkdir(parents=True, exist_ok=True)
        for k in range(per_item):
            view = INSHOP_VIEWS[k % len(INSHOP_VIEWS)]
            relative = f"img/{gender}/{category}/{item}/{k // 4 + 1:02d}_{k % 4 + 1}_{view}.jpg"
            Image.fromarray(class_pattern(number, k, size)).save(inshop / relative, quality=95)
            status = "train" if number in train_items else ("query", "gallery")[k % 2]
            lines.append(f"{relative:<56}{item:<16}{status}")  # padded like the real file
    header = [str(len(lines)), "image_name item_id evaluation_status"]
    (inshop / "list_eval_partition.txt").write_text("\n".join(header + lines) + "\n")
    return Path(root)


def write_jpeg(
    path: Path,
    mode: str,
    colour: tuple[int, int, int] = (200, 40, 90),
    size: tuple[int, int] = (48, 32),
) -> Path:
    """Write a solid `colour` JPEG stored in `mode` ('RGB', 'L' or 'CMYK'); return `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path, format="JPEG", quality=95)
    return path


def write_corrupt_jpeg(path: Path) -> Path:
    """Write a file that starts like a JPEG but cannot be decoded; return `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 8)
    return path


# Float32 ranking keys of unit-norm embeddings are exact to about 1e-6 in squared distance
# (see sdm.metrics): fixtures whose ranking_margin exceeds this score the same under any
# float rounding.
TIE_MARGIN = 1e-5


def ranking_margin(queries, query_labels, references=None, reference_labels=None) -> float:
    """The smallest squared-distance gap (in float64) between two neighbours of a query that
    are next to each other in its ranking, of different relevance, and among its R + 1
    nearest (R = relevant references): rounding errors below it cannot change P@1,
    R-Precision or MAP@R. Without references the queries are their own, each one's own item
    excluded. Tensors: (N, D) and (N,), (M, D) and (M,)."""
    self_retrieval = references is None
    if self_retrieval:
        references, reference_labels = queries, query_labels
    queries, references = queries.double(), references.double()
    distances = ((queries[:, None, :] - references[None, :, :]) ** 2).sum(dim=2)
    candidates = len(references) - int(self_retrieval)
    if self_retrieval:
        distances.fill_diagonal_(float("inf"))
    margin = float("inf")
    for row, label in enumerate(query_labels.tolist()):
        ranked, order = distances[row].sort()
        relevant = (reference_labels[order] == label)[:candidates]
        for k in range(min(int(relevant.sum()), candidates - 1)):
            if relevant[k] != relevant[k + 1]:
                margin = min(margin, float(ranked[k + 1] - ranked[k]))
    return margin
