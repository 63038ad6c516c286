"""Imported by every Python process the distributed tests start (launcher and ranks), through PYTHONPATH.

If ``TRL_LAB_HANG_DUMP_S`` is set, a process still alive after that many seconds prints the stack of
every thread to stderr and exits: a hung gloo collective then fails the test with the place it hung,
instead of sitting until the subprocess timeout with nothing to show.
"""

import faulthandler
import os

_seconds = float(os.environ.get("TRL_LAB_HANG_DUMP_S", "0") or 0)
if _seconds > 0:
    faulthandler.dump_traceback_later(_seconds, exit=True)
