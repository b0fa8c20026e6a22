"""The command line: ``kgtracin train | explain | self-influence | audit | evaluate | report | demo``.

:mod:`.group` holds the group and the entry point; each command module registers its commands on it.
"""

from __future__ import annotations

from . import audit, commands, quality, report  # noqa: F401 - register the commands
from .group import cli, main

__all__ = ["cli", "main"]
