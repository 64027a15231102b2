"""Code capture: a job's user functions, pickled so that another process can run them.

cloudpickle pickles functions defined in a notebook (module ``__main__``) *by value*, together with the
notebook globals they use: helper functions and classes from other cells come along, modules are
re-imported by name. So, unlike ZenML notebook steps, a node may call code from any earlier cell. We add
one thing: functions from local modules (``.py`` files in the working directory, not installed) are also
pickled by value, since the process that runs the job may not have them on its path.

When something cannot be pickled (a lock, an open connection or file...), :func:`capture_job` names it:
the node, its function, and the global (or closure variable, or default) at fault, following helper
functions down to the one that holds it.

:func:`fingerprint` hashes what the functions *are* (bytecode, constants, the globals they use,
recursively) rather than their pickles, which embed per-process details such as the notebook's temporary
file names; it feeds the workflow's stable content hash.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiflow_notebook.core.errors import CaptureError

PAYLOAD_FORMAT = "aiflow-job-payload/1"
OUR_PACKAGES = ("aiflow_notebook", "kernel_magics", "dl_on_flink")
_MAX_DEPTH = 8
_MAX_REPR = 10_000


def capture_job(job: str, nodes: list[dict[str, Any]], callables: Mapping[str, Callable[..., Any]],
                describe: Mapping[str, str] | None = None) -> bytes:
    """Pickle a job's node specs (plain dicts) and user functions (by node name) into one payload.

    The payload unpickles with cloudpickle alone; :func:`aiflow_notebook.sdk.job_runtime.run_job_payload`
    runs it. ``describe`` maps node names to how errors should name them.
    """
    import cloudpickle

    payload = {"format": PAYLOAD_FORMAT, "job": job, "nodes": nodes, "callables": dict(callables),
               "python": list(sys.version_info[:2])}
    local = [m for m in _local_modules(callables.values()) if not _is_registered(cloudpickle, m)]
    for module in local:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(payload)
    except Exception as err:  # noqa: BLE001 - any pickling failure becomes an error naming the culprit
        raise _capture_error(job, callables, describe or {}, err) from None
    finally:
        for module in local:
            cloudpickle.unregister_pickle_by_value(module)


def load_payload(payload: bytes) -> dict[str, Any]:
    """Unpickle a job payload (this runs code from the pickle: load only payloads you trust)."""
    import cloudpickle

    data = cloudpickle.loads(payload)
    if not isinstance(data, dict) or data.get("format") != PAYLOAD_FORMAT:
        raise CaptureError(f"not a job payload of format {PAYLOAD_FORMAT!r}")
    return data


def fingerprint(callables: Mapping[str, Callable[..., Any]]) -> str:
    """A hash of what the functions are, stable across processes and kernel restarts."""
    digest = hashlib.sha256()
    seen: set[int] = set()
    for name in sorted(callables):
        digest.update(f"node:{name};".encode())
        _feed(digest, callables[name], seen, 0)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Naming the culprit


@dataclass
class _Culprit:
    path: list[str]  # function names from the node's function down to the one holding the culprit
    what: str  # "global 'conn'", "closure variable 'lock'", "default value of 'x'"
    value: Any
    error: BaseException


def _capture_error(job: str, callables: Mapping[str, Callable[..., Any]], describe: Mapping[str, str],
                   error: BaseException) -> CaptureError:
    for node, fn in callables.items():
        if _pickle_error(fn) is None:
            continue
        where = describe.get(node, f"node {node!r} in job {job!r}")
        fn_name = getattr(fn, "__qualname__", type(fn).__name__)
        culprit = find_unpicklable(fn)
        if culprit is None:
            reason = _pickle_error(fn)
            return CaptureError(f"{where}: its function {fn_name!r} cannot be pickled, so the job could not run "
                                f"in another process ({type(reason).__name__}: {reason}). Define it at the top "
                                f"level of a cell or module.")
        chain = " → ".join(culprit.path)
        via = f" (via {chain})" if len(culprit.path) > 1 else ""
        return CaptureError(
            f"{where}: its function {fn_name!r} cannot be pickled, so the job could not run in another process: "
            f"it uses {culprit.what}{via}, a {type(culprit.value).__name__}, which cannot be pickled "
            f"({type(culprit.error).__name__}: {culprit.error}). Create it inside the function instead of "
            f"capturing it from the notebook.")
    return CaptureError(f"job {job!r}: its functions cannot be pickled ({type(error).__name__}: {error})")


def find_unpicklable(fn: Any) -> _Culprit | None:
    """The first thing ``fn`` uses that cannot be pickled, searching through helper functions."""
    return _search(fn, [getattr(fn, "__qualname__", type(fn).__name__)], set(), 0)


def _search(fn: Any, path: list[str], seen: set[int], depth: int) -> _Culprit | None:
    if id(fn) in seen or depth > _MAX_DEPTH:
        return None
    seen.add(id(fn))
    for what, value in _references(fn):
        error = _pickle_error(value)
        if error is None:
            continue
        if isinstance(value, types.FunctionType | types.MethodType | type) or callable(value):
            deeper = _search(value, [*path, getattr(value, "__qualname__", type(value).__name__)], seen, depth + 1)
            if deeper is not None:
                return deeper
        return _Culprit(path, what, value, error)
    return None


def _references(obj: Any) -> Iterator[tuple[str, Any]]:
    """What a function (or bound method, or callable object) carries along when pickled by value."""
    if isinstance(obj, types.MethodType):
        yield f"the object its method is bound to ({type(obj.__self__).__name__})", obj.__self__
        obj = obj.__func__
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        for name in sorted(_global_names(code)):
            if name in obj.__globals__:
                yield f"global {name!r}", obj.__globals__[name]
        for name, cell in zip(code.co_freevars, obj.__closure__ or (), strict=False):
            try:
                yield f"closure variable {name!r}", cell.cell_contents
            except ValueError:  # an empty cell
                continue
        for i, value in enumerate(obj.__defaults__ or ()):
            yield f"default value #{i + 1} of {obj.__qualname__!r}", value
        for name, value in (obj.__kwdefaults__ or {}).items():
            yield f"default value of {name!r}", value
    elif not isinstance(obj, type) and hasattr(obj, "__dict__"):
        for name, value in vars(obj).items():
            yield f"attribute {name!r} of the {type(obj).__name__} object", value


def _pickle_error(value: Any) -> BaseException | None:
    import cloudpickle

    try:
        cloudpickle.dumps(value)
    except Exception as err:  # noqa: BLE001
        return err
    return None


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


# ---------------------------------------------------------------------------------------------------------
# Local modules: pickle them by value too


def _local_modules(roots: Iterable[Any]) -> list[types.ModuleType]:
    found: dict[str, types.ModuleType] = {}
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > _MAX_DEPTH:
            return
        seen.add(id(obj))
        if isinstance(obj, types.ModuleType):
            if _is_local(obj):
                found[obj.__name__] = obj
            return
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        if isinstance(obj, types.FunctionType | type):
            module = sys.modules.get(getattr(obj, "__module__", None) or "")
            if module is not None and _is_local(module):
                found[module.__name__] = module
        if isinstance(obj, types.FunctionType):
            for _what, value in _references(obj):
                visit(value, depth + 1)

    for root in roots:
        visit(root, 0)
    return list(found.values())


def _is_local(module: types.ModuleType) -> bool:
    """A module from a file under the working directory that is not installed (nor one of ours)."""
    key = (module.__name__, getattr(module, "__file__", None), os.getcwd())
    if key not in _local_cache:
        _local_cache[key] = _file_is_local(module)
    return _local_cache[key]


_local_cache: dict[tuple[str, str | None, str], bool] = {}


def _file_is_local(module: types.ModuleType) -> bool:
    name = module.__name__
    filename = getattr(module, "__file__", None)
    if not filename or name == "__main__" or name.split(".")[0] in OUR_PACKAGES:
        return False
    path = os.path.realpath(filename)
    if "site-packages" in path or "dist-packages" in path:
        return False
    if any(path.startswith(prefix + os.sep) for prefix in _installed_prefixes()):
        return False
    return path.startswith(os.path.realpath(os.getcwd()) + os.sep)


@functools.cache
def _installed_prefixes() -> tuple[str, ...]:
    paths = (sys.prefix, sys.base_prefix, sys.exec_prefix, sysconfig.get_paths().get("stdlib", ""))
    return tuple({os.path.realpath(p) for p in paths if p})


def _is_registered(cloudpickle: Any, module: types.ModuleType) -> bool:
    try:
        return cloudpickle.cloudpickle._is_registered_pickle_by_value(module)
    except AttributeError:  # pragma: no cover - other cloudpickle versions
        return False


# ---------------------------------------------------------------------------------------------------------
# Fingerprints


def _feed(digest: Any, obj: Any, seen: set[int], depth: int) -> None:
    update = digest.update
    if depth > _MAX_DEPTH:
        update(b"...;")
        return
    if isinstance(obj, types.MethodType):
        _feed(digest, obj.__self__, seen, depth + 1)
        obj = obj.__func__
    if isinstance(obj, types.ModuleType):
        update(f"module:{obj.__name__};".encode())
    elif isinstance(obj, types.FunctionType | type):
        module = getattr(obj, "__module__", None) or ""
        name = f"{module}.{getattr(obj, '__qualname__', '?')}"
        if id(obj) in seen or not (module == "__main__" or module not in sys.modules
                                   or _is_local(sys.modules[module])):
            update(f"ref:{name};".encode())
            return
        seen.add(id(obj))
        update(f"def:{name};".encode())
        if isinstance(obj, type):
            for attr, value in sorted(vars(obj).items()):
                if isinstance(value, types.FunctionType | classmethod | staticmethod | property):
                    update(f"attr:{attr};".encode())
                    _feed(digest, getattr(value, "__func__", getattr(value, "fget", value)), seen, depth + 1)
            return
        _feed_code(digest, obj.__code__)
        for what, value in _references(obj):
            update(f"{what}=".encode())
            _feed(digest, value, seen, depth + 1)
    else:
        update(f"value:{type(obj).__module__}.{type(obj).__qualname__}:{_stable_repr(obj)};".encode())


def _feed_code(digest: Any, code: types.CodeType) -> None:
    digest.update(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_argcount,
                        code.co_kwonlyargcount)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(digest, const)
        else:
            digest.update(_stable_repr(const).encode())


def _stable_repr(value: Any) -> str:
    """repr that does not depend on hash randomization (sets) or object addresses; bounded in size."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        text = repr(value)
    elif isinstance(value, set | frozenset):
        text = "{" + ",".join(sorted(_stable_repr(v) for v in value)) + "}"
    elif isinstance(value, list | tuple):
        text = "[" + ",".join(_stable_repr(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ",".join(f"{_stable_repr(k)}:{_stable_repr(v)}" for k, v in value.items()) + "}"
    else:
        text = f"<{type(value).__qualname__}>"  # contents of arbitrary objects are not fingerprinted
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + f"...({len(text)})"
