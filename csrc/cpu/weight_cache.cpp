// The packed-weight cache declared in weight_cache.h.
#include "weight_cache.h"

#include <algorithm>
#include <mutex>

#include <c10/util/intrusive_ptr.h>

namespace fastcodec {
namespace cpu {
namespace {

thread_local bool t_enabled = false;

struct Entry {
  // Weak: the cache never keeps a weight alive, and while the weak reference exists the
  // TensorImpl's memory is not reused, so a live owner at the same address is the same tensor.
  c10::weak_intrusive_ptr<c10::TensorImpl> owner;
  uint32_t version;
  const void* data;
  std::vector<int64_t> sizes;
  int64_t tag;
  std::shared_ptr<const void> value;
  uint64_t last_use;
};

constexpr size_t kMaxEntries = 512;  // a codec has ~150 conv weights (transposed ones count once)
std::mutex g_mutex;
std::vector<Entry> g_entries;
uint64_t g_clock = 0;

bool matches(const Entry& e, c10::TensorImpl* impl, const at::Tensor& w, uint32_t version, int64_t tag) {
  return e.tag == tag && !e.owner.expired() && e.owner._unsafe_get_target() == impl && e.version == version &&
         e.data == w.data_ptr() && e.sizes == w.sizes().vec();
}

}  // namespace

bool set_weight_cache(bool enabled) {
  const bool previous = t_enabled;
  t_enabled = enabled;
  if (!enabled && previous) {  // leaving a scope: forget the forms of weights that no longer exist
    std::lock_guard<std::mutex> lock(g_mutex);
    const auto dead = [](const Entry& e) { return e.owner.expired(); };
    g_entries.erase(std::remove_if(g_entries.begin(), g_entries.end(), dead), g_entries.end());
  }
  return previous;
}

bool caches(const at::Tensor& w) {
  c10::TensorImpl* impl = w.unsafeGetTensorImpl();
  // Inference tensors have no version counter, so a change to them could not be seen.
  return t_enabled && !impl->is_inference() && impl->version_counter().enabled();
}

std::shared_ptr<const void> cached_any(const at::Tensor& w, int64_t tag,
                                       const std::function<std::shared_ptr<const void>()>& make) {
  if (!caches(w)) return make();
  c10::TensorImpl* impl = w.unsafeGetTensorImpl();
  const uint32_t version = impl->version_counter().current_version();
  std::lock_guard<std::mutex> lock(g_mutex);
  for (Entry& e : g_entries) {
    if (matches(e, impl, w, version, tag)) {
      e.last_use = ++g_clock;
      return e.value;
    }
  }
  // A miss: forget dead weights and this weight's outdated forms, and the least recently used
  // entry when full.
  g_entries.erase(std::remove_if(g_entries.begin(), g_entries.end(),
                                 [&](const Entry& e) {
                                   return e.owner.expired() || (e.tag == tag && e.owner._unsafe_get_target() == impl);
                                 }),
                  g_entries.end());
  if (g_entries.size() >= kMaxEntries) {
    g_entries.erase(std::min_element(g_entries.begin(), g_entries.end(),
                                     [](const Entry& a, const Entry& b) { return a.last_use < b.last_use; }));
  }
  std::shared_ptr<const void> value = make();
  g_entries.push_back(Entry{c10::weak_intrusive_ptr<c10::TensorImpl>(w.getIntrusivePtr()), version, w.data_ptr(),
                            w.sizes().vec(), tag, value, ++g_clock});
  return value;
}

}  // namespace cpu
}  // namespace fastcodec
