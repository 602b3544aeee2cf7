"""A trial's parameters as text, both ways: MLflow's strings back to the values they were
logged from, and values to the ``k=v`` text of a progress line, a run name or a cell."""

from __future__ import annotations


def parse_param(text: str):
    """An MLflow parameter (always a string) back to the value it was logged from."""
    if text in ("None", ""):
        return None
    if text in ("True", "False"):
        return text == "True"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def format_params(params: dict) -> str:
    """``k=v`` pairs for a progress line or a run name; floats to 3 significant digits."""
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())
