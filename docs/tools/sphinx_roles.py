"""A griffe extension for the docs site (mkdocs.yml: mkdocstrings' ``extensions``): the docstrings cite names with
Sphinx roles (:class:`~pkg.Name`, :meth:`save`), which Markdown would print as they are; this renders each as a code
span of the name (the last dotted part after ``~``, as Sphinx shows it). The docstrings stay as they are."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|attr|mod|exc|data|obj):`(~?)\.?([^`]+)`")


def as_code(match: re.Match[str]) -> str:
    name = match.group(2)
    return f"`{name.rsplit('.', 1)[-1] if match.group(1) else name}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(as_code, obj.docstring.value)
