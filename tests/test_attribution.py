"""Does T matter once tau is tuned: the 2 x 2 of threshold by temperature in ``--compare``
(study.records.comparison), and what paired seeds can decide (study.records.paired)."""

import pytest

from study.records.compare_tables import attribution_table, comparison_table
from study.records.comparison import attribution, cell_values, no_threshold
from study.records.formatting import Stat
from study.records.paired import detectable, power, seeds_needed, verdict
from study.records.plan import Plan
from study.records.trials import TrialRecord


def test_power_and_seeds_match_the_textbook_paired_t_test():
    # G*Power, paired t-test, two-sided alpha 0.05: effect 1 sd at 10 pairs has power 0.803;
    # 80% power needs 34 pairs at 0.5 sd and 15 at 0.8 sd.
    assert power(10, 1.0, 1.0) == pytest.approx(0.8031, abs=1e-4)
    assert seeds_needed(0.5, Stat(0.0, 1.0, 5)) == 34
    assert seeds_needed(0.8, Stat(0.0, 1.0, 5)) == 15
    # The detectable effect is the one found with 80% power at these seeds.
    d = Stat(0.0, 0.02, 5)
    assert power(5, detectable(d), 0.02) == pytest.approx(0.8, abs=1e-4)
    # Two seeds (one degree of freedom), where SciPy's far tail is NaN: still a number.
    # (a --compare of 2 seeds crashed on it): a shift of 11.2 against t's 12.7 at 1 dof.
    assert power(2, 0.0158, 0.002) == pytest.approx(0.619, abs=1e-3)
    assert detectable(Stat(0.0014, 0.00198, 2)) == pytest.approx(0.0229, abs=1e-3)
    assert detectable(Stat(0.1, None, 1)) is None and seeds_needed(0.01, Stat(0.1, None, 1)) is None


def test_a_verdict_says_whether_no_difference_means_none_or_too_few_seeds():
    assert verdict(Stat(0.03, 0.005, 4), "up", "down") == "up"
    assert verdict(Stat(-0.03, 0.005, 4), "up", "down") == "down"
    # The interval holds 0 in both; only the first could have seen 1 point.
    assert verdict(Stat(0.001, 0.002, 4), "up", "down") == "no difference of 1 pt or more"
    assert verdict(Stat(0.01, 0.02, 3), "up", "down") == "too few seeds to tell"
    # Enough power on paper (4 seeds detect 0.86 pt at this spread), yet the interval reaches
    # +1.38 pt: 1 point is not ruled out.
    assert detectable(Stat(0.0065, 0.0046, 4)) < 0.01
    assert verdict(Stat(0.0065, 0.0046, 4), "up", "down") == "too few seeds to tell"
    assert verdict(Stat(0.01, None, 1), "up", "down") == "one seed: no spread to judge by"


POINTS = [{"K": 8, "threshold": -0.7, "tau": 0.17, "epochs": 8},  # searched
          {"K": 8, "threshold": 0.3, "tau": 0.5, "epochs": 8},  # the paper's
          {"K": 8, "threshold": None, "tau": 0.17, "epochs": 8},  # Eq. (1), searched tau
          {"K": 8, "threshold": None, "tau": 0.5, "epochs": 8}]  # Eq. (1), paper's tau
ARMS = [{"K": 8, "trials": 6, "finished": 5, "searched": 0, "paper": 1, "searched_no_T": 2,
         "paper_no_T": 3},
        {"K": 4, "trials": 6, "finished": 0}]
# Linear test accuracy per cell, seeds 1 to 4; and the pairs each kept (positive, negative).
VALUES = {0: [0.73, 0.74, 0.72, 0.75], 1: [0.71, 0.71, 0.70, 0.72],
          2: [0.73, 0.736, 0.72, 0.75], 3: [0.70, 0.71, 0.69, 0.71]}
KEPT = {0: (0.98, 0.97), 1: (0.60, 0.05)}


def trials(values_of=VALUES) -> list[TrialRecord]:
    out = []
    for i, values in values_of.items():
        pos, neg = KEPT.get(i, (1.0, 1.0))
        for seed, v in enumerate(values, start=1):
            if v is None:
                continue  # not finished
            params = {**POINTS[i], "seed": seed, "width": 0.25}
            out.append(TrialRecord(
                trial_id=f"t{i}{seed}", run_id=f"r{i}{seed}", status="FINISHED", params=params,
                metrics={"linear_test_acc": v, "linear_val_acc": v,
                         "kept_pos_block1": pos, "kept_pos_block2": 1.0,
                         "kept_neg_block1": neg, "kept_neg_block2": 0.99},
                tags={}, last_epoch=8))
    return out


def test_the_two_by_two_matches_a_hand_computation():
    rows = {r.effect: r for r in attribution(trials(), POINTS, ARMS)}
    overall, T_searched, T_paper, tau = (
        rows["overall: searched - paper"], rows["searched T vs none, at the searched tau"],
        rows["paper's T vs none, at the paper's tau"],
        rows["searched tau vs paper's, no threshold"])
    # By hand, per seed: overall .02 .03 .02 .03; T at searched tau 0 .004 0 0; T at the
    # paper's tau .01 0 .01 .01; tau without T .03 .026 .03 .04.
    assert (overall.difference.mean, overall.difference.std) == pytest.approx((0.025, 0.0057735))
    assert (T_searched.difference.mean, T_searched.difference.std) == pytest.approx((0.001, 0.002))
    assert (T_paper.difference.mean, T_paper.difference.std) == pytest.approx((0.0075, 0.005))
    assert tau.difference.mean == pytest.approx(0.0315)
    # The overall difference is tau's effect without T plus T's at the searched tau minus T's
    # at the paper's.
    assert overall.difference.mean == pytest.approx(
        tau.difference.mean + T_searched.difference.mean - T_paper.difference.mean)
    assert overall.verdict == "searched better" and tau.verdict == "searched tau better"
    assert T_paper.verdict == "too few seeds to tell"  # [-0.05, +1.55] pts; 4 seeds see 1.06
    # The searched T keeps 97% or more of both kinds of pairs at every block: the table says
    # that its T effect is that of no threshold; the paper's T keeps 5-99% of negatives.
    assert T_searched.verdict == ("no difference of 1 pt or more; T=-0.7 keeps 98-100% of "
                                  "positive and 97-99% of negative pairs: no threshold in all "
                                  "but name")
    assert "all but name" not in T_paper.verdict


def test_the_attribution_table_and_the_figures_cells():
    plan = Plan(study="s-vs-paper", dataset="fmnist", space_file="", budget="laptop",
                trials=16, epochs=0, concurrency=2, gpus_per_trial=0, cpus_per_trial=1,
                data_dir="", seed=1, points=POINTS, arms=ARMS, compare="s", seeds=4)
    table = attribution_table(trials(), plan)
    assert [r[1] for r in table.rows] == [
        "overall: searched - paper", "searched T vs none, at the searched tau",
        "paper's T vs none, at the paper's tau", "searched tau vs paper's, no threshold"]
    assert table.rows[2][:9] == ["8", "paper's T vs none, at the paper's tau",
                                 "T=0.3 tau=0.5 - T=none tau=0.5",
                                 "71.00 ± 0.82", "70.25 ± 0.96", "+0.75 ± 0.50 [-0.05, +1.55]",
                                 "4", "±1.06", "5"]
    assert "K=8 T=-0.7 tau=0.17: 98-100% positive, 97-99% negative" in table.note
    assert "K=8 T=0.3 tau=0.5: 60-100% positive, 5-99% negative" in table.note
    # The overall table keeps its rows; a comparison saved before the 2 x 2 has no attribution.
    assert len(comparison_table(trials(), plan).rows) == 2
    old = Plan(**{**plan.__dict__, "arms": [{k: v for k, v in ARMS[0].items()
                                             if not k.endswith("no_T")}]})
    assert attribution_table(trials(), old) is None
    cells = cell_values(trials(), POINTS, ARMS)
    assert list(cells) == [8] and list(cells[8]) == [
        "T=-0.7 tau=0.17", "T=none tau=0.17", "T=0.3 tau=0.5", "T=none tau=0.5"]
    assert cells[8]["T=none tau=0.5"] == {1: 0.70, 2: 0.71, 3: 0.69, 4: 0.71}


def test_the_reports_figure_of_the_cells_draws():
    from study.report.figures import fig_cells

    html = fig_cells(cell_values(trials(), POINTS, ARMS), "linear test")
    assert html.startswith('<img alt="figure" src="data:image/png;base64,')


def test_every_row_of_a_split_is_over_the_seeds_all_its_cells_finished():
    """A cell that lost a seed takes it out of every row of its split: the rows still add up."""
    rows = attribution(trials({**VALUES, 3: [0.70, 0.71, 0.69, None]}), POINTS, ARMS)
    assert {r.difference.n for r in rows} == {3}
    overall, T_searched, T_paper, tau = (r.difference.mean for r in rows)
    assert overall == pytest.approx(tau + T_searched - T_paper)
    assert overall == pytest.approx((0.02 + 0.03 + 0.02) / 3)  # seeds 1-3 only


def test_where_the_searchs_best_is_the_papers_point_its_T_row_is_shown_once():
    arms = [{"K": 8, "trials": 4, "finished": 4, "searched": 1, "paper": 1, "searched_no_T": 3,
             "paper_no_T": 3}]
    rows = attribution(trials(), POINTS, arms)
    assert [(r.effect, r.same) for r in rows] == [
        ("overall: searched - paper", True), ("searched T vs none, at the searched tau", False),
        ("searched tau vs paper's, no threshold", True)]
    assert rows[0].verdict == "the search's best is the paper's point"
    assert list(cell_values(trials(), POINTS, arms)[8]) == ["T=0.3 tau=0.5", "T=none tau=0.5"]


def test_a_no_threshold_cell_drops_what_needs_a_threshold():
    """A front's searched slope of T needs a T (TrainConfig refuses it alone), and subsampling
    does nothing without one: the no-T cells set both to the protocol's."""
    from trainables.config import TrainConfig
    from trainables.errors import ConfigError

    searched = {"K": 8, "threshold": 0.3, "threshold_slope": 0.2, "subsample": "neg", "tau": 0.4}
    cell = no_threshold(searched)
    assert cell == {"K": 8, "threshold": None, "threshold_slope": 0.0, "subsample": "both",
                    "tau": 0.4}
    TrainConfig(**cell)
    with pytest.raises(ConfigError, match="threshold_slope=0.2 needs a threshold"):
        TrainConfig(**{**searched, "threshold": None})
    # The no-T row names what else moved with tau.
    points = [searched, {**searched, "threshold": 0.3, "threshold_slope": 0.0, "tau": 0.5,
                         "subsample": "both"}, cell, no_threshold({**searched, "tau": 0.5})]
    points[1]["K"] = 8
    arms = [{"K": 8, "trials": 1, "finished": 1, "searched": 0, "paper": 1, "searched_no_T": 2,
             "paper_no_T": 3}]
    rows = attribution([], points, arms)
    assert rows[-1].effect == "searched tau vs paper's, no threshold"
    points[2] = {**cell, "lr": 0.01}
    assert attribution([], points, arms)[-1].effect == \
        "searched tau, lr vs paper's, no threshold"
