"""The pipelined trainer against the sequential step: the same parameters, optimiser state,
losses, kept ratios and random state after the same epochs (bit-equal on a CPU with one thread
per process: the same kernels in the same order), checkpoints that continue either way, the
partition, bad input, and a killed stage that fails the epoch within seconds."""

import os
import signal
import threading
import time

import pytest
import torch

from trainables.config import TrainConfig
from trainables.errors import ConfigError
from trainables.pipeline import (
    PipelinedTrainer,
    PipelineError,
    balanced_partition,
    check_stage_devices,
    describe_partition,
    even_partition,
    plan_partition,
)
from trainables.trainer import Trainer

CFG = dict(dataset="digits", K=4, threshold=0.2, batch_size=64, subset=256, device="cpu",
           monitor_images=100)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the stages run one thread each: the same kernels
    yield
    torch.set_num_threads(before)


def _equal_runs(a: Trainer, b: Trainer) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:  # parameters and BatchNorm statistics
        assert torch.equal(sa[name], sb[name]), name
    oa, ob = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert oa.keys() == ob.keys()
    for i in oa:
        for key in oa[i]:
            assert torch.equal(oa[i][key], ob[i][key]), (i, key)
    assert a.epoch == b.epoch and len(a.history) == len(b.history)
    for ra, rb in zip(a.history, b.history):
        for key in ("loss", "kept_pos", "kept_neg", "threshold", "knn_val_acc"):
            assert ra[key] == rb[key], (ra["epoch"], key)
    assert a.augment.rng.getstate() == b.augment.rng.getstate()


def _sequential(epochs: int, precision: str = "fp32") -> tuple[Trainer, torch.Tensor]:
    trainer = Trainer(TrainConfig(**CFG, epochs=epochs, precision=precision))
    trainer.fit()
    return trainer, torch.get_rng_state()


@pytest.mark.parametrize("stages,precision", [
    (2, "fp32"), pytest.param(4, "fp32", marks=pytest.mark.slow),
    # bf16 autocast with channels_last, as on CUDA: bf16 activations between the stages
    pytest.param(2, "bf16", marks=pytest.mark.slow),
])
def test_a_pipelined_run_equals_the_sequential_one(one_thread, stages, precision):
    sequential, rng = _sequential(epochs=2, precision=precision)
    pipelined = Trainer(TrainConfig(**CFG, epochs=2, precision=precision))
    with PipelinedTrainer(pipelined, stages, "even", threads=1) as p:
        p.fit()
        assert len(p.stats) == 2 and all(s.steps == 4 for s in p.stats)
        assert all(len(s.stages) == stages and s.ideal >= 1 and 0 <= s.bubble < 1
                   for s in p.stats)
    _equal_runs(sequential, pipelined)
    assert torch.equal(torch.get_rng_state(), rng)  # the first stage's draws, handed back


@pytest.mark.slow
def test_checkpoints_continue_across_sequential_and_pipelined(one_thread, tmp_path):
    straight, _ = _sequential(epochs=3)
    first = Trainer(TrainConfig(**CFG, epochs=3))
    first.fit(epochs=1, checkpoint=tmp_path / "a.pt")  # sequential, then pipelined
    second = Trainer.from_checkpoint(tmp_path / "a.pt")
    with PipelinedTrainer(second, 2, "even", threads=1) as p:
        p.fit(epochs=2, checkpoint=tmp_path / "b.pt")
    third = Trainer.from_checkpoint(tmp_path / "b.pt")  # pipelined, then sequential
    third.fit()
    _equal_runs(straight, third)


def test_a_killed_stage_fails_the_epoch_with_its_reason(one_thread):
    trainer = Trainer(TrainConfig(**{**CFG, "subset": None}, epochs=50))
    with PipelinedTrainer(trainer, 2, "even", threads=1) as p:
        victim = p._procs[1]
        threading.Timer(1.0, os.kill, (victim.pid, signal.SIGKILL)).start()
        start = time.monotonic()
        with pytest.raises(PipelineError, match=r"stage 2 of 2 .*killed by signal 9"):
            p.fit()
        assert time.monotonic() - start < 30
    assert not p._procs


ORPHAN_SCRIPT = """
import sys, time
import torch
from trainables.config import TrainConfig
from trainables.pipeline import PipelinedTrainer
from trainables.trainer import Trainer

if __name__ == "__main__":
    torch.set_num_threads(1)
    p = PipelinedTrainer(Trainer(TrainConfig(**{cfg!r}, epochs=1)), 2, "even", threads=1)
    print(" ".join(str(proc.pid) for proc in p._procs), flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_the_stages_of_a_trial_process_killed_outright_end_on_their_own(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "trial.py"
    script.write_text(ORPHAN_SCRIPT.format(cfg=CFG))
    trial = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(__file__)))
    pids = []
    try:
        pids = [int(p) for p in trial.stdout.readline().split()]
        assert len(pids) == 2
        trial.kill()  # SIGKILL: no close(), no atexit, no daemon clean-up
        trial.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids), "stage processes outlived their trial"
    finally:
        trial.kill()
        for pid in pids:  # what a failure left behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_partitions_even_and_balanced():
    assert even_partition(8, 2) == [4, 4] and even_partition(5, 3) == [2, 2, 1]
    # The measured K = 8 blocks (ms): the best cut is after block 3.
    costs = [192, 138, 117, 93, 86, 73, 76, 62]
    assert balanced_partition(costs, 2) == [3, 5]
    assert balanced_partition(costs, 8) == [1] * 8
    assert balanced_partition([1, 1, 10, 1], 2) == [2, 2]
    assert describe_partition([3, 5]) == "blocks 1-3 | 4-8"
    assert describe_partition([1, 3], [0.1, 0.02, 0.02, 0.02]) == "blocks 1 (100 ms) | 2-4 (60 ms)"


def test_bad_stages_and_partitions_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"stages=5 exceeds K=4"):
        check_stage_devices(4, 5)
    with pytest.raises(ConfigError, match=r"stages=0 must be a whole number >= 1"):
        check_stage_devices(4, 0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"stages=2 needs a GPU each; 0 visible"):
            check_stage_devices(4, 2, "cuda")
    trainer = Trainer(TrainConfig(**CFG, epochs=1))
    with pytest.raises(ConfigError, match=r"partition \[4, 0\] must give every stage"):
        plan_partition(trainer, 2, [4, 0])
    with pytest.raises(ConfigError, match=r"partition='fast' is unknown; allowed: auto, even"):
        plan_partition(trainer, 2, "fast")


def test_the_auto_partition_times_blocks_without_touching_the_run():
    trainer = Trainer(TrainConfig(**CFG, epochs=1))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rng, augment = torch.get_rng_state(), trainer.augment.rng.getstate()
    sizes, costs = plan_partition(trainer, 2, "auto")
    assert sum(sizes) == 4 and len(sizes) == 2 and len(costs) == 4 and min(costs) > 0
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics too
    assert torch.equal(torch.get_rng_state(), rng) and trainer.augment.rng.getstate() == augment


STAGES_SPACE = """
dataset: digits
model: {arch: resnet18, width: 0.25}
train: {batch_size: 128, K: 4, threshold: 0.0, tau: 0.5, stages: 2, partition: even,
        linear_epochs: 2}
search:
  threshold: {type: float, low: -0.5, high: 0.5}
  tau: {type: float, low: 0.2, high: 1.0}
budgets:
  smoke: {epochs: 3, trials: 2, concurrency: 1, grace_period: 3, linear_epochs: 2}
"""


@pytest.mark.slow
def test_a_study_of_pipelined_trials_tracks_and_retries_them(ray_session, tmp_path,
                                                              monkeypatch):
    """Two trials of 2 stages through Ray on CPU, each failing once at epoch 2 and retried from
    its checkpoint: one MLflow run each, finished, with its stages and its measured step time,
    and no epoch trained twice."""
    from mlflow.tracking import MlflowClient

    from study.engine.tuner import FAIL_ONCE_ENV
    from study.records.store import Store
    from study.tune import main

    monkeypatch.setenv(FAIL_ONCE_ENV, "2")
    space = tmp_path / "stages.yaml"
    space.write_text(STAGES_SPACE)
    store = Store.at(tmp_path / "mlruns")
    assert main(["--dataset", "digits", "--space", str(space), "--budget", "smoke",
                 "--cpus-per-trial", "1", "--gpus-per-trial", "0", "--store", str(store.root),
                 "--study-name", "p1"]) == 0
    assert len(list((store.root / "fail_markers" / "p1").iterdir())) == 2
    client = MlflowClient(store.tracking_uri)
    exp = client.get_experiment_by_name("digits")
    runs = [r for r in client.search_runs([exp.experiment_id], "tags.study = 'p1'")
            if "trial_id" in r.data.tags]
    assert len(runs) == 2
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.params["stages"] == "2"
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "step_seconds")]
        assert sorted(steps) == [1, 2, 3]  # epoch 1 from the checkpoint, not trained again
        assert r.data.metrics["step_seconds"] > 0 and "linear_val_acc" in r.data.metrics
        # The stages ran: each epoch's pipeline figures are the run's.
        bubble = client.get_metric_history(r.info.run_id, "pipeline_bubble")
        assert sorted(m.step for m in bubble) == [1, 2, 3]
        assert all(0 <= m.value < 1 for m in bubble)
        assert r.data.metrics["pipeline_ideal"] >= 1
