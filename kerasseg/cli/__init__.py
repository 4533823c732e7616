"""The command-line tools: one module per tool, each with ``build_parser()`` and ``main(argv=None) -> int``.

Run a tool as ``python tools/<name>.py`` from a checkout, as the console script ``kerasseg-<name>`` once installed,
or in-process as ``kerasseg.cli.<name>.main([...])``. `kerasseg.cli.common` holds what several tools share. `tools`
lists the tool modules, found in this package rather than listed, so that a new tool is one new module.
"""

from __future__ import annotations

import pkgutil

__all__ = ["tools"]

# Modules of this package that are not tools.
_NOT_TOOLS = frozenset({"common"})


def tools() -> list[str]:
    """The names of the tool modules, ``kerasseg.cli.<name>``, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_TOOLS)
