"""Damaged input files: training refuses them all up front, inference skips them and lists them at the end.

Everything here runs on a few tiny files written in ``tmp_path``; the one inference run uses the
UAMT bundle's deployed network, untrained, at 64 px on three 32 px images.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from bundle_testing import ROOT  # same directory, on sys.path under pytest


def test_an_error_while_pool_threads_are_busy_exits_with_status_1_not_an_abort(tmp_path):
    """MONAI's CacheDataset fills its cache with a thread pool: when one case fails, the others are still
    in torch's C++ code as Python exits, which used to abort the process (exit 134) after the message."""
    script = tmp_path / "busy_pool.py"
    script.write_text(textwrap.dedent("""
        import time
        from multiprocessing.pool import ThreadPool
        import torch
        from samssl.utils.errors import InvalidInputError, install_concise_errors

        install_concise_errors()
        def work(i):
            if i == 0:
                time.sleep(0.3)
                raise InvalidInputError("case 0 is damaged")
            x = torch.rand(300, 300)
            for _ in range(300):
                x = torch.tanh(x @ x)
        with ThreadPool(2) as pool:
            list(pool.imap(work, [0, 1]))
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "error: case 0 is damaged"
