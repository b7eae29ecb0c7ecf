// Small helpers for the CUDA launchers; only c10/cuda headers, since this toolkit has no cuBLAS
// headers for ATen/cuda/CUDAContext.h to include.
#pragma once

#include <algorithm>

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace fastcodec {

// Kernels use grid-stride loops, so the grid can be capped without losing work.
inline unsigned int grid_for(int64_t work_items, int threads, int64_t cap = 65535LL * 32) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((work_items + threads - 1) / threads, cap)));
}

template <typename T>
const T* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

inline c10::optional<at::Tensor> contiguous_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
}

}  // namespace fastcodec
