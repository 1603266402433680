"""ImageNet read from its folder layout with Pillow (lth_wandb.data.imagenet): classes, splits, open_lth's
transforms, and the errors a wrong folder gets."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from lth_wandb.data.imagenet import CROP_RATIO, CROP_SCALE, MEAN, STD, ImageNetFolder, crop_box

CLASSES = ("n01440764", "n01443537", "n01484850")


def folder(root, ext=".png", train=4, val=2, size=(40, 30)):
    """train/<class>/ and val/<class>/ of solid-colour images; class c's image i is (60c, 10i, 255 - 60c)."""
    for label, name in enumerate(CLASSES):
        for split, count in (("train", train), ("val", val)):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", size, (60 * label, 10 * i, 255 - 60 * label)).save(root / split / name / f"{i}{ext}")
    (root / "train" / CLASSES[0] / "README.txt").write_text("not an image")  # skipped
    return root


def colour(x: torch.Tensor) -> list[int]:
    """The (R, G, B) 0..255 of a standardised solid-colour image."""
    return [round(float(x[c].mean() * STD[c] + MEAN[c]) * 255) for c in range(3)]


def test_classes_splits_and_labels(tmp_path):
    dm = ImageNetFolder(str(folder(tmp_path)), batch_size=2, val_size=3, num_workers=0, image_size=16, resize=18)
    assert dm.num_classes == 3 and dm.classes == list(CLASSES) and dm.input_shape == (3, 16, 16)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (9, 3, 6)
    held = {p for p, _ in dm.val_set.samples}
    assert not held & {p for p, _ in dm.train_set.samples}  # validation is held out of train/, not val/
    assert all(p.parent.parent.name == "val" for p, _ in dm.test_set.samples)
    for dataset in (dm.train_set, dm.val_set, dm.test_set):
        for index in range(len(dataset)):
            x, label = dataset[index]
            assert x.shape == (3, 16, 16) and colour(x)[0] == 60 * label  # red says the class
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 16, 16) and y.dtype == torch.int64
    # The same seed holds out the same images.
    again = ImageNetFolder(str(tmp_path), val_size=3, num_workers=0, image_size=16, resize=18)
    again.setup()
    assert {p for p, _ in again.val_set.samples} == held


def test_evaluation_is_resize_then_centre_crop(tmp_path):
    # A 40x30 image with a white 2-pixel column at x = 19..20: resized to shorter side 15 (20x15), centre-cropped to
    # 12: columns 4..15 of the resized image, so the white column (x 9.5-10.5 after scaling) lands at 5..6.
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    image = Image.new("RGB", (40, 30), (0, 0, 0))
    for y in range(30):
        for x in (19, 20):
            image.putpixel((x, y), (255, 255, 255))
    image.save(tmp_path / "val" / "a" / "0.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "0.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "1.png")
    dm = ImageNetFolder(str(tmp_path), val_size=1, num_workers=0, image_size=12, resize=15)
    dm.setup()
    x, _ = dm.test_set[0]
    brightness = (x[0] * STD[0] + MEAN[0])[6]  # one row
    assert int(brightness.argmax()) in (5, 6) and float(brightness.max()) > 0.5 and float(brightness[0]) < 0.05


def test_random_resized_crop_stays_in_open_lths_ranges():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        left, top, right, bottom = crop_box(500, 375, generator)
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 500 and 0 <= top < bottom <= 375
        assert CROP_SCALE[0] - 0.01 <= w * h / (500 * 375) <= CROP_SCALE[1]
        assert math.log(CROP_RATIO[0]) - 0.05 <= math.log(w / h) <= math.log(CROP_RATIO[1]) + 0.05
    # A sliver no allowed crop fits: the centre crop at the nearest allowed ratio.
    assert crop_box(100, 4, generator) == (47, 0, 52, 4)


def test_a_wrong_folder_is_refused_with_what_is_expected(tmp_path):
    with pytest.raises(ValueError, match=r"data.root is not set: the ImageNet folder holding train/ and val/"):
        ImageNetFolder(None)
    with pytest.raises(FileNotFoundError, match=r"is not a folder\. Hint: data.root is the ImageNet folder"):
        ImageNetFolder(str(tmp_path / "missing")).setup()
    root = folder(tmp_path / "extra")
    (root / "val" / "n99999999").mkdir()
    with pytest.raises(ValueError, match=r"has class folders that train/ does not have: \['n99999999'\]\. Hint"):
        ImageNetFolder(str(root)).setup()
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"holds no .jpeg/.jpg/.png images\. Hint"):
        ImageNetFolder(str(tmp_path / "empty")).setup()
    (tmp_path / "bare" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"has no class folders\. Hint: one folder of images per class"):
        ImageNetFolder(str(tmp_path / "bare")).setup()
    with pytest.raises(ValueError, match=r"val_size=0 must be a count >= 1 or a fraction in \(0, 1\)"):
        ImageNetFolder(str(root), val_size=0)
    with pytest.raises(ValueError, match=r"val_size=12 holds out 12 of 12 training images"):
        ImageNetFolder(str(folder(tmp_path / "small")), val_size=12).setup()
    with pytest.raises(ValueError, match=r"resize=100 must be an int >= 224"):
        ImageNetFolder(str(root), resize=100)
