"""A finished bookkeeping study made N times larger, for timing the readers beyond what the
driver can run here (``study.bench --bookkeeping --copies N``).

Every trial run is copied N - 1 times in the MLflow store's own tables (the same rows: its
parameters, tags, every metric point, its latest metrics and data set input, under a new run
id and trial id), and every Optuna trial through Optuna's ``add_trials``. A benchmark's tool,
never a user's: it writes MLflow's SQLite schema directly, which only a benchmark may.
"""

from __future__ import annotations

import sqlite3

from study.records.trials import STUDY, TRIAL_ID

RUN_TABLES = ("runs", "tags", "params", "metrics", "latest_metrics")


def replicate(store, plan, copies: int) -> int:
    """Copy ``plan``'s trial runs and Optuna trials until there are ``copies`` of each; the
    number of trial runs after."""
    if store.sqlite_file is None:
        raise ValueError(f"--copies needs a SQLite store, not {store.tracking_uri}")
    with sqlite3.connect(store.sqlite_file) as con:
        runs = [r for (r,) in con.execute(
            "select t.run_uuid from tags t join tags s on s.run_uuid = t.run_uuid "
            "where t.key = ? and s.key = ? and s.value = ?", (TRIAL_ID, STUDY, plan.study))]
        con.execute("create temp table originals (run_uuid text primary key)")
        con.executemany("insert into originals values (?)", [(r,) for r in runs])
        for copy in range(1, copies):
            _copy_runs(con, copy)
        con.execute("drop table originals")
    _copy_optuna(store, plan, copies)
    return len(runs) * copies


def _copy_runs(con: sqlite3.Connection, copy: int) -> None:
    suffix = f"printf('x%02d', {copy})"  # an id keeps its length; x is never hex

    def new(column: str) -> str:
        return f"substr({column}, 1, length({column}) - 3) || {suffix}"

    new_id = new("run_uuid")
    for table in RUN_TABLES:
        columns = [row[1] for row in con.execute(f"pragma table_info({table})")]
        values = [new_id if c == "run_uuid" else c for c in columns]
        if table == "tags":  # the copy is a trial of its own
            values[columns.index("value")] = (
                f"case when key = '{TRIAL_ID}' then value || {suffix} "
                f"else value end")
        if table == "runs":
            values[columns.index("name")] = f"name || ' copy {copy}'"
        con.execute(f"insert into {table} ({', '.join(columns)}) select {', '.join(values)} "
                    f"from {table} where run_uuid in (select run_uuid from originals)")
    # The data set input of each run (the runs table's Dataset column).
    con.execute(
        f"insert into inputs (input_uuid, source_type, source_id, destination_type, "
        f"destination_id, step) select {new('input_uuid')}, source_type, source_id, "
        f"destination_type, {new('destination_id')}, step from inputs "
        f"where destination_type = 'RUN' and destination_id in (select run_uuid from originals)")
    con.execute(
        f"insert into input_tags (input_uuid, name, value) "
        f"select {new('t.input_uuid')}, t.name, t.value "
        f"from input_tags t join inputs i on i.input_uuid = t.input_uuid "
        f"where i.destination_id in (select run_uuid from originals)")


def _copy_optuna(store, plan, copies: int) -> None:
    import optuna

    from study.spaces.strata import optuna_study_names

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(store.optuna_url)
    for name in optuna_study_names(plan):
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue
        ended = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        for _ in range(1, copies):
            study.add_trials(ended)
