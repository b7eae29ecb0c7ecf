"""fastcodec.interrupt: the command lines' Ctrl-C. Before the command writes, it ends the process
at once (130, one line); after, it raises KeyboardInterrupt, but never inside an import (where it
can be swallowed): there it comes once the import is done."""
import os
import subprocess
import sys
import textwrap

import pytest

_SWALLOWING_MODULE = """
import os, signal, time
try:  # a Ctrl-C inside a library's import that swallows it
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.3)
except KeyboardInterrupt:
    pass
finished = True
"""


def _script(tmp_path, body, install=True, argv=()):
    """Runs body as `python -m` (where CPython's exit differs from a script's), after
    interrupt.install('prog') unless told not to."""
    (tmp_path / "swallowing.py").write_text(_SWALLOWING_MODULE)
    head = "import os, signal, sys, time\nfrom fastcodec import interrupt\n"
    if install:
        head += "interrupt.install('prog')\n"
    (tmp_path / "command.py").write_text(head + textwrap.dedent(body))
    return subprocess.run([sys.executable, "-m", "command", *argv], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path])))


def test_before_the_command_writes_ctrl_c_ends_the_process_at_once(tmp_path):
    r = _script(tmp_path, """
        import swallowing
        print("went on")
    """)
    assert r.returncode == 130 and r.stderr == "prog: interrupted\n" and r.stdout == ""


@pytest.mark.parametrize("install", [True, False], ids=["installed", "python's own handler"])
def test_once_writing_ctrl_c_inside_an_import_is_raised_after_it(tmp_path, install):
    r = _script(tmp_path, """
        interrupt.unwind_from_here()
        try:
            import swallowing
            time.sleep(2)
            print("not interrupted")
        except KeyboardInterrupt:  # the module ran to its end (not cut short, not swallowing ours)
            print("interrupted after the import:", getattr(sys.modules.get("swallowing"), "finished", False))
    """, install=install)
    if install:
        assert r.returncode == 0 and r.stdout == "interrupted after the import: True\n", r.stderr
    else:  # the control: Python's handler raises it inside the import, which swallows it
        assert r.stdout == "not interrupted\n", r.stderr


def test_ctrl_c_while_unwinding_is_ignored_and_a_third_ends_the_process(tmp_path):
    r = _script(tmp_path, """
        interrupt.unwind_from_here()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)
        except KeyboardInterrupt:  # cleaning up
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            print("cleaned up", flush=True)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)
            print("not stopped")
    """)
    assert r.returncode == 130 and r.stdout == "cleaned up\n", r.stderr
    assert r.stderr == "prog: interrupted again; stopped without cleaning up\n"


def test_an_interrupt_held_in_an_import_just_before_exit_is_dropped(tmp_path):
    """The command ends within the re-check's 20 ms: no stray SIGALRM kills the process."""
    r = _script(tmp_path, """
        interrupt.unwind_from_here()
        import swallowing
        print("done", flush=True)
        sys.exit(interrupt.exit_status(0))
    """)
    assert r.returncode == 0 and r.stdout == "done\n" and r.stderr == "", r.stderr


def test_exit_status_ends_an_interrupted_command_with_130(tmp_path):
    """Even where CPython marked the interrupt unhandled (it passed through an exec'd string)."""
    r = _script(tmp_path, """
        interrupt.unwind_from_here()
        try:
            exec("raise KeyboardInterrupt")
        except KeyboardInterrupt:
            print("partial output removed", flush=True)
        sys.exit(interrupt.exit_status(130))
    """)
    assert r.returncode == 130 and r.stdout == "partial output removed\n"


def test_a_process_started_with_ctrl_c_ignored_keeps_ignoring_it():
    code = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); from fastcodec import interrupt; "
            "interrupt.install('prog'); print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert r.returncode == 0 and r.stdout == "True\n", r.stderr


@pytest.mark.parametrize("where", ["exit hook", "last teardown"])
def test_ctrl_c_during_teardown_ends_with_the_commands_own_status(tmp_path, where):
    r = _script(tmp_path, """
        import atexit, os, signal
        def slow_teardown():
            if sys.argv[1] != "exit hook":
                return
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)
            print("teardown finished")
        atexit.register(slow_teardown)
        class Teardown:  # runs after every exit hook, when Python has given SIGINT back to the OS
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.3)
                os.write(1, b"last teardown finished\\n")
        last = Teardown()
        interrupt.unwind_from_here()
        print("done", flush=True)
        sys.exit(interrupt.exit_status(3 if sys.argv[1] == "exit hook" else 4))
    """, argv=[where])
    if where == "exit hook":
        assert r.returncode == 3 and r.stdout == "done\n" and r.stderr == "", r.stderr
    else:
        assert r.returncode == 4 and r.stdout == "done\nlast teardown finished\n" and r.stderr == "", r.stderr
