// StreamChain: a chain of causal conv layers streamed on the CPU in one call per chunk.
//
// A codec's encoder or decoder streamed one frame at a time makes ~40 conv calls per frame, and
// from Python each costs interpreter, dispatcher and allocator work besides the kernel. The chain
// holds the layers (their weights are the model's own tensors, so the weight cache sees in-place
// changes) and their stream states, and steps through them in C++. Semantics are those of the
// per-op stream steps in fastcodec/ops/streaming.py, state format included, so Python can move
// the states between the two (fastcodec.nn.StreamChain does, when a chunk wants gradients).
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include "../checks.h"
#include "../epilogue.h"
#include "conv.h"
#include "weight_cache.h"

namespace fastcodec {
namespace cpu {
namespace {

struct ChainLayer {
  bool transposed;
  at::Tensor weight;  // [Cout, Cin, K], or [Cin, Cout, K] when transposed
  c10::optional<at::Tensor> bias, alpha;
  int64_t stride, dilation;
  int64_t P;    // conv: the input samples kept in front of a chunk (ops/streaming.py)
  Activation act;
  float slope;
  bool skip;        // add the previous layer's input to the output (a residual unit's 1x1 conv)
  at::Tensor state;  // undefined until the first chunk: the input tail, or the overlap tail
  int64_t in_channels() const { return weight.size(transposed ? 0 : 1); }
  int64_t out_channels() const { return weight.size(transposed ? 1 : 0); }
};

// This thread's weight-cache scope on for the lifetime of the object (a chunk can be one frame).
class CacheScope {
 public:
  CacheScope() : previous_(set_weight_cache(true)) {}
  ~CacheScope() { set_weight_cache(previous_); }

 private:
  bool previous_;
};

class StreamChain : public torch::CustomClassHolder {
 public:
  void add_conv(const at::Tensor& weight, const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& alpha,
                int64_t stride, int64_t dilation, const std::string& activation, double negative_slope, bool skip) {
    add(false, weight, bias, alpha, stride, dilation, activation, negative_slope, skip);
  }

  void add_transposed(const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                      const c10::optional<at::Tensor>& alpha, int64_t stride, const std::string& activation,
                      double negative_slope) {
    add(true, weight, bias, alpha, stride, 1, activation, negative_slope, false);
  }

  // x [B, Cin of the first layer, T] -> what the last layer emits for this chunk.
  at::Tensor step(const at::Tensor& x_in) {
    TORCH_CHECK(!layers_.empty(), "fastcodec: StreamChain has no layers");
    TORCH_CHECK(x_in.dim() == 3 && x_in.size(1) == layers_[0].in_channels(), "fastcodec: x must be [B, ",
                layers_[0].in_channels(), ", T], got ", x_in.sizes());
    TORCH_CHECK(x_in.device().is_cpu() && x_in.scalar_type() == at::kFloat,
                "fastcodec: StreamChain runs fp32 CPU tensors, got ", x_in.scalar_type(), " on ", x_in.device());
    const int64_t B = x_in.size(0);
    for (const ChainLayer& L : layers_)
      TORCH_CHECK(!L.state.defined() || L.state.size(0) == B, "fastcodec: this stream has batch ", L.state.size(0),
                  ", the chunk ", B);
    CacheScope scope;
    at::Tensor x = x_in.contiguous(), prev_in;
    for (ChainLayer& L : layers_) {
      const at::Tensor in = x;
      if (L.transposed) {
        c10::optional<at::Tensor> tail;
        if (L.state.defined()) tail = L.state;
        std::tie(x, L.state) = conv_transpose1d_stream_f32(x, L.weight, L.bias, tail, L.stride, L.act, L.slope, L.alpha);
      } else {
        if (!L.state.defined()) L.state = at::zeros({B, L.in_channels(), L.P}, x.options());  // the causal padding
        const at::Tensor xx = at::cat({L.state, x}, 2);
        const int64_t len = xx.size(2), n = len > L.P ? (len - 1 - L.P) / L.stride + 1 : 0;
        c10::optional<at::Tensor> residual;
        if (L.skip) {
          TORCH_CHECK(prev_in.defined() && prev_in.sizes() == at::IntArrayRef({B, L.out_channels(), n}),
                      "fastcodec: a skip layer's output must have its previous layer's input shape");
          residual = prev_in;
        }
        const int64_t pad = (L.weight.size(2) - 1) * L.dilation - L.P;
        x = conv1d_window_f32(xx, L.weight, L.bias, L.alpha, residual, L.act, L.slope, L.stride, L.dilation, pad, n);
        L.state = xx.narrow(2, n * L.stride, len - n * L.stride).contiguous();
      }
      prev_in = in;
    }
    return x;
  }

  int64_t size() const { return static_cast<int64_t>(layers_.size()); }
  bool has_state(int64_t i) const { return layer(i).state.defined(); }
  at::Tensor get_state(int64_t i) const {
    TORCH_CHECK(has_state(i), "fastcodec: layer ", i, " has no state yet");
    return layer(i).state;
  }
  void set_state(int64_t i, const at::Tensor& state) {
    ChainLayer& L = layers_.at(check_index(i));
    TORCH_CHECK(state.dim() == 3 && state.device().is_cpu() && state.scalar_type() == at::kFloat,
                "fastcodec: a state must be an fp32 CPU tensor [B, C, L], got ", state.sizes());
    if (L.transposed) {
      const int64_t tail = std::max<int64_t>(L.weight.size(2) - L.stride, 0);
      TORCH_CHECK(state.size(1) == L.out_channels() && state.size(2) == tail, "fastcodec: layer ", i,
                  " keeps a tail [B, ", L.out_channels(), ", ", tail, "], got ", state.sizes());
    } else {
      TORCH_CHECK(state.size(1) == L.in_channels() && state.size(2) >= std::max<int64_t>(0, L.P + 1 - L.stride) &&
                      state.size(2) <= L.P,
                  "fastcodec: layer ", i, " keeps [B, ", L.in_channels(), ", ", std::max<int64_t>(0, L.P + 1 - L.stride),
                  "..", L.P, "] input samples, got ", state.sizes());
    }
    L.state = state.contiguous();
  }
  void clear_state(int64_t i) { layers_.at(check_index(i)).state = at::Tensor(); }

 private:
  void add(bool transposed, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
           const c10::optional<at::Tensor>& alpha, int64_t stride, int64_t dilation, const std::string& activation,
           double negative_slope, bool skip) {
    TORCH_CHECK(weight.dim() == 3 && weight.device().is_cpu() && weight.scalar_type() == at::kFloat,
                "fastcodec: StreamChain layers take fp32 CPU weights [C, C, K], got ", weight.sizes());
    const int64_t cin = weight.size(transposed ? 0 : 1), cout = weight.size(transposed ? 1 : 0);
    check_conv_common(at::empty({0, cin, 0}, weight.options()), weight, bias, alpha, transposed ? 0 : 1, activation,
                      stride);
    TORCH_CHECK(dilation >= 1, "fastcodec: dilation must be >= 1, got ", dilation);
    TORCH_CHECK(layers_.empty() || layers_.back().out_channels() == cin, "fastcodec: layer ", layers_.size(),
                " takes ", cin, " channels but the previous layer gives ", layers_.back().out_channels());
    TORCH_CHECK(!skip || (!layers_.empty() && !layers_.back().transposed && layers_.back().stride == 1 &&
                          stride == 1 && layers_.back().in_channels() == cout),
                "fastcodec: a skip layer adds its previous layer's input: both stride 1, channels matching");
    const int64_t P = transposed ? 0 : std::max((weight.size(2) - 1) * dilation, stride - 1);
    layers_.push_back(ChainLayer{transposed, weight, bias, alpha, stride, dilation, P, parse_activation(activation),
                                 static_cast<float>(negative_slope), skip, at::Tensor()});
  }

  int64_t check_index(int64_t i) const {
    TORCH_CHECK(i >= 0 && i < size(), "fastcodec: layer index ", i, " out of range for ", size(), " layers");
    return i;
  }
  const ChainLayer& layer(int64_t i) const { return layers_.at(check_index(i)); }

  std::vector<ChainLayer> layers_;
};

}  // namespace
}  // namespace cpu
}  // namespace fastcodec

TORCH_LIBRARY_FRAGMENT(fastcodec, m) {
  using fastcodec::cpu::StreamChain;
  m.class_<StreamChain>("StreamChain")
      .def(torch::init<>())
      .def("add_conv", &StreamChain::add_conv)
      .def("add_transposed", &StreamChain::add_transposed)
      .def("step", &StreamChain::step)
      .def("size", &StreamChain::size)
      .def("has_state", &StreamChain::has_state)
      .def("get_state", &StreamChain::get_state)
      .def("set_state", &StreamChain::set_state)
      .def("clear_state", &StreamChain::clear_state);
}
