"""The HTTP side of the test server: one ``ThreadingHTTPServer`` on 127.0.0.1 that answers what the SDK sends.

- ``POST /graphql``: GraphQL (executor.py) against the in-memory :class:`~model.Backend`;
- ``POST /sdk/otel/v1/<metrics|logs|traces>``: the SDK's telemetry (OpenTelemetry), accepted and dropped;
- ``POST /files/<entity>/<project>/<run>/file_stream``: a run's history, summary, console and events;
- ``PUT``/``GET /storage/<key>``: files the server handed out URLs for (run files, artifact files, manifests);
- ``GET /artifacts/...``, ``/artifactsV2/...``: artifact files by the MD5 in their path, as the SDK builds them.

Anything else is recorded as unknown (404), like an unknown GraphQL field.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import traceback
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .executor import Unknown, execute
from .model import Backend

_MD5 = re.compile(r"/([0-9a-f]{32})(?:/|$)")


class WandbServer:
    """A W&B-compatible server in this process, on 127.0.0.1 and a free port.

    Args:
        log: a file to write every request to (operation names and variables), for finding what an SDK asks.
    """

    def __init__(self, log=None):
        self.backend = Backend()
        self.unknown: list[str] = []  # requests and fields the server does not know; a test fails on any
        self.upload_delay = 0.0  # seconds each file upload takes: a slow store, for races with background uploads
        self.log = log
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self.backend.base_url = self.url
        self._thread = threading.Thread(target=self._http.serve_forever, name="wandb-test-server", daemon=True)

    def __enter__(self) -> WandbServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()

    def env(self, api_key: str = "local" + "0" * 35) -> dict[str, str]:
        """What points the real SDK at this server: base URL, a 40-character key, online, no telemetry."""
        return {
            "WANDB_BASE_URL": self.url,
            "WANDB_API_KEY": api_key,
            "WANDB_MODE": "online",
            "WANDB_ERROR_REPORTING": "false",
            "WANDB_X_DISABLE_STATS": "true",
            "WANDB_X_DISABLE_MACHINE_INFO": "true",
            "WANDB_DISABLE_GIT": "true",
            "WANDB_DISABLE_CODE": "true",
            "WANDB_X_DISABLE_UPDATE_CHECK": "true",
            "WANDB_SILENT": "true",
            # Nothing leaves loopback: a request for any other host goes to a closed local port and fails.
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def graphql(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown: list[str] = []
        with self._lock:  # one request at a time: the state is plain dicts and lists
            try:
                response = execute(
                    self.backend.root, body["query"], body.get("variables"), body.get("operationName"), unknown
                )
            except Unknown as error:
                unknown.append(str(error))
                response = {"data": None, "errors": [{"message": str(error)}]}
            except Exception as error:  # a bug of this server: the test fails on it, with the traceback logged
                unknown.append(f"server error in {body.get('operationName')}: {error!r}")
                response = {"data": None, "errors": [{"message": traceback.format_exc()}]}
        self._record(f"graphql {body.get('operationName')}", {**body, "response": response}, unknown)
        return response

    def _record(self, what: str, detail: Any, unknown: list[str]) -> None:
        self.unknown += unknown
        if self.log is not None:
            with open(self.log, "a") as out:
                out.write(json.dumps({"request": what, "detail": detail, "unknown": unknown}, default=str) + "\n")


def _handler(server: WandbServer):
    backend = server.backend

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet: tests read server.log instead
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    data += self.rfile.read(size)
                    self.rfile.readline()
            else:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                data = gzip.decompress(data)
            elif encoding == "deflate":
                data = zlib.decompress(data)
            return data

        def _send(self, status: int, body: bytes | dict, content_type: str = "application/json") -> None:
            if isinstance(body, dict):
                body = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _unknown(self, body: bytes = b"") -> None:
            server._record(f"{self.command} {self.path}", body[:200], [f"{self.command} {self.path}"])
            self._send(404, {"error": f"the test server does not know {self.command} {self.path}"})

        def do_POST(self):
            body = self._body()
            path = self.path.split("?")[0]
            if path == "/graphql":
                return self._send(200, server.graphql(json.loads(body)))
            match = re.fullmatch(r"/files/([^/]+)/([^/]+)/([^/]+)/file_stream", path)
            if match:
                payload, unknown = json.loads(body), []
                with server._lock:
                    answer = backend.file_stream(*match.groups(), payload, unknown)
                server._record(f"file_stream {path}", {key: sorted(payload[key]) if key == "files" else payload[key]
                                                      for key in payload}, unknown)  # fmt: skip
                return self._send(200, answer)
            if path in ("/sdk/otel/v1/metrics", "/sdk/otel/v1/logs", "/sdk/otel/v1/traces"):
                # The SDK's own telemetry (OpenTelemetry's three signals), sent on a timer once a run lasts long
                # enough, so more often on a busy machine: a server accepts it; it carries nothing the tests read.
                server._record(f"POST {path}", len(body), [])
                return self._send(200, b"", "application/x-protobuf")
            self._unknown(body)

        def do_PUT(self):
            body = self._body()
            path = self.path.split("?")[0]
            if path.startswith("/storage/"):
                time.sleep(server.upload_delay)
                with server._lock:
                    backend.store(path.removeprefix("/storage/"), body)
                server._record(f"PUT {path}", len(body), [])
                return self._send(200, b"", "text/plain")
            self._unknown(body)

        def do_GET(self):
            path = self.path.split("?")[0]
            data = None
            with server._lock:
                if path.startswith("/storage/"):
                    data = backend.blobs.get(path.removeprefix("/storage/"))
                elif path.startswith(("/artifacts/", "/artifactsV2/")):
                    match = _MD5.search(path)
                    data = backend.by_md5.get(match.group(1)) if match else None
            server._record(f"GET {path}", None, [] if data is not None else [f"GET {path}"])
            if data is None:
                return self._send(404, {"error": f"no file at {path}"})
            self._send(200, data, "application/octet-stream")

        def do_HEAD(self):
            self._unknown()

    return Handler
