"""Builds fastcodec and its one extension, fastcodec._C.

The C++ CPU kernels are always built. The CUDA kernels are added when torch is a CUDA build and an
nvcc of the same major version is found, for sm_80 and sm_90 plus PTX by default - also on a machine
with no GPU, because the arch flags are passed explicitly (torch's builder would otherwise probe
for a device and crash). Knobs: FASTCODEC_SKIP_CUDA=1, FASTCODEC_CUDA_ARCHS="80;90".

Build against the torch you run with: `pip install --no-build-isolation -e .` (see README).
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent



def _toolkit_root_from_nvcc():
    """The CUDA toolkit root as nvcc itself reports it.

    torch guesses CUDA_HOME as the parent of the first nvcc on PATH; when that nvcc is a wrapper
    script (here /usr/local/bin/nvcc execs /usr/local/cuda-13.0/bin/nvcc) the guess has no headers
    or libraries. nvcc's dry run prints its real TOP.
    """
    nvcc = shutil.which("nvcc")
    if nvcc is None or (Path(nvcc).resolve().parent.parent / "include" / "cuda_runtime.h").exists():
        return None
    try:
        out = subprocess.run([nvcc, "-dryrun", "-c", "fastcodec_probe.cu"], capture_output=True, text=True,
                             timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", out, re.MULTILINE)
    return str(Path(m.group(1).strip()).resolve()) if m else None


# Must be settled before torch.utils.cpp_extension is imported: it reads CUDA_HOME at import time.
if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")):
    _root = _toolkit_root_from_nvcc()
    if _root:
        os.environ["CUDA_HOME"] = _root

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    sys.exit(
        "fastcodec compiles its kernels against the installed torch, and none was found.\n"
        "Install torch first, then build without isolation:\n"
        "    pip install torch\n"
        "    pip install --no-build-isolation -e .\n"
    )


def _nvcc():
    """Path of nvcc, or None: CUDA_HOME as torch resolved it, else PATH."""
    home = cpp_extension.CUDA_HOME
    if home and (Path(home) / "bin" / "nvcc").exists():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _nvcc_version(nvcc):
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def cuda_decision():
    """(build_cuda, why_not): whether to compile the CUDA kernels, and if not, the reason."""
    if os.environ.get("FASTCODEC_SKIP_CUDA", "0") not in ("", "0"):
        return False, "FASTCODEC_SKIP_CUDA is set"
    if torch.version.cuda is None:
        return False, "torch is a CPU-only build"
    nvcc = _nvcc()
    if nvcc is None:
        return False, "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    version = _nvcc_version(nvcc)
    torch_major = int(torch.version.cuda.split(".")[0])
    if version is None or version[0] != torch_major:
        return False, f"nvcc {version} does not match torch's CUDA {torch.version.cuda}"
    return True, ""


def cuda_archs():
    """["80", "90"] from FASTCODEC_CUDA_ARCHS ("80;90", "8.0 9.0", "sm_80,sm_90" all accepted)."""
    raw = os.environ.get("FASTCODEC_CUDA_ARCHS", "80;90")
    archs = []
    for tok in re.split(r"[;,\s]+", raw.strip()):
        tok = tok.lower().removeprefix("sm_").replace(".", "")
        if tok:
            if not tok.isdigit():
                sys.exit(f"FASTCODEC_CUDA_ARCHS: cannot read {tok!r} in {raw!r}; use e.g. '80;90'")
            archs.append(tok)
    if not archs:
        sys.exit("FASTCODEC_CUDA_ARCHS is empty; use e.g. '80;90' or set FASTCODEC_SKIP_CUDA=1")
    return archs


def write_build_info(build_cuda, archs, why_not):
    """A header the extension compiles in, so at run time it can say what it was built with."""
    gen = ROOT / "build" / "generated"
    gen.mkdir(parents=True, exist_ok=True)
    header = gen / "build_info.h"
    text = (
        "#pragma once\n"
        f"#define FASTCODEC_WITH_CUDA {int(build_cuda)}\n"
        f'#define FASTCODEC_CUDA_ARCHS "{",".join(archs) if build_cuda else ""}"\n'
        f'#define FASTCODEC_TORCH_VERSION "{torch.__version__}"\n'
        f'#define FASTCODEC_CUDA_VERSION "{torch.version.cuda if build_cuda else ""}"\n'
        f'#define FASTCODEC_CUDA_SKIP_REASON "{why_not.replace(chr(92), "/").replace(chr(34), chr(39))}"\n'
    )
    if not header.exists() or header.read_text() != text:
        header.write_text(text)
    return gen


def extensions():
    build_cuda, why_not = cuda_decision()
    archs = cuda_archs() if build_cuda else []
    print(f"fastcodec: building C++ CPU kernels; CUDA kernels: "
          f"{'sm_' + ', sm_'.join(archs) + ' + PTX' if build_cuda else 'no (' + why_not + ')'}")
    gen = write_build_info(build_cuda, archs, why_not)
    cpu = ["conv", "conv_gemm", "grouped_conv", "weight_grad", "skinny_gemm", "stream_chain", "weight_cache",
           "vq", "vq_search", "conv_tile_emulator", "vq_tile_emulator"]
    sources = ["csrc/fastcodec.cpp"] + [f"csrc/cpu/{name}.cpp" for name in cpu]
    # No -std: torch's builder picks the standard its headers need (C++17 for 2.4, C++20 for 2.14).
    cxx = ["-O3", "-fopenmp"]
    kwargs = dict(include_dirs=[str(gen)], extra_link_args=["-fopenmp"])
    if not build_cuda:
        return [cpp_extension.CppExtension("fastcodec._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)]
    # Explicit -gencode flags keep torch from probing for a GPU; PTX of the newest arch runs on later GPUs.
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", ";".join(f"{a[:-1]}.{a[-1]}" for a in archs))
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"] + gencode
    cuda = ["csrc/cuda/conv.cu", "csrc/cuda/conv_tc.cu", "csrc/cuda/vq.cu", "csrc/cuda/vq_tc.cu"]
    return [cpp_extension.CUDAExtension("fastcodec._C", sources + cuda,
                                        extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)]


setup(
    name="fastcodec",
    version="0.1.0",
    description="A SoundStream-style neural audio codec whose hot ops run on custom kernels",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fastcodec", "fastcodec.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4",
        "triton>=3.0; platform_system == 'Linux'",
        "numpy",
        "ninja",
        "soundfile",
        "soxr",   # resampling training data: a polyphase resampler beats a hand-written one
        "tqdm",   # the training progress bar (training falls back to plain lines without it)
    ],
    extras_require={"test": ["pytest", "pytest-benchmark", "hypothesis", "tensorboard", "onnx", "onnxruntime"],
                    "onnx": ["onnx", "onnxruntime"],
                    # quality evaluation (python -m fastcodec.eval): STOI, wide-band PESQ, the plot
                    "eval": ["pystoi", "pesq", "matplotlib"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    entry_points={"console_scripts": ["fastcodec = fastcodec.__main__:main"]},
    zip_safe=False,
)
