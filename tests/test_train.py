"""The training loop on digits: it learns, it resumes exactly, and the command speaks JSON."""

import json
import subprocess
import sys

import pytest
import torch

from trainables.config import TrainConfig
from trainables.errors import ConfigError
from trainables.train import Trainer


@pytest.mark.slow
def test_every_block_learns_and_knn_beats_chance():
    cfg = TrainConfig(dataset="digits", K=4, threshold=0.0, epochs=4, batch_size=128)
    history = Trainer(cfg).fit()
    first, last = history[0], history[-1]
    for k in range(cfg.K):
        assert last["loss"][k] < first["loss"][k], f"block {k + 1}'s loss did not fall"
    assert last["knn_val_acc"] > 0.5  # chance is 0.1
    assert all(0.0 <= v <= 1.0 for r in history for v in r["kept_pos"] + r["kept_neg"])


def test_resume_matches_the_uninterrupted_run(tmp_path):
    cfg = TrainConfig(dataset="digits", K=2, threshold=0.2, epochs=2, batch_size=64, subset=256)
    straight = Trainer(cfg)
    straight.fit()

    first = Trainer(cfg)
    first.fit(epochs=1, checkpoint=tmp_path / "run.pt")
    del first
    resumed = Trainer.from_checkpoint(tmp_path / "run.pt")
    assert resumed.epoch == 1
    resumed.fit()

    a, b = straight.history[1], resumed.history[1]
    for key in ("loss", "kept_pos", "kept_neg", "knn_val_acc"):
        assert a[key] == pytest.approx(b[key], rel=1e-5), key
    after = resumed.model.state_dict()
    for name, p in straight.model.state_dict().items():
        torch.testing.assert_close(p, after[name], rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_path_runs_on_a_cpu_and_tracks_float32():
    """The CUDA fast path (bf16 autocast, channels_last) as far as a CPU can run it: the same
    first step as float32 to within bf16's precision, the loss itself in float32."""
    cfg = dict(dataset="digits", K=2, threshold=0.0, epochs=1, batch_size=64, subset=256,
               device="cpu")
    fp32, bf16 = Trainer(TrainConfig(**cfg, precision="fp32")), Trainer(
        TrainConfig(**cfg, precision="bf16"))
    assert not fp32.bf16 and bf16.bf16
    conv = bf16.model.blocks[1][0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    images = fp32.data.pretrain[:64]
    torch.manual_seed(1)
    a = fp32.train_step(images)
    torch.manual_seed(1)
    b = bf16.train_step(images)
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    torch.testing.assert_close(b[:, 0], a[:, 0], rtol=2e-3, atol=0.0)  # the loss per block
    record = bf16.train_epoch()
    assert 0.0 <= record["knn_val_acc"] <= 1.0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"K": 3}, "K=3 does not divide the 8 residual blocks of resnet18; allowed: 1, 2, 4, 8"),
        ({"threshold": 1.5}, "threshold=1.5 is outside"),
        ({"dataset": "mnist"}, "dataset='mnist' is unknown; allowed: digits, fmnist"),
        ({"arch": "vgg"}, "arch='vgg' is unknown; allowed: resnet18, resnet50"),
        ({"subsample": "all"}, "subsample='all' is unknown"),
        ({"tau": 0}, "tau=0 must be a positive number"),
        ({"precision": "fp16"}, "precision='fp16' is unknown; allowed: auto, bf16, fp32"),
    ],
)
def test_bad_config_names_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**kwargs)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "study.train", *args], capture_output=True, text=True, timeout=300
    )


def test_command_prints_json_history_last():
    res = _cli("--dataset", "digits", "--K", "2", "--threshold", "0.0", "--epochs", "2",
               "--subset", "128", "--batch-size", "64", "--linear-epochs", "3", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r["epoch"] for r in out["history"]] == [1, 2]
    for r in out["history"]:
        assert len(r["loss"]) == len(r["kept_pos"]) == len(r["kept_neg"]) == 2
    assert out["knn_val_acc"] == out["history"][-1]["knn_val_acc"]
    for key in ("probe_val_acc", "probe_test_acc", "effective_rank"):
        assert len(out[key]) == 2, key
    assert 0 <= out["linear_val_acc"] <= 1 and 0 <= out["linear_test_acc"] <= 1
    assert out["max_block_macs"] > 0 and out["peak_memory_bytes"] is None
    assert "epoch 2/2" in res.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--K", "3"], "error: K=3 does not divide"),
        (["--threshold", "2"], "error: threshold=2.0 is outside [-1, 1]"),
        (["--threshold", "high"], "error: argument --threshold: 'high' is not a number"),
        (["--dataset", "imagenet"], "error: dataset='imagenet' is unknown"),
        (["--dataset", "cifar10", "--no-download", "--data-dir", "/nonexistent"],
         "put the files in /nonexistent/cifar-10-batches-py/"),
    ],
)
def test_command_bad_input_is_one_line(args, message):
    res = _cli(*args)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
