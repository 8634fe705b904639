"""Plugins: a user's own strategies, streams and models, found the same way in every process.

A plugin is an importable Python module that registers things on import (``@register`` for a
strategy, ``register_stream``, ``register_model``). It is named

* in a config or sweep file: ``plugins = ["mypkg.strategies"]``,
* on the command line: ``--plugin mypkg.strategies`` (``lifelong run``, ``sweep``, ``list``),
* or by an installed package, through the entry-point group ``lifelong.plugins``::

      [project.entry-points."lifelong.plugins"]
      mypkg = "mypkg.strategies"

A run's ``config.json`` keeps its plugins, but a run folder never imports code by itself: a
process that loads the run (``--resume``, a worker of the engine, a SLURM array task) is given
them by its command (``--plugin``; the engine passes its own) and imports them before it reads
the strategy names, and a plugin the folder names beyond those is refused (:func:`check_named`).
Entry points are loaded once per process, with the first plugin lookup. Plugins are modules you
installed or wrote, named by their import path; a file of settings never names a file to run.
"""

from __future__ import annotations

import importlib
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from lifelong.errors import ConfigError

ENTRY_POINT_GROUP = "lifelong.plugins"

_entry_points_loaded = False


def _import(name: str, where: str) -> ModuleType:
    if not isinstance(name, str) or not name.strip() or "/" in name or name.endswith(".py"):
        raise ConfigError(
            f"plugin {name!r}{where} must be a module's import name, e.g. mypkg.strategies"
        )
    try:
        return importlib.import_module(name.strip())
    except ImportError as err:
        raise ConfigError(
            f"cannot import plugin {name!r}{where}: {err}; install it (pip install -e .) or put "
            "its folder on PYTHONPATH"
        ) from None


def load_entry_points() -> list[ModuleType]:
    """Import every module of the ``lifelong.plugins`` entry-point group (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    modules = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            modules.append(point.load())
        except Exception as err:
            raise ConfigError(
                f"plugin {point.value!r} of installed package entry point {point.name!r} "
                f"(group {ENTRY_POINT_GROUP}) fails to load: {err}"
            ) from None
    return [m for m in modules if isinstance(m, ModuleType)]


def load_plugins(names: Iterable[str] = (), where: str = "") -> list[ModuleType]:
    """Import the entry-point plugins and the named modules; return the named modules.

    Raises :class:`ConfigError` with one line when a module cannot be imported.
    """
    load_entry_points()
    where = f" (in {where})" if where else ""
    return [_import(name, where) for name in names]


def check_named(names: Iterable[str], source: str) -> None:
    """Refuse plugins that a file read from a run folder (``source``) names but this process has
    not imported: a folder received from elsewhere must not make this process run a module.
    The command's own ``--plugin`` modules, its config or sweep file's plugins and the installed
    entry points are imported before any run folder is read, so they pass."""
    load_entry_points()
    foreign = [n for n in names if not isinstance(n, str) or n.strip() not in sys.modules]
    if foreign:
        flags = " ".join(f"--plugin {n}" for n in foreign)
        raise ConfigError(
            f"{source} names plugins {', '.join(map(str, foreign))} that this command did not "
            f"import; a run folder never imports code by itself: if you trust them, add {flags}"
        )


def _installed_roots() -> set[Path]:
    paths = sysconfig.get_paths()
    return {Path(paths[k]).resolve() for k in ("purelib", "platlib", "stdlib") if k in paths}


def modules_to_ship(names: Sequence[str]) -> list[ModuleType]:
    """The top-level packages of the named plugins that are not installed in site-packages.

    They are the user's own code (a folder on ``PYTHONPATH``, a script's directory): the engine
    hands them to Ray (``runtime_env={"py_modules": ...}``) so that workers on other machines can
    import them. Installed packages are expected to be installed on the cluster as well.
    """
    roots = _installed_roots()
    shipped: dict[str, ModuleType] = {}
    for name in names:
        top = sys.modules.get(name.split(".")[0])
        where = getattr(top, "__file__", None)
        if top is None or where is None:
            continue
        path = Path(where).resolve()
        if not any(root in path.parents for root in roots):
            shipped[top.__name__] = top
    return list(shipped.values())
