"""``edge-capsule-build``: check a Python capsule module, then build its component with componentize-py.

Usage::

    edge-capsule-build probe.py --manifest capsule.toml -o probe.wasm
    edge-capsule-build probe.py --manifest capsule.toml --check     # the checks only

The module is first imported natively, so a misuse is refused before
componentize-py runs, with the author's file and line: no entry point, two
entry points, a wrong signature, or a kind that differs from ``kind`` in
``capsule.toml`` (the runner would refuse that capsule at run time). Then
componentize-py |COMPONENTIZE_PY_VERSION| (pinned; fetched from PyPI by the
project's own build, never vendored) builds the component against the WIT
world ``guest`` shipped in this package: the ``capsule`` world of
``capsule-sdk/wit/capsule.wit`` plus ``wasi:http``'s outgoing handler.

The component is signed exactly as a Rust capsule is:
``edge-runner capsule sign OUT.wasm --manifest capsule.toml --key KEY --out OUT.signed.wasm``.

Exit codes: 0 built (or checked), 1 the build tool failed, 2 the module or the
command line is wrong.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import traceback
from pathlib import Path
from typing import Optional

from . import _entry
from ._api import CapsuleDefinitionError

#: The componentize-py release this SDK is built and tested with.
COMPONENTIZE_PY_VERSION = "0.25.1"

#: The WIT world components are built against (in ``wit/guest.wit``).
WORLD = "guest"

__doc__ = (__doc__ or "").replace("|COMPONENTIZE_PY_VERSION|", COMPONENTIZE_PY_VERSION)

# Module names componentize-py or this SDK generate or use; an author's module may not take them.
_RESERVED = {
    "wit_world",
    "componentize_py_types",
    "componentize_py_runtime",
    "componentize_py_async_support",
    "poll_loop",
    "edge_capsule",
    "_edge_capsule_app",
    WORLD,
}

_APP_MODULE = "_edge_capsule_app"


class BuildError(Exception):
    """A refusal, with the exit code it maps to."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def check_module(path: Path) -> _entry.Entry:
    """Imports the module at ``path`` natively and returns its one entry point, or raises :class:`BuildError`."""
    if path.suffix != ".py" or not path.is_file():
        raise BuildError(f"{path}: not a Python file; pass the capsule's module, e.g. probe.py")
    name = path.stem
    if not name.isidentifier():
        raise BuildError(f"{path}: `{name}` is not a Python module name; rename the file (letters, digits, `_`)")
    if name in _RESERVED:
        raise BuildError(
            f"{path}: the module name `{name}` is used by the build; rename the file (e.g. `{name}_capsule.py`)"
        )
    _entry.reset()
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BuildError(f"{path}: cannot be imported as a module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except CapsuleDefinitionError as e:
        raise BuildError(str(e)) from None
    except SyntaxError as e:
        raise BuildError(f"{e.filename}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - whatever the author's module raises, say where
        frames = traceback.extract_tb(e.__traceback__)
        own = [f for f in frames if Path(f.filename).resolve() == path.resolve()] or frames
        where = f"{own[-1].filename}:{own[-1].lineno}" if own else str(path)
        raise BuildError(f"{where}: importing the module failed: {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(str(path.parent.resolve()))
        sys.modules.pop(name, None)
    entry = _entry.registered()
    if entry is None:
        raise BuildError(
            f"{path}: no capsule entry point; mark one function with @capsule.test, "
            "@capsule.reproduce or @capsule.remediate (after `import edge_capsule as capsule`)"
        )
    return entry


def check_manifest(entry: _entry.Entry, manifest: Path) -> None:
    """Refuses an entry point whose kind differs from the manifest's ``kind``."""
    try:
        data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except OSError as e:
        raise BuildError(f"--manifest {manifest}: {e.strerror}; pass the capsule's capsule.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise BuildError(f"--manifest {manifest}: not TOML: {e}") from None
    kind = data.get("kind")
    if kind != entry.kind.value:
        raise BuildError(
            f"{entry.where}: the entry point `{entry.function.__name__}` is marked @capsule.{entry.kind.value}, "
            f"but {manifest} says kind = {kind!r}; make them agree (the runner refuses a capsule whose code "
            "and signed manifest name different kinds)"
        )


def componentize(app: Path, out: Path, python_paths: list[Path]) -> None:
    """Builds the component with componentize-py, pinned to :data:`COMPONENTIZE_PY_VERSION`."""
    try:
        found = importlib.metadata.version("componentize-py")
    except importlib.metadata.PackageNotFoundError:
        found = None
    if found != COMPONENTIZE_PY_VERSION:
        have = f"version {found} is installed" if found else "it is not installed"
        raise BuildError(
            f"building needs componentize-py {COMPONENTIZE_PY_VERSION} ({have}); run: "
            f"{Path(sys.executable).name} -m pip install componentize-py=={COMPONENTIZE_PY_VERSION}",
            code=1,
        )
    wit = Path(__file__).parent / "wit"
    with tempfile.TemporaryDirectory(prefix="edge-capsule-build-") as stage:
        staged = Path(stage)
        # Only the SDK's Python files go in; componentize-py bundles what is on its path.
        shutil.copytree(
            Path(__file__).parent,
            staged / "edge_capsule",
            ignore=shutil.ignore_patterns("wit", "__pycache__", "build.py", "testing.py"),
        )
        (staged / f"{_APP_MODULE}.py").write_text(
            f"# Generated by edge-capsule-build: the author's module registers its entry point.\n"
            f"import {app.stem}  # noqa: F401\n"
            f"from edge_capsule._guest import WitWorld  # noqa: F401\n",
            encoding="utf-8",
        )
        command = [
            sys.executable,
            "-c",
            "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
            "-d",
            str(wit),
            "-w",
            WORLD,
            "componentize",
            "-p",
            str(staged),
            "-p",
            str(app.parent.resolve()),
        ]
        for extra in python_paths:
            command += ["-p", str(extra.resolve())]
        command += [_APP_MODULE, "-o", str(out)]
        env = dict(os.environ)
        # A virtual environment's site-packages would otherwise be bundled whole.
        env.pop("VIRTUAL_ENV", None)
        result = subprocess.run(command, env=env)
        if result.returncode != 0:
            raise BuildError(f"componentize-py failed (exit {result.returncode}); see its messages above", code=1)


def main(argv: Optional[list[str]] = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="edge-capsule-build",
        description="Check a Python capsule module, then build its WebAssembly component.",
    )
    parser.add_argument("module", type=Path, help="the capsule's module, e.g. probe.py")
    parser.add_argument("--manifest", type=Path, help="capsule.toml; the entry point's kind must match its `kind`")
    parser.add_argument("-o", "--out", type=Path, help="the component to write (default: MODULE.wasm)")
    parser.add_argument(
        "-p",
        "--python-path",
        type=Path,
        action="append",
        default=[],
        help="another directory of modules the capsule imports (repeatable)",
    )
    parser.add_argument("--check", action="store_true", help="only check the module (and manifest); build nothing")
    args = parser.parse_args(argv)
    try:
        entry = check_module(args.module)
        if args.manifest is not None:
            check_manifest(entry, args.manifest)
        if args.check:
            print(f"ok: {entry.where}: `{entry.function.__name__}` is a {entry.kind.value} capsule entry point")
            return 0
        out = args.out or args.module.with_suffix(".wasm")
        componentize(args.module, out, args.python_path)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    size = out.stat().st_size
    print(f"built {out} ({size / 1e6:.1f} MB): {entry.kind.value} capsule, entry point `{entry.function.__name__}` at {entry.where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
