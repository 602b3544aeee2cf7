"""A resumed study is the study that would have run: stopped at any point and resumed, it ends
with the same trials, the same early stops and the same metrics as the same study never stopped.

One reference study runs twice without a stop: the two are identical, so that a difference
below can only be the stop's. Then the same study is stopped at each kind of moment, one after
another (SIGKILL a second after a split's first trial, the paper's point, started; SIGKILL in
the middle of a trial of the resumed run; Ctrl-C between two trials; SIGKILL during the
end-of-study work), resumed after each, and compared with the reference. At concurrency 1 the
order of arrival is fixed, so the comparison is exact.
"""

import json
import pickle
import re
import shutil
import signal
import time
from types import SimpleNamespace

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from test_faults import SPACE as FAULTS_SPACE
from test_faults import Study, check_complete, signal_group

from study.engine.checkpoints import sweep_checkpoints
from study.engine.resume.lost import close_unknown_trials
from study.engine.resume.rungs import RungEvent
from study.engine.resume.saves import install_generation, keep_in_generation, save_generation
from study.engine.scheduler import StratifiedASHA, StudyASHA
from study.records.ray_state import REGISTERED, saved_state
from trainables.errors import ConfigError
from trainables.specs import FINAL_FILE

# The fault matrix's space with two splits of two trials each, one at a time, three epochs:
# ASHA's one rung (epoch 1) decides each split's second trial against its first (it stops both
# here), so a forgotten rung changes the study.
BUDGET = "smoke: {epochs: 3, trials: 4, concurrency: 1, grace_period: 1, linear_epochs: 5}"
SPACE = re.sub(r"smoke: \{.*\}", BUDGET, FAULTS_SPACE)
TRIALS = 4


def _study(tmp_path, name: str) -> Study:
    study = Study(tmp_path, name, trials=TRIALS)
    study.space.write_text(SPACE)
    return study


def fingerprint(study: Study) -> dict:
    """Per split, its trials in the order they started: parameters, fate, every epoch's kNN
    accuracy and the final accuracies (lost runs are no trial of the study)."""
    client = MlflowClient(study.store.tracking_uri)
    exp = client.get_experiment_by_name("digits")
    runs = client.search_runs([exp.experiment_id], f"tags.study = '{study.name}'")
    out: dict[str, list] = {}
    for r in sorted(runs, key=lambda r: r.info.start_time):
        tags, p = r.data.tags, r.data.params
        if "trial_id" not in tags or "lost" in tags:
            continue
        knn = [(m.step, m.value) for m in sorted(
            client.get_metric_history(r.info.run_id, "knn_val_acc"), key=lambda m: m.step)]
        out.setdefault(f"K={p['K']}", []).append((
            p["threshold"], p["tau"], r.info.status, tags.get("early_stopped"), tuple(knn),
            r.data.metrics.get("linear_val_acc"), r.data.metrics.get("linear_test_acc")))
    return out


def optuna_fates(study: Study) -> dict[str, list]:
    """Each split's Optuna trials that count (COMPLETE, PRUNED): parameters and state."""
    storage = optuna.storages.RDBStorage(study.store.optuna_url)
    out = {}
    for K in (1, 2):
        trials = optuna.load_study(study_name=f"digits/{study.name}/K={K}",
                                   storage=storage).trials
        out[K] = [(t.params, t.state.name) for t in trials
                  if t.state.name in ("COMPLETE", "PRUNED")]
    return out


def _started(lines, K: int) -> bool:
    return any("] started" in x and f"K={K} " in x for x in lines)


@pytest.mark.slow
def test_a_study_stopped_anywhere_and_resumed_is_the_study_never_stopped(tmp_path):
    reference = _study(tmp_path, "ref")
    code, console = reference.end(reference.start())
    assert code == 0, console[-3000:]
    check_complete(reference, epochs=3)
    again = _study(tmp_path, "again")
    code, console = again.end(again.start())
    assert code == 0, console[-3000:]
    expected = fingerprint(reference)
    assert fingerprint(again) == expected  # the study is deterministic: the test can fail
    assert optuna_fates(again) == optuna_fates(reference)
    # ASHA stopped some trials and not others: the decisions are part of what is compared.
    fates = [t[3] for trials in expected.values() for t in trials]
    assert "true" in fates and None in fates, expected

    study = _study(tmp_path, "stopped")
    # 1. SIGKILL just after the second split's first trial (its paper point) started.
    proc = study.start()
    study.watch(proc, lambda lines: _started(lines, 2))
    time.sleep(0.3)
    signal_group(proc, signal.SIGKILL)
    study.end(proc)
    # Where Ray had not saved the trial yet (its save is periodic), its point is lost with the
    # driver unless the resume queues it again.
    try:
        saved = saved_state(study.root / "ray" / study.name, TRIALS)
    except ConfigError:  # cut short: the kill came while Ray copied it
        saved = None
    point_lost = saved is not None and len(saved.trials) == 1
    # 2. SIGKILL in the middle of a trial of the resumed run.
    proc = study.start(resume=True)
    study.watch(proc, lambda lines: "] epoch 2/3" in lines[-1])
    signal_group(proc, signal.SIGKILL)
    study.end(proc)
    # 3. Ctrl-C between two trials.
    proc = study.start(resume=True)
    study.watch(proc, lambda lines: "] finished" in lines[-1] or "stopped early" in lines[-1])
    signal_group(proc, signal.SIGINT)
    code, console = study.end(proc)
    assert code in (0, 130), console[-3000:]
    if code == 130:
        # 4. SIGKILL during the end-of-study work.
        proc = study.start(resume=True)
        study.watch(proc, lambda lines: "best first by validation accuracy" in lines[-1])
        signal_group(proc, signal.SIGKILL)
        study.end(proc)
        study.complete()
    check_complete(study, epochs=3)

    assert fingerprint(study) == expected
    assert optuna_fates(study) == optuna_fates(reference)
    consoles = "".join(study.consoles)
    assert "Failed to fetch metrics" not in consoles  # Ray's notes go to the study's log
    assert "rungs rebuilt from" in consoles, consoles[-3000:]
    if point_lost:
        assert "K=2: the point to evaluate threshold=0 tau=0.5 is evaluated again" in consoles


# The repairs one by one, in milliseconds.


def _ray_files(folder, session: str, trials: list[str], searcher: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {"trial_data": [[json.dumps({"trial_id": t, "status": "RUNNING"}), "{}"]
                            for t in trials]}
    (folder / f"experiment_state-{session}.json").write_text(json.dumps(state))
    (folder / f"search_gen_state-{session}.json").write_text(json.dumps({"counter": len(trials)}))
    (folder / f"searcher-state-{session}.pkl").write_bytes(searcher)


@pytest.mark.parametrize("tear", ["cut trial list", "older searcher", "newer searcher",
                                  "no searcher"])
def test_a_torn_save_is_replaced_by_the_last_whole_generation(tmp_path, tear):
    staging, store, gens = tmp_path / "staging", tmp_path / "store", tmp_path / "gens"
    _ray_files(staging, "s1", ["a"], b"searcher knows a")
    assert save_generation(staging, gens) == 1
    _ray_files(staging, "s1", ["a", "b"], b"searcher knows a, b")
    assert save_generation(staging, gens) == 2
    # What Ray's copy into the store left when the driver was killed in the middle of it.
    shutil.copytree(staging, store)
    if tear == "cut trial list":
        f = store / "experiment_state-s1.json"
        f.write_text(f.read_text()[:30])
    elif tear == "older searcher":
        (store / "searcher-state-s1.pkl").write_bytes(b"searcher knows a")
    elif tear == "newer searcher":
        _ray_files(store, "s1", ["a"], b"searcher knows a, b")
    else:
        (store / "searcher-state-s1.pkl").unlink()
    line = install_generation(store, gens)
    assert line is not None and "used generation 2" in line, line
    assert saved_state(store, 2).describe().startswith("0 of 2 trials ended; 2 to continue")
    assert (store / "searcher-state-s1.pkl").read_bytes() == b"searcher knows a, b"
    assert install_generation(store, gens) is None  # whole now: nothing to say
    # The resume repairs the trial list in the store (a trial's newest checkpoint): the
    # generation takes the repair, and the next resume finds nothing to say either.
    (store / "experiment_state-s1.json").write_text(json.dumps({"trial_data": []}))
    keep_in_generation(store, gens)
    assert install_generation(store, gens) is None
    assert saved_state(store, 2).trials == ()
    assert sorted(p.name for p in gens.iterdir()) == ["gen-000001", "gen-000002"]
    save_generation(staging, gens)
    assert sorted(p.name for p in gens.iterdir()) == ["gen-000002", "gen-000003"]  # two kept


def test_a_lost_point_to_evaluate_is_asked_for_again(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(direction="maximize", storage=storage, study_name="s")
    space = {"threshold": FloatDistribution(-1, 0.9), "tau": FloatDistribution(0.1, 1.0)}
    known = study.ask(space)  # asked before Ray's last save: the restored searcher holds it
    study.tell(known, 0.5)
    saved = pickle.dumps(study)  # Ray's last save of the searcher, its Optuna study within
    # Asked after it: a trial that started and ended before the kill, and the paper's point,
    # still running when the driver was killed.
    ended = study.ask(space)
    study.tell(ended, 0.9)
    study.enqueue_trial({"threshold": 0.0, "tau": 0.5})
    lost = study.ask(space)
    assert lost.params == {"threshold": 0.0, "tau": 0.5}
    study = pickle.loads(saved)  # the driver killed, the searcher restored
    assert close_unknown_trials(study, [known], "digits/s/K=4") == 2
    trials = optuna.load_study(study_name="s", storage=storage).trials
    for t in (ended, lost):
        assert trials[t.number].state.name == "FAIL" and "lost" in trials[t.number].user_attrs
        assert trials[t.number].value is None
    assert trials[known.number].state.name == "COMPLETE"
    assert [t.number for t in study.get_trials(states=(TrialState.COMPLETE,))] == [known.number]
    assert study.ask(space).params == {"threshold": 0.0, "tau": 0.5}  # evaluated again


def _bracket_decisions(scheduler, results) -> list[str]:
    """Feed (trial id, config, epoch, value) results to ``scheduler`` as Ray does."""
    trials = {}
    out = []
    for trial_id, config, epoch, value in results:
        if trial_id not in trials:
            trials[trial_id] = SimpleNamespace(trial_id=trial_id, config=config)
            scheduler.on_trial_add(None, trials[trial_id])
        out.append(scheduler.on_trial_result(None, trials[trial_id],
                                             {"epoch": epoch, "knn_val_acc": value}))
    return out


@pytest.mark.parametrize("stratified", [False, True], ids=["one search", "per split"])
def test_asha_stopped_and_rebuilt_takes_the_decisions_it_would_have_taken(stratified):
    asha = dict(time_attr="epoch", metric="knn_val_acc", mode="max", max_t=9, grace_period=1)

    def make():
        return StratifiedASHA(["K"], **asha) if stratified else StudyASHA(**asha)

    # Two splits; each trial reports epochs 1..3 (rungs at 1 and 3) unless stopped.
    values = {"t1": [.50, .60, .70], "t2": [.40, .65, .72], "t3": [.45, .50, .55],
              "t4": [.52, .61, .58], "t5": [.30, .62, .75], "t6": [.60, .62, .64]}
    results = []
    for i, (tid, v) in enumerate(values.items()):
        results += [(tid, {"K": 1 + i % 2}, e + 1, x) for e, x in enumerate(v)]

    def run(scheduler, rs):
        """Results in order; a stopped trial reports nothing more."""
        out, stopped = [], set()
        for r in rs:
            if r[0] in stopped:
                continue
            d = _bracket_decisions(scheduler, [r])[0]
            out.append((r[0], r[2], d))
            if d == "STOP":
                stopped.add(r[0])
        return out

    uninterrupted = run(make(), results)
    assert any(d == "STOP" for *_, d in uninterrupted)
    # Stopped after the fourth trial: what the store holds is every result taken in so far.
    cut = next(i for i, r in enumerate(results) if r[0] == "t5")
    seen = {(t, e) for t, e, _ in uninterrupted}
    events = [RungEvent(i, 0, t, c, e, v, ended=True) for i, (t, c, e, v) in
              enumerate(results[:cut]) if (t, e) in seen]
    rebuilt = make()
    rebuilt.rebuild(events)
    assert run(rebuilt, results[cut:]) == [x for x in uninterrupted if x[0] in ("t5", "t6")]
    # Without the rebuild, ASHA decides otherwise: the test can fail.
    assert run(make(), results[cut:]) != [x for x in uninterrupted if x[0] in ("t5", "t6")]


def test_a_stop_decided_just_before_the_kill_is_kept():
    asha = StudyASHA(time_attr="epoch", metric="knn_val_acc", mode="max", max_t=9,
                     grace_period=1)
    events = [RungEvent(1, 0, "t1", {}, 1, 0.9, ended=True),
              RungEvent(2, 1, "t2", {}, 1, 0.1, ended=False)]  # stopped: Ray saved it RUNNING
    assert asha.rebuild(events) == {"t2"}
    t2 = SimpleNamespace(trial_id="t2", config={})
    asha.on_trial_add(None, t2)
    assert asha.on_trial_result(None, t2, {"epoch": 2, "knn_val_acc": 0.95}) == "STOP"


def test_no_checkpoint_is_left_that_no_trial_continues_from(tmp_path):
    def checkpoint(trial: str, n: int, files=("trainer.pt", FINAL_FILE, REGISTERED)):
        d = tmp_path / trial / f"checkpoint_{n:06d}"
        (d / "report").mkdir(parents=True)
        (d / "report" / "encoder.pt").write_bytes(b"w" * 1000)
        for f in files:
            (d / f).write_bytes(b"x" * 100)
        return d

    for n in (1, 2, 3):
        checkpoint("ended", n)
        checkpoint("continued", n, files=("trainer.pt", REGISTERED))
    checkpoint("from-start", 1, files=("trainer.pt",))  # cut short, never registered
    freed = sweep_checkpoints(tmp_path, {"continued": "checkpoint_000002", "from-start": None})
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["continued/checkpoint_000002/.registered",
                    "continued/checkpoint_000002/report/encoder.pt",
                    "continued/checkpoint_000002/trainer.pt",
                    f"ended/checkpoint_000003/{REGISTERED}",
                    f"ended/checkpoint_000003/{FINAL_FILE}"]
    # ended: two whole checkpoints and the weights of the last; continued: two whole ones;
    # from-start: its one.
    assert freed == 2 * 1300 + 1100 + 2 * 1200 + 1100


def test_a_rung_the_store_lacks_is_taken_from_the_trials_replay_at_its_own_epoch():
    def make():
        return StudyASHA(time_attr="epoch", metric="knn_val_acc", mode="max", max_t=9,
                         grace_period=1)

    t1, t2 = (SimpleNamespace(trial_id=t, config={}) for t in ("t1", "t2"))
    uninterrupted = make()
    for t in (t1, t2):
        uninterrupted.on_trial_add(None, t)
    uninterrupted.on_trial_result(None, t1, {"epoch": 1, "knn_val_acc": 0.9})
    assert uninterrupted.on_trial_result(None, t2, {"epoch": 1, "knn_val_acc": 0.1}) == "STOP"
    # Killed after t2's epoch 1 was checkpointed but before its value reached the store: the
    # rebuilt rungs hold t1 only, and t2 resumes at epoch 2, replaying epoch 1.
    resumed = make()
    assert resumed.rebuild([RungEvent(1, 0, "t1", {}, 1, 0.9, ended=True)]) == set()
    resumed.on_trial_add(None, t2)
    replay = [{"epoch": 1, "knn_val_acc": 0.1}]
    assert resumed.on_trial_result(
        None, t2, {"epoch": 2, "knn_val_acc": 0.95, "replay": replay}) == "STOP"
    assert resumed._brackets[0]._rungs[-1][1] == {"t1": 0.9, "t2": 0.1}


@pytest.mark.slow
def test_a_study_whose_saved_state_tore_resumes_to_a_complete_study(tmp_path):
    """Killed, then Ray's copy in the store torn every way at once: the trial list cut short,
    the searcher's file from the save before, the search generator's state gone."""
    study = Study(tmp_path, "torn", trials=8)  # the fault matrix's study, four waves of two
    proc = study.start()
    gens = study.root / "ray" / ".generations" / study.name
    study.watch(proc, lambda lines: len(list(gens.glob("gen-*"))) >= 2)
    signal_group(proc, signal.SIGKILL)
    study.end(proc)
    older = sorted(gens.glob("gen-*"))[-2]
    folder = study.root / "ray" / study.name
    state = sorted(folder.glob("experiment_state-*.json"))[-1]
    state.write_text(state.read_text()[:100])
    for f in folder.glob("searcher-state-*.pkl"):
        f.unlink()
    shutil.copy(next(older.glob("searcher-state-*.pkl")), folder)
    for f in folder.glob("search_gen_state-*.json"):
        f.unlink()
    study.complete()
    consoles = "".join(study.consoles)
    assert "saved state: Ray's copy in the store had" in consoles, consoles[-3000:]
    check_complete(study)
