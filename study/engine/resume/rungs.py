"""ASHA's rungs rebuilt from the store: every trial's monitor values, in the order the driver
received them, so that the decisions after a resume are the ones the study would have taken."""

from __future__ import annotations

from dataclasses import dataclass

from study.engine.console import log
from study.records import trials as records
from study.records.store import Store


@dataclass(frozen=True)
class RungEvent:
    """One monitor value of one trial, as ASHA took it in."""

    time: int  # when the driver received it (ms): the order of arrival
    order: int  # the trial's place among the study's trials (ties of time)
    trial_id: str
    config: dict  # the parameters that choose the trial's brackets (its split)
    epoch: int
    value: float
    ended: bool  # the trial has ended: nothing of it is continued


def rung_events(store: Store, plan, metric: str, keys: list[str]) -> list[RungEvent]:
    """Every trial's monitor values in the store, in the order the driver received them; a
    trial that diverged adds the worst value it reported at its last epoch. Lost runs are no
    trial of the study."""
    from mlflow.tracking import MlflowClient

    from trainables.tune_trainable import WORST

    client = MlflowClient(store.tracking_uri)
    trials = records.read_trials(store, plan.dataset, plan.study)
    events = []
    for order, t in enumerate(trials):
        if records.LOST in t.tags:
            continue
        ended = t.status != "RUNNING"
        config = {k: t.params.get(k) for k in keys}
        for m in client.get_metric_history(t.run_id, metric):
            events.append(RungEvent(m.timestamp, order, t.trial_id, config, int(m.step),
                                    float(m.value), ended))
        if t.diverged:
            run = client.get_run(t.run_id)
            events.append(RungEvent(run.info.end_time or 0, order, t.trial_id, config,
                                    t.last_epoch, WORST, True))
    return sorted(events, key=lambda e: (e.time, e.order, e.epoch))


def rebuild_rungs(tuner, store: Store, plan) -> None:
    """The restored tuner's ASHA given back its rungs from the store, with one line."""
    local = getattr(tuner, "_local_tuner", None)  # none through a Ray client (ray://)
    if local is None:
        log("ASHA: its rungs cannot be rebuilt through a Ray client; it starts them afresh")
        return
    scheduler = local._tune_config.scheduler  # the pickled one, as it was built
    rebuild = getattr(scheduler, "rebuild", None)
    if rebuild is None:
        if scheduler is not None and type(scheduler).__name__ != "FIFOScheduler":
            log("ASHA: a study saved before its rungs could be rebuilt; it starts them afresh")
        return
    events = rung_events(store, plan, scheduler.metric, scheduler.keys)
    stopped = rebuild(events)
    trials = len({e.trial_id for e in events})
    line = f"ASHA: rungs rebuilt from {trials} trial(s) ({len(events)} monitor value(s))"
    if stopped:
        line += (f"; {', '.join(sorted(stopped))} stopped at its first result (ASHA had "
                 f"stopped it just before the driver was killed)")
    log(line)
