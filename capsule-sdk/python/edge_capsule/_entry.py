"""The decorators that mark a capsule's one entry point, and the checks on it.

Owns the registry of the entry point. A misuse (a second entry point, a
signature other than one ``cx`` argument, a coroutine or generator, arguments
to the decorator) raises :class:`CapsuleDefinitionError` while the author's
module is imported, naming the author's file and line, so that
``edge-capsule-build`` refuses the module before componentize-py runs.
"""

from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ._api import CapsuleDefinitionError, CapsuleError, Context, Kind, Outcome


@dataclass(frozen=True)
class Entry:
    """The registered entry point: its kind, function and where it is written."""

    kind: Kind
    function: Callable[..., Any]
    file: str
    line: int

    @property
    def where(self) -> str:
        """``file:line`` of the function's ``def``."""
        return f"{self.file}:{self.line}"


_entry: Optional[Entry] = None


def registered() -> Optional[Entry]:
    """The entry point registered so far, if any."""
    return _entry


def reset() -> None:
    """Forgets the registered entry point (the build command imports a module afresh)."""
    global _entry
    _entry = None


def _location(function: Callable[..., Any]) -> tuple[str, int]:
    code = getattr(function, "__code__", None)
    if code is None:
        return ("<unknown>", 0)
    return (code.co_filename, code.co_firstlineno)


def _register(kind: Kind, function: Any) -> Any:
    decorator = f"@capsule.{kind.value}"
    if not callable(function) or isinstance(function, type):
        frame = inspect.stack()[2]
        raise CapsuleDefinitionError(
            f"{frame.filename}:{frame.lineno}: {decorator} takes no arguments and marks a function: "
            f"write `{decorator}` directly above `def NAME(cx):` (capabilities belong in capsule.toml)"
        )
    file, line = _location(function)
    where = f"{file}:{line}"
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise CapsuleDefinitionError(
            f"{where}: the capsule entry point `{function.__name__}` cannot be `async def`; write a plain `def`"
        )
    if inspect.isgeneratorfunction(function):
        raise CapsuleDefinitionError(
            f"{where}: the capsule entry point `{function.__name__}` cannot be a generator (it uses `yield`); return an Outcome"
        )
    params = list(inspect.signature(function).parameters.values())
    required = [
        p
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    positional = [
        p
        for p in params
        if p.kind
        in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) != 1 or not positional or positional[0] is not required[0]:
        shown = ", ".join(p.name for p in params) or "no arguments"
        raise CapsuleDefinitionError(
            f"{where}: the capsule entry point `{function.__name__}` takes ({shown}); "
            f"it must take exactly one argument, the context: `def {function.__name__}(cx):`"
        )
    global _entry
    if _entry is not None:
        raise CapsuleDefinitionError(
            f"{where}: a second capsule entry point `{function.__name__}` ({decorator}); "
            f"a capsule has exactly one, and `{_entry.function.__name__}` at {_entry.where} "
            f"is already marked @capsule.{_entry.kind.value}. Remove one of the decorators."
        )
    _entry = Entry(kind, function, file, line)
    function.__edge_capsule_entry__ = _entry
    return function


def invoke(entry: Entry, cx: Context) -> Outcome:
    """Runs the entry point; what it raises or wrongly returns becomes an ``error`` outcome saying so."""
    try:
        result = entry.function(cx)
    except CapsuleError as e:
        return Outcome.error(str(e))
    except Exception as e:  # noqa: BLE001 - any failure of the author's code is an `error` verdict
        frames = traceback.extract_tb(e.__traceback__)
        at = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        return Outcome.error(f"{type(e).__name__}: {e}{at}")
    if not isinstance(result, Outcome):
        return Outcome.error(
            f"the entry point `{entry.function.__name__}` ({entry.where}) returned "
            f"{type(result).__name__}, not an edge_capsule.Outcome"
        )
    return result


def test(function: Any = None) -> Callable[..., Any]:
    """Marks the entry point of a ``test`` capsule: one that checks a system.

    The function takes the :class:`~edge_capsule.Context` and returns an
    :class:`~edge_capsule.Outcome`; raising :class:`~edge_capsule.CapsuleError`
    gives an ``error`` verdict with its message. The function is returned
    unchanged, so unit tests call it directly.
    """
    return _register(Kind.TEST, function)


def reproduce(function: Any = None) -> Callable[..., Any]:
    """Marks the entry point of a ``reproduce`` capsule: one that replays a failure deterministically."""
    return _register(Kind.REPRODUCE, function)


def remediate(function: Any = None) -> Callable[..., Any]:
    """Marks the entry point of a ``remediate`` capsule: one that proposes a change and never applies it."""
    return _register(Kind.REMEDIATE, function)
