// A scoped cache of packed conv weights (and packed codebooks) for inference on the CPU.
//
// The fp32 conv engine repacks its weights on every call. Offline that is a small share of a call,
// but when streaming a 13 ms frame at a time the packing of a wide layer costs more than its
// arithmetic. Inside an enabled scope (fastcodec.ops.weight_cache(), which the streaming encoder
// and decoder use) a weight's packed form is kept and reused while that same tensor is alive,
// unmodified (its version counter) and at the same address and shape. Outside a scope nothing is
// cached: a change through `.data`, which bypasses the version counter, can only go unseen by a
// caller who asked for the cache and then edited weights mid-stream. Entries outlive a scope (a
// stream enters one per chunk) until their weight is freed: the cache holds at most one packed copy
// of each weight used in a scope.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

namespace fastcodec {
namespace cpu {

// Sets this thread's scope flag; returns the previous value.
bool set_weight_cache(bool enabled);

// Whether a form derived from w would be kept (inside a scope, and w has a version counter): a
// kernel whose packing only pays off when kept chooses by this.
bool caches(const at::Tensor& w);

// What make() derives from w under `tag` (a caller-chosen kind: conv packing, transposed conv of a
// stride, packed codebooks...): from the cache inside a scope while still valid, else make()
// (stored when inside a scope).
std::shared_ptr<const void> cached_any(const at::Tensor& w, int64_t tag,
                                       const std::function<std::shared_ptr<const void>()>& make);

template <class T>
std::shared_ptr<const T> cached(const at::Tensor& w, int64_t tag, const std::function<std::shared_ptr<T>()>& make) {
  return std::static_pointer_cast<const T>(cached_any(w, tag, [&] { return std::shared_ptr<const void>(make()); }));
}

// Tags in use.
constexpr int64_t kConvTag = 0;       // a conv's packing; a transposed conv uses its stride (>= 1)
constexpr int64_t kCodebookTag = -1;  // every stage's packed codebook
constexpr int64_t kPanelTag = -2;     // a conv's weights as skinny-product panels
constexpr int64_t kPanelTransposedTag = -3;  // a transposed conv's weights as skinny-product panels

}  // namespace cpu
}  // namespace fastcodec
