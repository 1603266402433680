"""What every GraphQL type here is made of: opaque ids, time stamps and Relay connections (paged lists)."""

from __future__ import annotations

import base64
import itertools
import time
from dataclasses import dataclass
from typing import Any

_counter = itertools.count(1)


def number() -> int:
    """A fresh whole number, for ids the SDK parses as integers."""
    return next(_counter)


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
