// The model's matrix products through cuBLAS (cublasGemmEx: fp32 inputs, or bf16/fp16 inputs
// for mixed precision; fp32 outputs and fp32 accumulation, no TF32), the bias kernel, and the
// forward product with a bias in one cublasLtMatmul with the bias epilogue (LinearBiasLt). The
// operands are row-major; cuBLAS sees each row-major matrix as its column-major transpose, so y = x
// w is computed as y^T = w^T x^T.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>
#include <string>
#include <utility>

#include "libsparse/cuda/model_common.cuh"
#include "libsparse/cuda/model_kernels.hpp"
#include "libsparse/error.hpp"

namespace sparse::cuda::model_ops {
namespace {

int as_int(int64_t v, const char* what) {
  require(v >= 0 && v <= INT_MAX, "the matrix dimension ", what, " = ", v,
          " exceeds cuBLAS's int range");
  return static_cast<int>(v);
}

__global__ void to_bf16_kernel(const float* __restrict__ x, int64_t n,
                               __nv_bfloat16* __restrict__ y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void to_f16_kernel(const float* __restrict__ x, int64_t n, __half* __restrict__ y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __float2half_rn(x[i]);
}

__global__ void from_bf16_kernel(const __nv_bfloat16* __restrict__ x, int64_t n,
                                 float* __restrict__ y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __bfloat162float(x[i]);
}

__global__ void from_f16_kernel(const __half* __restrict__ x, int64_t n, float* __restrict__ y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __half2float(x[i]);
}

void round_16(const float* x, int64_t n, cudaDataType type, void* y, cudaStream_t s) {
  if (n == 0) return;
  if (type == CUDA_R_16BF)
    to_bf16_kernel<<<blocks_for(n), kBlock, 0, s>>>(x, n, static_cast<__nv_bfloat16*>(y));
  else
    to_f16_kernel<<<blocks_for(n), kBlock, 0, s>>>(x, n, static_cast<__half*>(y));
  check_launch(type == CUDA_R_16BF ? "to_bf16_kernel" : "to_f16_kernel");
}

// Whether [x, x + n) lies inside the held weights (compared as addresses).
bool in_held_weights(const GemmInputs& g, const float* x, int64_t n) {
  if (g.w32 == nullptr || g.w16 == nullptr) return false;
  const auto lo = reinterpret_cast<uintptr_t>(g.w32), p = reinterpret_cast<uintptr_t>(x);
  return p >= lo && (p - lo) % sizeof(float) == 0 &&
         static_cast<int64_t>((p - lo) / sizeof(float)) + n <= g.wn;
}

// Where the product reads an operand from: x itself for fp32 inputs and for x already in 16
// bits; the held weights' rounded copy when x lies inside them; else dst (`round_into`), into
// which x must first be rounded to g.type.
struct Source {
  const void* data;
  void* round_into;
};
Source source(const GemmInputs& g, Operand x, int64_t n, void* dst) {
  if (x.is16) {
    require(g.type != CUDA_R_32F, "internal: a 16-bit operand for an fp32 product");
    return {x.data, nullptr};
  }
  const auto* x32 = static_cast<const float*>(x.data);
  if (g.type == CUDA_R_32F || n == 0) return {x32, nullptr};
  if (in_held_weights(g, x32, n))
    return {static_cast<const uint16_t*>(g.w16) + (x32 - g.w32), nullptr};  // 2-byte elements
  return {dst, dst};
}

// Queues the rounding a source needs; returns where the product reads the operand.
const void* prepare(const GemmInputs& g, Operand x, int64_t n, Source src) {
  if (src.round_into != nullptr)
    round_16(static_cast<const float*>(x.data), n, g.type, src.round_into, g.stream);
  return src.data;
}

// The operand the product reads (source() and prepare() in one).
const void* operand(const GemmInputs& g, Operand x, int64_t n, void* dst) {
  return prepare(g, x, n, source(g, x, n, dst));
}

// C (m x n, column-major, ldc) = op(A) op(B) + beta C. A is m x k (k x m transposed) with
// leading dimension lda, B is k x n (n x k transposed) with ldb; both are dense (lda and ldb are
// their rows), so A holds lda * (ta == N ? k : m) elements and B ldb * (tb == N ? n : k).
void gemm(const GemmInputs& g, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
          int64_t k, Operand a, int64_t lda, Operand b, int64_t ldb, float beta, float* c,
          int64_t ldc) {
  if (m == 0 || n == 0) return;
  const float alpha = 1.0f;
  const void* ga = operand(g, a, lda * (ta == CUBLAS_OP_N ? k : m), g.a16);
  const void* gb = operand(g, b, ldb * (tb == CUBLAS_OP_N ? n : k), g.b16);
  // An empty inner dimension (k = 0: in = 0 forward, out = 0 for dx) gives a leading dimension
  // of 0, which cuBLAS refuses (ld >= max(1, rows)); the operands are then empty, any ld >= 1
  // reads nothing, and cuBLAS computes C = beta C.
  lda = lda < 1 ? 1 : lda;
  ldb = ldb < 1 ? 1 : ldb;
  // fp32 inputs: the pedantic mode (no TF32, no reduced-precision shortcuts); 16-bit inputs:
  // fp32 accumulation on tensor cores.
  const cublasComputeType_t compute =
      g.type == CUDA_R_32F ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
  const cublasStatus_t st =
      cublasGemmEx(g.handle, ta, tb, as_int(m, "m"), as_int(n, "n"), as_int(k, "k"), &alpha, ga,
                   g.type, as_int(lda, "lda"), gb, g.type, as_int(ldb, "ldb"), &beta, c, CUDA_R_32F,
                   as_int(ldc, "ldc"), compute, CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS)
    throw_error(SPARSE_ERR_DEVICE, "cublasGemmEx failed (status ", static_cast<int>(st), ", m ", m,
                ", n ", n, ", k ", k, ")");
}

__global__ void add_bias_kernel(const float* __restrict__ b, int64_t rows, int64_t cols,
                                float* __restrict__ y) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += b[i % cols];
}

}  // namespace

void gemm_xw(const GemmInputs& g, Operand x, Operand w, int64_t rows, int64_t in, int64_t out,
             float* y, float beta) {
  gemm(g, CUBLAS_OP_N, CUBLAS_OP_N, out, rows, in, w, out, x, in, beta, y, out);
}

void gemm_xwt(const GemmInputs& g, Operand x, Operand w, int64_t rows, int64_t in, int64_t out,
              float* y, float beta) {
  gemm(g, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, w, in, x, in, beta, y, out);
}

void gemm_dyw_t(const GemmInputs& g, Operand dy, Operand w, int64_t rows, int64_t in, int64_t out,
                float* dx, float beta) {
  gemm(g, CUBLAS_OP_T, CUBLAS_OP_N, in, rows, out, w, out, dy, out, beta, dx, in);
}

void gemm_xt_dy(const GemmInputs& g, Operand x, Operand dy, int64_t rows, int64_t in, int64_t out,
                float* dw, float beta) {
  gemm(g, CUBLAS_OP_N, CUBLAS_OP_T, out, in, rows, dy, out, x, in, beta, dw, out);
}

void round_to_16(const float* x, int64_t n, cudaDataType type, void* y, cudaStream_t s) {
  round_16(x, n, type, y, s);
}

void widen_from_16(const void* x, int64_t n, cudaDataType type, float* y, cudaStream_t s) {
  if (n == 0) return;
  if (type == CUDA_R_16BF)
    from_bf16_kernel<<<blocks_for(n), kBlock, 0, s>>>(static_cast<const __nv_bfloat16*>(x), n, y);
  else
    from_f16_kernel<<<blocks_for(n), kBlock, 0, s>>>(static_cast<const __half*>(x), n, y);
  check_launch(type == CUDA_R_16BF ? "from_bf16_kernel" : "from_f16_kernel");
}

void add_bias(const float* b, int64_t rows, int64_t cols, float* y, cudaStream_t s) {
  if (rows * cols == 0) return;
  add_bias_kernel<<<blocks_for(rows * cols), kBlock, 0, s>>>(b, rows, cols, y);
  check_launch("add_bias_kernel");
}

// ---------------------------------------------------------------- the bias epilogue (cuBLASLt)
//
// Only CUBLASLT_EPILOGUE_BIAS is used. cuBLASLt's GELU epilogues (CUBLASLT_EPILOGUE_GELU,
// GELU_BIAS, GELU_AUX_BIAS) compute the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x +
// 0.044715 x^3))), while the model's GELU is x * sigmoid(1.702 x) (ModelOps::gelu_forward): a
// different function, so the feed-forward's GELU stays the separate kernel of model_elementwise.cu.

namespace {

// The largest power of two up to 256 dividing the address (cuBLASLt's alignment classes; its
// heuristic assumes 256 bytes unless told less).
uint32_t alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 1;
  while (a < 256 && v % (2 * a) == 0) a *= 2;
  return a;
}

std::string status_text(cublasStatus_t st) {
  return "status " + std::to_string(static_cast<int>(st));
}

// Statuses of cublasLtMatmul that mean "this configuration is not run" (nothing was queued)
// rather than a failure of the device.
bool refusal(cublasStatus_t st) {
  return st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE ||
         st == CUBLAS_STATUS_ARCH_MISMATCH;
}

}  // namespace

// One shape's descriptors and algorithm. y^T [out, rows] (column-major, ld out) = w^T [out, in]
// (w's row-major [in, out] buffer read as column-major out x in, ld out) times x^T [in, rows]
// (x's row-major [rows, in] buffer as column-major in x rows, ld in): A = w, B = x, both not
// transposed, C = D = y; the bias has one element per row of D (out), added to every column (every
// row of the row-major y).
struct LinearBiasLt::Plan {
  int64_t rows = 0, in = 0, out = 0;
  uint32_t align_a = 0, align_b = 0, align_d = 0, align_bias = 0;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool usable = false;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
    for (cublasLtMatrixLayout_t l : {a, b, d})
      if (l != nullptr) cublasLtMatrixLayoutDestroy(l);
  }
};

LinearBiasLt::LinearBiasLt(cublasLtHandle_t handle, std::string off)
    : handle_(handle), note_(handle == nullptr ? std::move(off) : std::string()) {}

LinearBiasLt::~LinearBiasLt() = default;

void LinearBiasLt::refuse(const std::string& why) {
  if (note_.empty()) note_ = why;
}

LinearBiasLt::Plan* LinearBiasLt::plan(const GemmInputs& g, const void* a, const void* b,
                                       const float* bias, float* y, int64_t rows, int64_t in,
                                       int64_t out, size_t workspace_bytes) {
  const uint32_t align_a = alignment(a), align_b = alignment(b), align_d = alignment(y),
                 align_bias = alignment(bias);
  for (auto& p : plans_)
    if (p->rows == rows && p->in == in && p->out == out && p->align_a == align_a &&
        p->align_b == align_b && p->align_d == align_d && p->align_bias == align_bias)
      return p.get();
  if (plans_.size() >= 64) plans_.erase(plans_.begin());
  auto p = std::make_unique<Plan>();
  p->rows = rows;
  p->in = in;
  p->out = out;
  p->align_a = align_a;
  p->align_b = align_b;
  p->align_d = align_d;
  p->align_bias = align_bias;
  const std::string shape = "rows " + std::to_string(rows) + ", in " + std::to_string(in) +
                            ", out " + std::to_string(out) + ", alignments (bytes) x " +
                            std::to_string(align_b) + ", w " + std::to_string(align_a) + ", y " +
                            std::to_string(align_d) + ", bias " + std::to_string(align_bias);
  std::string why;
  auto ok = [&](cublasStatus_t st, const char* call) {
    if (st == CUBLAS_STATUS_SUCCESS) return true;
    why = std::string(call) + " failed (" + status_text(st) + ")";
    return false;
  };
  // fp32 inputs: the pedantic mode (no TF32, no reduced-precision shortcuts); 16-bit inputs:
  // fp32 accumulation on tensor cores. The scale type (alpha, beta) is fp32 either way.
  const cublasComputeType_t compute =
      g.type == CUDA_R_32F ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
  const cublasOperation_t no_transpose = CUBLAS_OP_N;
  const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
  const int32_t bias_type = CUDA_R_32F;
  const uint64_t max_workspace = workspace_bytes;
  const uint64_t u_rows = static_cast<uint64_t>(rows), u_in = static_cast<uint64_t>(in),
                 u_out = static_cast<uint64_t>(out);
  cublasLtMatmulPreference_t pref = nullptr;
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  bool set_up =
      ok(cublasLtMatmulDescCreate(&p->desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate") &&
      ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &no_transpose,
                                        sizeof(no_transpose)),
         "cublasLtMatmulDescSetAttribute(TRANSA)") &&
      ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &no_transpose,
                                        sizeof(no_transpose)),
         "cublasLtMatmulDescSetAttribute(TRANSB)") &&
      ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                        sizeof(epilogue)),
         "cublasLtMatmulDescSetAttribute(EPILOGUE = BIAS)") &&
      ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                        sizeof(bias_type)),
         "cublasLtMatmulDescSetAttribute(BIAS_DATA_TYPE = fp32)") &&
      // The heuristic reads the bias pointer's value for its alignment (never dereferenced).
      ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                        sizeof(bias)),
         "cublasLtMatmulDescSetAttribute(BIAS_POINTER)") &&
      ok(cublasLtMatrixLayoutCreate(&p->a, g.type, u_out, u_in, out),
         "cublasLtMatrixLayoutCreate(w)") &&
      ok(cublasLtMatrixLayoutCreate(&p->b, g.type, u_in, u_rows, in),
         "cublasLtMatrixLayoutCreate(x)") &&
      ok(cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, u_out, u_rows, out),
         "cublasLtMatrixLayoutCreate(y)") &&
      ok(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  if (set_up) {
    set_up = ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                     &max_workspace, sizeof(max_workspace)),
                "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)") &&
             ok(cublasLtMatmulPreferenceSetAttribute(
                    pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)),
                "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_A_BYTES)") &&
             ok(cublasLtMatmulPreferenceSetAttribute(
                    pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)),
                "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_B_BYTES)") &&
             ok(cublasLtMatmulPreferenceSetAttribute(
                    pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)),
                "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_C_BYTES)") &&
             ok(cublasLtMatmulPreferenceSetAttribute(
                    pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)),
                "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_D_BYTES)") &&
             ok(cublasLtMatmulAlgoGetHeuristic(handle_, p->desc, p->a, p->b, p->d, p->d, pref, 1,
                                               &result, &found),
                "cublasLtMatmulAlgoGetHeuristic");
  }
  if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
  if (set_up && (found < 1 || result.state != CUBLAS_STATUS_SUCCESS)) {
    why = "cublasLtMatmulAlgoGetHeuristic offers no algorithm" +
          (found < 1 ? std::string() : " (" + status_text(result.state) + ")");
    set_up = false;
  }
  if (set_up && result.workspaceSize > workspace_bytes) {
    why = "the heuristic's algorithm needs " + std::to_string(result.workspaceSize) +
          " bytes of workspace, over the " + std::to_string(workspace_bytes) + " given";
    set_up = false;
  }
  if (set_up) {
    p->algo = result.algo;
    p->usable = true;
  } else {
    refuse("cuBLASLt bias epilogue not used for " + shape + ": " + why);
  }
  plans_.push_back(std::move(p));
  return plans_.back().get();
}

bool LinearBiasLt::run(const GemmInputs& g, Operand x, Operand w, const float* b, int64_t rows,
                       int64_t in, int64_t out, float* y, void* workspace, size_t workspace_bytes) {
  // Empty products (and k = 0, y = b) are left to the fallback, which handles every size.
  if (rows == 0 || out == 0) return false;
  if (handle_ == nullptr || in == 0 || b == nullptr) {
    ++fallback_calls_;
    return false;
  }
  as_int(rows, "rows");  // the same limits as the GemmEx path
  as_int(in, "in");
  as_int(out, "out");
  // cuBLASLt's alignment preferences cover A, B, C and D, not the bias; its heuristic is
  // documented to read the bias pointer's alignment, yet epilogue kernels assuming a 16-byte
  // aligned bias have faulted with "misaligned address" on less (an error that ends the CUDA
  // context, so no fallback could follow). Such a bias takes the fallback.
  if (const uint32_t bias_align = alignment(b); bias_align < 16) {
    refuse("cuBLASLt bias epilogue not used for a bias address aligned to " +
           std::to_string(bias_align) + " bytes (16 required)");
    ++fallback_calls_;
    return false;
  }
  // The operands as gemm_xw reads them (gemm(N, N, out, rows, in, w, out, x, in)).
  const Source ws = source(g, w, out * in, g.a16), xs = source(g, x, in * rows, g.b16);
  Plan* p = plan(g, ws.data, xs.data, b, y, rows, in, out, workspace_bytes);
  if (!p->usable) {
    ++fallback_calls_;
    return false;
  }
  cublasStatus_t st =
      cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof(b));
  if (st != CUBLAS_STATUS_SUCCESS) {
    p->usable = false;
    refuse("cublasLtMatmulDescSetAttribute(BIAS_POINTER) failed (" + status_text(st) + ")");
    ++fallback_calls_;
    return false;
  }
  const void* a_data = prepare(g, w, out * in, ws);
  const void* b_data = prepare(g, x, in * rows, xs);
  const float alpha = 1.0f, beta = 0.0f;
  st = cublasLtMatmul(handle_, p->desc, &alpha, a_data, p->a, b_data, p->b, &beta, y, p->d, y, p->d,
                      &p->algo, workspace, workspace_bytes, g.stream);
  if (st == CUBLAS_STATUS_SUCCESS) {
    ++lt_calls_;
    return true;
  }
  if (!refusal(st))
    throw_error(SPARSE_ERR_DEVICE, "cublasLtMatmul (bias epilogue) failed (", status_text(st),
                ", rows ", rows, ", in ", in, ", out ", out, ")");
  // Refused at the call: this plan is not tried again (the rounding queued above is harmless:
  // the fallback rounds the same operands into the same scratch).
  p->usable = false;
  refuse("cublasLtMatmul refused the bias epilogue for rows " + std::to_string(rows) + ", in " +
         std::to_string(in) + ", out " + std::to_string(out) + " (" + status_text(st) + ")");
  ++fallback_calls_;
  return false;
}

}  // namespace sparse::cuda::model_ops
