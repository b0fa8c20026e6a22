"""The one exception type that kgtracin raises for bad input."""

from __future__ import annotations

__all__ = ["KGTracinError"]


class KGTracinError(ValueError):
    """Bad input: a file, label, option or model that kgtracin cannot use.

    The message is a single line that names the offending file, label or option. The CLI prints it as
    ``error: <message>`` and exits non-zero, without a traceback.
    """
