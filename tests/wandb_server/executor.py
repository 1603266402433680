"""A schema-less GraphQL executor: parse the request with graphql-core, then resolve every requested field by name.

A GraphQL type is a plain Python object here: each field the server knows is an attribute or a method of the same
(camelCase) name, and a method is called with the field's arguments. ``__typename`` is the class's ``typename``
(default: the class name); ``... on T`` fragments match an object whose ``typename`` is ``T`` or whose
``interfaces`` include ``T``. A field the object lacks is *unknown*: it resolves to null and is recorded, so the
test that caused it fails (a new SDK asking for something new shows up in CI, not at a user's).
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    parse,
    value_from_ast_untyped,
)


class GraphQLError(Exception):
    """An error the server answers in the response's ``errors`` (e.g. "artifact not found")."""


class Unknown(Exception):
    """A request for something the server does not implement."""


def typename(obj: Any) -> str:
    return getattr(obj, "typename", type(obj).__name__)


def execute(root: dict[str, Any], query: str, variables: dict | None, operation_name: str | None, unknown: list):
    """The response body for one request: ``{"data": ...}`` plus ``errors`` when a resolver raised.

    Args:
        root: ``{"query": object, "mutation": object}``, the objects whose attributes are the root fields.
        unknown: every unknown field is appended to it as ``"Type.field"`` (with the operation's name).
    """
    document = parse(query)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    operation = next((o for o in operations if not operation_name or operation_name == (o.name and o.name.value)), None)
    if operation is None:
        raise Unknown(f"operation {operation_name!r} is not in the query")
    values = {
        d.variable.name.value: value_from_ast_untyped(d.default_value)
        for d in operation.variable_definitions or ()
        if d.default_value is not None
    }
    values.update(variables or {})
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    run = _Execution(values, fragments, unknown, operation.name.value if operation.name else "anonymous")
    data = run.select(root[operation.operation.value], operation.selection_set)
    return {"data": data, **({"errors": run.errors} if run.errors else {})}


class _Execution:
    def __init__(self, variables: dict, fragments: dict, unknown: list, name: str):
        self.variables, self.fragments, self.unknown, self.name = variables, fragments, unknown, name
        self.errors: list[dict] = []

    def select(self, obj: Any, selection_set) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in selection_set.selections:
            if not self.included(node):
                continue
            if isinstance(node, FieldNode):
                key = node.alias.value if node.alias else node.name.value
                out[key] = self.field(obj, node, key)
            elif isinstance(node, InlineFragmentNode):
                if node.type_condition is None or _matches(obj, node.type_condition.name.value):
                    out.update(self.select(obj, node.selection_set))
            elif isinstance(node, FragmentSpreadNode):
                fragment = self.fragments[node.name.value]
                if _matches(obj, fragment.type_condition.name.value):
                    out.update(self.select(obj, fragment.selection_set))
        return out

    def included(self, node) -> bool:
        """``@include(if: ...)`` and ``@skip(if: ...)``."""
        for directive in node.directives or ():
            args = {a.name.value: value_from_ast_untyped(a.value, self.variables) for a in directive.arguments}
            if directive.name.value == "include" and not args.get("if"):
                return False
            if directive.name.value == "skip" and args.get("if"):
                return False
        return True

    def field(self, obj: Any, node: FieldNode, key: str) -> Any:
        name = node.name.value
        if name == "__typename":
            return typename(obj)
        args = {a.name.value: value_from_ast_untyped(a.value, self.variables) for a in node.arguments or ()}
        attribute = getattr(obj, name, _MISSING) if not name.startswith("_") or name == "__type" else _MISSING
        if name == "__type":
            attribute = getattr(obj, "type_", _MISSING)
        if attribute is _MISSING:
            self.unknown.append(f"{self.name}: {typename(obj)}.{name}")
            return None
        try:
            value = attribute(**args) if callable(attribute) else attribute
        except GraphQLError as error:
            self.errors.append({"message": str(error), "path": [key]})
            return None
        except Unknown as error:  # e.g. a run filter the server cannot evaluate
            self.unknown.append(f"{self.name}: {typename(obj)}.{name}: {error}")
            return None
        return self.complete(value, node.selection_set)

    def complete(self, value: Any, selection_set) -> Any:
        if value is None or selection_set is None:
            return value
        if isinstance(value, (list, tuple)):
            return [self.complete(v, selection_set) for v in value]
        return self.select(value, selection_set)


_MISSING = object()


def _matches(obj: Any, condition: str) -> bool:
    return condition == typename(obj) or condition in getattr(obj, "interfaces", ())
