"""Ctrl-C in the command-line processes (`python -m fastcodec`, `python -m fastcodec.lite`).

A KeyboardInterrupt raised inside an import can be swallowed there (torch's import, importlib's
own module-lock callbacks: the command then runs to its end), leave modules half built, or abort
in a library's C++. So once `install`ed:
- until `unwind_from_here()` (imports, arguments, loading a model: nothing written yet), Ctrl-C
  prints `PROG: interrupted` and ends the process at once with 130;
- after it, Ctrl-C raises KeyboardInterrupt, which unwinds and removes partial outputs, but never
  inside an import: there it is raised a moment later, once the import is done. Further presses
  while it unwinds are ignored, so the clean-up is not cut short; the third ends the process at once;
- `exit_status(rc)` ends an interrupted command's process with 130; after any other, Ctrl-C
  during the interpreter's teardown ends the process at once with the command's own status
  (while exit hooks run) or is ignored (in the last moments, where Python has given the signal
  back to the OS, which would kill the process with it).
"""
from __future__ import annotations

import atexit
import os
import signal
import sys

INTERRUPTED = 130
_RECHECK_SECONDS = 0.02
_PRESSES_TO_QUIT = 3

# phase: start | command | unwinding | done; resent: the next SIGINT is our own re-check
_state = {"prog": None, "phase": "start", "rc": None, "presses": 0, "resent": False}


def install(prog: str) -> None:
    """Takes over Ctrl-C for this process (unless it started with Ctrl-C ignored, in the
    background: then it stays ignored). Main thread only."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return
    _state.update(prog=prog, phase="start", rc=None, presses=0, resent=False)
    signal.signal(signal.SIGINT, _on_interrupt)
    signal.signal(signal.SIGALRM, _resend)
    atexit.register(_last_exit_hook)  # registered first, so it runs last


def unwind_from_here() -> None:
    """From now on the command may be writing: Ctrl-C raises KeyboardInterrupt (outside imports)."""
    _state["phase"] = "command"


def _end_now(message: str, rc: int):
    if message:
        os.write(2, f"{_state['prog']}: {message}\n".encode())
    os._exit(rc)


def _on_interrupt(signum, frame):
    phase = _state["phase"]
    if phase == "start":
        _end_now("interrupted", INTERRUPTED)
    if phase == "done":  # the command's outcome is decided and reported
        _end_now("", _state["rc"])
    if _state["resent"]:
        _state["resent"] = False
    else:
        _state["presses"] += 1
        if _state["presses"] >= _PRESSES_TO_QUIT:
            _end_now("interrupted again; stopped without cleaning up", INTERRUPTED)
    if phase == "unwinding":
        return
    if _inside_import(frame):
        signal.setitimer(signal.ITIMER_REAL, _RECHECK_SECONDS)
        return
    _state["phase"] = "unwinding"
    raise KeyboardInterrupt


def _resend(signum, frame):
    """The interrupt held during an import, again: through SIGINT, so whatever holds SIGINT at the
    moment (starting a worker process does) holds this one too."""
    _state["resent"] = True
    os.kill(os.getpid(), signal.SIGINT)


def _inside_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _stop_rechecks():
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)


def _last_exit_hook():
    if _state["phase"] == "done":
        _stop_rechecks()
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def exit_status(rc: int) -> int:
    """rc for sys.exit; an interrupted command's 130 ends the process here. (CPython marks an
    interrupt that passed through an exec'd string, as one landing while an import builds a
    dataclass does, as unhandled, and would otherwise kill itself with SIGINT at exit.)"""
    _state.update(phase="done", rc=rc)
    if _state["prog"] is not None:
        _stop_rechecks()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) has nothing more to take
            pass
    if rc == INTERRUPTED:
        os._exit(INTERRUPTED)
    return rc
