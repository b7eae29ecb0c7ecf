// x86 SIMD paths of the CPU kernels: compiled with function-level target attributes (the extension
// itself is built for the baseline ISA) and chosen at run time when the CPU has AVX2 and FMA.
#pragma once

#include <cstdlib>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FASTCODEC_X86_SIMD 1
#endif

namespace fastcodec {
namespace cpu {

// FASTCODEC_CPU_SIMD=0 forces the portable paths (read once, at the first kernel call), so they
// are tested on machines that have AVX2.
inline bool has_avx2_fma() {
  const char* env = std::getenv("FASTCODEC_CPU_SIMD");
  if (env != nullptr && std::string(env) == "0") return false;
#ifdef FASTCODEC_X86_SIMD
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace cpu
}  // namespace fastcodec
