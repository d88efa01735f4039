// Launchers of the CUDA backend's model operations (fp32, device memory, one stream). Each file
// holds one concern: model_gemm.cu (the matrix products through cuBLAS and cuBLASLt), model_norm.cu
// (layer normalisation and the fixed-order column sums of parameter gradients),
// model_elementwise.cu (GELU, dropout, residual adds, copies, Adam and the squared norm),
// model_embedding.cu, model_loss.cu (softmax cross-entropy) and model_listed_attention.cu. The
// semantics are those of ModelOps (libsparse/model_ops.hpp); sums into parameter gradients run in
// an order fixed by the sizes alone (never float atomics), so results repeat bit for bit.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "libsparse/cuda/model_launch.hpp"
#include "libsparse/model_ops.hpp"

namespace sparse::cuda::model_ops {

// model_gemm.cu. The products' inputs: fp32 (CUDA_R_32F, no TF32), or CUDA_R_16BF / CUDA_R_16F
// for mixed precision, where both operands are first rounded to 16 bits into `a16` and `b16`
// (each at least as many 2-byte elements as the call's larger operand) and cuBLAS accumulates
// in fp32 into the fp32 output.
// An operand lying inside the held weights [w32, w32 + wn) is read from their rounded copy
// w16 (same element offsets) instead of being rounded again.
struct GemmInputs {
  cublasHandle_t handle = nullptr;
  cudaDataType type = CUDA_R_32F;
  void* a16 = nullptr;
  void* b16 = nullptr;
  cudaStream_t stream = nullptr;
  const float* w32 = nullptr;
  const void* w16 = nullptr;
  int64_t wn = 0;
};
// A product's input: fp32 elements (which a 16-bit product rounds, or reads from the held
// weights), or elements already in the product's 16-bit type (an activation stored in 16 bits).
struct Operand {
  Operand(const float* fp32) : data(fp32) {}  // NOLINT(google-explicit-constructor)
  static Operand in_16_bits(const void* x) {
    Operand o(nullptr);
    o.data = x;
    o.is16 = true;
    return o;
  }
  const void* data;
  bool is16 = false;
};
// Row-major operands as in ModelOps; beta 0 overwrites, 1 accumulates.
void gemm_xw(const GemmInputs& g, Operand x, Operand w, int64_t rows, int64_t in, int64_t out,
             float* y, float beta);  // y = x w, w [in, out]
void gemm_xwt(const GemmInputs& g, Operand x, Operand w, int64_t rows, int64_t in, int64_t out,
              float* y, float beta);  // y = x w^T, w [out, in]
void gemm_dyw_t(const GemmInputs& g, Operand dy, Operand w, int64_t rows, int64_t in, int64_t out,
                float* dx, float beta);  // dx = dy w^T, w [in, out]
void gemm_xt_dy(const GemmInputs& g, Operand x, Operand dy, int64_t rows, int64_t in, int64_t out,
                float* dw, float beta);  // dw [in, out] = x^T dy
void add_bias(const float* b, int64_t rows, int64_t cols, float* y, cudaStream_t s);

// y [rows, out] = x w + b in one cublasLtMatmul whose epilogue adds the bias
// (CUBLASLT_EPILOGUE_BIAS, b [out] fp32), on the inputs gemm_xw uses: fp32 operands with
// CUBLAS_COMPUTE_32F_PEDANTIC (no TF32), or the same 16-bit operands (rounded into a16/b16 or read
// from the held weights or a 16-bit activation) with CUBLAS_COMPUTE_32F; fp32 output. Each shape
// and set of pointer alignments gets its plan (descriptors and the heuristic's algorithm) once.
// Where cuBLASLt refuses a plan (no algorithm, an error while setting it up, or the product
// refused at its first call), run() returns false having queued nothing that changes y, and the
// caller computes gemm_xw + add_bias instead; the first such reason is kept (note()).
class LinearBiasLt {
 public:
  // A null handle turns the epilogue off for every call, for the reason `off`.
  LinearBiasLt(cublasLtHandle_t handle, std::string off);
  ~LinearBiasLt();
  LinearBiasLt(const LinearBiasLt&) = delete;
  LinearBiasLt& operator=(const LinearBiasLt&) = delete;

  // Queues y = x w + b on g.stream and returns true; false where the caller must fall back.
  // `workspace` (device memory of `workspace_bytes`) is cuBLASLt's, shared by every plan.
  bool run(const GemmInputs& g, Operand x, Operand w, const float* b, int64_t rows, int64_t in,
           int64_t out, float* y, void* workspace, size_t workspace_bytes);

  bool enabled() const { return handle_ != nullptr; }
  // Products that ran through the epilogue, and those that fell back (since construction).
  int64_t lt_calls() const { return lt_calls_; }
  int64_t fallback_calls() const { return fallback_calls_; }
  // Why the epilogue was not used: the first reason, empty while it always was.
  const std::string& note() const { return note_; }

 private:
  struct Plan;
  Plan* plan(const GemmInputs& g, const void* a, const void* b, const float* bias, float* y,
             int64_t rows, int64_t in, int64_t out, size_t workspace_bytes);
  void refuse(const std::string& why);

  cublasLtHandle_t handle_;
  std::string note_;
  std::vector<std::unique_ptr<Plan>> plans_;
  int64_t lt_calls_ = 0;
  int64_t fallback_calls_ = 0;
};
// y [n] = x rounded to `type` (CUDA_R_16BF or CUDA_R_16F), round to nearest even.
void round_to_16(const float* x, int64_t n, cudaDataType type, void* y, cudaStream_t s);
// y [n] = x (CUDA_R_16BF or CUDA_R_16F elements) widened to fp32 (exact).
void widen_from_16(const void* x, int64_t n, cudaDataType type, float* y, cudaStream_t s);

// model_norm.cu
void layer_norm_forward(const float* x, const float* gamma, const float* beta, int64_t rows,
                        int64_t dim, float eps, float* y, float* mean, float* rstd, cudaStream_t s);
void layer_norm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                         const float* rstd, int64_t rows, int64_t dim, float* dx, float* dgamma,
                         float* dbeta, float* scratch, cudaStream_t s);
// sums[c] += sum over rows of m[r, c] (rows in chunks of kColumnChunk, chunks in order).
void column_sums(const float* m, int64_t rows, int64_t cols, float* sums, float* scratch,
                 cudaStream_t s);

// model_elementwise.cu
void gelu_forward(const float* x, int64_t n, float* y, cudaStream_t s);
void gelu_backward(const float* x, const float* dy, int64_t n, float* dx, cudaStream_t s);
void dropout(const float* x, int64_t n, double p, uint64_t seed, float* y, cudaStream_t s);
void add(const float* a, const float* b, int64_t n, float* y, cudaStream_t s);
void accumulate(float* y, const float* x, int64_t n, cudaStream_t s);
void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
               int64_t cols, cudaStream_t s);
void adam_update(float* w, const float* g, float* m, float* v, const uint8_t* decay, int64_t n,
                 const ops::AdamStep& step, cudaStream_t s);
// Partial sums in double of consecutive chunks of kNormChunk elements into partial
// [ceil(n / kNormChunk)] (each by a fixed tree); the caller adds them in order.
constexpr int64_t kNormChunk = 4096;
void squared_norm_partials(const float* x, int64_t n, double* partial, cudaStream_t s);

// model_embedding.cu. `order` [batch * seq] and `offsets` [258] are int32 scratch.
void embedding_forward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                       const float* token_table, const float* start, const float* const* pos_tables,
                       const ops::PositionShape& shape, float* h, cudaStream_t s);
void embedding_backward(const uint8_t* tokens, int64_t batch, int64_t seq, int64_t dim,
                        const float* dh, const ops::PositionShape& shape, float* d_token_table,
                        float* d_start, float* const* d_pos_tables, int32_t* order,
                        int32_t* offsets, cudaStream_t s);

// model_loss.cu: per-row losses in nats (double) into row_loss [rows].
void softmax_cross_entropy(const float* logits, const uint8_t* targets, int64_t rows, int64_t vocab,
                           float grad_scale, float* dlogits, double* row_loss, cudaStream_t s);

// model_listed_attention.cu. Key lists in device memory: per head h, ptr[h * (seq + 1) + i]
// indexes keys (absolute positions into the concatenated keys of every head).
struct DeviceKeyLists {
  int64_t seq = 0;
  int heads = 0;
  const int64_t* ptr = nullptr;   // [heads * (seq + 1)]
  const int32_t* keys = nullptr;  // [total]
  // The transpose: per (head, key j), the queries that list j, in increasing order.
  const int64_t* tptr = nullptr;     // [heads * (seq + 1)]
  const int32_t* queries = nullptr;  // [total]
};
void listed_attention_forward(const DeviceKeyLists& L, int64_t batch, int64_t dqk, int64_t dv,
                              float scale, const float* q, const float* k, const float* v,
                              float* out, float* lse, cudaStream_t s);
// `delta` [batch * heads * seq] is scratch.
void listed_attention_backward(const DeviceKeyLists& L, int64_t batch, int64_t dqk, int64_t dv,
                               float scale, const float* q, const float* k, const float* v,
                               const float* out, const float* lse, const float* dout, float* dq,
                               float* dk, float* dvv, float* delta, cudaStream_t s);
// One query against a cache; ptr [heads + 1] and keys index the row's keys of every head.
void decode_attention(const int64_t* ptr, const int32_t* keys, int heads, float scale, int64_t dqk,
                      int64_t dv, const float* q, const float* kcache, const float* vcache,
                      float* out, cudaStream_t s);

}  // namespace sparse::cuda::model_ops
