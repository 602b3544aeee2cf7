"""The report's page: one self-contained HTML file (figures embedded, no network: it opens from
disk), and its copy in the study's parent run, where the MLflow UI's artifact viewer shows it.

Puts together what ``data`` gathered, ``tables`` wrote and ``figures`` drew, section by section:
a grid's cells or a search's landscape, the paper's figures for the best trial, every trial.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

from study.records.compare_tables import attribution_table, comparison_table
from study.records.comparison import cell_values
from study.records.formatting import Table
from study.records.store import Store
from study.records.trials import Counts
from study.report import figures, gather
from study.report.gather import StudyRecord
from study.report.importances import IMPORTANCE_EVALUATOR, MIN_IMPORTANCE_TRIALS, optuna_results
from study.report.tables import (
    best_per_K_table,
    front_table,
    gain_table,
    grid_table,
    importance_table,
    trials_table,
)

REPORT_FILE = "report.html"
ARTIFACT_DIR = "report"

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: 3px 7px; text-align: right; }
th { background: #eee; } td:first-child { text-align: left; }
.note { color: #555; font-size: 12px; } img { max-width: 100%; }
"""


def front_parts(record: StudyRecord) -> tuple[list[str], list[Table]]:
    """The Pareto front of a multi-objective study, then accuracy against the cost it did not
    optimise (MACs or the measured step time): a figure and a table each."""
    fronts = gather.pareto_fronts(record)
    if not fronts:
        return ["<p>No finished trial reports every objective yet.</p>"], []
    parts, tables = [], []
    for i, front in enumerate(fronts):
        table = front_table(front)
        title = figures.front_title(front) + (" (not optimised; the same trials)" if i else "")
        anchor = "front" + (str(i) if i else "")
        parts += [f'<h3 id="{anchor}">{title}</h3>', figures.fig_front(front), table.html()]
        tables.append(table)
    return parts, tables


def optuna_parts(store: Store, record: StudyRecord) -> tuple[list[str], list[Table]]:
    """Optuna's optimisation history and parameter importances of a search: of each split's
    own Optuna study where the search is stratified."""
    results = optuna_results(store, record)
    if not results:
        return [f"<p>No Optuna study of {record.dataset}/{record.name} in the store.</p>"], []
    parts, tables = [], []
    for stratum, result in results:
        at = f", {stratum}" if stratum else ""
        first = html.escape(result.metric)
        if result.values:
            parts += [f"<h3>Optimisation history ({first}{html.escape(at)})</h3>",
                      figures.fig_history(result.values, result.metric, result.maximize)]
        if result.completed < MIN_IMPORTANCE_TRIALS:
            parts.append(f"<p>Parameter importances{html.escape(at)} need at least "
                         f"{MIN_IMPORTANCE_TRIALS} completed trials; Optuna has "
                         f"{result.completed}.</p>")
        elif result.importances is None:
            parts.append(f"<p>No parameter importances{html.escape(at)}: "
                         f"{html.escape(' '.join(result.importance_error.split()))}.</p>")
        else:
            parts += [f"<h3>Parameter importances{html.escape(at)} (optuna.importance, "
                      f"{IMPORTANCE_EVALUATOR})</h3>",
                      figures.fig_importances(result.importances),
                      f'<p class="note">For {first} ({"max" if result.maximize else "min"}imised) '
                      "over Optuna's completed trials: the finished ones and the diverged ones "
                      "(at 0); trials stopped early are PRUNED and left out.</p>"]
            tables.append(importance_table(result.importances, stratum))
    return parts, tables


def paper_figures(store: Store, record: StudyRecord) -> list[str]:
    """Fig. 5, 1b and 2 for the compared trials, from their metric histories and artifacts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.tracking_uri)
    runs = gather.compared_trials(record)
    parts = [f"<p>{html.escape(' against '.join(runs))}</p>"]
    kept = gather.kept_series(client, runs)
    if kept:
        parts += ["<h3>Pairs kept per block over training (Fig. 5)</h3>", figures.fig_kept(kept)]
    spectra, missing = gather.read_spectra(client, runs)
    parts += [f"<p>spectra of {html.escape(trial_id)} unavailable: {html.escape(error)}</p>"
              for trial_id, error in missing]
    if spectra:
        parts += ["<h3>Spectra of each block's representation (Fig. 1b)</h3>",
                  figures.fig_spectra(spectra)]
    probes = gather.probe_series(runs)
    if probes:
        parts += ["<h3>Linear probes per block (Fig. 2)</h3>", figures.fig_probes(probes)]
    return parts


def build(store: Store, record: StudyRecord) -> tuple[str, list[Table]]:
    """The report's HTML and the tables it shows (printed to the terminal too)."""
    tables: list[Table] = []
    sections: list[str] = []
    if record.kind == "compare":
        compared = comparison_table(record.trials, record.plan)
        tables.append(compared)
        sections.append('<h2 id="compare">The searched T against the paper\'s, over seeds</h2>'
                        + compared.html())
        attributed = attribution_table(record.trials, record.plan)
        if attributed is not None:
            tables.append(attributed)
            cells = cell_values(record.trials, record.plan.points, record.plan.arms)
            sections.append('<h3 id="attribution">What T and what tau did</h3>'
                            + attributed.html() + figures.fig_cells(cells, "linear test")
                            + '<p class="note">Each split\'s cells (the four of the 2 x 2, '
                            "fewer where two are one configuration): one grey line per seed "
                            "joins that seed's runs (the differences are paired); red: each "
                            "cell's mean.</p>")
    if record.kind != "search":
        tables.append(grid_table(record))
        gain = gain_table(record)
        if gain is not None:
            tables.append(gain)
        sections.append('<h2 id="grid">Cells over seeds</h2>'
                        + "".join(t.html() for t in tables))
        if len({t.threshold for t in record.trials}) > 2:
            sections.append(figures.fig_accuracy_vs_threshold(
                gather.threshold_points(record, "linear_test_acc"), "linear test"))
    else:
        best = best_per_K_table(record)
        tables.append(best)
        sections.append('<h2 id="search">Search</h2>' + best.html())
        sections.append("<h3>The T landscape</h3>"
                        + figures.fig_accuracy_vs_threshold(
                            gather.threshold_points(record, "knn_val_acc"), "kNN val (objective)")
                        + figures.fig_tau(gather.tau_points(record)))
        if len(record.plan.objectives) > 1:
            parts, extra = front_parts(record)
            tables += extra
            sections.append("".join(parts))
        parts, extra = optuna_parts(store, record)
        tables += extra
        sections.append("".join(parts))
    sections.append('<h2 id="figures">The paper\'s figures for the best trial'
                    + ("s of each split" if record.kind == "search" else "") + '</h2>'
                    + "".join(paper_figures(store, record)))
    every = trials_table(record)
    tables.append(every)
    sections.append('<h2 id="trials">Trials</h2>' + every.html())
    p, counts = record.plan, Counts.of(record.trials)
    head = (f"{record.kind} study of {record.dataset}"
            + (f", grid {record.grid}" if record.grid else "")
            + f", budget {p.budget}: {counts.trials} trial(s) of {p.trials}"
            + (f" ({counts.lost_text})" if counts.lost else "") + ", "
            f"{p.epochs or 'their own'} epochs, seeds from {p.seed}"
            + (f" x {p.seeds}" if record.kind != "search" else ""))
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(record.name)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(record.name)}</h1><p>{html.escape(head)}. MLflow parent run "
            f"{record.parent_run_id}; written {time.strftime('%Y-%m-%d %H:%M')} from the store, "
            f"nothing re-trained. Chosen on validation accuracy; test accuracy reported only."
            f"</p>{''.join(sections)}</body></html>")
    return page, tables


def write(page: str, out: Path) -> Path:
    """``page`` as ``out/report.html`` (``out`` made where it is missing)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    path.write_text(page)
    return path


def log_to_parent_run(store: Store, record: StudyRecord, path: Path) -> None:
    """The report file into the study's parent run, as ``report/report.html``."""
    from mlflow.tracking import MlflowClient

    MlflowClient(store.tracking_uri).log_artifact(record.parent_run_id, str(path), ARTIFACT_DIR)
