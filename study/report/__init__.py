"""A study's answer as one self-contained HTML file, from the store: ``python -m study.report``.

Reads MLflow (and Optuna for a search) and never re-trains. Writes ``report.html`` (figures
embedded, no network: it opens from disk), prints its tables, and logs the file into the study's
parent run (``report/report.html``), where the MLflow UI's artifact viewer shows it.

- A grid (``study.tune --grid``) or re-run (``--config``): one row per cell with mean +- std over
  its seeds beside the paper's figure where the paper reports one, and the gain of T over Eq. (1)
  per K, paired by seed.
- A search: the best T per K beside the paper's T, the objective against T per K and against
  tau, the optimisation history and Optuna's parameter importances.
- Both: the best trial against the T = none trial of the same K: kept ratios per block over
  epochs (Fig. 5), spectra per block (Fig. 1b), probe accuracy per block (Fig. 2).

Accuracies are shown in %, like the paper. Hyperparameters are ranked on the validation split
only; test accuracy is reported beside them, never used to choose.

One job a module, so that each can be read and tested alone: ``gather`` reads the study and gathers
the numbers behind every table and figure, ``tables`` formats the tables (through the table type
and the number formats of ``study.records.formatting``), ``figures`` draws (the paper's figures
through ``trainables.plots``, like a run's own), ``page`` puts the HTML together and logs it to
MLflow, ``__main__`` is the command.
"""

from __future__ import annotations

from study.records.formatting import Table
from study.report.gather import StudyRecord, gather_study
from study.report.tables import grid_table

__all__ = ["StudyRecord", "Table", "gather_study", "grid_table"]
