// Attention in the C ABI: argument validation, then the context's backend.
#include "sparse/attention.h"

#include <cmath>
#include <cstring>

#include "capi/src/guard.hpp"
#include "capi/src/tensor_checks.hpp"
#include "libsparse/backend.hpp"
#include "libsparse/layout.hpp"

namespace {

struct Common {
  sparse::Backend* backend;
  const sparse::Layout* layout;
  float scale;
  sparse_attention_algorithm algorithm;
};

// The caller's params (or the defaults), checked.
sparse_attention_params checked_params(const sparse_attention_params* params) {
  sparse_attention_params p;
  sparse_attention_params_default(&p);
  if (params != nullptr) {
    sparse::require(params->struct_size == sizeof p, "params->struct_size = ", params->struct_size,
                    " does not match sizeof(sparse_attention_params) = ", sizeof p,
                    "; initialise with sparse_attention_params_default()");
    for (unsigned char byte : params->reserved)
      sparse::require(byte == 0, "params->reserved must be all zero");
    p = *params;
  }
  sparse::require(std::isfinite(p.scale), "params->scale = ", p.scale, " is not finite");
  sparse::require(p.algorithm == SPARSE_ATTENTION_FUSED || p.algorithm == SPARSE_ATTENTION_UNFUSED,
                  "params->algorithm = ", p.algorithm,
                  " is not a sparse_attention_algorithm (SPARSE_ATTENTION_FUSED = 0, "
                  "SPARSE_ATTENTION_UNFUSED = 1)");
  return p;
}

// The sizes the backends index and size workspaces with: the [batch, heads, seq_len, head_dim]
// tensors and the unfused algorithm's fp32 scores of every computed block (two buffers in the
// backward pass) must be addressable with 64-bit byte offsets.
void check_sizes(const sparse::Layout& l, int64_t batch, int64_t head_dim) {
  int64_t blocks = 0;
  for (int h = 0; h < l.num_heads; ++h) blocks += l.head(h).nnz();
  int64_t tensor = 0, scores = 0;
  const bool overflow = __builtin_mul_overflow(batch, int64_t{l.num_heads}, &tensor) ||
                        __builtin_mul_overflow(tensor, l.seq_len, &tensor) ||
                        __builtin_mul_overflow(tensor, head_dim, &tensor) ||
                        __builtin_mul_overflow(tensor, int64_t{8}, &tensor) ||
                        __builtin_mul_overflow(batch, blocks, &scores) ||
                        __builtin_mul_overflow(scores, int64_t{l.block} * l.block, &scores) ||
                        __builtin_mul_overflow(scores, int64_t{8}, &scores);
  sparse::require(!overflow, "batch = ", batch, " and head_dim = ", head_dim,
                  " are too large for the layout (", l.num_heads, " heads, seq_len ", l.seq_len,
                  ", ", blocks, " computed blocks of ", l.block, " x ", l.block,
                  "): its tensors or workspace would exceed 64-bit byte offsets");
}

Common check_common(sparse_context* context, const sparse_layout* layout,
                    const sparse_attention_params* params, const sparse::TensorView& q) {
  sparse::require(context != nullptr, "context is NULL");
  sparse::require(layout != nullptr, "layout is NULL");
  const sparse::Layout& l = *layout->layout;
  sparse::require(q.shape[0] >= 1, "batch (q.shape[0]) = ", q.shape[0], " must be >= 1");
  sparse::require(q.shape[3] >= 1, "head_dim (q.shape[3]) = ", q.shape[3], " must be >= 1");
  sparse::require(q.shape[1] == l.num_heads, "q has ", q.shape[1], " heads but the layout has ",
                  l.num_heads);
  sparse::require(q.shape[2] == l.seq_len, "q has seq_len ", q.shape[2],
                  " but the layout was built for seq_len ", l.seq_len);
  check_sizes(l, q.shape[0], q.shape[3]);
  const sparse_attention_params p = checked_params(params);
  const auto algorithm = static_cast<sparse_attention_algorithm>(p.algorithm);
  const float scale =
      p.scale != 0.0f ? p.scale
                      : (q.shape[3] > 0 ? 1.0f / std::sqrt(static_cast<float>(q.shape[3])) : 1.0f);
  const std::string why =
      context->backend->supports_attention(l, q.dtype, q.memory, q.shape[3], algorithm);
  if (!why.empty()) sparse::throw_error(SPARSE_ERR_UNSUPPORTED, why);
  return {context->backend.get(), &l, scale, algorithm};
}

}  // namespace

namespace sparse::capi {

void check_like(const TensorView& t, const char* name, const TensorView& ref) {
  for (int i = 0; i < 4; ++i)
    require(t.shape[i] == ref.shape[i], name, " has shape ", shape_string(t), " but q has shape ",
            shape_string(ref));
  require(t.dtype == ref.dtype, name, " has a different dtype from q");
  require(t.memory == ref.memory && t.device == ref.device, name,
          " lives in different memory from q");
}

TensorView check_lse(const sparse_tensor* lse, const TensorView& q) {
  TensorView v = check_tensor(lse, "lse", 3);
  for (int i = 0; i < 3; ++i)
    require(v.shape[i] == q.shape[i], "lse has shape ", shape_string(v),
            " but must be [batch, heads, seq_len] = [", q.shape[0], ", ", q.shape[1], ", ",
            q.shape[2], "]");
  require(v.dtype == SPARSE_DTYPE_F32, "lse must be SPARSE_DTYPE_F32");
  require(v.memory == q.memory && v.device == q.device, "lse lives in different memory from q");
  return v;
}

}  // namespace sparse::capi

extern "C" {

SPARSE_API sparse_status sparse_attention_params_default(sparse_attention_params* params) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(params != nullptr, "params is NULL");
    std::memset(params, 0, sizeof *params);
    params->struct_size = sizeof *params;
    params->scale = 0.0f;
    params->algorithm = SPARSE_ATTENTION_FUSED;
  });
}

SPARSE_API sparse_status sparse_attention_forward(sparse_context* context,
                                                  const sparse_layout* layout,
                                                  const sparse_attention_params* params,
                                                  const sparse_tensor* q, const sparse_tensor* k,
                                                  const sparse_tensor* v, sparse_tensor* out,
                                                  sparse_tensor* lse) {
  return sparse::capi::guard(__func__, [&] {
    sparse::AttentionForwardArgs a;
    a.q = sparse::check_tensor(q, "q", 4);
    a.k = sparse::check_tensor(k, "k", 4);
    a.v = sparse::check_tensor(v, "v", 4);
    a.out = sparse::check_tensor(out, "out", 4);
    sparse::capi::check_like(a.k, "k", a.q);
    sparse::capi::check_like(a.v, "v", a.q);
    sparse::capi::check_like(a.out, "out", a.q);
    const Common c = check_common(context, layout, params, a.q);
    sparse::check_no_self_overlap(a.out, "out");
    for (auto [t, name] : {std::pair{&a.q, "q"}, {&a.k, "k"}, {&a.v, "v"}})
      sparse::check_disjoint(a.out, "out", *t, name);
    if (lse != nullptr) {
      a.lse = sparse::capi::check_lse(lse, a.q);
      sparse::check_no_self_overlap(a.lse, "lse");
      for (auto [t, name] : {std::pair{&a.q, "q"}, {&a.k, "k"}, {&a.v, "v"}, {&a.out, "out"}})
        sparse::check_disjoint(a.lse, "lse", *t, name);
    }
    a.layout = c.layout;
    a.scale = c.scale;
    a.algorithm = c.algorithm;
    c.backend->attention_forward(a);
  });
}

SPARSE_API sparse_status sparse_attention_backward(
    sparse_context* context, const sparse_layout* layout, const sparse_attention_params* params,
    const sparse_tensor* q, const sparse_tensor* k, const sparse_tensor* v,
    const sparse_tensor* out, const sparse_tensor* lse, const sparse_tensor* dout,
    sparse_tensor* dq, sparse_tensor* dk, sparse_tensor* dv) {
  return sparse::capi::guard(__func__, [&] {
    sparse::AttentionBackwardArgs a;
    a.q = sparse::check_tensor(q, "q", 4);
    a.k = sparse::check_tensor(k, "k", 4);
    a.v = sparse::check_tensor(v, "v", 4);
    a.out = sparse::check_tensor(out, "out", 4);
    a.dout = sparse::check_tensor(dout, "dout", 4);
    a.dq = sparse::check_tensor(dq, "dq", 4);
    a.dk = sparse::check_tensor(dk, "dk", 4);
    a.dv = sparse::check_tensor(dv, "dv", 4);
    for (auto [t, name] : {std::pair{&a.k, "k"},
                           {&a.v, "v"},
                           {&a.out, "out"},
                           {&a.dout, "dout"},
                           {&a.dq, "dq"},
                           {&a.dk, "dk"},
                           {&a.dv, "dv"}})
      sparse::capi::check_like(*t, name, a.q);
    sparse::require(lse != nullptr, "lse is NULL (the backward pass needs the forward's lse)");
    a.lse = sparse::capi::check_lse(lse, a.q);
    const Common c = check_common(context, layout, params, a.q);
    const std::pair<const sparse::TensorView*, const char*> inputs[] = {
        {&a.q, "q"}, {&a.k, "k"}, {&a.v, "v"}, {&a.out, "out"}, {&a.dout, "dout"}, {&a.lse, "lse"}};
    const std::pair<const sparse::TensorView*, const char*> outputs[] = {
        {&a.dq, "dq"}, {&a.dk, "dk"}, {&a.dv, "dv"}};
    for (const auto& o : outputs) {
      sparse::check_no_self_overlap(*o.first, o.second);
      for (const auto& i : inputs) sparse::check_disjoint(*o.first, o.second, *i.first, i.second);
    }
    sparse::check_disjoint(a.dq, "dq", a.dk, "dk");
    sparse::check_disjoint(a.dq, "dq", a.dv, "dv");
    sparse::check_disjoint(a.dk, "dk", a.dv, "dv");
    a.layout = c.layout;
    a.scale = c.scale;
    a.algorithm = c.algorithm;
    c.backend->attention_backward(a);
  });
}

SPARSE_API sparse_status sparse_attention_workspace_size_params(
    sparse_context* context, const sparse_layout* layout, const sparse_attention_params* params,
    int64_t batch, int64_t head_dim, int32_t backward, size_t* bytes) {
  return sparse::capi::guard(__func__, [&] {
    sparse::require(context != nullptr, "context is NULL");
    sparse::require(layout != nullptr, "layout is NULL");
    sparse::require(bytes != nullptr, "bytes is NULL");
    sparse::require(batch >= 1, "batch = ", batch, " must be >= 1");
    sparse::require(head_dim >= 1, "head_dim = ", head_dim, " must be >= 1");
    check_sizes(*layout->layout, batch, head_dim);
    const sparse_attention_params p = checked_params(params);
    *bytes = context->backend->attention_workspace_bytes(
        *layout->layout, batch, head_dim, backward != 0,
        static_cast<sparse_attention_algorithm>(p.algorithm));
  });
}

SPARSE_API sparse_status sparse_attention_workspace_size(sparse_context* context,
                                                         const sparse_layout* layout, int64_t batch,
                                                         int64_t head_dim, int32_t backward,
                                                         size_t* bytes) {
  return sparse_attention_workspace_size_params(context, layout, nullptr, batch, head_dim, backward,
                                                bytes);
}

}  // extern "C"
