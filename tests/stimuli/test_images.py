import re

import pytest

from stimuli.images import (
    ImageFolder,
    ImageTransform,
    UnreadableImageWarning,
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
