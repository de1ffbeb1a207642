"""Registered names: one live actor per name, freed when that actor dies.

Names may be any hashable value (strings, tuples such as ``("pool", "ml", 3)``). Registering a
name that a live actor holds raises `NameTaken`; nothing is replaced silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiotp.runtime.errors import NameTaken

if TYPE_CHECKING:
    from aiotp.runtime.ref import ActorRef

__all__ = ["Registry"]


class Registry:
    def __init__(self) -> None:
        self._names: dict[Any, ActorRef] = {}

    @staticmethod
    def check_name(name: Any) -> None:
        try:
            hash(name)
        except TypeError:
            raise TypeError(f"actor name must be hashable, got {name!r}") from None

    def register(self, name: Any, ref: ActorRef) -> None:
        self.check_name(name)
        holder = self._names.get(name)
        if holder is not None and holder.alive:
            raise NameTaken(f"name {name!r} is already held by {holder!r}")
        self._names[name] = ref

    def unregister(self, name: Any, ref: ActorRef) -> None:
        if self._names.get(name) is ref:
            del self._names[name]

    def whereis(self, name: Any) -> ActorRef | None:
        ref = self._names.get(name)
        if ref is None or not ref.alive:
            return None
        return ref

    def names(self) -> list[Any]:
        return [name for name, ref in self._names.items() if ref.alive]
