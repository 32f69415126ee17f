"""Checks of a valid study against this machine, before any trial runs (issue 15.4).

The loader judges the file alone; these look outside it. A `function:` is
imported the way trials import it, from the study file's directory, so a
missing module or attribute, or a module that raises, is a `FILE:LINE:COL`
problem rather than a string of failed trials. A `command:` whose program is
not on PATH (nor, for `./prog`, in the workdir) is only a warning: it may
exist only where the trials run, on a cluster's workers.

`validate` imports in a fresh interpreter, so the user's module can print,
exit or hang without touching validate's output, and two study files whose
modules share a name never see each other's. `run` with an in-process
executor imports in this process instead, exactly as the executor will, so the
executor finds the module in sys.modules and the module runs once.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from ..errors import StudyFileError
from .config import StudyConfig

# Seconds a fresh interpreter gets to import the function's module. Importing torch or
# TensorFlow takes a few seconds; a module that takes minutes is left unchecked, with a warning.
IMPORT_TIMEOUT = 120
_MARK = "somatize-probe:"
# The first word of a shell command that is no program to look up: builtins, keywords, grouping.
_SHELL_WORDS = frozenset({
    "!", ".", ":", "[", "[[", "{", "(", "alias", "bg", "builtin", "case", "cd", "command", "declare", "eval",
    "exec", "exit", "export", "false", "fg", "for", "function", "if", "let", "local", "read", "readonly",
    "return", "set", "shift", "source", "test", "time", "trap", "true", "typeset", "ulimit", "umask",
    "unalias", "unset", "until", "wait", "while",
})  # fmt: skip
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)
_EXPANDED = re.compile(r"[{}$`()<>|;&*?\[\]]")  # the shell (or a placeholder) decides what runs


def probe_executor(config: StudyConfig, *, in_process: bool = False, cluster_function: bool = True) -> list[str]:
    """Warnings about the executor; raises StudyFileError when its function cannot be imported.

    On a cluster a function that fails to import here is only a warning: the
    workers import it, and may have what this machine lacks (`validate`). With
    `cluster_function=False` it is not imported here at all (`run --cluster`:
    the driver never needs the module).
    """
    executor = config.executor
    if executor.function is not None:
        if config.cluster and not cluster_function:
            return []
        where = config.locations.get("executor.function", config.path)
        env = {**os.environ, **executor.env}
        if in_process:
            problem, warning = load_function(executor.function, config.base_dir), None
        else:
            problem, warning = _load_in_subprocess(executor.function, config.base_dir, env)
        if warning:
            return [f"{where}: {warning}"]
        if problem and config.cluster:
            return [f"{where}: {problem} (here; trials import it on the cluster's workers)"]
        if problem:
            raise StudyFileError([f"{where}: {problem}"])
        return []
    assert executor.command is not None
    missing = missing_program(executor.command, executor.workdir, {**os.environ, **executor.env})
    if missing is None:
        return []
    where = config.locations.get("executor.command", config.path)
    return [f"{where}: {missing}: trials will fail unless it exists where they run"]


def load_function(target: str, base_dir: Path) -> str | None:
    """Import `target` as FunctionExecutor does (study directory first on sys.path); why not, or None."""
    from ..executors.python import FunctionLoadError, import_module, resolve_attribute, split_target, wants_trial

    try:
        module_name, attr = split_target(target)
        directory = str(Path(base_dir).resolve())
        if sys.path[:1] != [directory]:  # the same test as the executor's, so it adds nothing twice
            sys.path.insert(0, directory)
        importlib.invalidate_caches()
        with contextlib.redirect_stdout(sys.stderr):  # stdout may carry results; a module's prints are not
            fn = resolve_attribute(import_module(module_name), attr)
        if not callable(fn):
            return f"{target!r} is a {type(fn).__name__}, not a function"
        wants_trial(fn)
    except FunctionLoadError as exc:
        return str(exc)
    except SystemExit as exc:
        return f"cannot import module {module_name!r}: it called sys.exit({exc.code!r})"
    return None


def _load_in_subprocess(target: str, base_dir: Path, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(problem, warning) from importing `target` in a fresh interpreter."""
    code = f"import sys; from {__name__} import child_main; child_main(sys.argv[1], sys.argv[2])"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(base_dir), target],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            env=dict(env), timeout=IMPORT_TIMEOUT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"importing {target!r} took over {IMPORT_TIMEOUT} s; not checked"
    except OSError as exc:
        return None, f"cannot start Python to check {target!r}: {exc.strerror}"
    marked = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if marked:
        return json.loads(marked[-1][len(_MARK) :]), None
    # The module ended the interpreter itself (os._exit, a crash in an extension).
    tail = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "")
    module = target.partition(":")[0] if ":" in target else target.rpartition(".")[0]
    ended = f"cannot import module {module!r}: the process ended with status {done.returncode}"
    return (f"{ended}: {tail}" if tail else ended), None


def child_main(base_dir: str, target: str) -> None:
    """The fresh interpreter's side of `_load_in_subprocess`."""
    problem = load_function(target, Path(base_dir))
    sys.stdout.flush()
    print(_MARK + json.dumps(problem), flush=True)


def missing_program(command: str | list[str], workdir: Path, env: Mapping[str, str]) -> str | None:
    """Why the command's program will not be found, or None (also when the shell decides what runs)."""
    if isinstance(command, list):
        words = command[:1]
    else:
        try:
            words = shlex.split(command)
        except ValueError:  # unbalanced quotes: the shell will say
            return None
        while words and _ASSIGNMENT.fullmatch(words[0]):  # `OMP_NUM_THREADS=1 python ...`
            words = words[1:]
    program = words[0] if words else ""
    if not program or program in _SHELL_WORDS or _EXPANDED.search(program):
        return None
    if "/" in program:
        path = Path(workdir) / os.path.expanduser(program)
        if path.is_file() and os.access(path, os.X_OK):
            return None
        state = "is not executable" if path.is_file() else "does not exist"
        where = "" if os.path.isabs(os.path.expanduser(program)) else f" (in workdir {workdir})"
        return f"program {program!r} {state}{where}"
    if shutil.which(program, path=env.get("PATH")):
        return None
    beside = (Path(workdir) / program).exists()
    hint = f" (there is {program} in workdir {workdir}: write ./{program})" if beside else ""
    return f"program {program!r} is not found on PATH{hint}"
