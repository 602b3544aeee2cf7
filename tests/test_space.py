"""Search spaces: the shipped YAMLs load; a bad one gets one line naming file, key and values."""

import pytest

from study.spaces.loading import load_space, space_path
from trainables.errors import ConfigError

PAPER_POINT = {"fmnist": 0.3, "cifar10": 0.0, "stl10": -0.4, "digits": 0.0}


@pytest.mark.parametrize("dataset", ["digits", "fmnist", "cifar10", "stl10"])
def test_shipped_spaces_load_with_the_papers_point_first(dataset):
    space = load_space(space_path(dataset))
    assert space.dataset == dataset
    assert {"smoke", "short", "paper"} <= set(space.budgets)
    assert space.budgets["paper"].epochs == 1000 and space.budgets["paper"].seeds == 5
    assert {"threshold", "tau", "K"} <= set(space.search)
    first = space.points_to_evaluate[0]
    assert first["threshold"] == PAPER_POINT[dataset] and first["tau"] == 0.5
    assert space.train.lr == 1e-3 and space.train.weight_decay == 1e-6
    K = {"fmnist": [1, 2, 4, 8], "cifar10": [1, 4, 8, 16], "stl10": [1, 4, 8, 16]}
    if dataset in K:
        assert space.search["K"].choices == K[dataset]
        # The paper's grids: every K against Eq. (1) at the paper's T; the deepest K's ablation
        # and threshold sweep around the paper's T.
        T, deepest = PAPER_POINT[dataset], K[dataset][-1]
        assert space.grid("table1") == [{"K": k, "threshold": t}
                                        for k in K[dataset] for t in (None, T)]
        assert space.grid("ablation") == [{"K": deepest, "threshold": T, "subsample": s}
                                          for s in ("pos", "neg", "both")]
        sweep = [c["threshold"] for c in space.grid("tsweep")]
        assert sweep[0] is None and min(sweep[1:]) < T < max(sweep[1:]) and T in sweep
        assert {c["K"] for c in space.grid("tsweep")} == {deepest}
    else:  # digits: small offline versions of the same three
        assert set(space.grids) == {"table1", "ablation", "tsweep"}


def test_fmnist_has_a_laptop_budget_between_smoke_and_short():
    b = load_space(space_path("fmnist")).budgets
    assert b["smoke"].epochs < b["laptop"].epochs < b["short"].epochs
    assert b["laptop"].width < 1 and b["laptop"].subset and b["laptop"].seeds == 2


GOOD = """
dataset: digits
model: {arch: resnet18, width: 0.25}
train: {batch_size: 128}
search:
  threshold: {type: float, low: -1.0, high: 0.9}
  K: {type: categorical, choices: [1, 2, 4]}
budgets:
  smoke: {epochs: 2, trials: 2}
grids:
  pair: {K: [1, 2], threshold: [none, 0.3]}
"""


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("search:", "serch:",
         "serch is not a known key; allowed: budgets, dataset, grids, keep_weights, model"),
        ("high: 0.9", "high: 1.5", "search.threshold.high 1.5 is outside [-1, 1]"),
        ("[1, 2, 4]", "[1, 3]",
         "search.K 3 does not divide the 8 residual blocks of resnet18; allowed: 1, 2, 4, 8"),
        ("type: float", "type: normal", "search.threshold.type 'normal' is unknown"),
        ("arch: resnet18", "arch: resnet34", "model.arch 'resnet34' is unknown"),
        ("epochs: 2", "epochs: 0", "budgets.smoke.epochs 0 must be an integer >= 1"),
        ("smoke:", "fast:", "budgets.fast is unknown; allowed: smoke, laptop, short, paper"),
        ("{K: [1, 2],", "{k: [1, 2],", "grids.pair.k is not a grid parameter; allowed: threshold,"),
        ("[none, 0.3]", "[none, 1.3]", "grids.pair.threshold 1.3 is outside [-1, 1]"),
        ("[none, 0.3]", "[nothing]", "grids.pair.threshold 'nothing' is outside [-1, 1]"),
        ("{K: [1, 2],", "{K: [1, 5],",
         "grids.pair.K 5 does not divide the 8 residual blocks of resnet18"),
        ("[none, 0.3]", "[0.3, 0.3]", "grids.pair.threshold repeats a value in [0.3, 0.3]"),
        ("pair: {", "pair: 3 #", "grids.pair must map parameters to lists of values"),
        ("grids:", "objectives: [{metric: val_loss, mode: max}]\ngrids:",
         "objectives[0].metric 'val_loss' is not a metric the trials report; allowed: "
         "knn_val_acc, linear_val_acc, max_block_head_macs"),
        ("grids:", "objectives: [{metric: knn_val_acc, mode: maximise}]\ngrids:",
         "objectives[0].mode 'maximise' is unknown; allowed: max, min"),
        ("grids:", "objectives: [{metric: max_block_head_macs, mode: min}]\ngrids:",
         "objectives needs an accuracy (knn_val_acc or linear_val_acc)"),
        ("grids:", "objectives: [{metric: knn_val_acc, mode: max}, {metric: knn_val_acc, "
                   "mode: min}]\ngrids:", "objectives names a metric twice"),
        ("K: {type: categorical, choices: [1, 2, 4]}", "head: {type: float, low: 0, high: 1}",
         "search.head.type must be categorical for this parameter"),
        ("K: {type: categorical, choices: [1, 2, 4]}",
         "head: {type: categorical, choices: [paper, conv]}",
         "search.head 'conv' is unknown; allowed: paper, mlp"),
        ("batch_size: 128", "batchsize: 128", "train.batchsize is not a known key"),
        ("trials: 2}", "trials: 2, grace_period: 1, monitor_every: 2}",
         "budgets.smoke.grace_period 1 is not a multiple of monitor_every=2: ASHA decides on "
         "the epochs the monitor reports"),
        ("trials: 2}", "trials: 2, grace_period: 1, checkpoint_every: 2}",
         "budgets.smoke.grace_period 1 is below checkpoint_every=2; allowed: grace_period >= "
         "checkpoint_every"),
        ("trials: 2}", "trials: 2, monitor_images: 1}",
         "budgets.smoke.monitor_images 1 must be an integer >= 2 or null"),
        ("{K: [1, 2],", "{K: [2, 4], stages: [1, 4],",
         "grids.pair.stages 4 exceeds K=2 (the smallest K of grids.pair.K): every stage needs"),
        ("K: {type: categorical, choices: [1, 2, 4]}", "K: {type: categorical, choices: "
         "[1, 2, 4]}\n  stages: {type: categorical, choices: [1, 2]}",
         "search.stages 2 exceeds K=1 (the smallest K of search.K)"),
        # the search is checked beside the grids: train's 2 stages meet the search's K = 1
        ("batch_size: 128", "batch_size: 128, stages: 2",
         "train.stages 2 exceeds K=1 (the smallest K of search.K)"),
    ],
)
def test_bad_space_names_file_key_and_allowed(tmp_path, old, new, message):
    path = tmp_path / "space.yaml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


@pytest.mark.parametrize("dataset", ["digits", "fmnist", "cifar10", "stl10"])
def test_shipped_pareto_spaces_search_heads_slope_and_cost(dataset):
    from study.spaces.loading import resolve_space

    space = load_space(resolve_space(f"{dataset}-pareto"))
    assert space.dataset == dataset
    assert [(o.metric, o.mode) for o in space.objectives] == [
        ("knn_val_acc", "max"), ("max_block_head_macs", "min")]
    assert {"K", "head", "threshold", "threshold_slope", "tau"} == set(space.search)
    first = space.points_to_evaluate[0]
    assert (first["head"], first["threshold_slope"], first["threshold"]) == (
        "paper", 0.0, PAPER_POINT[dataset])


def test_unknown_space_name_lists_the_shipped_ones():
    from study.spaces.loading import resolve_space

    with pytest.raises(ConfigError, match="--space 'fmnist-pareo' is neither a file nor a "
                                          "shipped space; shipped: cifar10, cifar10-pareto"):
        resolve_space("fmnist-pareo")


def test_good_space_loads(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(GOOD)
    space = load_space(path)
    assert space.budgets["smoke"].trials == 2 and space.budgets["smoke"].seeds == 3
    assert space.grid("pair") == [{"K": 1, "threshold": None}, {"K": 1, "threshold": 0.3},
                                  {"K": 2, "threshold": None}, {"K": 2, "threshold": 0.3}]
    with pytest.raises(ConfigError, match=f"{path}: grid 'nope' is not defined; allowed: pair"):
        space.grid("nope")
    # A grace period of checkpoint_every or more: ASHA's first rung has a checkpoint.
    path.write_text(GOOD.replace("trials: 2}", "trials: 2, grace_period: 2, checkpoint_every: 2}"))
    assert load_space(path).budgets["smoke"].grace_period == 2


def test_each_grid_meets_only_its_own_stage_counts(tmp_path):
    """Stages are checked against the splits they can meet: a grid of 2 stages at K = 4 beside
    a grid of K = 1 at the default single stage is a good space, and so is a search of 2 stages
    over K = 2 and 4 beside a grid of K = 1 (a grid's trials take train's stages, not the
    search's)."""
    path = tmp_path / "space.yaml"
    path.write_text(GOOD.replace("pair: {K: [1, 2], threshold: [none, 0.3]}",
                                 "pair: {K: [1], threshold: [none, 0.3]}\n"
                                 "  piped: {K: [4], stages: [2]}")
                    .replace("choices: [1, 2, 4]}",
                             "choices: [2, 4]}\n  stages: {type: categorical, choices: [1, 2]}"))
    with pytest.raises(ConfigError, match=r"search.stages cannot change accuracy .* set "
                       r"train.stages, or trade it off against its cost"):
        load_space(path)  # one objective: stages would only split each K's search
    path.write_text(path.read_text() + "objectives:\n  - {metric: knn_val_acc, mode: max}\n"
                    "  - {metric: step_seconds, mode: min}\n")
    space = load_space(path)
    assert space.grids["piped"]["stages"] == [2]


def test_each_shipped_space_starts_its_search_at_the_papers_T_and_tau():
    """The paper's T per data set lives in trainables.paper; the shipped spaces' first points
    (what a search evaluates first, and what the report and --compare call the paper's) agree."""
    from trainables.paper import PAPER_T, paper_point

    for path in sorted(space_path("digits").parent.glob("*.yaml")):
        space = load_space(path)
        if space.dataset not in PAPER_T:
            continue
        for point in space.points_to_evaluate:
            assert {k: point[k] for k in ("threshold", "tau")} == paper_point(space.dataset), path
