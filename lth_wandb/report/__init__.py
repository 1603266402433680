"""Reports of a lottery-ticket study: a W&B Report (``wandb_report``) and an offline HTML page (``html``), both
built from the same per-run round tables (``data``) and summary (``summary``). Console script: ``lth-report``.

The offline path needs matplotlib only; the W&B Report needs ``wandb-workspaces``, imported on use.
"""

from lth_wandb.report.data import Round, RunRounds, Study, TicketArtifact
from lth_wandb.report.figures import make_figures, save_figures
from lth_wandb.report.html import HtmlReport, write_html_report
from lth_wandb.report.sources import collect_api, collect_offline
from lth_wandb.report.summary import best_ticket, summary_text

__all__ = [
    "HtmlReport",
    "Round",
    "RunRounds",
    "Study",
    "TicketArtifact",
    "best_ticket",
    "collect_api",
    "collect_offline",
    "make_figures",
    "save_figures",
    "summary_text",
    "write_html_report",
]
