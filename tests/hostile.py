"""Helpers of the hostile-use tests: the arguments of a small explain, and kgtracin in a new process (the runs
they use are the fixtures ``distmult_run`` and ``distmult_run_copy`` of ``conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys


def _explain(run_dir, *extra):
    """An explain command line; with ``--store``, over all candidates (the neighbourhood default keeps no store)."""
    candidates = ["--candidates", "all"] if "--store" in map(str, extra) else []
    return ["explain", run_dir, "--split", "test", "--limit", "2", "--top-k", "3", *candidates, *extra]


def _cli(*args, cwd=None, env_extra=None, unprivileged=False, **kwargs):
    """``kgtracin ARGS`` in a new process; ``unprivileged``: bound by file permissions even when run as root (root
    without capabilities, through util-linux's ``setpriv``, so that a mode of 000 means what it says)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    prefix = ["setpriv", "--bounding-set=-all", "--"] if unprivileged and os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "kgtracin", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
        **kwargs,
    )
