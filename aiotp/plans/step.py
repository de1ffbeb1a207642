"""`PlanStep`: one step of a plan, and the ``{"$artifact": name}`` references in its arguments.

::

    PlanStep("score", pool_tool("ml", "score"), args={"users": {"$artifact": "users"}},
             consumes={"users"}, produces={"scores"}, depends_on={"warm_up"})

- ``args`` are the tool's keyword arguments. ``{"$artifact": "users"}`` anywhere in them (also
  nested in lists, tuples and dicts) is replaced by that artifact's value when the step runs; a
  referenced artifact counts as consumed even if ``consumes`` does not name it.
- ``produces``: the artifacts the step's result becomes. One name: the result is that artifact.
  Several: the result must be a mapping holding each of them (`StepFailed` otherwise). None: the
  result is kept in the step's `StepResult` only.
- ``depends_on``: steps that must finish first, beyond what data flow and resources imply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from aiotp.plans.spec import ToolSpec, spec_of

__all__ = ["ARTIFACT_KEY", "PlanStep", "binder", "references", "resolve"]

ARTIFACT_KEY = "$artifact"


def _names(what: str) -> Callable[[Any], frozenset[str]]:
    def convert(value: Any) -> frozenset[str]:
        if value is None:
            return frozenset()
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise TypeError(f"PlanStep.{what} must be a set of names, got {value!r}")
        items = frozenset(value)
        for item in items:
            if not isinstance(item, str) or not item:
                raise TypeError(f"PlanStep.{what} must hold non-empty strings, got {item!r}")
        return items

    return convert


def _consumes(value: Any) -> frozenset[str]:
    return _names("consumes")(value)


def _produces(value: Any) -> frozenset[str]:
    return _names("produces")(value)


def _depends_on(value: Any) -> frozenset[str]:
    return _names("depends_on")(value)


def _check_id(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"PlanStep.step_id must be a non-empty string, got {value!r}")


def _check_args(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"PlanStep.args must be a dict, got {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"PlanStep.args keys must be strings, got {key!r}")


@attrs.frozen
class PlanStep:
    step_id: str = attrs.field(validator=_check_id)
    tool: Any = attrs.field()
    args: Mapping[str, Any] = attrs.field(factory=dict, validator=_check_args)
    consumes: frozenset[str] = attrs.field(default=frozenset(), converter=_consumes)
    produces: frozenset[str] = attrs.field(default=frozenset(), converter=_produces)
    depends_on: frozenset[str] = attrs.field(default=frozenset(), converter=_depends_on)
    spec: ToolSpec = attrs.field(init=False)
    refs: frozenset[str] = attrs.field(init=False)  # artifacts referenced in args
    _binder: Any = attrs.field(init=False, default=None, eq=False, repr=False, alias="_binder")

    @tool.validator
    def _check_tool(self, _attr: Any, value: Any) -> None:
        spec_of(value)  # TypeError now, naming the bad tool

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "spec", spec_of(self.tool))
        object.__setattr__(self, "refs", references(self.args))

    def bind(self, artifacts: Mapping[str, Any]) -> Mapping[str, Any]:
        """The step's arguments with its references resolved against `artifacts`. The binding
        function is made on first use, not at construction: planning 10,000 steps must not
        pay for (or garbage-collect) 10,000 closures."""
        bind = self._binder
        if bind is None:
            bind = binder(self.args)
            object.__setattr__(self, "_binder", bind)
        return bind(artifacts)  # type: ignore[no-any-return]

    @property
    def inputs(self) -> frozenset[str]:
        """Every artifact the step needs: ``consumes`` and the references in ``args``."""
        return self.consumes | self.refs


def references(value: Any) -> frozenset[str]:
    """The artifact names referenced anywhere in `value`."""
    found: set[str] = set()
    _collect(value, found)
    return frozenset(found)


# Scalars hold no reference: skipping them without a call keeps planning 10,000 steps fast.
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def _collect(value: Any, found: set[str]) -> None:
    if isinstance(value, Mapping):
        ref = _ref(value)
        if ref is not None:
            found.add(ref)
            return
        items: Iterable[Any] = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return
    for item in items:
        if type(item) not in _SCALARS:
            _collect(item, found)


def _ref(value: Mapping[str, Any]) -> str | None:
    if len(value) == 1 and ARTIFACT_KEY in value:
        name = value[ARTIFACT_KEY]
        if not isinstance(name, str) or not name:
            raise TypeError(f"an artifact reference needs a non-empty name, got {value!r}")
        return name
    return None


def resolve(value: Any, artifacts: Mapping[str, Any]) -> Any:
    """`value` with every artifact reference replaced by the artifact (new containers; the
    artifacts themselves are not copied). `KeyError` names a missing artifact."""
    kind = type(value)
    if kind in _SCALARS:
        return value  # the common case, without an ABC isinstance check
    if kind is dict or isinstance(value, Mapping):
        ref = _ref(value)
        if ref is not None:
            return _artifact(ref, artifacts)
        out = {}
        for key, item in value.items():
            # Scalars and flat references inline: this runs for every step of a plan.
            item_kind = type(item)
            if item_kind in _SCALARS:
                out[key] = item
            elif item_kind is dict and len(item) == 1 and ARTIFACT_KEY in item:
                out[key] = _artifact(_ref(item), artifacts)  # type: ignore[arg-type]
            else:
                out[key] = resolve(item, artifacts)
        return out
    if isinstance(value, list):
        return [resolve(item, artifacts) for item in value]
    if isinstance(value, tuple):
        return tuple(resolve(item, artifacts) for item in value)
    return value


def _artifact(name: str, artifacts: Mapping[str, Any]) -> Any:
    try:
        return artifacts[name]
    except KeyError:
        raise KeyError(f"artifact {name!r} is not available") from None


def binder(args: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
    """A function giving `args` resolved against the artifacts, made once per step: flat
    arguments (scalars and top-level references, the common case) are bound without walking
    them again; anything nested goes through `resolve`."""
    if not references(args):
        return lambda _artifacts: args
    return _flat_binder(args)


def _flat_binder(args: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
    fixed: dict[str, Any] = {}
    refs: list[tuple[str, str]] = []
    for key, item in args.items():
        if type(item) in _SCALARS:
            fixed[key] = item
        elif type(item) is dict and len(item) == 1 and ARTIFACT_KEY in item:
            refs.append((key, _ref(item)))  # type: ignore[arg-type]
        else:
            return lambda artifacts: resolve(args, artifacts)

    def bind(artifacts: Mapping[str, Any]) -> Mapping[str, Any]:
        bound = fixed.copy()
        try:
            for key, name in refs:
                bound[key] = artifacts[name]
        except KeyError as exc:
            raise KeyError(f"artifact {exc.args[0]!r} is not available") from None
        return bound

    return bind
