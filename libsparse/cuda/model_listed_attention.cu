// Attention by explicit key lists (the model's reference attention path and the decoding step),
// plain kernels: one thread per (batch, head, query) for the forward pass and dQ, one thread per
// (batch, head, key) for dK and dV over the transposed lists, so that every output has one owner
// and its sum runs in list order. Scores are recomputed in each pass rather than stored.
#include <cmath>

#include "libsparse/cuda/model_common.cuh"
#include "libsparse/cuda/model_kernels.hpp"

namespace sparse::cuda::model_ops {
namespace {

__device__ float dot(const float* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t c = 0; c < n; ++c) s += a[c] * b[c];
  return s;
}

// Row [b, i, h] of a [batch, seq, heads, d] tensor.
__device__ int64_t row(int64_t b, int64_t i, int64_t h, int64_t seq, int64_t heads, int64_t d) {
  return ((b * seq + i) * heads + h) * d;
}

__global__ void listed_forward_kernel(DeviceKeyLists L, int64_t batch, int64_t dqk, int64_t dv,
                                      float scale, const float* __restrict__ q,
                                      const float* __restrict__ k, const float* __restrict__ v,
                                      float* __restrict__ out, float* __restrict__ lse) {
  const int64_t n = L.seq, H = L.heads;
  const int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (id >= batch * H * n) return;
  const int64_t i = id % n, h = (id / n) % H, b = id / (n * H);
  const int64_t begin = L.ptr[h * (n + 1) + i], end = L.ptr[h * (n + 1) + i + 1];
  const float* qi = q + row(b, i, h, n, H, dqk);
  float* oi = out + row(b, i, h, n, H, dv);
  for (int64_t c = 0; c < dv; ++c) oi[c] = 0;
  if (begin == end) {
    lse[(b * H + h) * n + i] = -INFINITY;
    return;
  }
  float m = -INFINITY;
  for (int64_t e = begin; e < end; ++e)
    m = fmaxf(m, dot(qi, k + row(b, L.keys[e], h, n, H, dqk), dqk) * scale);
  float sum = 0;
  for (int64_t e = begin; e < end; ++e)
    sum += expf(dot(qi, k + row(b, L.keys[e], h, n, H, dqk), dqk) * scale - m);
  for (int64_t e = begin; e < end; ++e) {
    const float p = expf(dot(qi, k + row(b, L.keys[e], h, n, H, dqk), dqk) * scale - m) / sum;
    const float* vj = v + row(b, L.keys[e], h, n, H, dv);
    for (int64_t c = 0; c < dv; ++c) oi[c] += p * vj[c];
  }
  lse[(b * H + h) * n + i] = m + logf(sum);
}

// delta[b, h, i] = dout_i . out_i
__global__ void listed_delta_kernel(int64_t batch, int64_t heads, int64_t n, int64_t dv,
                                    const float* __restrict__ out, const float* __restrict__ dout,
                                    float* __restrict__ delta) {
  const int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (id >= batch * heads * n) return;
  const int64_t i = id % n, h = (id / n) % heads, b = id / (n * heads);
  delta[id] = dot(dout + row(b, i, h, n, heads, dv), out + row(b, i, h, n, heads, dv), dv);
}

__global__ void listed_dq_kernel(DeviceKeyLists L, int64_t batch, int64_t dqk, int64_t dv,
                                 float scale, const float* __restrict__ q,
                                 const float* __restrict__ k, const float* __restrict__ v,
                                 const float* __restrict__ lse, const float* __restrict__ dout,
                                 const float* __restrict__ delta, float* __restrict__ dq) {
  const int64_t n = L.seq, H = L.heads;
  const int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (id >= batch * H * n) return;
  const int64_t i = id % n, h = (id / n) % H, b = id / (n * H);
  const int64_t begin = L.ptr[h * (n + 1) + i], end = L.ptr[h * (n + 1) + i + 1];
  float* dqi = dq + row(b, i, h, n, H, dqk);
  for (int64_t c = 0; c < dqk; ++c) dqi[c] = 0;
  const float* qi = q + row(b, i, h, n, H, dqk);
  const float* doi = dout + row(b, i, h, n, H, dv);
  const float l = lse[(b * H + h) * n + i], D = delta[id];
  for (int64_t e = begin; e < end; ++e) {
    const float* kj = k + row(b, L.keys[e], h, n, H, dqk);
    const float p = expf(dot(qi, kj, dqk) * scale - l);
    const float ds = p * (dot(doi, v + row(b, L.keys[e], h, n, H, dv), dv) - D) * scale;
    for (int64_t c = 0; c < dqk; ++c) dqi[c] += ds * kj[c];
  }
}

__global__ void listed_dkv_kernel(DeviceKeyLists L, int64_t batch, int64_t dqk, int64_t dv,
                                  float scale, const float* __restrict__ q,
                                  const float* __restrict__ k, const float* __restrict__ v,
                                  const float* __restrict__ lse, const float* __restrict__ dout,
                                  const float* __restrict__ delta, float* __restrict__ dk,
                                  float* __restrict__ dvv) {
  const int64_t n = L.seq, H = L.heads;
  const int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (id >= batch * H * n) return;
  const int64_t j = id % n, h = (id / n) % H, b = id / (n * H);
  const int64_t begin = L.tptr[h * (n + 1) + j], end = L.tptr[h * (n + 1) + j + 1];
  float* dkj = dk + row(b, j, h, n, H, dqk);
  float* dvj = dvv + row(b, j, h, n, H, dv);
  for (int64_t c = 0; c < dqk; ++c) dkj[c] = 0;
  for (int64_t c = 0; c < dv; ++c) dvj[c] = 0;
  const float* kj = k + row(b, j, h, n, H, dqk);
  const float* vj = v + row(b, j, h, n, H, dv);
  for (int64_t e = begin; e < end; ++e) {
    const int64_t i = L.queries[e];
    const float* qi = q + row(b, i, h, n, H, dqk);
    const float* doi = dout + row(b, i, h, n, H, dv);
    const int64_t stat = (b * H + h) * n + i;
    const float p = expf(dot(qi, kj, dqk) * scale - lse[stat]);
    const float ds = p * (dot(doi, vj, dv) - delta[stat]) * scale;
    for (int64_t c = 0; c < dqk; ++c) dkj[c] += ds * qi[c];
    for (int64_t c = 0; c < dv; ++c) dvj[c] += p * doi[c];
  }
}

// One thread per head.
__global__ void decode_kernel(const int64_t* __restrict__ ptr, const int32_t* __restrict__ keys,
                              int heads, float scale, int64_t dqk, int64_t dv,
                              const float* __restrict__ q, const float* __restrict__ kcache,
                              const float* __restrict__ vcache, float* __restrict__ out) {
  const int h = blockIdx.x * blockDim.x + threadIdx.x;
  if (h >= heads) return;
  float* oh = out + h * dv;
  for (int64_t c = 0; c < dv; ++c) oh[c] = 0;
  const int64_t begin = ptr[h], end = ptr[h + 1];
  if (begin == end) return;
  const float* qh = q + h * dqk;
  // Cache row of key e in int64 (keys[e] * heads in int would overflow past 2^31 / heads keys).
  auto at = [&](int64_t e) { return static_cast<int64_t>(keys[e]) * heads + h; };
  float m = -INFINITY;
  for (int64_t e = begin; e < end; ++e) m = fmaxf(m, dot(qh, kcache + at(e) * dqk, dqk) * scale);
  float sum = 0;
  for (int64_t e = begin; e < end; ++e) sum += expf(dot(qh, kcache + at(e) * dqk, dqk) * scale - m);
  for (int64_t e = begin; e < end; ++e) {
    const float w = expf(dot(qh, kcache + at(e) * dqk, dqk) * scale - m) / sum;
    const float* vj = vcache + at(e) * dv;
    for (int64_t c = 0; c < dv; ++c) oh[c] += w * vj[c];
  }
}

unsigned blocks_of(int64_t threads) { return static_cast<unsigned>((threads + 127) / 128); }

}  // namespace

void listed_attention_forward(const DeviceKeyLists& L, int64_t batch, int64_t dqk, int64_t dv,
                              float scale, const float* q, const float* k, const float* v,
                              float* out, float* lse, cudaStream_t s) {
  const int64_t threads = batch * L.heads * L.seq;
  if (threads == 0) return;
  listed_forward_kernel<<<blocks_of(threads), 128, 0, s>>>(L, batch, dqk, dv, scale, q, k, v, out,
                                                           lse);
  check_launch("listed_forward_kernel");
}

void listed_attention_backward(const DeviceKeyLists& L, int64_t batch, int64_t dqk, int64_t dv,
                               float scale, const float* q, const float* k, const float* v,
                               const float* out, const float* lse, const float* dout, float* dq,
                               float* dk, float* dvv, float* delta, cudaStream_t s) {
  const int64_t threads = batch * L.heads * L.seq;
  if (threads == 0) return;
  listed_delta_kernel<<<blocks_of(threads), 128, 0, s>>>(batch, L.heads, L.seq, dv, out, dout,
                                                         delta);
  check_launch("listed_delta_kernel");
  listed_dq_kernel<<<blocks_of(threads), 128, 0, s>>>(L, batch, dqk, dv, scale, q, k, v, lse, dout,
                                                      delta, dq);
  check_launch("listed_dq_kernel");
  listed_dkv_kernel<<<blocks_of(threads), 128, 0, s>>>(L, batch, dqk, dv, scale, q, k, v, lse, dout,
                                                       delta, dk, dvv);
  check_launch("listed_dkv_kernel");
}

void decode_attention(const int64_t* ptr, const int32_t* keys, int heads, float scale, int64_t dqk,
                      int64_t dv, const float* q, const float* kcache, const float* vcache,
                      float* out, cudaStream_t s) {
  if (heads == 0) return;
  decode_kernel<<<blocks_of(heads), 128, 0, s>>>(ptr, keys, heads, scale, dqk, dv, q, kcache,
                                                 vcache, out);
  check_launch("decode_kernel");
}

}  // namespace sparse::cuda::model_ops
