"""The bookkeeping benchmark (``study.bench --bookkeeping``) end to end: a real study of 50
trials whose trainable trains nothing, every result in MLflow, then every reader on its store."""

import pytest
from mlflow.tracking import MlflowClient

from study.benchmarks.bookkeeping import readers, run_study
from study.records.trials import read_trials


@pytest.mark.slow
def test_a_bookkeeping_study_of_50_trials_runs_end_to_end(ray_session, tmp_path):
    study = run_study(tmp_path / "store", None, "bk", trials=50, epochs=6, K=2, concurrency=2,
                      callbacks=True)
    store, plan = study["store"], study["plan"]
    trials = read_trials(store, plan.dataset, plan.study)
    assert len(trials) == 50 and len(study["suggest_ms"]) == 50
    states = {t.state for t in trials}
    assert "finished" in states and "stopped early" in states  # ASHA acted on the results
    # Every result Tune took is in MLflow: one epoch_seconds point per reported epoch.
    client = MlflowClient(store.tracking_uri)
    logged = sum(len(client.get_metric_history(t.run_id, "epoch_seconds")) for t in trials)
    assert logged == study["results"]
    figures = readers(store, plan)
    assert set(figures) >= {"summary_s", "export_s", "report_s", "pareto_s",
                            "export_command_s", "report_command_s"}
    assert all(v > 0 for v in figures.values())
    assert client.get_run(plan.parent_run_id).info.status == "FINISHED"
    # --copies: the same trials three times, each copy a trial of its own, with its curves.
    from study.benchmarks.replicate import replicate

    assert replicate(store, plan, 3) == 150
    copied = read_trials(store, plan.dataset, plan.study)
    assert len({t.trial_id for t in copied}) == len({t.run_id for t in copied}) == 150
    assert sorted(t.state for t in copied) == sorted(3 * [t.state for t in trials])
    assert sum(len(client.get_metric_history(t.run_id, "epoch_seconds"))
               for t in copied) == 3 * study["results"]
