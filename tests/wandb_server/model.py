"""The server's state: the :class:`Backend` (everything it holds, the file stream, and the root objects) and the
entity, organization and project types; runs.py and artifacts.py hold the rest.

Each class is a GraphQL type; its camelCase attributes and methods are the fields the server knows (executor.py).
Only what the SDK's requests have been seen to ask is here. The rules W&B enforces and our code depends on live in
the mutations (roots.py): an alias names one version per collection and moves when another version claims it, a
version with aliases is not deleted unless ``deleteAliases`` is given, identical contents are stored as the
existing version, a version number is given at commit, a run that names a sweep the server never saw is refused
(wandb#8115).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .artifacts import ArtifactType, Collection, Membership
from .executor import GraphQLError
from .graph import Connection, gid, number, stamp
from .runs import Run, User, matches

if TYPE_CHECKING:
    from .artifacts import Artifact
    from .runs import Sweep, View


# What wandb-core sends to file_stream (seen with wandb 0.31): anything else is unknown to this server.
FILE_STREAM_KEYS = {"files", "complete", "exitcode", "uploaded", "preempting", "dropped"}


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
        self.internalId = str(number())  # a number: the SDK parses a run's projectId with int()
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

    def file_stream(self, entity: str, project: str, name: str, payload: dict[str, Any], unknown: list[str]) -> dict:
        """A run's streamed files: ``{"files": {name: {"offset": n, "content": [lines]}}, "complete", "exitcode"}``.
        A run, payload key or file this server does not know is appended to ``unknown``."""
        run = self.project(entity, project, create=True).run_map.get(name)
        if run is None:
            unknown.append(f"file_stream of run {entity}/{project}/{name}, which was never created")
            return {"error": f"run {name} not found"}
        targets = {"wandb-history.jsonl": run.history_lines, "wandb-events.jsonl": run.events}
        targets["output.log"] = run.log_lines
        unknown += [f"file_stream key {key!r}" for key in sorted(set(payload) - FILE_STREAM_KEYS)]
        files = payload.get("files", {})
        unknown += [f"file_stream file {f!r}" for f in sorted(set(files) - set(targets) - {"wandb-summary.json"})]
        for file_name, chunk in files.items():
            lines = list(chunk.get("content", []))
            if file_name == "wandb-summary.json":
                if lines:
                    run.summary = json.loads(lines[-1])
            elif file_name in targets:
                target, offset = targets[file_name], chunk.get("offset", 0)
                target[offset : offset + len(lines)] = lines
        if run.state == "pending":  # a sweep's run the agent has started
            run.state = "running"
        if payload.get("preempting"):  # wandb.mark_preempting(): a failure now is a preemption, to be resumed
            run.preempting = True
        if payload.get("complete"):
            run.exitcode = payload.get("exitcode")
            run.state = "finished" if run.exitcode == 0 else "failed"
            if run.sweep is not None and run.name in run.sweep.stopped and run.exitcode != 0:
                run.state = "killed"
            elif run.exitcode != 0 and run.preempting:
                run.state = "preempted"  # W&B requeues it: the next idle agent gets a `resume` command for it
        run.heartbeatAt = stamp()
        return {"exitcode": None, "limits": {}}
