"""CI's skip policy (FASTCODEC_ONLY_GPU_SKIPS=1, set by .ci/run): the skip count is printed, and a
skip that is not a GPU target fails an otherwise green run."""
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import pytest
from conftest import needs_gpu

def test_passes():
    pass

def test_gpu_case():
    needs_gpu("too slow for the Triton interpreter")

def test_other():
    if {other}:
        pytest.skip("soundfile is not installed")
"""


def _run(tmp_path, other):
    (tmp_path / "test_probe.py").write_text(PROBE.format(other=other))
    tests = str(Path(__file__).resolve().parent)
    env = dict(os.environ, FASTCODEC_ONLY_GPU_SKIPS="1",
               PYTHONPATH=os.pathsep.join([tests, *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_probe.py")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_a_skip_that_is_not_a_gpu_target_fails_the_run(tmp_path):
    r = _run(tmp_path, other=True)
    assert r.returncode == 1, r.stdout[-2000:]
    assert "fastcodec: 2 skipped, 1 of them GPU targets" in r.stdout
    assert "a skip that is not a GPU target fails the run: test_probe.py::test_other: soundfile is not installed" \
        in r.stdout
    r = _run(tmp_path, other=False)
    assert r.returncode == 0 and "fastcodec: 1 skipped, 1 of them GPU targets" in r.stdout, r.stdout[-2000:]
