"""Per-image random SimCLR views on a batch tensor, checked against torchvision image by image."""

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop

from trainables.augment import CROP_RATIO, CROP_SCALE, JITTER, SimCLRAugment

TV_OPS = {
    "brightness": TF.adjust_brightness,
    "contrast": TF.adjust_contrast,
    "saturation": TF.adjust_saturation,
    "hue": TF.adjust_hue,
}


def _batch(channels, n=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)


def _torchvision_view(aug, image, v, b, mean, std):
    """Image ``b`` of a batch through torchvision's functional ops, under the same draws."""
    img = image.float() / 255
    top, left, h, w = (int(t) for t in v.boxes[b])
    img = TF.resized_crop(img, top, left, h, w, list(aug.size), antialias=False)
    if v.flip[b]:
        img = TF.horizontal_flip(img)
    if v.jitter[b]:
        for j in v.order:
            img = TV_OPS[aug.ops[j]](img, float(v.factors[b, j]))
    if v.gray[b]:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    return TF.normalize(img, list(mean), list(std))


@pytest.mark.parametrize("channels,size", [(3, 32), (1, 28), (3, 20)])
def test_views_match_torchvision_image_by_image(channels, size):
    mean, std = (0.4,) * channels, (0.25,) * channels
    aug = SimCLRAugment((size, size), channels, mean, std)
    x = _batch(channels, n=64, size=size)
    torch.manual_seed(3)
    v = aug.sample(x.shape, x.device)
    views = aug.apply(x, v)
    assert views.shape == x.shape and views.dtype == torch.float32
    # Every op was exercised somewhere in the batch.
    assert v.flip.any() and (~v.flip).any() and v.jitter.any() and (~v.jitter).any()
    assert (v.boxes[:, 2] < size).any()
    for b in range(len(x)):
        ref = _torchvision_view(aug, x[b], v, b, mean, std)
        torch.testing.assert_close(views[b], ref, atol=2e-5, rtol=0, msg=f"image {b}")


def test_each_image_gets_its_own_crop_box_from_the_configured_distribution():
    aug = SimCLRAugment((32, 32), 3, (0.5,) * 3, (0.25,) * 3)
    torch.manual_seed(0)
    v = aug.sample((4096, 3, 32, 32), torch.device("cpu"))
    top, left, h, w = v.boxes.T
    assert len({tuple(b) for b in v.boxes[:64].tolist()}) == 64  # no box shared by the batch
    assert ((top >= 0) & (left >= 0) & (top + h <= 32) & (left + w <= 32)).all()
    area = h * w / 32**2
    # The rounding to whole pixels widens the range a little.
    assert area.min() >= CROP_SCALE[0] * 0.8 and area.max() <= 1.0
    # Large areas with extreme ratios do not fit and are drawn again, as in torchvision.
    torch.manual_seed(0)
    tv = torch.tensor([RandomResizedCrop.get_params(torch.zeros(3, 32, 32), list(CROP_SCALE),
                                                    list(CROP_RATIO)) for _ in range(4096)])
    tv_area = tv[:, 2] * tv[:, 3] / 32**2
    assert area.mean() == pytest.approx(float(tv_area.mean()), abs=0.02)
    assert area.std() == pytest.approx(float(tv_area.std()), abs=0.02)
    ratio = w / h
    assert ratio.min() >= CROP_RATIO[0] * 0.8 and ratio.max() <= CROP_RATIO[1] * 1.25
    # The offsets are uniform over the room left: both edges are reached.
    small = h <= 16
    assert (top[small] == 0).any() and (top[small] + h[small] == 32).any()


def test_a_crop_that_never_fits_falls_back_to_the_whole_image():
    aug = SimCLRAugment((32, 32), 3, (0.5,) * 3, (0.25,) * 3, crop_scale=(2.0, 3.0))
    v = aug.sample((16, 3, 32, 32), torch.device("cpu"))
    assert v.boxes.tolist() == [[0, 0, 32, 32]] * 16


def test_the_configured_pipeline_rgb():
    aug = SimCLRAugment((32, 32), 3, (0.5,) * 3, (0.25,) * 3)
    assert aug.ops == ("brightness", "contrast", "saturation", "hue")
    torch.manual_seed(1)
    v = aug.sample((20_000, 3, 32, 32), torch.device("cpu"))
    assert v.flip.float().mean() == pytest.approx(0.5, abs=0.02)
    assert v.jitter.float().mean() == pytest.approx(0.8, abs=0.02)
    assert v.gray.float().mean() == pytest.approx(0.2, abs=0.02)
    for j, name in enumerate(aug.ops):
        f = v.factors[:, j]
        lo, hi = (-JITTER[name], JITTER[name]) if name == "hue" else (
            1 - JITTER[name], 1 + JITTER[name])
        assert f.min() >= lo and f.max() <= hi
        assert f.min() < lo + 0.01 and f.max() > hi - 0.01
    assert sorted(v.order) == [0, 1, 2, 3]


def test_one_channel_images_get_crop_flip_brightness_and_contrast_only():
    aug = SimCLRAugment((28, 28), 1, (0.3,), (0.35,))
    assert aug.ops == ("brightness", "contrast")
    torch.manual_seed(0)
    v = aug.sample((4096, 1, 28, 28), torch.device("cpu"))
    assert v.factors.shape == (4096, 2) and not v.gray.any()
    assert v.factors.min() >= 1 - JITTER["brightness"]
    assert v.factors.max() <= 1 + JITTER["brightness"]
    assert (v.boxes[:, 2] < 28).float().mean() > 0.5  # most views are real crops


def test_the_jitter_order_is_drawn_per_batch():
    aug = SimCLRAugment((32, 32), 3, (0.5,) * 3, (0.25,) * 3)
    orders = [tuple(aug.sample((2, 3, 32, 32), torch.device("cpu")).order) for _ in range(240)]
    assert len(set(orders)) == math.factorial(4)  # every order of the four ops comes up
    assert max(map(orders.count, set(orders))) < 25  # about 10 each


def _views(seed, x):
    torch.manual_seed(seed)
    return SimCLRAugment((32, 32), 3, (0.5,) * 3, (0.25,) * 3, seed=seed)(x)


def test_same_seed_same_views_other_seed_other_views():
    x = _batch(3)
    a, b, c = _views(7, x), _views(7, x), _views(8, x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
