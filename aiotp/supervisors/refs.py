"""`SupervisorRef`: the handle `spawn` returns for supervisors, with the OTP API as methods.

Every method is a call to the supervisor (the same messages it handles), so they are safe from
any task. Queries default to the 5 s call timeout; operations that start children default to
60 s, because a child's start (a pool of process workers, say) may take a while.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiotp.runtime.ref import ActorRef

if TYPE_CHECKING:
    from aiotp.supervisors.core import ChildStatus

__all__ = ["SupervisorRef"]

START_TIMEOUT = 60.0


class SupervisorRef(ActorRef):
    __slots__ = ()

    async def which_children(self, timeout: float | None = 5.0) -> list[Any]:
        return await self.call(("$which_children",), timeout=timeout)  # type: ignore[no-any-return]

    async def count_children(self, timeout: float | None = 5.0) -> dict[str, int]:
        return await self.call(("$count_children",), timeout=timeout)  # type: ignore[no-any-return]

    async def start_child(self, spec: Any, timeout: float | None = START_TIMEOUT) -> ActorRef:
        return await self.call(("$start_child", spec), timeout=timeout)  # type: ignore[no-any-return]

    async def terminate_child(self, child: Any, timeout: float | None = START_TIMEOUT) -> None:
        await self.call(("$terminate_child", child), timeout=timeout)

    async def restart_child(self, child_id: Any, timeout: float | None = START_TIMEOUT) -> ActorRef:
        return await self.call(("$restart_child", child_id), timeout=timeout)  # type: ignore[no-any-return]

    async def delete_child(self, child_id: Any, timeout: float | None = 5.0) -> None:
        await self.call(("$delete_child", child_id), timeout=timeout)

    def children_status(self) -> list[ChildStatus]:
        """The children now, with restart counts: a plain read on the runtime's loop, not a
        call, for introspection (`aiotp.ops.snapshot`) that must not wait behind a busy
        supervisor. Empty once the supervisor is gone or before its `init` set it up."""
        status = getattr(self._actor, "children_status", None)
        return status() if status is not None else []
