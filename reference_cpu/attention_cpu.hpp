// Fused block-sparse attention on the CPU (Eigen), fp32: the reference every GPU kernel is
// checked against and the path that runs everything on a machine without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>

#include "libsparse/backend.hpp"

namespace sparse::cpu {

void attention_forward(const AttentionForwardArgs& args, int num_threads);
void attention_backward(const AttentionBackwardArgs& args, int num_threads);
size_t attention_workspace_bytes(const Layout& layout, int64_t batch, int64_t head_dim,
                                 bool backward, int num_threads);

// The 2019-style unfused computation (SPARSE_ATTENTION_UNFUSED): scores of every computed block
// in a workspace, then softmax, then P V; the backward materialises P and dS.
void attention_forward_unfused(const AttentionForwardArgs& args, int num_threads);
void attention_backward_unfused(const AttentionBackwardArgs& args, int num_threads);
size_t attention_workspace_bytes_unfused(const Layout& layout, int64_t batch, int64_t head_dim,
                                         bool backward, int num_threads);

}  // namespace sparse::cpu
