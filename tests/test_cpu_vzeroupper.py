"""Every function of the C++ CPU library that uses 256- or 512-bit registers clears their upper
halves (vzeroupper) before it returns, read off the built extension's machine code.

Without it the caller's SSE code (the library's own drivers, built for the baseline ISA) runs with
the upper state dirty: on an AVX-512 Xeon the weight-gradient kernel's driver ran 1.5x slower
until its AVX-512 tile got one. gcc adds the instruction itself almost everywhere, but not always
(it did not there), and nothing else would notice: the results stay right, only slower."""
import platform
import re
import shutil
import subprocess

import pytest

from conftest import require_backend
from fastcodec.ops import _extension

FUNCTION = re.compile(r"^[0-9a-f]+ <(.*)>:$")
WIDE = re.compile(r"%[yz]mm\d+")


def wide_functions_without_vzeroupper(disassembly: str):
    """Names of the functions in objdump -d -C output that touch ymm/zmm and never vzeroupper."""
    bad, name, wide, cleared = [], None, False, False
    for line in disassembly.splitlines() + [""]:
        m = FUNCTION.match(line)
        if m or not line.strip():  # a function ends at the next one or at a blank line
            if name is not None and wide and not cleared:
                bad.append(name)
            name, wide, cleared = (m.group(1) if m else None), False, False
            continue
        if "vzeroupper" in line:
            cleared = True
        elif WIDE.search(line):
            wide = True
    return bad


def test_the_check_finds_a_missing_vzeroupper():
    asm = """
0000000000001000 <good(float*)>:
    1000:	vmovups (%rdi),%zmm0
    1006:	vzeroupper
    1009:	ret

0000000000001010 <bad(float*)>:
    1010:	vmovups (%rdi),%ymm0
    1014:	ret

0000000000001020 <scalar(float*)>:
    1020:	movss  (%rdi),%xmm0
    1024:	ret
"""
    assert wide_functions_without_vzeroupper(asm) == ["bad(float*)"]


def test_cpu_kernels_clear_upper_state():
    require_backend("cpp", "cpu")
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the SIMD paths are x86 only")
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    path = _extension._C.__file__
    out = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", path], capture_output=True, text=True,
                         check=True).stdout
    bad = [n for n in wide_functions_without_vzeroupper(out) if "fastcodec" in n]
    assert not bad, f"{len(bad)} function(s) of {path} use ymm/zmm registers and never vzeroupper: {bad[:5]}"
