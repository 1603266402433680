"""Artifacts: types, collections (``ArtifactSequence`` for what runs log, ``ArtifactPortfolio`` for registry
collections), versions, aliases, memberships, manifests and files."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .graph import Connection, gid, stamp

if TYPE_CHECKING:
    from .model import Backend, Project
    from .runs import Run


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
