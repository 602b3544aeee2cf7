"""Split points against Table 3, block MACs against Table 1, heads, gradient isolation."""

import pytest
import torch
from torchvision.models.resnet import BasicBlock, Bottleneck

from trainables.config import TrainConfig
from trainables.cost import block_costs, max_block_macs
from trainables.errors import ConfigError
from trainables.models import DecoupledResNet, LocalHead, MLPHead, split_points
from trainables.trainer import Trainer

TABLE_3 = {
    4: [(2, 1), (3, 1), (3, 5)],
    8: [(1, 2), (2, 1), (2, 3), (3, 1), (3, 3), (3, 5), (4, 1)],
    16: [(li, bi) for li, n in enumerate((3, 4, 6, 3), 1) for bi in range(1, n + 1)][:-1],
}
TABLE_1_MAX_MACS = {1: 1.31e9, 4: 349e6, 8: 196e6, 16: 123e6}  # ResNet-50, CIFAR-10


@pytest.mark.parametrize("K", [4, 8, 16])
def test_resnet50_split_points_equal_table_3(K):
    assert split_points("resnet50", K) == TABLE_3[K]
    assert DecoupledResNet("resnet50", K).split_points == TABLE_3[K]


def test_resnet18_split_points():
    assert split_points("resnet18", 1) == []
    assert split_points("resnet18", 4) == [(1, 2), (2, 2), (3, 2)]
    assert len(split_points("resnet18", 8)) == 7


@pytest.mark.parametrize("K", [1, 4, 8, 16])
def test_max_block_macs_match_table_1(K):
    costs = block_costs(DecoupledResNet("resnet50", K), (3, 32, 32))
    assert len(costs) == K
    assert max_block_macs(costs) == pytest.approx(TABLE_1_MAX_MACS[K], rel=0.04)


def test_blocks_use_torchvision_residual_blocks_and_paper_heads():
    r50 = DecoupledResNet("resnet50", 4)
    r18 = DecoupledResNet("resnet18", 2, in_channels=1)
    assert sum(isinstance(m, Bottleneck) for m in r50.modules()) == 16
    assert sum(isinstance(m, BasicBlock) for m in r18.modules()) == 8
    assert all(isinstance(h, LocalHead) for h in r50.heads[:-1])
    assert isinstance(r50.heads[-1], MLPHead)
    conv = r50.heads[0].net[0]
    assert conv.kernel_size == (3, 3) and conv.stride == (2, 2)
    assert conv.in_channels == conv.out_channels == r50.channels[0]
    assert r50.heads[0].net[-1].out_features == 128
    # Stems (appendix): 3x3/s1 without max-pool; STL-10 5x5/s2.
    assert r18.blocks[0][0][0].kernel_size == (3, 3) and r18.blocks[0][0][0].in_channels == 1
    stl = DecoupledResNet("resnet50", 1, stem="stl10")
    assert stl.blocks[0][0][0].kernel_size == (5, 5) and stl.blocks[0][0][0].stride == (2, 2)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in stl.modules())


def test_width_multiplier_narrows_channels():
    assert DecoupledResNet("resnet18", 1, width=0.25).channels == [128]
    assert DecoupledResNet("resnet50", 1).channels == [2048]


@pytest.mark.parametrize("arch,K", [("resnet18", 3), ("resnet50", 5), ("resnet18", 16)])
def test_K_that_does_not_divide_is_refused(arch, K):
    with pytest.raises(ConfigError, match=f"K={K} does not divide"):
        DecoupledResNet(arch, K)


def test_block_loss_touches_only_its_own_block():
    cfg = TrainConfig(dataset="digits", K=4, width=0.25, batch_size=16, subset=64)
    trainer = Trainer(cfg)
    views = trainer.augment(trainer.data.pretrain[:16])
    h = torch.cat([views, views.flip(0)])
    for k in range(cfg.K):
        trainer.optimizer.zero_grad(set_to_none=True)
        h, out = trainer.block_step(k, h)
        out.loss.backward()
        for j in range(cfg.K):
            params = [*trainer.model.blocks[j].parameters(), *trainer.model.heads[j].parameters()]
            grads = [p.grad for p in params if p.grad is not None and p.grad.abs().sum() > 0]
            if j == k:
                assert grads, f"block {k + 1}'s loss gave block {k + 1} no gradient"
            else:
                assert not grads, f"block {k + 1}'s loss reached block {j + 1}"


def test_head_designs_shapes_and_counted_cost():
    """``mlp``: the pooled two-layer projector at every block, no conv; ``paper`` is the default
    and unchanged. MACs are counted on the modules, then compared with what each layer does."""
    from trainables.cost import cost_summary

    paper, default = DecoupledResNet("resnet50", 16, head="paper"), DecoupledResNet("resnet50", 16)
    assert [type(h) for h in paper.heads] == [type(h) for h in default.heads]
    mlp = DecoupledResNet("resnet50", 16, head="mlp")
    assert all(isinstance(h, MLPHead) for h in mlp.heads)
    x = torch.randn(2, 3, 32, 32)
    for model in (paper, mlp):
        h = x
        for block, head in zip(model.blocks, model.heads):
            h = block(h)
            assert head(h).shape == (2, 128)
    costs = {name: block_costs(m, (3, 32, 32)) for name, m in (("paper", paper), ("mlp", mlp))}
    for c, channels in zip(costs["mlp"], mlp.channels):
        assert c.head_macs == channels * channels + channels * 128  # the two linear layers
    for c, channels, (h_, w_) in zip(costs["paper"][:-1], paper.channels,
                                     [(b.output_shape[1], b.output_shape[2])
                                      for b in costs["paper"]]):
        conv = channels * channels * 9 * ((h_ + 1) // 2) * ((w_ + 1) // 2)
        assert c.head_macs == conv + channels * channels + channels * 128
    # The blocks are the same whatever the heads: only the parallel cost with heads moves.
    s_paper, s_mlp = cost_summary(costs["paper"]), cost_summary(costs["mlp"])
    assert s_paper["max_block_macs"] == s_mlp["max_block_macs"]
    assert s_paper["encoder_params"] == s_mlp["encoder_params"]
    assert s_mlp["max_block_head_macs"] < s_paper["max_block_head_macs"]
    assert s_paper["max_block_head_macs"] == max(c.macs + c.head_macs for c in costs["paper"])
    assert s_mlp["head_params"] < s_paper["head_params"] / 5


def test_unknown_head_is_refused():
    with pytest.raises(ConfigError, match="head='conv' is unknown; allowed: paper, mlp"):
        DecoupledResNet("resnet18", 2, head="conv")
