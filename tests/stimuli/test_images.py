import re

import numpy as np
import pytest
from PIL import Image

from stimuli.images import (
    ImageFolder,
    ImageTransform,
    UnreadableImageWarning,
    center_square,
    iter_batches,
    load_image,
)


def test_folder_streams_nested_images_in_batches(image_folder):
    source = ImageFolder(image_folder)
    assert len(source) == 24
    assert source.name(0) == "class0/deep/img03.png"  # sorted by relative path
    batches = list(iter_batches(source, ImageTransform(size=8), batch_size=10))
    assert [len(i) for i, _ in batches] == [10, 10, 4]
    assert batches[0][1].shape == (10, 3, 8, 8)


def test_corrupt_image_is_skipped_with_a_warning_naming_it(image_folder):
    bad = image_folder / "class1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    source = ImageFolder(image_folder)
    with pytest.warns(
        UnreadableImageWarning,
        match=re.escape(f"skipped unreadable image: cannot read image {bad}"),
    ):
        batches = list(iter_batches(source, ImageTransform(size=8), batch_size=64))
    assert sum(len(i) for i, _ in batches) == 24
    with pytest.raises(ValueError, match=f"^cannot read image {re.escape(str(bad))}: "):
        load_image(bad)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: ImageFolder(p / "missing"), "^image folder .*missing does not exist$"),
        (lambda p: ImageFolder(p), "^image folder .* holds no images"),
    ],
)
def test_bad_folders(tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        make(tmp_path)


def banded(*, vertical: bool) -> Image.Image:
    """40 x 20 (20 x 40 if ``vertical``) green with a red quarter at the left (top) end and a
    blue one at the right (bottom)."""
    pixels = np.zeros((40, 20, 3), np.uint8)  # long side first
    pixels[:] = (0, 255, 0)
    pixels[:10] = (255, 0, 0)
    pixels[-10:] = (0, 0, 255)
    if not vertical:
        pixels = pixels.transpose(1, 0, 2)  # H, W, 3: red on the left
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


@pytest.mark.parametrize("vertical", [False, True])
def test_the_model_sees_the_centre_square_undistorted(vertical):
    image = banded(vertical=vertical)
    assert image.size == ((20, 40) if vertical else (40, 20))
    exact = np.asarray(center_square(image, None))  # the middle 20 x 20, not resampled
    assert exact.shape == (20, 20, 3)
    assert (exact == (0, 255, 0)).all()
    half = center_square(image, 10)
    assert half.size == (10, 10)
    rgb = np.asarray(half).astype(int)
    assert (rgb[..., 1] > 200).all() and (rgb[..., 0] < 60).all() and (rgb[..., 2] < 60).all()
    x = ImageTransform(size=10, mean=(0.0,), std=(1.0,))(image)  # C, H, W in [0, 1]
    assert x.shape == (3, 10, 10)
    assert (x[1] > 0.8).all() and (x[0] < 0.25).all() and (x[2] < 0.25).all()
    # squashing the whole image would have put red and blue at the edges
    squashed = np.asarray(image.resize((10, 10), Image.Resampling.BILINEAR))
    assert squashed[..., 0].max() == 255 and squashed[..., 2].max() == 255


def test_center_square_follows_torchvision_arithmetic():
    """Resize(size) keeps int(size * long / short), CenterCrop rounds the offset."""
    image = Image.fromarray(np.arange(7 * 11 * 3, dtype=np.uint8).reshape(7, 11, 3))
    assert np.array_equal(np.asarray(center_square(image, 7)), np.asarray(image)[:, 2:9])
    assert np.array_equal(np.asarray(center_square(image, None)), np.asarray(image)[:, 2:9])
    assert center_square(image, 5).size == (5, 5)
    square = Image.new("RGB", (6, 6))
    assert center_square(square, 6) is square  # nothing to do
    with pytest.raises(ValueError, match="^size must be positive, not 0$"):
        center_square(image, 0)
