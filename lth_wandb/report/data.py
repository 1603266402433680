"""The report's data model: per-run round tables (:class:`RunRounds`) and the runs of one study (:class:`Study`).

Built from what a run recorded (its ``round/*`` rows, validation curve, summary and ``lottery-ticket`` artifact
records); ``sources.py`` finds the runs. Runs that failed or were stopped early keep the rounds they finished.
Downstream code (summary, figures, HTML, W&B Report) reads :class:`Study` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lth_wandb.tracking.runfiles import OfflineRun

STEP = "trainer/global_step"  # the x axis WandbLogger gives every step metric
CURVE_KEYS = ("val/loss", "val/acc")
TICKET_TYPE = "lottery-ticket"
WINNING = "winning"
INSTABILITY = "round/instability"  # with round/instability_step (k) and round/instability_stable
VARIANT_LABELS = {
    "ticket": "winning ticket (IMP)",
    "dense": "dense (no pruning)",
    "saved_ticket": "saved ticket, retrained",
    "no_rewind": "no rewinding",
    "lr_rewind": "learning-rate rewinding",
    # The paper's controls: IMP's own masks (masks_from, or a saved ticket) with fresh values / at random positions.
    "reinit": "random reinit",
    "random_mask": "random pruning",
    # The same settings without IMP's masks: runs that prune their own weights, not the paper's controls.
    "reinit_variant": "reinit variant (own masks)",
    "random_mask_variant": "random-pruning variant (own masks)",
}
CONTROLS = ("reinit", "random_mask")  # the paper's controls, as :attr:`RunRounds.variant` names them
DENSE = 0.9999  # rounds at least this dense are the dense network, never a ticket
# Pruning settings that make runs different methods, not repeats. Seeds (and anything else) are averaged over.
SERIES_KEYS = (
    "pruning.rewind",
    "pruning.criterion",
    "pruning.scope",
    "pruning.prune_rate",
    "pruning.early_bird",
    "pruning.early_bird_threshold",
)


@dataclass(frozen=True)
class Round:
    """One finished pruning round of one run, as its ``round/*`` row recorded it.

    Attributes:
        round: 0 is the dense network.
        density: fraction of prunable weights kept (1.0 in round 0).
        start_step: global step where the round began (the previous round's last step); None when the row of
            the round before is missing (a run resumed into a new W&B run).
        end_step: global step where the round ended.
        early_stop_step: global step of the best monitored value (the paper's early-stopping point).
        best_value: best monitored value (``val/loss`` by default).
        val_acc, test_acc: accuracies at the early-stop step.
        layer_density: density per pruned tensor.
        seconds: wall time from the run's start to the end of the round (W&B's ``_runtime`` of the row).
        mask_iou_prev, mask_churn: the mask against the previous round's (``round/mask_iou_prev``,
            ``round/mask_churn``; :mod:`lth_wandb.analysis.overlap`); None in round 0 and in older runs.
    """

    round: int
    density: float
    start_step: int | None
    end_step: int | None
    early_stop_step: int | None
    best_value: float | None
    val_acc: float | None
    test_acc: float | None
    layer_density: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None
    mask_iou_prev: float | None = None
    mask_churn: float | None = None

    @property
    def early_stop_iteration(self) -> int | None:
        """Optimizer steps from the start of this round to its early-stop point, as the paper counts them."""
        if self.early_stop_step is None:
            return None
        return self.early_stop_step - self.start_step if self.start_step is not None else self.early_stop_step


@dataclass(frozen=True)
class TicketArtifact:
    """A ``lottery-ticket`` artifact version logged by a run.

    Attributes:
        name: the collection, e.g. ``ticket-<run id>``.
        alias: the alias it is referred to by, e.g. ``winning``.
        aliases: every alias the version had when logged.
        metadata: its metadata (round, density, test acc ...), ``{}`` when none or unreadable.
    """

    name: str
    alias: str
    aliases: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.alias}"

    def path(self, entity: str, project: str) -> str:
        """The reference ``use_artifact`` and ``lth-train ticket=...`` take."""
        return f"{entity}/{project}/{self.ref}"


@dataclass
class RunRounds:
    """One run: its rounds, validation curve, winning ticket and status.

    Attributes:
        run_id, name, group, project: as W&B knows the run.
        state: ``finished``, ``failed``, ``running``... as recorded; exit_code as given to ``finish``.
        config: the run config, nested as logged.
        summary: the run summary (``ticket/*`` ...).
        rounds: finished rounds in order.
        curve: ``(global step, {"val/loss": ..., "val/acc": ...})`` for every validation.
        ticket: the latest ticket artifact version aliased ``winning``; None when the run logged none.
        source: where it was read from (a run directory or an API path).
        output_dir: lth-train's output folder of the run (``run.json``, ``tickets/``), "" when not found.
        instability: the run's ``round/instability`` rows as ``{"round", "step", "instability", "stable"}``
            (docs/research.md); ``[]`` when it ran none.
    """

    run_id: str
    name: str = ""
    group: str = ""
    project: str = ""
    state: str | None = None
    exit_code: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    rounds: list[Round] = field(default_factory=list)
    curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    ticket: TicketArtifact | None = None
    source: str = ""
    output_dir: str = ""
    instability: list[dict[str, Any]] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        """A config value by dotted key (``"pruning.control"``), nested or flat as a sweep sets it."""
        return config_value(self.config, key, default)

    @property
    def label(self) -> str:
        return self.name or self.run_id

    @property
    def variant(self) -> str:
        """``"ticket"`` for IMP (rewinding weights), ``"no_rewind"`` / ``"lr_rewind"`` when weights are not
        rewound (their masks are not tickets in the paper's sense), the paper's controls ``"reinit"`` and
        ``"random_mask"`` (IMP's masks: ``pruning.masks_from`` or a saved ``ticket``), the variants
        ``"reinit_variant"`` and ``"random_mask_variant"`` (the same setting on masks the run prunes itself),
        ``"saved_ticket"`` for a run that trains a given ticket (``ticket=...``) as it is, or ``"dense"`` for a run
        with no pruning round (``pruning.rounds=0``)."""
        control = self.get("pruning.control")
        if control not in (None, "", "none", "null"):
            return str(control) if self.get("pruning.masks_from") or self.get("ticket") else f"{control}_variant"
        if self.get("ticket"):
            return "saved_ticket"
        if self.get("pruning.rounds") == 0:
            return "dense"
        rewind = str(self.get("pruning.rewind", "init"))
        return {"none": "no_rewind", "lr": "lr_rewind"}.get(rewind, "ticket")

    @property
    def monitor(self) -> str:
        """The metric that picks each round's early-stop point and the winning round."""
        return str(self.get("pruning.monitor") or "val/loss")

    @property
    def seed(self) -> Any:
        return self.get("seed")

    @property
    def planned_rounds(self) -> int | None:
        rounds = self.get("pruning.rounds")
        return rounds + 1 if isinstance(rounds, int) else None

    @property
    def status(self) -> str:
        """``finished``, ``failed``, ``stopped early`` (ended cleanly before its last round) or ``incomplete``
        (killed, or still running: no exit code recorded)."""
        if self.state == "failed" or self.exit_code not in (None, 0):
            return "failed"
        if self.exit_code is None:
            return "incomplete"
        planned = self.planned_rounds
        return "stopped early" if planned is not None and len(self.rounds) < planned else "finished"

    def round(self, number: int | None) -> Round | None:
        return next((r for r in self.rounds if r.round == number), None)

    def epochs_at(self, r: Round) -> float | None:
        """Training epochs from the run's start to the end of round ``r`` (its compute): the round's end step over
        the steps of one epoch, which are round 0's steps over its epochs (``pruning.epochs_per_round``, or fewer
        where an early bird ended round 0: ``early_bird/epoch``)."""
        first, per_round = self.round(0), self.summary.get("early_bird/epoch") or self.get("pruning.epochs_per_round")
        if first is None or not first.end_step or not isinstance(per_round, int) or r.end_step is None:
            return None
        return r.end_step / (first.end_step / per_round)

    @property
    def winning_round(self) -> int | None:
        """The run's own answer (``ticket/winning_round``), else recomputed from its rows the same way: the
        sparsest round whose best monitored value is as good as round 0's, within ``pruning.tolerance``."""
        winner = self.summary.get("ticket/winning_round")
        if isinstance(winner, int) and self.round(winner) is not None:
            return winner
        scored = [r for r in self.rounds if r.best_value is not None]
        if not scored or scored[0].round != 0:
            return None
        sign = -1.0 if self.get("pruning.mode", "min") == "max" else 1.0
        limit = sign * scored[0].best_value + float(self.get("pruning.tolerance", 0.0) or 0.0)
        winners = [r for r in scored if sign * r.best_value <= limit]
        return min(winners, key=lambda r: (r.density, -r.round)).round

    @property
    def winning_ticket_round(self) -> int | None:
        """The winning round as a ticket: None for the paper's controls (they train IMP's masks to compare with
        its tickets, and find none of their own) and where the winning round is the dense network."""
        found = self.round(self.winning_round)
        if self.variant in CONTROLS or found is None or found.density >= DENSE:
            return None
        return found.round

    def round_curves(self) -> dict[int, list[tuple[int, dict[str, float]]]]:
        """The validation curve cut into rounds: ``{round: [(iteration within the round, values)]}``. Points
        after the last finished round belong to the round that was training when the run ended."""
        ends = [(r.round, r.end_step) for r in self.rounds if r.end_step is not None]
        last = self.rounds[-1].round + 1 if self.rounds else 0
        starts = {r.round: r.start_step or 0 for r in self.rounds}
        starts[last] = ends[-1][1] if ends else 0
        curves: dict[int, list[tuple[int, dict[str, float]]]] = {}
        for step, values in self.curve:
            number = next((n for n, end in ends if step <= end), last)
            curves.setdefault(number, []).append((step - starts.get(number, 0), values))
        return curves


@dataclass
class Study:
    """The runs one report is about.

    Attributes:
        runs: oldest first.
        skipped: ``(path, reason)`` of run directories that could not be read.
        sources: what was read: the folders, or ``entity/project``.
        group, sweep: the filter that selected the runs, if any.
    """

    runs: list[RunRounds]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    group: str | None = None
    sweep: str | None = None

    def drop_sparser_than(self, density: float) -> None:
        """Leave out the rounds with fewer than ``density`` of the weights, e.g. to zoom figures in."""
        for run in self.runs:
            run.rounds = [r for r in run.rounds if r.density >= density]

    def series(self) -> dict[str, list[RunRounds]]:
        """Runs grouped into curves: by variant, plus the pruning settings (:data:`SERIES_KEYS`) that differ
        across the study. Seeds and everything else are averaged over."""
        varying = [k for k in SERIES_KEYS if len({repr(run.get(k)) for run in self.runs}) > 1]
        series: dict[str, list[RunRounds]] = {}
        order = {name: i for i, name in enumerate(VARIANT_LABELS)}
        for run in sorted(self.runs, key=lambda r: order.get(r.variant, len(order))):
            label = VARIANT_LABELS.get(run.variant, run.variant)
            extra = ", ".join(f"{k.split('.')[-1]}={run.get(k)}" for k in varying)
            series.setdefault(f"{label} ({extra})" if extra else label, []).append(run)
        return series


def rounds_by_density(runs: list[RunRounds]) -> dict[float, list[tuple[RunRounds, Round]]]:
    """The rounds of ``runs`` grouped by percent of weights remaining, densest first. Percentages are rounded to
    4 decimals, so the seeds of one pruning schedule share a group."""
    groups: dict[float, list[tuple[RunRounds, Round]]] = {}
    for run in runs:
        for r in run.rounds:
            groups.setdefault(round(r.density * 100, 4), []).append((run, r))
    return dict(sorted(groups.items(), reverse=True))


def config_value(config: dict[str, Any], key: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``key="a.b"``; a flat ``config["a.b"]`` (as sweeps set it) wins."""
    if key in config:
        return config[key]
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def from_run_record(run: OfflineRun) -> RunRounds:
    """Turn what a run file (or the API) holds into a :class:`RunRounds`."""
    monitor = config_value(run.config, "pruning.monitor", "val/loss") or "val/loss"
    best_key = "round/best_" + str(monitor).replace("/", "_")
    rows: dict[int, dict[str, Any]] = {}
    curve, instability = [], []
    for row in run.history:
        if _is_number(row.get(INSTABILITY)) and "round" in row:  # rides the round axis, but is not a round's row
            instability.append({
                "round": int(row["round"]),
                "step": _int(row.get(INSTABILITY + "_step")),
                "instability": float(row[INSTABILITY]),
                "stable": bool(row.get(INSTABILITY + "_stable")),
            })  # fmt: skip
        elif "round" in row and "round/density" in row:
            rows[int(row["round"])] = row  # a resumed run may log a round twice: the later row wins
        elif STEP in row and any(k in row for k in CURVE_KEYS):
            curve.append((int(row[STEP]), {k: float(row[k]) for k in CURVE_KEYS if _is_number(row.get(k))}))
    rounds = []
    for number in sorted(rows):
        row, before = rows[number], rows.get(number - 1)
        start = 0 if number == 0 else _int(before.get(STEP)) if before else None
        rounds.append(
            Round(
                round=number,
                density=float(row["round/density"]),
                start_step=start,
                end_step=_int(row.get(STEP)),
                early_stop_step=_int(row.get("round/early_stop_step")),
                best_value=_float(row.get(best_key)),
                val_acc=_float(row.get("round/val_acc")),
                test_acc=_float(row.get("round/test_acc")),
                layer_density={k[len("round/density/") :]: v for k, v in row.items() if k.startswith("round/density/")},
                seconds=_float(row.get("_runtime")),
                mask_iou_prev=_float(row.get("round/mask_iou_prev")),
                mask_churn=_float(row.get("round/mask_churn")),
            )
        )
    return RunRounds(
        run_id=run.run_id,
        name=run.name,
        group=run.group,
        project=run.project,
        state=run.state,
        exit_code=run.exit_code,
        config=run.config,
        summary=run.summary,
        rounds=rounds,
        curve=sorted(curve, key=lambda point: point[0]),
        ticket=winning_ticket(run.artifacts),
        source=str(run.path),
        instability=instability,
    )


def winning_ticket(artifacts: list[dict[str, Any]]) -> TicketArtifact | None:
    """The last ``lottery-ticket`` version logged with the ``winning`` alias: the alias moves to sparser rounds
    as they qualify, and a run file keeps every record, so earlier versions still show it."""
    for record in reversed(artifacts):
        aliases = tuple(str(a) for a in record.get("aliases") or ())
        if record.get("type") == TICKET_TYPE and WINNING in aliases and record.get("name"):
            return TicketArtifact(str(record["name"]), WINNING, aliases, _metadata(record.get("metadata")))
    return None


def _metadata(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value) if isinstance(value, str) and value else {}
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value: Any) -> int | None:
    return int(value) if _is_number(value) else None


def _float(value: Any) -> float | None:
    return float(value) if _is_number(value) else None
