"""Run the test server by hand, to point a command at it and look at what it sent.

    python -m tests.wandb_server --log /tmp/wandb-requests.jsonl     # prints the environment to export
    eval "$(...)"; lth-train wandb.mode=online                        # in another shell, with that environment
    python -c "import wandb; print(wandb.Api().runs('tester/lth-wandb'))"

Ctrl+C (or SIGTERM) stops it and prints what it holds: projects, runs (rows, summary keys), artifact
versions and aliases.
"""

from __future__ import annotations

import argparse
import json
import signal
import time

from . import WandbServer


def describe(server: WandbServer) -> str:
    lines = []
    for entity in server.backend.entities.values():
        for project in entity.projects.values():
            lines.append(f"{entity.name}/{project.name}")
            for run in project.run_map.values():
                sweep = f" sweep={run.sweep.name}" if run.sweep else ""
                lines.append(f"  run {run.name} {run.state}{sweep}: {len(run.history_lines)} rows, "
                             f"summary {sorted(run.summary)[:8]}...")  # fmt: skip
            for collection in project.collections():
                for artifact in collection.members:
                    aliases = [a.alias for a in collection.aliases_of(artifact)]
                    lines.append(f"  {collection.typename} {collection.name}:v{artifact.versionIndex} "
                                 f"{artifact.state} {aliases}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.wandb_server", description=__doc__.splitlines()[0])
    parser.add_argument("--log", help="append every request (JSON lines) to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it like Ctrl+C, with the summary
    with WandbServer(log=args.log) as server:
        for key, value in server.env().items():
            print(f"export {key}={json.dumps(value)}")
        print(f"# serving on {server.url}; Ctrl+C stops", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        print(describe(server))
        if server.unknown:
            print("asked but not known:\n  " + "\n  ".join(sorted(set(server.unknown))))


if __name__ == "__main__":
    main()
