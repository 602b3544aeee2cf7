"""Per-image random SimCLR views on a batch tensor."""

import torch

from trainables.augment import SimCLRAugment


def _batch(channels, n=8, size=32):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)


def test_each_image_gets_its_own_crop():
    aug = SimCLRAugment((32, 32), 3, (0.5,) * 3, (0.25,) * 3)
    same = _batch(3, n=1).repeat(8, 1, 1, 1)  # eight copies of one image
    torch.manual_seed(0)
    views = aug(same)
    assert views.shape == (8, 3, 32, 32) and views.dtype == torch.float32
    distinct = {tuple(v.flatten()[:64].tolist()) for v in views}
    assert len(distinct) == 8


def test_same_seed_same_views_other_seed_other_views():
    aug = SimCLRAugment((32, 32), 3, (0.5,) * 3, (0.25,) * 3)
    x = _batch(3)
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    b = aug(x)
    torch.manual_seed(8)
    c = aug(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_one_channel_images_are_augmented():
    aug = SimCLRAugment((28, 28), 1, (0.3,), (0.35,))
    x = _batch(1, size=28)
    torch.manual_seed(0)
    views = aug(x)
    assert views.shape == (8, 1, 28, 28)
    plain = (x.float() / 255 - 0.3) / 0.35
    assert not torch.allclose(views, plain)
