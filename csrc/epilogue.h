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
FC_HOST_DEVICE float fc_sin(float v) { return sinf(v); }
FC_HOST_DEVICE double fc_sin(double v) { return sin(v); }

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
    case Activation::Snake: {
      const acc_t s = fc_sin(alpha * z);
      return z + s * s / (alpha + acc_t(kSnakeEps));
    }
    default:
      return z;
  }
}

}  // namespace fastcodec
