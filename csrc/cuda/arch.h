// Whether a device runs a kernel's tensor-core body: the kernels compile it for sm_80+ only (an
// older build traps), and the RVQ search's clusters for sm_90+, so launchers ask before choosing them.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

namespace fastcodec {

// One cache per kernel: 0 not asked yet, 1 no, 2 yes, per device index.
using ArchCache = std::array<std::atomic<int8_t>, 64>;

// Whether `device` is sm_<arch>+ (arch: 80, 90) and the code it runs for `kernel` (its SASS or
// JIT-compiled PTX) was built for sm_<arch>+. Fixed for the process, so asked of the driver once
// per device: the two queries cost more than a small launch.
inline bool runs_body(int device, const void* kernel, int arch, ArchCache& known) {
  auto ask = [&] {
    int major = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    if (major * 10 < arch) return false;
    const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    cudaFuncAttributes attr;
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
    // ptxVersion: the virtual arch the code was built from (binaryVersion would report the device's
    // own arch for PTX of an older arch that the driver JIT-compiled: a body compiled out).
    return attr.ptxVersion >= arch;
  };
  if (device < 0 || device >= static_cast<int>(known.size())) return ask();
  int8_t k = known[device].load(std::memory_order_relaxed);
  if (k == 0) {
    k = ask() ? 2 : 1;
    known[device].store(k, std::memory_order_relaxed);
  }
  return k == 2;
}

inline bool runs_sm80_body(int device, const void* kernel, ArchCache& known) {
  return runs_body(device, kernel, 80, known);
}

}  // namespace fastcodec
