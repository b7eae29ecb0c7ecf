// The conv epilogue (activation) shared by the CPU and CUDA kernels, so both compute exactly what
// fastcodec/ops/reference.py:activation_ref specifies.
#pragma once

#include <cmath>

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#if defined(__CUDACC__)
#define FC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FC_HOST_DEVICE inline
#endif

namespace fastcodec {

enum class Activation : int { None = 0, Elu, LeakyRelu, Silu, Snake };

inline Activation parse_activation(c10::string_view name) {
  if (name == "none") return Activation::None;
  if (name == "elu") return Activation::Elu;
  if (name == "leaky_relu") return Activation::LeakyRelu;
  if (name == "silu") return Activation::Silu;
  if (name == "snake") return Activation::Snake;
  TORCH_CHECK(false, "fastcodec: unknown activation '", std::string(name.data(), name.size()),
              "'; expected none, elu, leaky_relu, silu or snake");
}

// Matches reference.SNAKE_EPS.
constexpr double kSnakeEps = 1e-9;

// Overloads rather than std:: so the same code compiles for the host and for the device.
FC_HOST_DEVICE float fc_expm1(float v) { return expm1f(v); }
FC_HOST_DEVICE double fc_expm1(double v) { return expm1(v); }
FC_HOST_DEVICE float fc_exp(float v) { return expf(v); }
FC_HOST_DEVICE double fc_exp(double v) { return exp(v); }

// sin(v)^2 for the snake activation. sin^2 has period pi, so v = k*pi + r with |r| <= pi/2
// (Cody-Waite: pi split so k*3.140625 is exact for |k| < 2^16) and an odd Taylor polynomial to
// r^13 for sin(r): ~2 ulp, and no slow path (a precise sinf carries a Payne-Hanek reduction with a
// local-memory array on GPUs). Accurate for |v| < ~1e5; beyond, r is clamped so the result stays
// in [0, 1]. fp64 keeps the libm sin.
FC_HOST_DEVICE float fc_sin_sq(float v) {
  const float k = floorf(v * 0.318309886183790671f + 0.5f);
  float r = v - k * 3.140625f;
  r = r - k * 9.677410125732422e-4f;
  r = r - k * -8.742277657347586e-8f;
  r = fminf(fmaxf(r, -1.57079632679f), 1.57079632679f);
  const float r2 = r * r;
  float p = 1.6059043836821613e-10f;
  p = p * r2 - 2.5052108385441720e-8f;
  p = p * r2 + 2.7557319223985893e-6f;
  p = p * r2 - 1.9841269841269841e-4f;
  p = p * r2 + 8.3333333333333333e-3f;
  p = p * r2 - 1.6666666666666667e-1f;
  const float sn = r + r * r2 * p;
  return sn * sn;
}
FC_HOST_DEVICE double fc_sin_sq(double v) {
  const double sn = sin(v);
  return sn * sn;
}

// z: the pre-activation (conv + bias) in the accumulation type; alpha is the channel's snake alpha.
template <typename acc_t>
FC_HOST_DEVICE acc_t activate(acc_t z, Activation act, acc_t negative_slope, acc_t alpha) {
  switch (act) {
    case Activation::Elu:
      return z > acc_t(0) ? z : fc_expm1(z);
    case Activation::LeakyRelu:
      return z > acc_t(0) ? z : z * negative_slope;
    case Activation::Silu:
      return z / (acc_t(1) + fc_exp(-z));
    case Activation::Snake:
      return z + fc_sin_sq(alpha * z) / (alpha + acc_t(kSnakeEps));
    default:
      return z;
  }
}

}  // namespace fastcodec
