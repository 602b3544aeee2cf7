"""Search spaces: the shipped YAMLs load; a bad one gets one line naming file, key and values."""

import pytest

from study.space import load_space, space_path
from trainables.errors import ConfigError

PAPER_POINT = {"fmnist": 0.3, "cifar10": 0.0, "stl10": -0.4, "digits": 0.0}


@pytest.mark.parametrize("dataset", ["digits", "fmnist", "cifar10", "stl10"])
def test_shipped_spaces_load_with_the_papers_point_first(dataset):
    space = load_space(space_path(dataset))
    assert space.dataset == dataset
    assert set(space.budgets) == {"smoke", "short", "paper"}
    assert space.budgets["paper"].epochs == 1000
    assert {"threshold", "tau", "K"} <= set(space.search)
    first = space.points_to_evaluate[0]
    assert first["threshold"] == PAPER_POINT[dataset] and first["tau"] == 0.5
    assert space.train.lr == 1e-3 and space.train.weight_decay == 1e-6
    K = {"fmnist": [1, 2, 4, 8], "cifar10": [1, 4, 8, 16], "stl10": [1, 4, 8, 16]}
    if dataset in K:
        assert space.search["K"].choices == K[dataset]


GOOD = """
dataset: digits
model: {arch: resnet18, width: 0.25}
train: {batch_size: 128}
search:
  threshold: {type: float, low: -1.0, high: 0.9}
  K: {type: categorical, choices: [1, 2, 4]}
budgets:
  smoke: {epochs: 2, trials: 2}
"""


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("search:", "serch:", "serch is not a known key; allowed: budgets, dataset, model"),
        ("high: 0.9", "high: 1.5", "search.threshold.high 1.5 is outside [-1, 1]"),
        ("[1, 2, 4]", "[1, 3]", "search.K 3 does not divide resnet18; allowed: 1, 2, 4, 8"),
        ("type: float", "type: normal", "search.threshold.type 'normal' is unknown"),
        ("arch: resnet18", "arch: resnet34", "model.arch 'resnet34' is unknown"),
        ("epochs: 2", "epochs: 0", "budgets.smoke.epochs 0 must be an integer >= 1"),
        ("smoke:", "fast:", "budgets.fast is unknown; allowed: smoke, short, paper"),
        ("batch_size: 128", "batchsize: 128", "train.batchsize is not a known key"),
    ],
)
def test_bad_space_names_file_key_and_allowed(tmp_path, old, new, message):
    path = tmp_path / "space.yaml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_good_space_loads(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(GOOD)
    assert load_space(path).budgets["smoke"].trials == 2
