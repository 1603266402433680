"""The root fields: ``Query`` (what the SDK reads) and ``Mutation`` (what it writes)."""

from __future__ import annotations

import base64
import json
import secrets
import string
import warnings
from typing import Any

import yaml

from .artifacts import Artifact, BlobFile
from .executor import GraphQLError
from .graph import Connection, gid
from .model import Backend
from .runs import Agent, Run, Sweep, View

with warnings.catch_warnings():  # sweeps 0.2 declares its pydantic models in v1 style
    warnings.simplefilter("ignore")
    import sweeps

_ALPHABET = string.ascii_lowercase + string.digits


def new_name() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


class Viewer:
    def __init__(self, backend: Backend):
        entity = backend.entity(Backend.VIEWER)
        self.id, self.entity, self.username, self.name = gid("User"), entity.name, entity.name, entity.name
        self.email, self.admin, self.photoUrl, self.flags = "tester@localhost", False, None, "{}"
        self.userInfo, self.apiKeys = "{}", None
        self.teams = Connection([backend.entity(Backend.ORG)])
        self.defaultEntity = entity


class ServerInfo:
    def __init__(self):
        self.features: list = []
        self.cliVersionInfo = "{}"
        self.latestLocalVersionInfo = None
        self.availableBucketProviders = ["S3"]
        self.frontendHost = ""
        self.defaultCloudRegion = None


class Query:
    typename = "Query"

    def __init__(self, backend: Backend):
        self.backend = backend

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.backend)

    @property
    def serverInfo(self) -> ServerInfo:
        return ServerInfo()

    def project(self, name: str, entityName: str | None = None, **_ignored):
        return self.backend.project(entityName, name)

    model = project

    def models(self, entityName: str | None = None, first: int | None = None, after: str | None = None):
        return Connection(list(self.backend.entity(entityName).projects.values()), first, after)

    def view(self, id: str):
        view = self.backend.views.get(id)
        if view is None:
            raise GraphQLError(f"view {id} not found")
        return view

    def entity(self, name: str | None = None, **_ignored):
        return self.backend.entity(name)

    def organization(self, name: str | None = None, **_ignored):
        return self.backend.entity(Backend.VIEWER).organization

    def artifact(self, id: str):
        return self.backend.artifact_by_id(id)

    def clientIDMapping(self, clientID: str):
        return None


def _input(kwargs: dict[str, Any]) -> dict[str, Any]:
    return kwargs.get("input", kwargs)


class Payload:
    """A mutation's answer: whatever fields it names."""

    def __init__(self, typename: str, **fields: Any):
        self.typename = typename
        self.__dict__.update(fields)


class Mutation:
    typename = "Mutation"

    def __init__(self, backend: Backend):
        self.backend = backend

    # runs -------------------------------------------------------------------------------------------------
    def upsertBucket(self, **kwargs) -> Payload:
        i = _input(kwargs)
        if i.get("id"):
            run = next((r for e in self.backend.entities.values() for p in e.projects.values()
                        for r in p.run_map.values() if r.id == i["id"]), None)  # fmt: skip
            if run is None:
                raise GraphQLError(f"run {i['id']} not found")
        else:
            project = self.backend.project(i.get("entityName"), i.get("modelName"), create=True)
            name = i.get("name") or new_name()
            sweep = None
            if i.get("sweep"):
                sweep = project.sweep(i["sweep"])
                if sweep is None:  # what W&B answers (wandb#8115)
                    raise GraphQLError(f"sweep {i['sweep']} not found")
            inserted = name not in project.run_map
            run = project.run_map.setdefault(name, Run(project, name))
            if sweep is not None and run not in sweep.run_list:
                sweep.run_list.append(run)
                run.sweep = sweep
        for key in ("displayName", "description", "notes", "commit", "host", "program", "jobType", "repo"):
            if i.get(key) is not None:
                setattr(run, key, i[key])
        if i.get("groupName") is not None:
            run.group = i["groupName"]
        if i.get("tags") is not None:
            run.tags = list(i["tags"])
        if i.get("config") is not None:
            run.config_json = i["config"]
        if i.get("summaryMetrics") is not None:
            run.summary.update(json.loads(i["summaryMetrics"]))
        if i.get("state") is not None:
            run.state = i["state"]
        return Payload("UpsertBucketPayload", bucket=run, inserted=not i.get("id") and inserted)

    def createRunFiles(self, **kwargs) -> Payload:
        i = _input(kwargs)
        run = self.backend.find_run(i["entityName"], i["projectName"], i["runName"])
        files = []
        for name in i["files"]:
            key = f"runs/{run.id}/{name}"
            run.file_keys[name] = key
            files.append(BlobFile(self.backend, key))
            files[-1].name = name
        return Payload("CreateRunFilesPayload", runID=run.id, uploadHeaders=[], files=files)

    # artifacts --------------------------------------------------------------------------------------------
    def createArtifact(self, **kwargs) -> Payload:
        i = _input(kwargs)
        project = self.backend.project(i["entityName"], i["projectName"], create=True)
        run = project.run(i["runName"]) if i.get("runName") else None
        names = i.get("artifactCollectionNames") or [i["artifactCollectionName"]]
        sequence = project.artifact_type(i["artifactTypeName"]).collection(names[0])
        aliases = [(sequence, a["alias"]) for a in i.get("aliases") or []]
        same = next((a for a in sequence.live() if a.digest == i["digest"]), None)
        if same is not None:  # identical contents: W&B keeps the existing version and moves the aliases to it
            for collection, alias in aliases:
                collection.set_alias(alias, same)
            if run is not None and same not in run.logged:
                run.logged.append(same)
            return Payload("CreateArtifactPayload", artifact=same)
        draft = next((a for a in sequence.drafts if a.digest == i["digest"]), None)
        if draft is not None:  # a version whose logging was cut off (a killed run): it is uploaded and committed now
            draft.pending_aliases = aliases
            if run is not None and draft not in run.logged:
                run.logged.append(draft)
            return Payload("CreateArtifactPayload", artifact=draft)
        artifact = Artifact(sequence, i["digest"], i.get("metadata"), i.get("description"), run)
        artifact.pending_aliases = aliases
        if i.get("ttlDurationSeconds") is not None:
            artifact.ttlDurationSeconds, artifact.ttlIsInherited = i["ttlDurationSeconds"], False
        artifact.historyStep = i.get("historyStep")
        if run is not None:
            run.logged.append(artifact)
        return Payload("CreateArtifactPayload", artifact=artifact)

    def createArtifactManifest(self, **kwargs) -> Payload:
        i = _input(kwargs)
        artifact = self.backend.artifact_by_id(i["artifactID"])
        artifact.manifest_key = f"manifests/{artifact.id}/{i.get('name', 'wandb_manifest.json')}"
        return Payload("CreateArtifactManifestPayload", artifactManifest=artifact.currentManifest)

    def updateArtifactManifest(self, **kwargs) -> Payload:
        i = _input(kwargs)
        artifact = next(a for a in self._artifacts() if a.currentManifest and
                        a.currentManifest.id == i["artifactManifestID"])  # fmt: skip
        return Payload("UpdateArtifactManifestPayload", artifactManifest=artifact.currentManifest)

    def createArtifactFiles(self, **kwargs) -> Payload:
        i = _input(kwargs)
        files = []
        for spec in i["artifactFiles"]:
            artifact = self.backend.artifact_by_id(spec["artifactID"])
            hexdigest = base64.b64decode(spec["md5"]).hex()
            blob = BlobFile(self.backend, f"md5/{hexdigest}")
            if hexdigest in self.backend.by_md5:  # stored already: nothing to upload
                blob.uploadUrl = None
            blob.storagePath, blob.uploadMultipartUrls, blob.artifact, blob.name = (
                f"md5/{hexdigest}", None, artifact, spec["name"])  # fmt: skip
            files.append(blob)
        return Payload("CreateArtifactFilesPayload", files=Connection(files))

    def commitArtifact(self, **kwargs) -> Payload:
        i = _input(kwargs)
        artifact = self.backend.artifact_by_id(i["artifactID"])
        artifact.state = "COMMITTED"
        sequence = artifact.artifactSequence
        if artifact in sequence.drafts:
            sequence.drafts.remove(artifact)
            sequence.members.append(artifact)
        for collection, alias in artifact.pending_aliases:
            collection.set_alias(alias, artifact)
        artifact.artifactSequence.set_alias("latest", artifact)
        return Payload("CommitArtifactPayload", artifact=artifact)

    def useArtifact(self, **kwargs) -> Payload:
        i = _input(kwargs)
        run = self.backend.find_run(i["entityName"], i["projectName"], i["runName"])
        artifact = self.backend.artifact_by_id(i["artifactID"])
        if artifact not in run.used:
            run.used.append(artifact)
            artifact.used_by.append(run)
        return Payload("UseArtifactPayload", artifact=artifact)

    def linkArtifact(self, **kwargs) -> Payload:
        i = _input(kwargs)
        artifact = self.backend.artifact_by_id(i.get("artifactID"))
        project = self.backend.project(i["entityName"], i["projectName"], create=True)
        portfolio = project.artifact_type(artifact.artifactType.name).collection(i["artifactPortfolioName"], True)
        if artifact not in portfolio.members:
            portfolio.members.append(artifact)
            artifact.portfolios.append(portfolio)
        for alias in [a["alias"] for a in i.get("aliases") or []] + ["latest"]:
            portfolio.set_alias(alias, artifact)
        membership = portfolio.artifactMembership(f"v{portfolio.members.index(artifact)}")
        return Payload("LinkArtifactPayload", versionIndex=membership.versionIndex, artifactMembership=membership)

    def deleteArtifact(self, **kwargs) -> Payload:
        i = _input(kwargs)
        artifact = self.backend.artifact_by_id(i["artifactID"])
        collections = (artifact.artifactSequence, *artifact.portfolios)
        if any(c.aliases_of(artifact) for c in collections) and not i.get("deleteAliases"):
            raise GraphQLError("cannot delete artifact with aliases")  # W&B's rule and message
        for collection in collections:
            for alias in collection.aliases_of(artifact):
                del collection.alias_map[alias.alias]
        artifact.state = "DELETED"
        return Payload("DeleteArtifactPayload", artifact=artifact)

    def _artifacts(self):
        for entity in self.backend.entities.values():
            for project in entity.projects.values():
                for collection in project.collections():
                    yield from collection.members + collection.drafts

    # sweeps -----------------------------------------------------------------------------------------------
    def upsertSweep(self, **kwargs) -> Payload:
        i = _input(kwargs)
        project = self.backend.project(i.get("entityName"), i.get("projectName"), create=True)
        if i.get("id"):
            sweep = next(s for e in self.backend.entities.values() for p in e.projects.values()
                         for s in p.sweep_map.values() if s.id == i["id"])  # fmt: skip
            if i.get("state"):
                sweep.state = i["state"]
            return Payload("UpsertSweepPayload", sweep=sweep, inserted=False, configValidationWarnings=[])
        config = yaml.safe_load(i["config"])
        violations = sweeps.schema_violations_from_proposed_config(config)
        sweep = Sweep(project, i["config"], new_name())
        project.sweep_map[sweep.name] = sweep
        return Payload("UpsertSweepPayload", sweep=sweep, inserted=True, configValidationWarnings=violations)

    def createAgent(self, **kwargs) -> Payload:
        i = _input(kwargs)
        project = self.backend.project(i.get("entityName"), i.get("projectName"))
        sweep = project.sweep(i["sweep"]) if project else None
        if sweep is None:
            raise GraphQLError(f"sweep {i['sweep']} not found")
        agent = Agent(sweep, i.get("host"))
        self.backend.agents[agent.id] = agent
        return Payload("CreateAgentPayload", agent=agent)

    def agentHeartbeat(self, **kwargs) -> Payload:
        """The sweep's controller: the next run's parameters (``sweeps.next_run``) when the agent is idle, and
        ``stop`` for runs that early termination (``sweeps.stop_runs``) picks."""
        i = _input(kwargs)
        agent = self.backend.agents[i["id"]]
        sweep = agent.sweep
        running = json.loads(i.get("runState") or "{}")
        config = yaml.safe_load(sweep.config)
        engine_runs = [_engine_run(run, config) for run in sweep.run_list]
        commands: list[dict[str, Any]] = []
        if config.get("early_terminate"):
            for stop in sweeps.stop_runs(config, engine_runs, validate=True):
                if stop.name in running and stop.name not in sweep.stopped:
                    sweep.stopped.add(stop.name)
                    commands.append({"type": "stop", "run_id": stop.name})
        preempted = next((run for run in sweep.run_list if run.state == "preempted"), None)
        if not running and preempted is not None:  # W&B requeues a preempted run before proposing new ones
            preempted.state, preempted.preempting = "pending", False
            agent.run_names.append(preempted.name)
            commands.append({"type": "resume", "run_id": preempted.name, "args": preempted.sweep_args,
                             "program": config.get("program")})  # fmt: skip
        elif not running and sweep.state == "RUNNING":
            proposal = sweeps.next_run(config, engine_runs, validate=True)
            if proposal is None:
                sweep.state = "FINISHED"
                commands.append({"type": "exit"})
            else:
                name = new_name()
                run = sweep.project.run_map.setdefault(name, Run(sweep.project, name))
                run.state, run.sweep = "pending", sweep
                sweep.run_list.append(run)
                agent.run_names.append(name)
                args = {k: {"value": _plain(v["value"])} for k, v in proposal.config.items()}
                run.sweep_args = args
                commands.append({"type": "run", "run_id": name, "args": args, "program": config.get("program")})
        return Payload("AgentHeartbeatPayload", agent=agent, commands=json.dumps(commands))

    # reports ----------------------------------------------------------------------------------------------
    def upsertView(self, **kwargs) -> Payload:
        i = _input(kwargs)
        if i.get("id"):
            view = self.backend.views[i["id"]]
            view.update(i)
            return Payload("UpsertViewPayload", view=view, inserted=False)
        entity = self.backend.entity(i.get("entityName"))
        project = self.backend.project(i.get("entityName"), i.get("projectName")) if i.get("projectName") else None
        view = View(project, entity, i)
        self.backend.views[view.id] = view
        if project is not None:
            project.views.append(view)
        return Payload("UpsertViewPayload", view=view, inserted=True)


def _engine_run(run: Run, config: dict[str, Any]):
    metric = config.get("metric", {}).get("name")
    states = {"pending": "pending", "running": "running", "finished": "finished", "failed": "failed",
              "killed": "killed", "crashed": "crashed", "preempted": "preempted"}  # fmt: skip
    params = json.loads(run.config_json) if run.config_json else {}
    rows = [{metric: r[metric]} for r in run.rows() if metric and metric in r] if metric else []
    return sweeps.SweepRun(
        name=run.name,
        state=sweeps.RunState(states.get(run.state, "running")),
        config={k: v for k, v in params.items() if k in config.get("parameters", {})},
        sampledHistory=rows,
        summaryMetrics={k: v for k, v in run.summary.items() if isinstance(v, (int, float, str))},
    )


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))

