"""Which params.yaml keys a process read: for the test that each stage's `params:` in dvc.yaml
lists exactly those (tests/pipelines/test_pipeline_e2e.py).

With `PARAMS_TRACE_DIR` set to a folder, `core.params.section` hands each settings dataclass it
builds to `trace_reads`; from then on a read of one of its fields is recorded as the dotted key it
came from, as are reads from its `dataclasses.replace` copies, except of the fields the copy
replaced (copying is not reading; `dataclasses.asdict`, as a params.json does, is). At exit the
process writes the keys to `<folder>/<DVC_STAGE>.<pid>.json`. Unset, nothing is patched.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

TRACE_ENV = "PARAMS_TRACE_DIR"
_traced: dict[int, tuple[Any, str, frozenset[str]]] = {}  # id -> (settings, its key, fields set by code); held
_keys_read: set[str] = set()
_copying = 0
_replace = dataclasses.replace


def _traced_replace(obj: Any, /, **changes: Any) -> Any:
    global _copying
    _copying += 1
    try:
        copied = _replace(obj, **changes)
    finally:
        _copying -= 1
    entry = _traced.get(id(obj))
    if entry is not None and entry[0] is obj:
        trace_reads(copied, entry[1], entry[2] | set(changes))  # a replaced field's value is the code's, not params'
    return copied


def trace_reads(settings: Any, key: str, not_read: frozenset[str] = frozenset()) -> None:
    """Record every later read of a field of `settings` (and of the dataclasses inside it) as `key.field`,
    except of the fields `not_read`."""
    if not _traced:
        atexit.register(_write_trace)
        dataclasses.replace = _traced_replace  # type: ignore[assignment]
    _traced[id(settings)] = (settings, key, frozenset(not_read))
    cls = type(settings)
    if getattr(cls.__dict__.get("__getattribute__"), "traces_params", False):
        return
    original = cls.__getattribute__

    def traced_getattribute(self: Any, name: str) -> Any:
        value = original(self, name)
        entry = _traced.get(id(self))
        if (not _copying and entry is not None and entry[0] is self and name in type(self).__dataclass_fields__
                and name not in entry[2]):
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                if id(value) not in _traced:
                    trace_reads(value, f"{entry[1]}.{name}")
            else:
                _keys_read.add(f"{entry[1]}.{name}")
        return value

    traced_getattribute.traces_params = True  # type: ignore[attr-defined]
    cls.__getattribute__ = traced_getattribute  # type: ignore[method-assign]


def _write_trace() -> None:
    stage = os.environ.get("DVC_STAGE", "")  # set by dvc repro / dvc exp run for each stage's command
    path = Path(os.environ[TRACE_ENV]) / f"{stage.replace('/', '_') or 'no-stage'}.{os.getpid()}.json"
    path.write_text(json.dumps({"stage": stage, "argv": sys.argv, "keys": sorted(_keys_read)}))
