// x86 SIMD paths of the CPU kernels: compiled with function-level target attributes (the extension
// itself is built for the baseline ISA) and chosen once per process, at the first kernel call, by
// what the CPU has: AVX-512F, else AVX2 with FMA, else the portable loops.
#pragma once

#include <cstdlib>
#include <cstring>

#include <c10/util/Exception.h>

#if defined(__x86_64__) && defined(__GNUC__)
// gcc 12 flags the AVX-512 intrinsics' own _mm512_undefined_* placeholders as maybe-uninitialized
// where they are inlined (a false positive, GCC bug 105593); the warning's location is this header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define FASTCODEC_X86_SIMD 1
#endif

namespace fastcodec {
namespace cpu {

enum class SimdLevel { Portable = 0, Avx2 = 1, Avx512 = 2 };

// FASTCODEC_CPU_SIMD caps the level: "0" forces the portable loops, "avx2" the AVX2 kernels on an
// AVX-512 host, so every path is testable on the machine that has the widest one.
inline SimdLevel detect_simd_level() {
  SimdLevel cap = SimdLevel::Avx512;
  if (const char* env = std::getenv("FASTCODEC_CPU_SIMD"); env != nullptr && *env != '\0') {
    if (std::strcmp(env, "0") == 0) {
      cap = SimdLevel::Portable;
    } else if (std::strcmp(env, "avx2") == 0) {
      cap = SimdLevel::Avx2;
    } else {
      TORCH_CHECK(std::strcmp(env, "avx512") == 0, "fastcodec: FASTCODEC_CPU_SIMD='", env,
                  "' is not one of 0, avx2, avx512 (or unset)");
    }
  }
  SimdLevel have = SimdLevel::Portable;
#ifdef FASTCODEC_X86_SIMD
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    have = __builtin_cpu_supports("avx512f") ? SimdLevel::Avx512 : SimdLevel::Avx2;
#endif
  return static_cast<int>(have) < static_cast<int>(cap) ? have : cap;
}

inline SimdLevel simd_level() {
  static const SimdLevel level = detect_simd_level();
  return level;
}

inline bool has_avx2_fma() { return simd_level() != SimdLevel::Portable; }
inline bool has_avx512() { return simd_level() == SimdLevel::Avx512; }

// MKL, whose sgemm some paths call, takes its AVX-512 kernels only on Intel CPUs (AMD ones get its
// AVX2 code), so where a GEMM beats fastcodec's own kernels depends on the vendor too.
inline bool is_intel() {
#ifdef FASTCODEC_X86_SIMD
  static const bool intel = __builtin_cpu_is("intel");
  return intel;
#else
  return false;
#endif
}

inline const char* simd_level_name() {
  switch (simd_level()) {
    case SimdLevel::Avx512: return "avx512";
    case SimdLevel::Avx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace cpu
}  // namespace fastcodec
