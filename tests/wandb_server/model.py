"""The server's state and its GraphQL types: entities, projects, runs, artifacts, sweeps and reports, in memory.

Each class is a GraphQL type; its camelCase attributes and methods are the fields the server knows (executor.py).
Only what the SDK's requests have been seen to ask is here. The rules W&B enforces and our code depends on are
kept: an alias names one version per collection and moves when another version claims it, a version with
aliases is not deleted unless ``deleteAliases`` is given, identical contents are stored as the existing
version, a run that names a sweep the server never saw is refused (wandb#8115).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from .executor import GraphQLError, Unknown

_counter = itertools.count(1)


def gid(kind: str) -> str:
    """A fresh opaque id, base64 like W&B's (``Run:v1:...``)."""
    return base64.b64encode(f"{kind}:{next(_counter)}".encode()).decode()


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


@dataclass
class PageInfo:
    endCursor: str | None
    hasNextPage: bool


@dataclass
class Edge:
    node: Any
    cursor: str
    version: str | None = None  # artifact versions: "v<index>"


class Connection:
    """A Relay connection over a list, paged by ``first``/``after`` (the cursor is the position)."""

    typename = "Connection"

    def __init__(self, items: list, first: int | None = None, after: str | None = None, version=None):
        start = int(after) + 1 if after else 0
        end = len(items) if first is None else start + first
        self.totalCount = len(items)
        self.edges = [
            Edge(node, str(i), version(node) if version else None)
            for i, node in enumerate(items[start:end], start)
        ]
        self.pageInfo = PageInfo(self.edges[-1].cursor if self.edges else None, end < len(items))


def paged(items: list):
    """A field method that answers a connection over ``items()``, ignoring filters the server does not need."""

    def field(first: int | None = None, after: str | None = None, **_ignored) -> Connection:
        return Connection(items(), first, after)

    return field


class Entity:
    def __init__(self, backend: Backend, name: str, organization: Organization | None = None):
        self.backend, self.name, self.id = backend, name, gid("Entity")
        self.organization = organization
        self.isTeam, self.readOnly, self.photoUrl, self.available = False, False, None, True
        self.defaultAccess, self.privateOnly, self.codeSavingEnabled = "PRIVATE", False, False
        self.xxhashDigestsEnabled = False
        self.projects: dict[str, Project] = {}

    def project(self, name: str, create: bool = False) -> Project | None:
        if name not in self.projects and create:
            self.projects[name] = Project(self, name)
        return self.projects.get(name)

    @property
    def user(self) -> User | None:
        """The user behind a personal entity, with the organizations they belong to."""
        if self.name != self.backend.VIEWER:
            return None
        user = User(self.name)
        user.organizations = [self.organization] if self.organization else []
        return user


class Organization:
    def __init__(self, name: str):
        self.name, self.id = name, gid("Organization")
        self.orgEntity: Entity | None = None
        self.coreWeaveOrganizationId = None

    def featureFlags(self, **_ignored) -> list:
        return []


class Project:
    def __init__(self, entity: Entity, name: str):
        self.entity, self.name, self.id = entity, name, gid("Project")
        self.internalId = str(next(_counter))  # a number: the SDK parses a run's projectId with int()
        self.createdAt = self.updatedAt = stamp()
        self.description, self.access, self.allowAllArtifactTypes = None, "PRIVATE", True
        self.run_map: dict[str, Run] = {}
        self.sweep_map: dict[str, Sweep] = {}
        self.type_map: dict[str, ArtifactType] = {}
        self.views: list[View] = []

    @property
    def entityName(self) -> str:
        return self.entity.name

    # runs
    def run(self, name: str) -> Run | None:
        return self.run_map.get(name)

    def bucket(self, name: str, missingOk: bool = False) -> Run | None:
        return self.run_map.get(name)

    def runs(self, filters: str | None = None, first: int | None = None, after: str | None = None, order=None):
        found = [r for r in self.run_map.values() if matches(r, json.loads(filters) if filters else {})]
        return Connection(found, first, after)

    def runCount(self, filters: str | None = None) -> int:
        return self.runs(filters).totalCount

    readOnly, isBenchmark = False, False

    @property
    def user(self) -> User:
        return User(self.entity.name)

    # sweeps
    def sweep(self, sweepName: str) -> Sweep | None:
        return self.sweep_map.get(sweepName)

    # artifacts
    def artifactType(self, name: str) -> ArtifactType | None:
        return self.type_map.get(name)

    def artifact_type(self, name: str) -> ArtifactType:
        if name not in self.type_map:
            self.type_map[name] = ArtifactType(self, name)
        return self.type_map[name]

    def collections(self) -> list[Collection]:
        return [c for t in self.type_map.values() for c in t.collections.values()]

    def collection(self, name: str) -> Collection | None:
        return next((c for c in self.collections() if c.name == name), None)

    def artifactCollection(self, name: str) -> Collection | None:
        return self.collection(name)

    def artifactCollectionMembership(self, name: str) -> Membership | None:
        collection, _, alias = name.partition(":")
        found = self.collection(collection)
        return found.artifactMembership(aliasName=alias or "latest") if found else None

    def artifact(self, name: str) -> Artifact | None:
        membership = self.artifactCollectionMembership(name)
        return membership.artifact if membership else None


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
        return json.loads(self.events[-1]) and self.events[-1] if self.events else "{}"

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


class ArtifactType:
    def __init__(self, project: Project, name: str):
        self.project, self.name, self.id = project, name, gid("ArtifactType")
        self.description, self.createdAt = None, stamp()
        self.collections: dict[str, Collection] = {}

    def artifactCollection(self, name: str) -> Collection | None:
        return self.collections.get(name)

    artifactSequence = artifactCollection

    def artifactCollections(self, first: int | None = None, after: str | None = None, **_ignored) -> Connection:
        return Connection(list(self.collections.values()), first, after)

    def artifact(self, name: str) -> Artifact | None:
        return self.project.artifact(name)

    def collection(self, name: str, portfolio: bool = False) -> Collection:
        if name not in self.collections:
            self.collections[name] = Collection(self, name, portfolio)
        return self.collections[name]


class Collection:
    """An ``ArtifactSequence`` (the versions a run logs) or an ``ArtifactPortfolio`` (a registry collection)."""

    interfaces = ("ArtifactCollection",)

    def __init__(self, artifact_type: ArtifactType, name: str, portfolio: bool = False):
        self.artifact_type, self.name, self.id = artifact_type, name, gid("ArtifactCollection")
        self.typename = "ArtifactPortfolio" if portfolio else "ArtifactSequence"
        self.project = artifact_type.project
        self.description, self.createdAt, self.updatedAt = None, stamp(), stamp()
        self.state, self.digestAlgorithm = "READY", "MANIFEST_MD5"
        self.members: list[Artifact] = []  # committed (and later deleted) versions in version order; for a
        # portfolio, the linked artifacts
        self.drafts: list[Artifact] = []  # created, not yet committed: no version index yet
        self.alias_map: dict[str, Artifact] = {}

    @property
    def type(self) -> ArtifactType:
        return self.artifact_type

    defaultArtifactType = type

    def tags(self, **_ignored) -> Connection:
        return Connection([])

    def live(self) -> list[Artifact]:
        return [a for a in self.members if a.state == "COMMITTED"]

    def artifacts(self, first: int | None = None, after: str | None = None, **_ignored) -> Connection:
        return Connection(self.live()[::-1], first, after, version=lambda a: f"v{self.members.index(a)}")

    def artifactMemberships(self, first: int | None = None, after: str | None = None, **_ignored) -> Connection:
        return Connection([Membership(self, a) for a in self.live()[::-1]], first, after)

    def aliases(self, first: int | None = None, after: str | None = None, **_ignored) -> Connection:
        return Connection([Alias(self, name) for name in self.alias_map], first, after)

    @property
    def latestArtifact(self) -> Artifact | None:
        live = self.live()
        return live[-1] if live else None

    def version_of(self, alias: str) -> Artifact | None:
        if alias.startswith("v") and alias[1:].isdigit() and int(alias[1:]) < len(self.members):
            found = self.members[int(alias[1:])]
            return found if found.state == "COMMITTED" else None
        found = self.alias_map.get(alias)
        return found if found is not None and found.state == "COMMITTED" else None

    def artifactMembership(self, aliasName: str) -> Membership | None:
        found = self.version_of(aliasName)
        return Membership(self, found) if found else None

    def set_alias(self, alias: str, artifact: Artifact) -> None:
        """Point ``alias`` at ``artifact``: W&B moves an alias that named another version of the collection."""
        self.alias_map[alias] = artifact

    def aliases_of(self, artifact: Artifact) -> list[Alias]:
        return [Alias(self, name) for name, a in self.alias_map.items() if a is artifact]


@dataclass
class Alias:
    artifactCollection: Collection
    alias: str
    typename = "ArtifactAlias"

    @property
    def id(self) -> str:
        return base64.b64encode(f"ArtifactAlias:{self.artifactCollection.id}:{self.alias}".encode()).decode()


class Membership:
    typename = "ArtifactCollectionMembership"

    def __init__(self, collection: Collection, artifact: Artifact):
        self.artifactCollection, self.artifact = collection, artifact
        self.id = base64.b64encode(f"Membership:{collection.id}:{artifact.id}".encode()).decode()
        self.versionIndex = collection.members.index(artifact)
        self.createdAt = artifact.createdAt

    @property
    def aliases(self) -> list[Alias]:
        return self.artifactCollection.aliases_of(self.artifact)

    def files(self, **args) -> Connection:
        return self.artifact.files(**args)


class Artifact:
    def __init__(self, sequence: Collection, digest: str, metadata: str | None, description: str | None, run: Run):
        self.artifactSequence, self.digest, self.description = sequence, digest, description
        self.metadata = metadata or "{}"
        self.id, self.state, self.createdAt, self.updatedAt = gid("Artifact"), "PENDING", stamp(), stamp()
        self.createdBy, self.used_by = run, []
        self.ttlDurationSeconds, self.ttlIsInherited, self.historyStep = -1, True, None
        self.commitHash, self.digestAlgorithm = None, "MANIFEST_MD5"
        self.manifest_key: str | None = None
        self.pending_aliases: list[tuple[Collection, str]] = []
        self.portfolios: list[Collection] = []
        self.tags: list = []
        sequence.drafts.append(self)

    @property
    def versionIndex(self) -> int | None:
        """Given at commit, as W&B does: a version killed before its commit takes no number."""
        members = self.artifactSequence.members
        return members.index(self) if self in members else None

    @property
    def artifactType(self) -> ArtifactType:
        return self.artifactSequence.artifact_type

    def manifest(self) -> dict[str, Any]:
        backend = self.artifactSequence.project.entity.backend
        return json.loads(backend.blobs.get(self.manifest_key, b"{}")) if self.manifest_key else {}

    @property
    def fileCount(self) -> int:
        return len(self.manifest().get("contents", {}))

    @property
    def size(self) -> int:
        return sum(e.get("size", 0) for e in self.manifest().get("contents", {}).values())

    @property
    def aliases(self) -> list[Alias]:
        found = self.artifactSequence.aliases_of(self)
        for portfolio in self.portfolios:
            found += portfolio.aliases_of(self)
        return found

    @property
    def currentManifest(self) -> Manifest | None:
        return Manifest(self) if self.manifest_key else None

    def usedBy(self, **_ignored) -> Connection:
        return Connection(self.used_by)

    def artifactMemberships(self, **_ignored) -> Connection:
        return Connection([Membership(c, self) for c in (self.artifactSequence, *self.portfolios)])

    def files(self, names: list[str] | None = None, first: int | None = None, after=None, **_ignored) -> Connection:
        backend = self.artifactSequence.project.entity.backend
        entries = self.manifest().get("contents", {})
        found = [ArtifactFile(backend, path, entry) for path, entry in entries.items() if not names or path in names]
        return Connection(found, first, after)


class Manifest:
    typename = "ArtifactManifest"

    def __init__(self, artifact: Artifact):
        self.id = base64.b64encode(f"ArtifactManifest:{artifact.id}".encode()).decode()
        self.file = BlobFile(artifact.artifactSequence.project.entity.backend, artifact.manifest_key)


class BlobFile:
    """A file the server stores: where to upload it and where to download it from."""

    typename = "File"

    def __init__(self, backend: Backend, key: str):
        self.key, self.id = key, gid("File")
        self.uploadUrl = self.directUrl = self.url = backend.url_of(key)
        self.uploadHeaders: list[str] = []


class ArtifactFile:
    typename = "File"

    def __init__(self, backend: Backend, path: str, entry: dict[str, Any]):
        self.name, self.id = path, gid("File")
        self.digest, self.sizeBytes = entry.get("digest"), entry.get("size", 0)
        self.md5 = self.digest
        hexdigest = base64.b64decode(self.digest).hex() if self.digest else ""
        self.directUrl = self.url = f"{backend.base_url}/storage/md5/{hexdigest}"
        self.storagePath, self.mimetype, self.updatedAt = None, "application/octet-stream", stamp()


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
        self.sweep, self.host, self.id, self.name = sweep, host, gid("Agent"), f"agent-{next(_counter)}"
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


@dataclass
class Backend:
    """All state, and the root ``Query``/``Mutation`` objects the executor starts from."""

    base_url: str = ""
    entities: dict[str, Entity] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # stored files by key
    by_md5: dict[str, bytes] = field(default_factory=dict)
    agents: dict[str, Any] = field(default_factory=dict)
    views: dict[str, Any] = field(default_factory=dict)

    VIEWER = "tester"
    ORG = "tester-org"

    def __post_init__(self):
        from .roots import Mutation, Query

        org = Organization(self.ORG)
        self.entity(self.VIEWER).organization = org
        org.orgEntity = self.entity(self.ORG)
        org.orgEntity.organization = org
        self.root = {"query": Query(self), "mutation": Mutation(self)}

    def entity(self, name: str | None) -> Entity:
        name = name or self.VIEWER
        if name not in self.entities:
            self.entities[name] = Entity(self, name)
        return self.entities[name]

    def project(self, entity: str | None, name: str | None, create: bool = False) -> Project | None:
        return self.entity(entity).project(name or "uncategorized", create)

    def url_of(self, key: str) -> str:
        return f"{self.base_url}/storage/{key}"

    def store(self, key: str, data: bytes) -> None:
        self.blobs[key] = data
        self.by_md5[hashlib.md5(data).hexdigest()] = data

    def find_run(self, entity: str, project: str, name: str) -> Run:
        found = self.project(entity, project)
        run = found.run(name) if found else None
        if run is None:
            raise GraphQLError(f"run {entity}/{project}/{name} not found")
        return run

    def artifact_by_id(self, artifact_id: str) -> Artifact:
        for entity in self.entities.values():
            for project in entity.projects.values():
                for collection in project.collections():
                    for artifact in collection.members + collection.drafts:
                        if artifact.id == artifact_id:
                            return artifact
        raise GraphQLError(f"artifact {artifact_id} not found")

    def file_stream(self, entity: str, project: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A run's streamed files: ``{"files": {name: {"offset": n, "content": [lines]}}, "complete", "exitcode"}``."""
        run = self.project(entity, project, create=True).run_map.get(name)
        if run is None:
            return {"error": f"run {name} not found"}
        targets = {"wandb-history.jsonl": run.history_lines, "wandb-events.jsonl": run.events}
        targets["output.log"] = run.log_lines
        for file_name, chunk in payload.get("files", {}).items():
            lines = list(chunk.get("content", []))
            if file_name == "wandb-summary.json":
                if lines:
                    run.summary = json.loads(lines[-1])
            elif file_name in targets:
                target, offset = targets[file_name], chunk.get("offset", 0)
                target[offset : offset + len(lines)] = lines
        if run.state == "pending":  # a sweep's run the agent has started
            run.state = "running"
        if payload.get("complete"):
            run.exitcode = payload.get("exitcode")
            run.state = "finished" if run.exitcode == 0 else "failed"
            if run.sweep is not None and run.name in run.sweep.stopped and run.exitcode != 0:
                run.state = "killed"
        run.heartbeatAt = stamp()
        return {"exitcode": None, "limits": {}}
