"""Runs (W&B's ``Bucket``), their files and run filters; sweeps, agents and saved reports (views)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from .executor import Unknown
from .graph import Connection, gid, number, stamp

if TYPE_CHECKING:
    from .artifacts import Artifact
    from .model import Entity, Project


class Run:
    """A run (W&B's ``Bucket``): config, history and summary from the file stream, files, artifacts."""

    def __init__(self, project: Project, name: str):
        self.project, self.name, self.id = project, name, gid("Run")
        self.displayName, self.description, self.notes, self.group, self.jobType = name, None, None, None, None
        self.state, self.commit, self.host, self.program, self.repo = "running", None, None, None, None
        self.createdAt = self.heartbeatAt = self.updatedAt = stamp()
        self.tags: list[str] = []
        self.config_json = "{}"
        self.summary: dict[str, Any] = {}
        self.history_lines: list[str] = []  # JSON lines, as streamed
        self.events: list[str] = []
        self.log_lines: list[str] = []
        self.sweep: Sweep | None = None
        self.exitcode: int | None = None
        self.preempting = False
        self.sweep_args: dict[str, Any] = {}  # the parameters an agent was given for it (to resume it with)
        self.file_keys: dict[str, str] = {}  # file name -> blob key
        self.logged: list[Artifact] = []
        self.used: list[Artifact] = []
        self.readOnly, self.user = False, User(project.entity.name)

    @property
    def projectId(self) -> int:
        return int(self.project.internalId)

    # what the SDK reads back
    @property
    def config(self) -> str:
        return self.config_json

    @property
    def summaryMetrics(self) -> str:
        return json.dumps(self.summary)

    @property
    def systemMetrics(self) -> str:
        return self.events[-1] if self.events else "{}"

    @property
    def sweepName(self) -> str | None:
        return self.sweep.name if self.sweep else None

    @property
    def historyLineCount(self) -> int:
        return len(self.history_lines)

    @property
    def eventsLineCount(self) -> int:
        return len(self.events)

    @property
    def logLineCount(self) -> int:
        return len(self.log_lines)

    @property
    def historyTail(self) -> str:
        return json.dumps(self.history_lines[-10:])

    @property
    def eventsTail(self) -> str:
        return json.dumps(self.events[-10:])

    def wandbConfig(self, keys: list[str] | None = None) -> str:
        wandb = json.loads(self.config_json).get("_wandb", {}).get("value", {})
        return json.dumps({k: wandb[k] for k in keys or wandb if k in wandb})

    @property
    def historyKeys(self) -> dict:
        keys: dict[str, Any] = {}
        for line in self.history_lines:
            for key, value in json.loads(line).items():
                keys.setdefault(key, {"typeCounts": [{"type": type(value).__name__, "count": 0}]})
                keys[key]["typeCounts"][0]["count"] += 1
        return {"lastStep": len(self.history_lines) - 1, "keys": keys}

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.history_lines]

    def history(self, samples: int = 500, minStep: int | None = None, maxStep: int | None = None, **_ignored):
        rows = [r for r in self.rows() if _in(r.get("_step"), minStep, maxStep)]
        return [json.dumps(r) for r in rows[:samples]]

    def parquetHistory(self, liveKeys: list[str]) -> ParquetHistory:
        """No rows are exported to parquet here: every row is live data (only the keys asked for)."""
        return ParquetHistory([], [{k: r[k] for k in liveKeys if k in r} for r in self.rows()])

    @property
    def fileCount(self) -> int:
        return len(self.file_keys)

    @property
    def shouldStop(self) -> bool:
        return self.sweep is not None and self.name in self.sweep.stopped

    failed = property(lambda self: self.state in ("failed", "crashed"))
    stopped = property(lambda self: self.state == "killed")
    running = property(lambda self: self.state == "running")

    def sampledHistory(self, specs: list[str] | str, **_ignored) -> list[list[dict]]:
        answers = []
        for spec in [specs] if isinstance(specs, str) else specs:
            spec = json.loads(spec) if isinstance(spec, str) else spec
            keys = spec.get("keys") or []
            rows = [r for r in self.rows() if all(k in r for k in keys if k != "_step")]
            rows = [{k: r[k] for k in keys if k in r} for r in rows if _in(r.get("_step"), spec.get("minStep"),
                                                                          spec.get("maxStep"))]
            answers.append(rows[: spec.get("samples", 500)])
        return answers

    def outputArtifacts(self, first: int | None = None, after: str | None = None, **_ignored) -> Connection:
        # Committed versions only: the SDK takes a PENDING one for a local draft (its Artifact.id is None).
        return Connection([a for a in self.logged if a.state == "COMMITTED"], first, after)

    def inputArtifacts(self, first: int | None = None, after: str | None = None, **_ignored) -> Connection:
        return Connection(self.used, first, after)

    def files(self, names: list[str] | None = None, **_ignored):
        wanted = [n for n in self.file_keys if not names or n in names]
        return Connection([RunFile(self, n) for n in wanted])


def matches(run: Run, query: dict[str, Any]) -> bool:
    """W&B's run filters (MongoDB-like): ``$and``, ``$or``, and equality (or ``$in``/``$ne``) on the fields the
    SDK and wandb-workspaces filter on; anything else is unknown to this server."""
    for key, wanted in query.items():
        if key in ("$and", "$or"):
            results = [matches(run, q) for q in wanted]
            if not (all(results) if key == "$and" else any(results)):
                return False
            continue
        if key in ("sweep", "group", "state", "name", "displayName", "jobType"):
            value = run.sweepName if key == "sweep" else getattr(run, key)
        elif key.startswith("config.") and key.endswith(".value"):
            value = json.loads(run.config_json).get(key[7:-6], {}).get("value")
        elif key == "tags":
            value = run.tags
        else:
            raise Unknown(f"run filter {key!r}")
        if not _compare(value, wanted):
            return False
    return True


def _compare(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        (op, operand), = wanted.items()
        if op == "$in":
            return any(v in operand for v in value) if isinstance(value, list) else value in operand
        if op == "$ne":
            return value != operand
        raise Unknown(f"run filter operator {op!r}")
    return wanted in value if isinstance(value, list) else value == wanted


def _in(step, low, high) -> bool:
    return step is None or ((low is None or step >= low) and (high is None or step < high))


@dataclass
class ParquetHistory:
    parquetUrls: list[str]
    liveData: list[dict[str, Any]]


@dataclass
class User:
    name: str
    username: str = ""
    email: str = "tester@localhost"

    def __post_init__(self):
        self.username = self.username or self.name
        self.id, self.entity, self.admin, self.flags, self.deletedAt = gid("User"), self.name, False, "{}", None
        self.apiKeys, self.teams = Connection([]), Connection([])


class RunFile:
    typename = "File"

    def __init__(self, run: Run, name: str):
        self.run, self.name, self.id = run, name, gid("File")
        self.key = run.file_keys[name]

    @property
    def directUrl(self) -> str:
        return self.run.project.entity.backend.url_of(self.key)

    url = directUrl

    @property
    def sizeBytes(self) -> int:
        return len(self.run.project.entity.backend.blobs.get(self.key, b""))

    mimetype, storagePath, digest, md5 = "application/octet-stream", None, None, None
    updatedAt = property(lambda self: stamp())


class Sweep:
    def __init__(self, project: Project, config: str, name: str):
        self.project, self.name, self.id, self.config = project, name, gid("Sweep"), config
        self.state, self.description, self.displayName = "RUNNING", None, None
        self.createdAt = self.updatedAt = stamp()
        self.bestLoss, self.controller, self.scheduler = None, None, None
        self.heartbeatAt, self.earlyStopJobRunning = stamp(), False
        self.run_list: list[Run] = []
        self.stopped: set[str] = set()

    @property
    def method(self) -> str | None:
        return yaml.safe_load(self.config).get("method")

    @property
    def runCount(self) -> int:
        return len(self.run_list)

    runCountExpected = None

    def runs(self, first: int | None = None, after: str | None = None, **_ignored) -> Connection:
        return Connection(self.run_list, first, after)


class Agent:
    def __init__(self, sweep: Sweep, host: str | None):
        self.sweep, self.host, self.id, self.name = sweep, host, gid("Agent"), f"agent-{number()}"
        self.run_names: list[str] = []


class View:
    """A saved W&B Report (``upsertView``)."""

    def __init__(self, project: Project | None, entity: Entity, values: dict[str, Any]):
        self.project, self.entity, self.id = project, entity, gid("View")
        self.createdAt = stamp()
        self.update(values)

    def update(self, values: dict[str, Any]) -> None:
        self.name = values.get("name", getattr(self, "name", None))
        self.displayName = values.get("displayName", getattr(self, "displayName", None))
        self.description = values.get("description", getattr(self, "description", None))
        self.spec = values.get("spec", getattr(self, "spec", None))
        self.type = values.get("type", getattr(self, "type", "runs"))
        self.updatedAt = stamp()
