"""``study.report``'s gathering, tables and figures on made-up trials: no store, Ray or training."""

import statistics
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest

from study.records.pareto import Point
from study.records.plan import Plan
from study.records.trials import TrialRecord
from study.report import StudyRecord, data, figures, grid_table, importances, tables
from trainables.plots import draw_kept_ratios  # sets the Agg backend: files only, no screen


def trial(tid, K=4, T=None, seed=0, val=0.8, test=0.78, knn=0.75, status="FINISHED", tau=0.5,
          tags=None, **metrics):
    """A trial run as ``study.records.trials.read_trials`` gives it back; a failed one has no final
    metrics."""
    done = status == "FINISHED"
    return TrialRecord(
        trial_id=tid, run_id=f"run-{tid}", status=status,
        params={"K": K, "threshold": T, "tau": tau, "subsample": "both", "seed": seed,
                "epochs": 3},
        metrics=({"linear_val_acc": val, "linear_test_acc": test, "knn_val_acc": knn, **metrics}
                 if done else {"knn_val_acc": knn}),
        tags=tags or {}, last_epoch=3 if done else 1)


def study(trials, kind="grid", dataset="cifar10", plan=None):
    saved = Plan(**{"study": "s", "dataset": dataset, "space_file": "", "budget": "smoke",
                    "trials": len(trials), "epochs": 3, "concurrency": 1, "gpus_per_trial": 0,
                    "cpus_per_trial": 1, "data_dir": "", "seed": 0, **(plan or {})})
    return StudyRecord("s", dataset, kind, "g" if kind == "grid" else "", "parent", "0",
                       sorted(trials, key=lambda t: t.trial_id), saved)


GRID = [
    trial("t1", T=None, seed=0, val=0.80, test=0.780, max_block_macs=349e6),
    trial("t2", T=None, seed=1, val=0.81, test=0.795, max_block_macs=349e6),
    trial("t3", T=0.0, seed=0, val=0.82, test=0.790, max_block_macs=349e6),
    trial("t4", T=0.0, seed=1, val=0.83, test=0.810, max_block_macs=349e6),
    trial("t5", T=0.0, seed=2, val=0.84, test=0.820, max_block_macs=349e6),  # no Eq. (1) seed 2
    trial("t6", T=0.0, seed=3, status="FAILED"),
]


def test_cells_group_finished_seeds_in_trial_order_with_the_paper_beside():
    cells = data.cells(study(GRID))
    assert [c.name for c in cells] == ["K=4 threshold=None subsample=both tau=0.5",
                                       "K=4 threshold=0 subsample=both tau=0.5"]
    assert [[t.trial_id for t in c.finished] for c in cells] == [["t1", "t2"], ["t3", "t4", "t5"]]
    assert [c.trials for c in cells] == [2, 4]
    assert [c.paper.accuracy for c in cells] == [90.0, 89.9]  # Table 1, CIFAR-10, K = 4


def test_grid_table_is_mean_and_sample_std_over_finished_seeds():
    table = grid_table(study(GRID))
    rows = {r[0]: r for r in table.rows}
    row = rows["K=4 threshold=0 subsample=both tau=0.5"]
    col = table.headers.index
    test = [79.0, 81.0, 82.0]
    assert row[col("seeds")] == "3/4"
    assert row[col("linear test %")] == (f"{statistics.fmean(test):.1f} ± "
                                         f"{statistics.stdev(test):.2f}")
    assert row[col("max block MACs")] == "349 M"  # the same for every seed: no ± 0
    assert row[col("paper test %")] == "89.9 ± 0.3"
    assert "peak memory" not in table.headers  # no trial measured it


def test_gains_are_paired_by_seed_against_eq_1():
    [(key, gains)] = data.paired_gains(study(GRID))
    assert key == (4, 0.0, "both", 0.5)
    assert gains == pytest.approx([0.790 - 0.780, 0.810 - 0.795])  # seed 2 has no pair
    assert data.paper_gain("cifar10", 4, 0.0, "both", 0.5) == pytest.approx(-0.1)
    row = tables.gain_table(study(GRID)).rows[0]
    assert row[4:] == ["2", "+1.25 ± 0.35", "-0.1"]
    assert tables.gain_table(study(GRID[:2])) is None  # Eq. (1) alone: nothing to compare


def test_best_per_K_is_chosen_on_validation_accuracy_never_test():
    trials = [trial("a", K=2, T=0.1, val=0.70, test=0.99), trial("b", K=2, T=0.3, val=0.75,
                                                                 test=0.50),
              trial("c", K=1, T=None, val=0.60), trial("d", K=1, status="FAILED", knn=0.99)]
    record = study(trials, kind="search", dataset="fmnist")
    assert [t.trial_id for t in data.best_per_K(record)] == ["c", "b"]
    rows = tables.best_per_K_table(record).rows
    assert [(r[0], r[1], r[6], r[8], r[9], r[10]) for r in rows] == [
        ("1", "none", "60.0", "78.0", "0.3", "c"), ("2", "0.3", "75.0", "50.0", "0.3", "b")]
    assert [r[11] for r in rows] == ["1/2", "2/2"]  # finished / trials at that K
    unfinished = study([*trials, trial("e", K=8, status="KILLED")], kind="search")
    assert tables.best_per_K_table(unfinished).note == "K=8: none of 1 trial(s) finished"
    # Every trial, grouped by K in a search (each split is its own search), best first in each.
    assert [r[0] for r in tables.trials_table(unfinished).rows] == ["c", "d", "b", "a", "e"]


def test_trials_table_ranks_every_trial_and_counts_their_states():
    table = tables.trials_table(study(GRID))
    assert [r[0] for r in table.rows] == ["t5", "t4", "t3", "t2", "t1", "t6"]
    assert table.rows[-1][-3:] == ["-", "1", "failed"]
    assert table.note == "5 finished, 1 failed"
    assert table.text().splitlines()[1].split() == table.headers[:6] + [
        "kNN", "val", "%", "linear", "val", "%", "epochs", "state"]
    short = table.text(limit=2).splitlines()  # the terminal's: bounded, the rest in the HTML
    assert [r.split()[0] for r in short[2:4]] == ["t5", "t4"]
    assert short[4:] == ["... 4 more row(s) in the report's HTML", "5 finished, 1 failed"]


def test_stat_leaves_out_missing_values_and_has_no_std_of_one():
    assert tables.Stat.of([0.5, None, float("nan")]) == tables.Stat(0.5, None, 1)
    assert tables.Stat.of([float("inf")]) is None


def test_compared_trials_take_the_deepest_split_of_a_grid_and_its_other_side_of_T():
    trials = [*GRID, trial("z", K=8, T=0.0, val=0.95), trial("y", K=8, T=None, val=0.7)]
    runs = data.compared_trials(study(trials))
    assert [(label.split(":")[0], t.trial_id) for label, t in runs.items()] == [
        ("best", "z"), ("T = none", "y")]
    assert list(runs)[0] == "best: K=8 T=0 seed=0 (z)"
    # A search: the best of each split (K = 8 wins overall; K = 4 is drawn all the same).
    search = data.compared_trials(study(trials, kind="search"))
    assert [(label.split(":")[0], t.trial_id) for label, t in search.items()] == [
        ("best K=4", "t5"), ("best K=8", "z")]


def test_kept_series_reads_histories_of_trials_with_T_only():
    history = {("run-t3", "kept_pos_block1"): [(2, 0.8), (1, 0.9)]}
    client = SimpleNamespace(get_metric_history=lambda run, key: [
        SimpleNamespace(step=s, value=v) for s, v in history.get((run, key), [])])
    runs = {"best: t3": GRID[2], "T = none: t1": GRID[0]}
    kept = data.kept_series(client, runs)
    assert list(kept) == ["best"]  # Eq. (1) keeps every pair
    assert kept["best"]["kept_pos"][1] == [(1, 0.9), (2, 0.8)]
    assert kept["best"]["kept_neg"] == {1: [], 2: [], 3: [], 4: []}
    assert data.kept_series(client, {"best: t4": GRID[3]}) == {}  # no history: no figure


def test_probe_series_needs_every_block():
    full = trial("p", K=2, probe_test_acc_block1=0.5, probe_test_acc_block2=0.6)
    part = trial("q", K=2, probe_test_acc_block1=0.5)
    assert data.probe_series({"best: p": full, "T = none: q": part}) == {"best": [0.5, 0.6]}


def test_landscape_points_put_eq_1_left_of_every_T():
    trials = [trial("a", K=2, T=-0.2, knn=0.6), trial("b", K=2, T=None, knn=0.5),
              trial("c", K=4, T=0.3, status="FAILED", knn=0.1, tau=0.2)]
    points = data.threshold_points(study(trials, dataset="fmnist"), "knn_val_acc")
    assert points.Ks == [2, 4] and points.has_none and points.paper_T == 0.3
    assert points.left == pytest.approx(-0.35)
    assert points.points == {(2, "finished"): [(-0.2, 0.6), (points.left, 0.5)],
                             (4, "failed"): [(0.3, 0.1)]}
    assert data.tau_points(study(trials)) == {"finished": [(0.5, 0.6), (0.5, 0.5)],
                                              "failed": [(0.2, 0.1)]}


def test_front_table_lists_the_members_by_cost():
    objectives = [["knn_val_acc", "max"], ["max_block_head_macs", "min"]]
    a, b, c = (trial(i, K=K, knn=acc, max_block_head_macs=cost)
               for i, K, acc, cost in (("a", 4, 0.9, 4e8), ("b", 1, 0.8, 1e8), ("c", 2, 0.7, 3e8)))
    points = [Point(t, {m: t.metrics[m] for m, _ in objectives}) for t in (a, b, c)]
    record = study([a, b, c], kind="search",
                   plan={"objectives": objectives, "space_file": "/nowhere/space.yaml"})
    front = data.pareto_front(record)  # the space file is gone: nothing marked
    assert [p.trial_id for p in front.members] == ["a", "b"] and front.marked == []
    assert len(front.points) == 3 and front.points[0].values == points[0].values
    table = tables.front_table(front)
    assert [r[0] for r in table.rows] == ["b", "a"]
    assert table.rows[0][-2:] == ["80.0", "100 M"]
    assert table.headers[:3] == ["trial", "K", "stages"] and table.rows[0][2] == "1"
    assert table.title.endswith("2 of 3 finished trials")
    assert "No finished trial ran the space's first point" in table.note
    assert figures.fig_front(front).startswith('<img alt="figure" src="data:image/png;base64,')


def test_a_front_over_macs_is_shown_against_step_time_too():
    objectives = [["knn_val_acc", "max"], ["max_block_head_macs", "min"]]
    # a: accurate, costly in MACs, quick (pipelined); b: cheap in MACs, slow; c: dominated.
    a, b, c = (trial(i, K=K, knn=acc, max_block_head_macs=macs, step_seconds=step)
               for i, K, acc, macs, step in (("a", 4, 0.9, 4e8, 0.2), ("b", 1, 0.8, 1e8, 0.5),
                                             ("c", 2, 0.7, 3e8, 0.6)))
    record = study([a, b, c], kind="search",
                   plan={"objectives": objectives, "space_file": "/nowhere/space.yaml"})
    own, time = data.pareto_fronts(record)
    assert own.objectives == objectives and [p.trial_id for p in own.members] == ["a", "b"]
    assert time.objectives == [["knn_val_acc", "max"], ["step_seconds", "min"]]
    assert [p.trial_id for p in time.members] == ["a"]  # quicker and more accurate than b
    assert figures.front_title(time) == "Accuracy against step time"
    assert figures.front_title(own) == "Accuracy against parallel cost"


def test_kept_ratio_figure_has_whole_epochs_on_its_axis():
    kept = {kind: {k: [(e, 0.9 - 0.1 * k - 0.01 * e) for e in range(1, 4)] for k in (1, 2)}
            for kind in ("kept_pos", "kept_neg")}
    fig = plt.figure()
    axes = fig.subplots(1, 2, sharey=True)
    draw_kept_ratios(axes, {"best": kept})
    fig.canvas.draw()
    for ax in axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    assert [line.get_label() for line in axes[0].lines] == ["best block 1", "best block 2"]
    plt.close(fig)
    assert figures.fig_kept({"best": kept}).startswith('<img alt="figure"')


def test_figures_draw_the_gathered_numbers():
    spectra = {"best": [np.array([1.0, 0.1, 0.0]), np.array([1.0, 0.01, 0.001])]}
    for html in (figures.fig_spectra(spectra), figures.fig_probes({"best": [0.5, 0.6]}),
                 figures.fig_history([(0, 0.5), (1, 0.7), (2, 0.6)]),
                 figures.fig_importances({"tau": 0.7, "threshold": 0.3}),
                 figures.fig_tau({"finished": [(0.5, 0.6)]}),
                 figures.fig_accuracy_vs_threshold(
                     data.threshold_points(study(GRID), "linear_test_acc"), "linear test")):
        assert html.startswith('<img alt="figure" src="data:image/png;base64,')


@pytest.mark.parametrize("directions", [["maximize"], ["maximize", "minimize"]])
def test_importances_are_for_the_best_trials_of_a_maximised_objective(directions):
    """The best trials differ in tau, the worst in T: a maximised accuracy's importances name
    tau, in a one- and a two-objective study alike (a target taken as minimised would name T)."""
    import optuna
    from optuna.distributions import FloatDistribution

    rng = np.random.default_rng(0)
    study_ = optuna.create_study(directions=directions)
    dists = {"tau": FloatDistribution(0.0, 1.0), "threshold": FloatDistribution(0.0, 1.0)}
    for _ in range(60):
        p = {"tau": float(rng.uniform()), "threshold": float(rng.uniform())}
        acc = 1.0 if p["tau"] > 0.85 else 0.5 - 0.4 * (p["threshold"] > 0.85)
        study_.add_trial(optuna.trial.create_trial(
            params=p, distributions=dists, values=[acc, 1.0][:len(directions)]))
    objectives = [["knn_val_acc", "max"], ["max_block_head_macs", "min"]][:len(directions)]
    result = importances._optuna_result(study_, study([], kind="search",
                                               plan={"objectives": objectives}))
    assert result.maximize and list(result.importances)[0] == "tau", result.importances
