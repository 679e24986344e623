import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from sdm.data.transforms import build_transform


def solid(colour, size=(400, 300), mode="RGB"):
    return Image.new(mode, size, colour)


def test_bninception_eval_of_a_solid_colour_is_bgr_minus_mean():
    out = build_transform("bninception", train=False)(solid((10, 20, 30)))
    assert out.shape == (3, 227, 227) and out.dtype == torch.float32
    # channels B, G, R; values 0-255 minus the BGR mean (104, 117, 128); std 1
    assert torch.equal(out[0], torch.full((227, 227), 30.0 - 104.0))
    assert torch.equal(out[1], torch.full((227, 227), 20.0 - 117.0))
    assert torch.equal(out[2], torch.full((227, 227), 10.0 - 128.0))


def test_bninception_eval_is_a_center_crop_with_channels_reversed():
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = build_transform("bninception", train=False)(Image.fromarray(pixels))
    # A 256x256 image is already resized; the 227 crop starts at round((256 - 227) / 2) = 14.
    crop = pixels[14 : 14 + 227, 14 : 14 + 227].astype(np.float32)
    expected = np.stack([crop[:, :, 2] - 104, crop[:, :, 1] - 117, crop[:, :, 0] - 128])
    np.testing.assert_array_equal(out.numpy(), expected)


def test_grayscale_input_becomes_three_equal_channels():
    out = build_transform("bninception", train=False)(solid(50, mode="L"))
    assert out.shape == (3, 227, 227)
    assert out[:, 0, 0].tolist() == [50 - 104, 50 - 117, 50 - 128]


def test_imagenet_normalization_values():
    out = build_transform("imagenet", train=False)(solid((10, 20, 30), size=(300, 500)))
    assert out.shape == (3, 227, 227)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for channel, value in enumerate((10, 20, 30)):
        expected = (value / 255 - mean[channel]) / std[channel]
        assert torch.allclose(out[channel], torch.tensor(expected), atol=1e-5)


@pytest.mark.parametrize("convention", ["bninception", "imagenet"])
def test_train_crops_have_the_crop_size_and_are_random(convention):
    pixels = np.random.default_rng(1).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    transform = build_transform(convention, train=True)
    torch.manual_seed(0)
    first = transform(Image.fromarray(pixels))
    second = transform(Image.fromarray(pixels))
    torch.manual_seed(0)
    repeated = transform(Image.fromarray(pixels))
    assert first.shape == second.shape == (3, 227, 227)
    assert not torch.equal(first, second)
    assert torch.equal(first, repeated)


def test_resize_and_crop_sizes_are_parameters():
    transform = build_transform("imagenet", train=False, resize=64, crop=56)
    assert transform(solid((1, 2, 3))).shape == (3, 56, 56)
    transform = build_transform("bninception", train=True, resize=64, crop=48)
    assert transform(solid((1, 2, 3))).shape == (3, 48, 48)


def test_glyph_pipeline_is_one_channel_in_minus_one_to_one():
    eval_transform = build_transform("glyph", train=False)
    white = eval_transform(solid(255, size=(32, 32), mode="L"))
    assert white.shape == (1, 32, 32) and torch.equal(white, torch.ones(1, 32, 32))
    black = eval_transform(solid(0, size=(32, 32), mode="L"))
    assert torch.equal(black, -torch.ones(1, 32, 32))
    # RGB input is converted to L with ITU-R 601-2 luma: 10*0.299 + 20*0.587 + 30*0.114 = 18.15
    grey = eval_transform(solid((10, 20, 30), size=(32, 32)))
    assert torch.allclose(grey, torch.full((1, 32, 32), (18 / 255 - 0.5) / 0.5))


def test_glyph_train_jitter_is_mild_and_keeps_the_size():
    pixels = np.zeros((32, 32), dtype=np.uint8)
    pixels[8:24, 8:24] = 255  # a centred white square on black
    transform = build_transform("glyph", train=True)
    torch.manual_seed(0)
    outputs = [transform(Image.fromarray(pixels)) for _ in range(8)]
    assert all(out.shape == (1, 32, 32) for out in outputs)
    assert any(not torch.equal(outputs[0], out) for out in outputs[1:])
    for out in outputs:  # at most 5 degrees, 5% shift, 5% scale: the core stays white
        assert torch.equal(out[0, 12:20, 12:20], torch.ones(8, 8))
        assert out[0, 0, 0] == -1.0


def test_transforms_pickle_for_dataloader_workers():
    for convention in ("bninception", "imagenet", "glyph"):
        for train in (False, True):
            pickle.loads(pickle.dumps(build_transform(convention, train)))


def test_unknown_convention_names_the_known_ones():
    with pytest.raises(ValueError, match="bninception"):
        build_transform("bgr", train=False)
