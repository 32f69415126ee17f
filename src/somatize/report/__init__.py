"""`somatize report`: a results file as one self-contained HTML page of plots and a sortable trial table.

plotly is an optional extra (`pip install 'somatize[report]'`): nothing here
imports it until a report is rendered, so `import somatize` and the other
commands never pay for it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..study import Study

INSTALL_HINT = "report needs plotly: pip install 'somatize[report]'"


def require_plotly() -> None:
    """Fail with a one-line user error, before any work, when plotly is not installed."""
    try:
        # Imported only to find out whether they can be; page.py imports them for use.
        import plotly.graph_objects
        import plotly.offline  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


def render_report(study: Study, source: str, trial_links: str | None = None) -> str:
    """The report page for a study read from `source` (a path, or <stdin>).

    `trial_links`: the URL of the results file's directory as seen from the
    report's; the trial table then links each trial's kept directory and output.
    """
    require_plotly()
    from .page import render_page

    return render_page(study, source, trial_links)


def trial_links(results: str, report: Path | None) -> str | None:
    """The relative URL from the report's directory (None: the current one) to the results file's directory."""
    import os
    from urllib.parse import quote

    if results == "-":
        return None
    here = Path(".") if report is None else (report.parent if str(report.parent) else Path("."))
    relative = os.path.relpath(Path(results).resolve().parent, here.resolve())
    return quote(Path(relative).as_posix())


def default_report_path(results: str, study: Study) -> Path:
    """`<results stem>.report.html` in the current directory; `x.results.json` gives `x.report.html`."""
    # A study name may hold anything, a slash too; the report still lands here.
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in study.name)
    stem = name if results == "-" else Path(results).stem
    stem = stem.removesuffix(".results") or stem
    return Path(f"{stem}.report.html")


def save_report(html: str, path: Path) -> None:
    from ..storage.results import write_atomically

    try:
        write_atomically(path, html)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the report: {exc.strerror or exc}") from None


__all__ = ["INSTALL_HINT", "default_report_path", "render_report", "require_plotly", "save_report", "trial_links"]
