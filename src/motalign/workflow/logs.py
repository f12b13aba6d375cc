"""Job logs: what a workflow job prints goes to its ``log:`` file."""

from __future__ import annotations

import logging
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def log_to(path):
    """Send a job's stdout, stderr and ``logging`` output to its log file; on failure the
    traceback goes there too (and the exception propagates, so the job fails)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as log:
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        handler = logging.StreamHandler(log)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        start = time.perf_counter()
        try:
            yield log
            print(f"done in {time.perf_counter() - start:.1f} s")
        except BaseException:
            traceback.print_exc(file=log)
            raise
        finally:
            logging.getLogger().removeHandler(handler)
            sys.stdout, sys.stderr = old
