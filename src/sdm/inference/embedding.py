"""``embed(model, images)``: L2-normalized embeddings of images, in their order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from sdm.data.base import ImageDataset
from sdm.inference.errors import InferenceError
from sdm.inference.loading import InferenceModel
from sdm.inference.sources import NO_LABEL, ImageSource, item_names, load_experiment_images

Images = (torch.Tensor | ImageDataset | ImageSource | str | Path
          | Sequence[str | Path | Image.Image])
DEFAULT_BATCH_SIZE = 64


class PILImages(ImageDataset):
    """Images already in memory as PIL images, unlabelled."""

    def __init__(self, images: Sequence[Image.Image]):
        super().__init__(np.full(len(images), NO_LABEL), "pil_images")
        self.images = list(images)

    def load_image(self, index: int) -> Image.Image:
        return self.images[index]


def embed(
    model: InferenceModel, images: Images, *, batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0, progress: bool = False,
) -> np.ndarray:
    """float32 (N, D) embeddings, L2-normalized, row i for image i.

    ``images``: a float tensor (N, *model.input_shape) already transformed; an ImageDataset
    or ImageSource (their images go through ``model.transform``); PIL images; or what
    ``load_images`` accepts (image files, a folder, a CSV file, a dataset name — found below
    the experiment's ``dataset.root``). Every image must come out of the transform at the
    model's input shape; one that does not is an InferenceError naming it. ``progress`` shows
    a progress bar on a terminal; ``num_workers`` are DataLoader processes.
    """
    if isinstance(images, torch.Tensor):
        _check_shape(model, images.shape[1:], "the tensor's images")
        starts = range(0, len(images), batch_size)
        return _run(model, ((images[s:s + batch_size], s) for s in starts), len(images),
                    progress)
    source = _as_source(model, images)
    dataset = source.dataset.with_transform(model.transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=list)

    def batches():
        start = 0
        for items in loader:
            for offset, (image, _) in enumerate(items):
                _check_shape(model, image.shape, source.names[start + offset])
            yield torch.stack([image for image, _ in items]), start
            start += len(items)

    return _run(model, batches(), len(dataset), progress)


def _as_source(model: InferenceModel, images: Images) -> ImageSource:
    if isinstance(images, ImageSource):
        return images
    if isinstance(images, ImageDataset):
        return ImageSource(images, item_names(images), True, {})
    if not isinstance(images, str | Path) and images and all(
            isinstance(image, Image.Image) for image in images):
        pil = PILImages(images)  # type: ignore[arg-type]
        return ImageSource(pil, item_names(pil), False, {})
    return load_experiment_images(images, model.config)  # type: ignore[arg-type]


@torch.no_grad()
def _run(model: InferenceModel, batches, total: int, progress: bool) -> np.ndarray:
    output = np.empty((total, model.embedding_dim), dtype=np.float32)
    with tqdm(total=total, unit="img", desc="embedding", disable=None if progress else True,
              leave=False) as bar:
        for batch, start in batches:
            embedded = model(batch.to(model.device, non_blocking=True)).float().cpu().numpy()
            output[start:start + len(batch)] = embedded
            bar.update(len(batch))
    return output


def _check_shape(model: InferenceModel, shape: Sequence[int], what: str) -> None:
    if tuple(shape) != model.input_shape:
        raise InferenceError(
            f"{what}: input of shape {tuple(shape)} after the experiment's eval transform, but "
            f"the model takes {model.input_shape} (channels, height, width); give images of "
            "the size the experiment was trained on")
