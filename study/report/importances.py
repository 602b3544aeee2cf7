"""A search's Optuna studies as the report shows them: each split's optimisation history and
its parameter importances (Optuna's PED-ANOVA, the objective's direction respected)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from study.records.store import Store
from study.report.gather import StudyRecord
from study.spaces.types import DEFAULT_OBJECTIVES

MIN_IMPORTANCE_TRIALS = 4  # with fewer, the importances say nothing


@dataclass
class OptunaResult:
    """A search's Optuna study as the report shows it: the history and the parameter importances
    of its objective (with several, of the first)."""

    metric: str
    maximize: bool
    values: list[tuple[int, float]]  # (Optuna trial number, value) of each completed trial
    completed: int  # finished and diverged trials (at 0); those stopped early are PRUNED
    importances: dict[str, float] | None = None  # None: too few trials, or Optuna could not
    importance_error: str | None = None  # why Optuna could not


def optuna_results(store: Store, record: StudyRecord) -> list[tuple[str, OptunaResult]]:
    """Each Optuna study of a search, by its stratum's label ("" where the search has one
    study); a study missing from the store is left out."""
    import optuna

    from study.spaces.strata import label, optuna_study_name

    strata = record.plan.strata or [None]
    out = []
    for stratum in strata:
        try:
            study = optuna.load_study(
                study_name=optuna_study_name(record.dataset, record.name, stratum),
                storage=store.optuna_url)
        except KeyError:
            continue
        out.append((label(stratum) if stratum else "", _optuna_result(study, record)))
    return out


IMPORTANCE_EVALUATOR = "PED-ANOVA"  # Optuna's PedAnovaImportanceEvaluator, named where shown


def _optuna_result(study, record: StudyRecord) -> OptunaResult:
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    result = OptunaResult((record.plan.objectives or [[DEFAULT_OBJECTIVES[0].metric]])[0][0],
                          maximize, [(t.number, t.values[0]) for t in done if t.values],
                          len(done))
    if len(done) >= MIN_IMPORTANCE_TRIALS:
        # PED-ANOVA ranks parameters for the best trials of a target it takes as minimised:
        # the first objective, negated where it is maximised, in every kind of study.
        sign = -1.0 if maximize else 1.0
        try:
            with warnings.catch_warnings():
                # Its reminder that it ranks for a low target: the sign above sees to that.
                warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
                result.importances = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                    target=lambda t: sign * t.values[0])
        except (RuntimeError, ValueError) as e:
            result.importance_error = str(e)
    return result
