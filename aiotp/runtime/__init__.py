"""The actor core: Runtime, Actor, refs, mailboxes, links, monitors, names, timers, telemetry."""

from aiotp.runtime import telemetry
from aiotp.runtime.actor import Actor, UnhandledMessage
from aiotp.runtime.entry import run
from aiotp.runtime.errors import (
    ActorExited,
    AiotpError,
    CallTimeout,
    MailboxFull,
    NameTaken,
    NoProc,
    RuntimeClosed,
)
from aiotp.runtime.messages import NOREPLY, Down, Exit, is_normal_exit
from aiotp.runtime.ref import ActorRef, Caller, MonitorRef, Timer, current_actor
from aiotp.runtime.runtime import Runtime

__all__ = [
    "NOREPLY",
    "Actor",
    "ActorExited",
    "ActorRef",
    "AiotpError",
    "CallTimeout",
    "Caller",
    "Down",
    "Exit",
    "MailboxFull",
    "MonitorRef",
    "NameTaken",
    "NoProc",
    "Runtime",
    "RuntimeClosed",
    "Timer",
    "UnhandledMessage",
    "current_actor",
    "is_normal_exit",
    "run",
    "telemetry",
]
