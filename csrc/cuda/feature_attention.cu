// Feature attention on CUDA, per valid step: u = tanh(W h_t) (d_a), s = V u (H),
// a = softmax over features of s, out += a * h_t.
//
// A CTA handles a block of kSteps steps of one row. Its tiles (h, u, s/a and in the backward
// ds and dz) live in shared memory, feature-major: tile[f * kLd + i] is feature f of step i,
// so the kSteps values a thread needs for one feature are one vector load. The per-block
// matmuls (kSteps x K tile times a K x N weight read from global memory, L2-resident):
// - fp32 and fp64 (tile_matmul, SIMT FMA): each thread owns one output column and kSteps
//   accumulators; the weight reads are coalesced along the column.
// - fp16/bf16, and fp32 with the TF32 option (mma_matmul, tensor cores, sm_80 and newer):
//   mma.sync m16n8k16 (fp16/bf16 operands) or m16n8k8 (TF32 operands), fp32 accumulation.
//   A warp owns kMmaTiles tiles of kSteps x kMmaN outputs side by side (kMmaColumns columns
//   per pass), sums them over K one Mma::kK slice at a time, then hands each output element
//   to the epilogue. The A fragments are read from the fp32 tiles and rounded to the operand
//   type in registers, the B fragments straight from the weights (T), so the tensor-core path
//   needs no shared memory beyond the SIMT one. Rounded operands: u, ds and dz (h and the
//   weights are T already); TF32 rounds both operands (cvt.rna).
// Everything else per block (tanh, softmax, ds, the a * h sums) is fp32 (fp64) SIMT. The
// forward writes no (B, T, d_a) or (B, T, H) buffer.
//
// Forward: CTA per (block, row) writes the block's sum_t a_t * h_t; a second kernel sums each
// row's blocks in order.
//
// Backward, two parts (as the Triton backward):
// 1. feature_backward_chunk, per block of kSteps steps: recomputes u and a once, then
//    ds = a * (da - sum(a * da)), du = V^T ds, dz = du * (1 - u^2), dh = g * a + W^T dz, and
//    writes dh and, for the valid steps, u, ds and dz in the input dtype (the workspace).
// 2. feature_weight_grad, a GEMM over the valid steps for dV = sum_t ds_t u_t^T and
//    dW = sum_t dz_t h_t^T: a CTA owns a kTile x kTile output tile and one split of the batch
//    rows (b = split, split + splits, ...), walks its rows' valid steps kChunk at a time,
//    keeps the tile in registers (wmma accumulator fragments) over all of them and stores it
//    once. sum_partials then adds the splits in order: deterministic, no atomics, no
//    read-modify-write of partials. fp16/bf16 run the GEMM on tensor cores (wmma 16x16x16,
//    operands in the input dtype as eager's same-dtype matmul, fp32 accumulation), fp32 with
//    the TF32 option too (wmma 16x16x8, operands rounded to TF32 when a chunk is loaded);
//    fp32 and fp64 otherwise use SIMT FMA.
//
// TF32 (fp32 only, off by default): the launcher (sed_kernels/cuda/feature_attention.py)
// passes tf32 = true when SED_KERNELS_CUDA_TF32=1, which selects the <float, true> kernels.
//
// Matrix-product FLOPs per valid step: forward 4 H d_a (W h, V u); backward 12 H d_a: part 1
// 8 (W h, V u recomputed once, V^T ds, W^T dz), part 2 4 (dV, dW). 16 N H d_a in all, plus
// padding: part 1 computes whole kSteps blocks, part 2 whole kChunk chunks per row and whole
// kTile tiles. (Before this layout the backward did the same 12 H d_a per step, but added
// rank-16 updates into global dW/dV partials: 2 H d_a * 4 bytes read and written per 16 steps.)
//
// Backward memory, at the paper shape (B, T, H, d_a) = (64, 500, 256, 256) and the wide one
// (128, 300, 512, 512) (weight_splits: 16 and 4 splits):
// - dW + dV partials, 2 * splits * H * d_a fp32: 8 MiB at both shapes (at most
//   kMaxPartialBytes = 24 MiB for any shape), written once per call, then read once by
//   sum_partials: they fit the 40-60 MB L2 of an A100/H100/H200.
// - u, ds, dz: B * T * (2 d_a + H) elements in the input dtype, written once by part 1 and
//   read by part 2 (each element by H/kTile or d_a/kTile CTAs, mostly from L2): 49 MB (bf16)
//   / 98 MB (fp32) at the paper shape, 118 / 236 MB at the wide one.
// - Part 2 reads per valid step 2 * (2 H d_a / kTile) operand elements (over its CTAs): 8 KB
//   (bf16) / 16 KB (fp32) at the paper shape, instead of the 64 KB of partial
//   read-modify-write per step before.
//
// Shared memory: (3 H + d_a) * kLd * 4 bytes in part 1 (83 KB at H = d_a = 256, 164 KB at
// 512; sizes beyond the device's limit raise an error naming it); part 2 uses 17-35 KB of
// static shared memory whatever the sizes.
#include <mma.h>

#include <algorithm>
#include <type_traits>

#include "common.cuh"

namespace sed_cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kSteps = 16;                  // steps per block
constexpr int kLd = kSteps + 4;             // row stride of feature-major tiles
constexpr int kSlices = kThreads / kSteps;  // threads per step in row reductions
constexpr int kMaxBackwardGrid = 1 << 16;  // CTAs of feature_backward_chunk (grid-stride)
// Tensor-core per-block matmuls (mma_matmul): kSteps x kMmaN accumulator tiles, kMmaTiles of
// them side by side per warp and pass (kMmaColumns columns).
constexpr int kMmaN = 8;
constexpr int kMmaTiles = 4;
constexpr int kMmaColumns = kMmaTiles * kMmaN;
// Weight-gradient GEMM (feature_weight_grad): a CTA owns a kTile x kTile output tile and one
// split of the batch rows, and walks their valid steps kChunk at a time.
constexpr int kTile = 64;
constexpr int kChunk = 32;
constexpr int kTargetCtas = 256;         // tiles x splits aimed at, per weight matrix
constexpr int kMaxSplits = 64;
constexpr int kMinStepsPerSplit = 256;   // of B * T: splits <= B * T / kMinStepsPerSplit
constexpr int64_t kMaxPartialBytes = int64_t(24) << 20;  // dW + dV partials, L2-resident
static_assert(kSteps == kWarpSize / 2, "reduce_rows pairs lanes l and l ^ 16 of one step");
static_assert(kSteps % 4 == 0 && kLd % 4 == 0, "tiles are read four steps at a time");
static_assert(kSteps == 16, "mma_matmul: one m16 fragment row per step of a block");
static_assert(kThreads == (kTile / 4) * (kTile / 4), "SIMT GEMM: 4 x 4 outputs per thread");
static_assert(kWarps * 2 == (kTile / 16) * (kTile / 16), "wmma GEMM: 2 fragments per warp");
static_assert(kChunk % 16 == 0 && (kChunk * kTile) % kThreads == 0, "chunk loads");

// The kSteps values of one feature row of a tile, with 16-byte loads and stores (tile rows
// are 16-byte aligned: kLd * sizeof(A) is a multiple of 16 and tile bases are aligned).
__device__ __forceinline__ void load_row(const float* p, float (&v)[kSteps]) {
#pragma unroll
  for (int i = 0; i < kSteps; i += 4) {
    const float4 f = *reinterpret_cast<const float4*>(p + i);
    v[i] = f.x, v[i + 1] = f.y, v[i + 2] = f.z, v[i + 3] = f.w;
  }
}
__device__ __forceinline__ void load_row(const double* p, double (&v)[kSteps]) {
#pragma unroll
  for (int i = 0; i < kSteps; i += 2) {
    const double2 f = *reinterpret_cast<const double2*>(p + i);
    v[i] = f.x, v[i + 1] = f.y;
  }
}
__device__ __forceinline__ void store_row(float* p, const float (&v)[kSteps]) {
#pragma unroll
  for (int i = 0; i < kSteps; i += 4)
    *reinterpret_cast<float4*>(p + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
}
__device__ __forceinline__ void store_row(double* p, const double (&v)[kSteps]) {
#pragma unroll
  for (int i = 0; i < kSteps; i += 2) *reinterpret_cast<double2*>(p + i) = make_double2(v[i], v[i + 1]);
}

// Steps [t0, t0 + n) of row b into the feature-major tile, zero for steps n..kSteps-1.
template <class T>
__device__ void load_steps(const StridedSteps& h, int64_t b, int64_t t0, int n, int64_t hidden,
                           acc_t<T>* tile) {
  const T* rows = static_cast<const T*>(h.data) + b * h.stride_b + t0 * h.stride_t;
  for (int64_t e = threadIdx.x; e < kSteps * hidden; e += kThreads) {
    const int i = int(e / hidden);
    const int64_t j = e - i * hidden;  // consecutive threads read consecutive features
    tile[j * kLd + i] = i < n ? to_acc(rows[i * h.stride_t + j * h.stride_h]) : acc_t<T>(0);
  }
}

// For every output column `col` < columns (one per thread, strided):
//   acc[i] = sum_k tile[k * kLd + i] * B[k * columns + col], then epilogue(col, acc).
// B (K x columns) is row-major in global memory.
template <class T, class A, class Epilogue>
__device__ __forceinline__ void tile_matmul(const A* tile, int64_t K, const T* __restrict__ B,
                                            int64_t columns, Epilogue epilogue) {
  for (int64_t col = threadIdx.x; col < columns; col += kThreads) {
    A acc[kSteps];
#pragma unroll
    for (int i = 0; i < kSteps; ++i) acc[i] = A(0);
    for (int64_t k = 0; k < K; ++k) {
      const A w = to_acc(B[k * columns + col]);
      A x[kSteps];
      load_row(tile + k * kLd, x);
#pragma unroll
      for (int i = 0; i < kSteps; ++i) acc[i] += x[i] * w;
    }
    epilogue(col, acc);
  }
}

// Reduction over features j < features of value(i, j) for step i = threadIdx.x % kSteps;
// every thread returns its step's result. Contains two __syncthreads.
template <class A, class Value, class Op>
__device__ __forceinline__ A reduce_rows(int64_t features, Value value, Op op, A init, A* red) {
  const int i = threadIdx.x % kSteps, slice = threadIdx.x / kSteps;
  A v = init;
  for (int64_t j = slice; j < features; j += kSlices) v = op(v, value(i, j));
  v = op(v, __shfl_xor_sync(kFullMask, v, kSteps));  // the warp's other slice, same step
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  if (lane < kSteps) red[warp * kSteps + i] = v;
  __syncthreads();
  A r = red[i];
  for (int w = 1; w < kWarps; ++w) r = op(r, red[w * kSteps + i]);
  __syncthreads();
  return r;
}

// ---- tensor cores in the per-block matmuls (forward, backward part 1) ----------------------
// Mma<T, kTf32>: whether the kSteps x columns products of tile_matmul run on tensor cores
// (mma.sync, fp32 accumulation), and the instruction: m16n8k16 with fp16/bf16 operands for
// those inputs, m16n8k8 with TF32 operands for fp32 with the TF32 option (kTf32). fp32
// without it and fp64 stay SIMT FMA (tile_matmul). The tiles stay fp32 in shared memory; an
// operand is rounded to the instruction's type (round to nearest, ties to even for fp16/bf16,
// away from zero for TF32: cvt.rna) when it is loaded into a fragment. The weights are T
// already, so for fp16/bf16 only the tile operands u, ds and dz are rounded (h is exact).
template <class T, bool kTf32>
struct Mma {
  static constexpr bool value = false;
};
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
template <class T>
struct Mma16 {  // mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32
  static constexpr bool value = true;
  static constexpr int kK = 16;
  static constexpr int kARegs = 4, kBRegs = 2;
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    if constexpr (std::is_same<T, __half>::value) {
      const __half2 v = __floats2half2_rn(lo, hi);
      return *reinterpret_cast<const uint32_t*>(&v);
    } else {
      const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
      return *reinterpret_cast<const uint32_t*>(&v);
    }
  }
  // A (kSteps x kK, row-major) = a(i, k); register r holds (i, k) and (i, k + 1) for
  // i = group + 8 (r % 2), k = 2 tig + 8 (r / 2). B (kK x 8, column-major) = b(k, n);
  // register r holds (k, n), (k + 1, n) for k = 2 tig + 8 r, n = group.
  template <class Get>
  __device__ __forceinline__ static void load_a(Get a, int group, int tig, uint32_t (&r)[kARegs]) {
#pragma unroll
    for (int q = 0; q < kARegs; ++q) {
      const int i = group + 8 * (q % 2), k = 2 * tig + 8 * (q / 2);
      r[q] = pack(a(i, k), a(i, k + 1));
    }
  }
  template <class Get>
  __device__ __forceinline__ static void load_b(Get b, int group, int tig, uint32_t (&r)[kBRegs]) {
#pragma unroll
    for (int q = 0; q < kBRegs; ++q) r[q] = pack(b(2 * tig + 8 * q, group), b(2 * tig + 8 * q + 1, group));
  }
  __device__ __forceinline__ static void mma(float (&d)[4], const uint32_t (&a)[kARegs],
                                             const uint32_t (&b)[kBRegs]) {
    if constexpr (std::is_same<T, __half>::value)
      asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
          "{%8, %9}, {%0, %1, %2, %3};"
          : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
      asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
          "{%8, %9}, {%0, %1, %2, %3};"
          : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};
template <>
struct Mma<__half, false> : Mma16<__half> {};
template <>
struct Mma<__nv_bfloat16, false> : Mma16<__nv_bfloat16> {};
template <>
struct Mma<float, true> {  // mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
  static constexpr bool value = true;
  static constexpr int kK = 8;
  static constexpr int kARegs = 4, kBRegs = 2;
  __device__ __forceinline__ static uint32_t tf32(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
  }
  // A (kSteps x kK): register r holds (group + 8 (r % 2), tig + 4 (r / 2)); B (kK x 8):
  // register r holds (tig + 4 r, group).
  template <class Get>
  __device__ __forceinline__ static void load_a(Get a, int group, int tig, uint32_t (&r)[kARegs]) {
#pragma unroll
    for (int q = 0; q < kARegs; ++q) r[q] = tf32(a(group + 8 * (q % 2), tig + 4 * (q / 2)));
  }
  template <class Get>
  __device__ __forceinline__ static void load_b(Get b, int group, int tig, uint32_t (&r)[kBRegs]) {
#pragma unroll
    for (int q = 0; q < kBRegs; ++q) r[q] = tf32(b(tig + 4 * q, group));
  }
  __device__ __forceinline__ static void mma(float (&d)[4], const uint32_t (&a)[kARegs],
                                             const uint32_t (&b)[kBRegs]) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};
#endif

// tile_matmul on tensor cores: D (kSteps x columns) = tile^T (kSteps x K) B (K x columns),
// then epilogue(i, col, D[i][col]) for every step i and column col < columns. Warp w owns
// the column groups n0 = kMmaColumns (w + kWarps p): kMmaTiles tiles of kMmaN columns, each
// a kSteps x kMmaN fp32 accumulator fragment, summed over K in Mma::kK slices, k0 = 0, kK,
// ... in order (one mma per slice and tile). tile (fp32, feature-major: A[i][k] =
// tile[k * kLd + i]) is read from shared memory and B (T, row-major) from global memory,
// both zero past K and columns. Accumulator register r of a lane holds row
// group + 8 (r / 2), column 2 tig + r % 2 of its tile.
template <class T, bool kTf32, class Epilogue>
__device__ __forceinline__ void mma_matmul(const float* tile, int64_t K, const T* __restrict__ B,
                                           int64_t columns, Epilogue epilogue) {
  using M = Mma<T, kTf32>;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int group = lane / 4, tig = lane % 4;
  for (int64_t n0 = int64_t(warp) * kMmaColumns; n0 < columns; n0 += kWarps * kMmaColumns) {
    float acc[kMmaTiles][4];
#pragma unroll
    for (int t = 0; t < kMmaTiles; ++t)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[t][r] = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += M::kK) {
      uint32_t a[M::kARegs];
      M::load_a([&](int i, int k) { return k0 + k < K ? tile[(k0 + k) * kLd + i] : 0.0f; },
                group, tig, a);
#pragma unroll
      for (int t = 0; t < kMmaTiles; ++t) {
        const int64_t nt = n0 + t * kMmaN;
        if (nt >= columns) break;  // uniform over the warp
        uint32_t b[M::kBRegs];
        M::load_b([&](int k, int n) {
          return k0 + k < K && nt + n < columns ? to_acc(B[(k0 + k) * columns + nt + n]) : 0.0f;
        }, group, tig, b);
        M::mma(acc[t], a, b);
      }
    }
#pragma unroll
    for (int t = 0; t < kMmaTiles; ++t)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int64_t col = n0 + t * kMmaN + 2 * tig + r % 2;
        if (col < columns) epilogue(group + 8 * (r / 2), col, acc[t][r]);
      }
  }
}

// Softmax over the `hidden` features of every step of the tile, in place.
template <class A>
__device__ void softmax_rows(A* tile, int64_t hidden, A* red) {
  const int i = threadIdx.x % kSteps, slice = threadIdx.x / kSteps;
  const A m = reduce_rows<A>(
      hidden, [&](int r, int64_t j) { return tile[j * kLd + r]; },
      [](A a, A b) { return fmax(a, b); }, negative_infinity<A>(), red);
  const A l = reduce_rows<A>(
      hidden,
      [&](int r, int64_t j) {
        const A e = exp_acc(tile[j * kLd + r] - m);
        tile[j * kLd + r] = e;  // each (r, j) is visited by exactly one thread
        return e;
      },
      [](A a, A b) { return a + b; }, A(0), red);
  const A inv_l = A(1) / l;
  for (int64_t j = slice; j < hidden; j += kSlices) tile[j * kLd + i] *= inv_l;
  __syncthreads();
}

// u = tanh(h W^T) into u_tile, then a = softmax(u V^T) into a_tile.
template <class T, bool kTf32, class A>
__device__ void attention_weights(const A* h_tile, const T* W_t, const T* V_t, int64_t hidden,
                                  int64_t attention, A* u_tile, A* a_tile, A* red) {
  if constexpr (Mma<T, kTf32>::value) {
    mma_matmul<T, kTf32>(h_tile, hidden, W_t, attention,
                         [&](int i, int64_t k, float z) { u_tile[k * kLd + i] = tanh_acc(z); });
    __syncthreads();
    mma_matmul<T, kTf32>(u_tile, attention, V_t, hidden,
                         [&](int i, int64_t j, float s) { a_tile[j * kLd + i] = s; });
  } else {
    tile_matmul(h_tile, hidden, W_t, attention, [&](int64_t k, A (&z)[kSteps]) {
#pragma unroll
      for (int i = 0; i < kSteps; ++i) z[i] = tanh_acc(z[i]);
      store_row(u_tile + k * kLd, z);
    });
    __syncthreads();
    tile_matmul(u_tile, attention, V_t, hidden,
                [&](int64_t j, A (&s)[kSteps]) { store_row(a_tile + j * kLd, s); });
  }
  __syncthreads();
  softmax_rows(a_tile, hidden, red);
}

// out[i * features + f] = tile[f * kLd + i] for the n valid steps i of a block (out: the
// block's first step of a contiguous (B, T, features) buffer in the input dtype). Consecutive
// threads write consecutive features (coalesced).
template <class T, class A>
__device__ __forceinline__ void store_tile(const A* tile, int n, int64_t features, T* out) {
  for (int64_t e = threadIdx.x; e < n * features; e += kThreads) {
    const int i = int(e / features);
    const int64_t f = e - i * features;
    out[e] = from_acc<T>(tile[f * kLd + i]);
  }
}

// __launch_bounds__(kThreads, 1): without the minimum of one CTA per SM, ptxas capped these
// two kernels at 128 (sm_90) / 80 (sm_80) registers and spilled (in the backward, before the
// weight gradients moved to feature_weight_grad); with it they spill nothing (ptxas -v
// figures: sed_kernels/_cuda_ptxas.txt).
template <class T, bool kTf32>
__global__ void __launch_bounds__(kThreads, 1)
    feature_forward_block(StridedSteps h, const T* __restrict__ W_t, const T* __restrict__ V_t,
                          const int64_t* __restrict__ lengths, int64_t steps, int64_t hidden,
                          int64_t attention, int blocks_per_row, acc_t<T>* __restrict__ part_out) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char shared[];
  A* red = reinterpret_cast<A*>(shared);  // [kWarps * kSteps]
  A* h_tile = red + kWarps * kSteps;      // [hidden * kLd]
  A* a_tile = h_tile + hidden * kLd;      // [hidden * kLd]
  A* u_tile = a_tile + hidden * kLd;      // [attention * kLd]
  const int64_t b = blockIdx.y, t0 = int64_t(blockIdx.x) * kSteps;
  const int64_t length = clamped_length(lengths, b, steps);
  if (t0 >= length) return;  // the sum kernel reads only blocks with valid steps
  const int n = int(min(int64_t(kSteps), length - t0));
  load_steps<T>(h, b, t0, n, hidden, h_tile);
  __syncthreads();
  attention_weights<T, kTf32>(h_tile, W_t, V_t, hidden, attention, u_tile, a_tile, red);
  A* part = part_out + (b * blocks_per_row + blockIdx.x) * hidden;
  for (int64_t j = threadIdx.x; j < hidden; j += kThreads) {
    A acc = 0;
    for (int i = 0; i < n; ++i) acc += a_tile[j * kLd + i] * h_tile[j * kLd + i];
    part[j] = acc;
  }
}

// out[b] = sum of the row's valid blocks' partials, in block order.
template <class T>
__global__ void __launch_bounds__(kThreads)
    feature_forward_sum(const int64_t* __restrict__ lengths, int64_t steps, int64_t hidden,
                        int blocks_per_row, const acc_t<T>* __restrict__ part_out,
                        T* __restrict__ out) {
  using A = acc_t<T>;
  const int64_t b = blockIdx.x;
  const int valid = int((clamped_length(lengths, b, steps) + kSteps - 1) / kSteps);
  for (int64_t j = threadIdx.x; j < hidden; j += kThreads) {
    A acc = 0;
    for (int c = 0; c < valid; ++c) acc += part_out[(b * blocks_per_row + c) * hidden + j];
    out[b * hidden + j] = from_acc<T>(acc);
  }
}

// Backward, part 1, per block of kSteps steps (CTAs loop over the blocks, grid-stride).
// After recomputing u and a:  da = g * h_t; ds = a * (da - sum(a * da)); du = V^T ds;
// dz = du * (1 - u^2); dh_t = g * a + W^T dz. Writes dh and, for the valid steps only, u,
// ds and dz in the input dtype, the operands of the weight-gradient GEMMs (part 2).
template <class T, bool kTf32>
__global__ void __launch_bounds__(kThreads, 1)
    feature_backward_chunk(const T* __restrict__ grad_out, StridedSteps h, const T* __restrict__ W,
                           const T* __restrict__ V, const T* __restrict__ W_t,
                           const T* __restrict__ V_t, const int64_t* __restrict__ lengths,
                           T* __restrict__ grad_h, int64_t steps, int64_t hidden, int64_t attention,
                           int blocks_per_row, int64_t total_blocks, T* __restrict__ u_out,
                           T* __restrict__ ds_out, T* __restrict__ dz_out) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char shared[];
  A* red = reinterpret_cast<A*>(shared);  // [kWarps * kSteps]
  A* h_tile = red + kWarps * kSteps;      // [hidden * kLd]
  A* a_tile = h_tile + hidden * kLd;      // [hidden * kLd]
  A* ds_tile = a_tile + hidden * kLd;     // [hidden * kLd]
  A* u_tile = ds_tile + hidden * kLd;     // [attention * kLd]: u, then dz
  A* g = u_tile + attention * kLd;        // [hidden]
  const int i_row = threadIdx.x % kSteps, slice = threadIdx.x / kSteps;

  for (int64_t block = blockIdx.x; block < total_blocks; block += gridDim.x) {
    const int64_t b = block / blocks_per_row, t0 = (block % blocks_per_row) * kSteps;
    const int64_t length = clamped_length(lengths, b, steps);
    if (t0 >= length) continue;  // uniform over the CTA
    const int n = int(min(int64_t(kSteps), length - t0));
    const int64_t first = b * steps + t0;  // the block's first step in (B, T, .) buffers
    load_steps<T>(h, b, t0, n, hidden, h_tile);
    for (int64_t j = threadIdx.x; j < hidden; j += kThreads) g[j] = to_acc(grad_out[b * hidden + j]);
    __syncthreads();
    attention_weights<T, kTf32>(h_tile, W_t, V_t, hidden, attention, u_tile, a_tile, red);

    // da = g * h rounded once (mul_rn: no FMA contraction), so that the same da enters
    // sum(a * da) and da - sum(a * da), which cancel for near one-hot a.
    const A a_dot_da = reduce_rows<A>(
        hidden, [&](int r, int64_t j) { return a_tile[j * kLd + r] * mul_rn(g[j], h_tile[j * kLd + r]); },
        [](A x, A y) { return x + y; }, A(0), red);
    for (int64_t j = slice; j < hidden; j += kSlices) {
      const A a = a_tile[j * kLd + i_row], da = mul_rn(g[j], h_tile[j * kLd + i_row]);
      ds_tile[j * kLd + i_row] = i_row < n ? a * (da - a_dot_da) : A(0);
    }
    __syncthreads();
    store_tile(u_tile, n, attention, u_out + first * attention);
    store_tile(ds_tile, n, hidden, ds_out + first * hidden);
    __syncthreads();  // u is overwritten by dz next
    if constexpr (Mma<T, kTf32>::value) {
      mma_matmul<T, kTf32>(ds_tile, hidden, V, attention, [&](int i, int64_t k, float du) {
        A& u = u_tile[k * kLd + i];  // (i, k) belongs to this lane alone
        u = du * (A(1) - u * u);
      });
    } else {
      tile_matmul(ds_tile, hidden, V, attention, [&](int64_t k, A (&du)[kSteps]) {
        A u[kSteps];
        load_row(u_tile + k * kLd, u);
#pragma unroll
        for (int i = 0; i < kSteps; ++i) du[i] *= A(1) - u[i] * u[i];
        store_row(u_tile + k * kLd, du);  // column k belongs to this thread alone
      });
    }
    __syncthreads();
    store_tile(u_tile, n, attention, dz_out + first * attention);
    if constexpr (Mma<T, kTf32>::value) {
      T* dh = grad_h + first * hidden;
      mma_matmul<T, kTf32>(u_tile, attention, W, hidden, [&](int i, int64_t j, float dz_w) {
        if (i < n) dh[i * hidden + j] = from_acc<T>(g[j] * a_tile[j * kLd + i] + dz_w);
      });
    } else {
      tile_matmul(u_tile, attention, W, hidden, [&](int64_t j, A (&dz_w)[kSteps]) {
        T* dh = grad_h + first * hidden + j;
#pragma unroll
        for (int i = 0; i < kSteps; ++i)  // static indices keep dz_w in registers
          if (i < n) dh[i * hidden] = from_acc<T>(g[j] * a_tile[j * kLd + i] + dz_w[i]);
      });
    }
    __syncthreads();  // the next block overwrites the tiles
  }
}

// The wmma operands of feature_weight_grad<T, kTf32> where Mma<T, kTf32>::value (sm_80 and
// newer): fp16/bf16 chunks in the input type, 16x16x16 fragments; fp32 with the TF32 option:
// fp32 chunks already rounded to TF32 by load_chunk, 16x16x8 TF32 fragments. Row stride kLd: ldm a multiple of 16 bytes, fragment bases 32-byte aligned.
template <class T, bool kTf32>
struct WmmaOperand {
  using Storage = T;
  using Fragment = T;
  static constexpr int kK = 16;
  static constexpr int kLd = kTile + 8;
};
template <>
struct WmmaOperand<float, true> {
  using Storage = float;
  using Fragment = nvcuda::wmma::precision::tf32;
  static constexpr int kK = 8;
  static constexpr int kLd = kTile + 4;
};

// One kChunk x kTile operand chunk into shared memory, step-major: tile[k * ld + c] =
// x[b, t0 + k, c0 + c], zero for steps t0 + k >= length and features c0 + c >= features
// (those entries of x are never read). kTf32: stored rounded to TF32 (the wmma operand).
template <class T, class S, bool kTf32 = false>
__device__ __forceinline__ void load_chunk(const StridedSteps& x, int64_t b, int64_t t0,
                                           int64_t length, int64_t c0, int64_t features, int ld,
                                           S* tile) {
  const T* base = static_cast<const T*>(x.data) + b * x.stride_b;
#pragma unroll
  for (int e = threadIdx.x; e < kChunk * kTile; e += kThreads) {
    const int k = e / kTile, c = e % kTile;
    const int64_t t = t0 + k, f = c0 + c;
    const acc_t<T> v = t < length && f < features ? to_acc(base[t * x.stride_t + f * x.stride_h])
                                                  : acc_t<T>(0);
    if constexpr (kTf32)
      tile[k * ld + c] = nvcuda::wmma::__float_to_tf32(v);
    else if constexpr (std::is_same<S, acc_t<T>>::value)
      tile[k * ld + c] = v;
    else
      tile[k * ld + c] = from_acc<T>(v);  // exact: v came from a T (or is 0)
  }
}

// The chunk loop of feature_weight_grad: for each row b = split, split + splits, ... and each
// kChunk steps t0 of its valid steps, the chunk of x (features m0..) into xs and of y (n0..)
// into ys, then body() on them. Contains the __syncthreads around each chunk.
template <class T, bool kTf32, class S, class Body>
__device__ __forceinline__ void for_each_chunk(const StridedSteps& x, const StridedSteps& y,
                                               const int64_t* lengths, int64_t batch,
                                               int64_t steps, int split, int splits, int64_t m0,
                                               int64_t n0, int64_t rows, int64_t cols, int ld,
                                               S* xs, S* ys, Body body) {
  for (int64_t b = split; b < batch; b += splits) {
    const int64_t length = clamped_length(lengths, b, steps);
    for (int64_t t0 = 0; t0 < length; t0 += kChunk) {
      load_chunk<T, S, kTf32>(x, b, t0, length, m0, rows, ld, xs);
      load_chunk<T, S, kTf32>(y, b, t0, length, n0, cols, ld, ys);
      __syncthreads();
      body();
      __syncthreads();  // the next chunk overwrites xs and ys
    }
  }
}

// Backward, part 2: part[split] (rows x cols, row-major) = sum over the valid steps (b, t) of
// the split's rows b = split, split + splits, ... of x[b, t, m] * y[b, t, n], for the tile
// m in [m0, m0 + kTile), n in [n0, n0 + kTile) of this CTA (grid: col tiles, row tiles,
// splits). The tile accumulates in registers over all the split's steps, kChunk at a time
// per row, and is stored once: every partial element is written exactly once per call.
template <class T, bool kTf32>
__global__ void __launch_bounds__(kThreads)
    feature_weight_grad(StridedSteps x, StridedSteps y, const int64_t* __restrict__ lengths,
                        int64_t batch, int64_t steps, int64_t rows, int64_t cols,
                        acc_t<T>* __restrict__ part) {
  using A = acc_t<T>;
  const int64_t n0 = int64_t(blockIdx.x) * kTile, m0 = int64_t(blockIdx.y) * kTile;
  const int split = blockIdx.z, splits = gridDim.z;
  A* out = part + int64_t(split) * rows * cols;
  if constexpr (Mma<T, kTf32>::value) {
    namespace wmma = nvcuda::wmma;
    using Operand = WmmaOperand<T, kTf32>;
    using S = typename Operand::Storage;
    using F = typename Operand::Fragment;
    constexpr int kLdT = Operand::kLd, kK = Operand::kK;
    constexpr int kLdC = kTile + 4;   // fp32 staging of the result tile
    __shared__ __align__(128) S xs[kChunk * kLdT];  // xs[k * kLdT + m]: matrix_a, col-major
    __shared__ __align__(128) S ys[kChunk * kLdT];  // ys[k * kLdT + n]: matrix_b, row-major
    __shared__ __align__(128) float cs[kTile * kLdC];
    const int warp = threadIdx.x / kWarpSize;
    constexpr int kFragments = kTile / 16;  // per tile side
    // This warp's fragments (fm, fn) and (fm, fn + 1) of the kFragments^2 of the tile.
    const int fm = warp / (kFragments / 2), fn = (warp % (kFragments / 2)) * 2;
    wmma::fragment<wmma::accumulator, 16, 16, kK, float> acc[2];
    wmma::fill_fragment(acc[0], 0.0f);
    wmma::fill_fragment(acc[1], 0.0f);
    for_each_chunk<T, kTf32>(x, y, lengths, batch, steps, split, splits, m0, n0, rows, cols, kLdT,
                             xs, ys, [&] {
#pragma unroll
      for (int k = 0; k < kChunk; k += kK) {
        wmma::fragment<wmma::matrix_a, 16, 16, kK, F, wmma::col_major> a;
        wmma::load_matrix_sync(a, xs + k * kLdT + fm * 16, kLdT);
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          wmma::fragment<wmma::matrix_b, 16, 16, kK, F, wmma::row_major> bf;
          wmma::load_matrix_sync(bf, ys + k * kLdT + (fn + q) * 16, kLdT);
          wmma::mma_sync(acc[q], a, bf, acc[q]);
        }
      }
    });
#pragma unroll
    for (int q = 0; q < 2; ++q)
      wmma::store_matrix_sync(cs + fm * 16 * kLdC + (fn + q) * 16, acc[q], kLdC, wmma::mem_row_major);
    __syncthreads();
    for (int e = threadIdx.x; e < kTile * kTile; e += kThreads) {
      const int m = e / kTile, c = e % kTile;
      if (m0 + m < rows && n0 + c < cols) out[(m0 + m) * cols + n0 + c] = cs[m * kLdC + c];
    }
  } else {
    constexpr int kLdA = kTile + 4;
    __shared__ __align__(16) A xs[kChunk * kLdA];  // xs[k * kLdA + m]
    __shared__ __align__(16) A ys[kChunk * kLdA];  // ys[k * kLdA + n]
    constexpr int kStride = kTile / 4;
    const int ty = threadIdx.x / kStride, tx = threadIdx.x % kStride;
    A acc[4][4];  // outputs (ty + kStride r, tx + kStride q)
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[r][q] = A(0);
    for_each_chunk<T, false>(x, y, lengths, batch, steps, split, splits, m0, n0, rows, cols, kLdA,
                             xs, ys, [&] {
#pragma unroll 4
      for (int k = 0; k < kChunk; ++k) {
        A xv[4], yv[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) xv[r] = xs[k * kLdA + ty + kStride * r];
#pragma unroll
        for (int q = 0; q < 4; ++q) yv[q] = ys[k * kLdA + tx + kStride * q];
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[r][q] += xv[r] * yv[q];
      }
    });
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t m = m0 + ty + kStride * r, c = n0 + tx + kStride * q;
        if (m < rows && c < cols) out[m * cols + c] = acc[r][q];
      }
  }
}

// out[e] = sum_c parts[c * count + e], splits in order.
template <class T>
__global__ void __launch_bounds__(kThreads)
    sum_partials(const acc_t<T>* __restrict__ parts, int splits, int64_t count, T* __restrict__ out) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count;
       e += int64_t(gridDim.x) * blockDim.x) {
    acc_t<T> acc = 0;
    for (int c = 0; c < splits; ++c) acc += parts[c * count + e];
    out[e] = from_acc<T>(acc);
  }
}

int64_t blocks_per_row(int64_t steps) { return (steps + kSteps - 1) / kSteps; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Splits of the batch rows in the weight-gradient GEMMs, from the sizes only (the same on
// every GPU, so dW and dV are bitwise reproducible): enough CTAs to fill a GPU, at most one
// per row, B * T / kMinStepsPerSplit (a split has that many steps of capacity) and
// kMaxPartialBytes of dW + dV partials.
int weight_splits(int64_t batch, int64_t steps, int64_t hidden, int64_t attention, DType dtype) {
  const int64_t tiles = ceil_div(hidden, kTile) * ceil_div(attention, kTile);
  int64_t splits = ceil_div(kTargetCtas, tiles);
  splits = std::min<int64_t>(splits, batch);
  splits = std::min<int64_t>(splits, batch * steps / kMinStepsPerSplit);
  splits = std::min<int64_t>(splits, kMaxPartialBytes / (2 * hidden * attention * accumulator_bytes(dtype)));
  splits = std::min<int64_t>(splits, kMaxSplits);
  return int(std::max<int64_t>(splits, 1));
}

int64_t element_bytes(DType dtype) {
  return dtype == DType::float64 ? 8 : dtype == DType::float32 ? 4 : 2;
}

// f(T{}, std::bool_constant<kTf32>{}): the kernels of dtype, the TF32 ones for fp32 when asked.
template <class F>
void dispatch_math(DType dtype, bool tf32, F&& f) {
  if (tf32 && dtype == DType::float32) return f(float{}, std::true_type{});
  dispatch_dtype(dtype, [&](auto tag) { f(tag, std::false_type{}); });
}

void check_batch(int64_t batch) {
  if (batch > 65535)
    throw std::runtime_error("sed_kernels._cuda: feature_attention supports batch <= 65535, got " +
                             std::to_string(batch));
}

}  // namespace

int64_t feature_attention_forward_workspace(int64_t batch, int64_t steps, int64_t hidden) {
  return batch * blocks_per_row(steps) * hidden;
}

// Accumulator elements: the dW and dV partials (2 * splits * H * d_a), then u, ds and dz of
// every step (B * T * (2 d_a + H) in the input dtype; written and read for valid steps only).
int64_t feature_attention_backward_workspace(int64_t batch, int64_t steps, int64_t hidden,
                                             int64_t attention, DType dtype) {
  const int64_t partials = int64_t(weight_splits(batch, steps, hidden, attention, dtype)) * 2 *
                           hidden * attention;
  const int64_t operands = batch * steps * (2 * attention + hidden) * element_bytes(dtype);
  return partials + ceil_div(operands, accumulator_bytes(dtype));
}

void feature_attention_forward(DType dtype, StridedSteps h, const void* W_t, const void* V_t,
                               const int64_t* lengths, void* out, void* workspace, int64_t batch,
                               int64_t steps, int64_t hidden, int64_t attention, bool tf32,
                               Launch launch) {
  check_batch(batch);
  DeviceGuard guard(launch.device);
  const cudaStream_t stream = stream_of(launch);
  const int per_row = int(blocks_per_row(steps));
  const int64_t smem = (kWarps * kSteps + (2 * hidden + attention) * kLd) * accumulator_bytes(dtype);
  dispatch_math(dtype, tf32, [&](auto tag, auto tf32_tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr bool kTf32 = decltype(tf32_tag)::value;
    A* part_out = static_cast<A*>(workspace);
    request_shared_memory(feature_forward_block<T, kTf32>, smem, launch.device,
                          "feature_attention forward");
    feature_forward_block<T, kTf32><<<dim3(per_row, unsigned(batch)), kThreads, smem, stream>>>(
        h, static_cast<const T*>(W_t), static_cast<const T*>(V_t), lengths, steps, hidden,
        attention, per_row, part_out);
    check_launch("feature_forward_block launch");
    feature_forward_sum<T><<<unsigned(batch), kThreads, 0, stream>>>(
        lengths, steps, hidden, per_row, part_out, static_cast<T*>(out));
    check_launch("feature_forward_sum launch");
  });
}

void feature_attention_backward(DType dtype, const void* grad_out, StridedSteps h, const void* W,
                                const void* V, const void* W_t, const void* V_t,
                                const int64_t* lengths, void* grad_h, void* grad_W, void* grad_V,
                                void* workspace, int64_t batch, int64_t steps, int64_t hidden,
                                int64_t attention, bool tf32, Launch launch) {
  DeviceGuard guard(launch.device);
  const cudaStream_t stream = stream_of(launch);
  const int per_row = int(blocks_per_row(steps));
  const int splits = weight_splits(batch, steps, hidden, attention, dtype);
  const int64_t weights = hidden * attention;
  const int64_t total_blocks = batch * per_row;
  const int64_t smem =
      (kWarps * kSteps + (3 * hidden + attention) * kLd + hidden) * accumulator_bytes(dtype);
  if (ceil_div(hidden, kTile) > 65535 || ceil_div(attention, kTile) > 65535)
    throw std::runtime_error("sed_kernels._cuda: feature_attention backward supports H, d_a <= " +
                             std::to_string(65535 * kTile));
  dispatch_math(dtype, tf32, [&](auto tag, auto tf32_tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr bool kTf32 = decltype(tf32_tag)::value;
    A* part_W = static_cast<A*>(workspace);  // (splits, d_a, H), each element written once
    A* part_V = part_W + splits * weights;   // (splits, H, d_a)
    T* u = reinterpret_cast<T*>(part_V + splits * weights);  // (B, T, d_a)
    T* dz = u + batch * steps * attention;                    // (B, T, d_a)
    T* ds = dz + batch * steps * attention;                   // (B, T, H)
    T* dh = static_cast<T*>(grad_h);
    const int64_t dh_count = batch * steps * hidden;
    zero_padded_steps<T><<<grid_stride_blocks(dh_count, kThreads), kThreads, 0, stream>>>(
        dh, lengths, batch, steps, hidden);
    check_launch("zero_padded_steps launch");
    request_shared_memory(feature_backward_chunk<T, kTf32>, smem, launch.device,
                          "feature_attention backward");
    const unsigned grid = unsigned(std::min<int64_t>(total_blocks, kMaxBackwardGrid));
    feature_backward_chunk<T, kTf32><<<grid, kThreads, smem, stream>>>(
        static_cast<const T*>(grad_out), h, static_cast<const T*>(W), static_cast<const T*>(V),
        static_cast<const T*>(W_t), static_cast<const T*>(V_t), lengths, dh, steps, hidden,
        attention, per_row, total_blocks, u, ds, dz);
    check_launch("feature_backward_chunk launch");
    const StridedSteps u_steps{u, steps * attention, attention, 1};
    const StridedSteps dz_steps{dz, steps * attention, attention, 1};
    const StridedSteps ds_steps{ds, steps * hidden, hidden, 1};
    // dV (H, d_a) = sum_t ds_t u_t^T; dW (d_a, H) = sum_t dz_t h_t^T.
    feature_weight_grad<T, kTf32><<<dim3(unsigned(ceil_div(attention, kTile)), unsigned(ceil_div(hidden, kTile)),
                                  unsigned(splits)), kThreads, 0, stream>>>(
        ds_steps, u_steps, lengths, batch, steps, hidden, attention, part_V);
    check_launch("feature_weight_grad(dV) launch");
    feature_weight_grad<T, kTf32><<<dim3(unsigned(ceil_div(hidden, kTile)), unsigned(ceil_div(attention, kTile)),
                                  unsigned(splits)), kThreads, 0, stream>>>(
        dz_steps, h, lengths, batch, steps, attention, hidden, part_W);
    check_launch("feature_weight_grad(dW) launch");
    sum_partials<T><<<grid_stride_blocks(weights, kThreads), kThreads, 0, stream>>>(
        part_W, splits, weights, static_cast<T*>(grad_W));
    check_launch("sum_partials(dW) launch");
    sum_partials<T><<<grid_stride_blocks(weights, kThreads), kThreads, 0, stream>>>(
        part_V, splits, weights, static_cast<T*>(grad_V));
    check_launch("sum_partials(dV) launch");
  });
}

}  // namespace sed_cuda
