// Feature attention on CUDA, per valid step: u = tanh(W h_t) (d_a), s = V u (H),
// a = softmax over features of s, out += a * h_t.
//
// A CTA handles a block of kSteps steps of one row. Its tiles (h, u, s/a and in the backward
// ds and dz) live in shared memory, feature-major: tile[f * kLd + i] is feature f of step i,
// so the kSteps values a thread needs for one feature are one vector load. The matmuls give
// each thread one output column and kSteps accumulators; the weights are read from global
// memory (L2-resident), coalesced along the column. No (B, T, d_a) or (B, T, H) buffer is
// written: the backward recomputes u and a per block.
//
// Forward: CTA per (block, row) writes the block's sum_t a_t * h_t; a second kernel sums each
// row's blocks in order. Backward: a fixed number of CTAs (chunks, from the sizes only), each
// looping over the blocks blk = chunk, chunk + chunks, ...; a chunk accumulates its own dW
// and dV partial in global memory (read-modify-write, no atomics) and a last kernel sums the
// partials in chunk order, so dW and dV are deterministic.
//
// SIMT FP32 (FP64) arithmetic, fp32 accumulation for half/bfloat16; tensor cores are not
// used. Shared memory grows with H and d_a: (3 H + d_a) * 20 * 4 bytes in the backward
// (83 KB at H = d_a = 256); sizes beyond the device's limit raise an error naming it.
#include "common.cuh"

namespace sed_cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kSteps = 16;                  // steps per block
constexpr int kLd = kSteps + 4;             // row stride of feature-major tiles
constexpr int kSlices = kThreads / kSteps;  // threads per step in row reductions
constexpr int kMaxChunks = 256;
constexpr int64_t kMaxPartialBytes = int64_t(256) << 20;
static_assert(kSteps == kWarpSize / 2, "reduce_rows pairs lanes l and l ^ 16 of one step");
static_assert(kSteps % 4 == 0 && kLd % 4 == 0, "tiles are read four steps at a time");

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

// Four consecutive steps of one feature row.
template <class A>
struct Quad {
  A x, y, z, w;
};
__device__ __forceinline__ Quad<float> load_quad(const float* p) {
  const float4 f = *reinterpret_cast<const float4*>(p);
  return {f.x, f.y, f.z, f.w};
}
__device__ __forceinline__ Quad<double> load_quad(const double* p) {
  const double2 a = *reinterpret_cast<const double2*>(p), b = *reinterpret_cast<const double2*>(p + 2);
  return {a.x, a.y, b.x, b.y};
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
template <class T, class A>
__device__ void attention_weights(const A* h_tile, const T* W_t, const T* V_t, int64_t hidden,
                                  int64_t attention, A* u_tile, A* a_tile, A* red) {
  tile_matmul(h_tile, hidden, W_t, attention, [&](int64_t k, A (&z)[kSteps]) {
#pragma unroll
    for (int i = 0; i < kSteps; ++i) z[i] = tanh_acc(z[i]);
    store_row(u_tile + k * kLd, z);
  });
  __syncthreads();
  tile_matmul(u_tile, attention, V_t, hidden,
              [&](int64_t j, A (&s)[kSteps]) { store_row(a_tile + j * kLd, s); });
  __syncthreads();
  softmax_rows(a_tile, hidden, red);
}

// part[r * columns + c] += sum_i rows_tile[r * kLd + i] * cols_tile[c * kLd + i] for
// r < n_rows, c < columns: the rank-kSteps update of a weight-gradient partial. A warp takes
// 4 rows x 128 columns (4 per lane, 32 apart: conflict-free 16-byte shared loads, coalesced
// global read-modify-write).
template <class A>
__device__ void accumulate_outer(const A* rows_tile, int64_t n_rows, const A* cols_tile,
                                 int64_t columns, A* __restrict__ part) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t row_groups = (n_rows + 3) / 4, col_groups = (columns + 4 * kWarpSize - 1) / (4 * kWarpSize);
  for (int64_t pair = warp; pair < row_groups * col_groups; pair += kWarps) {
    const int64_t r0 = (pair / col_groups) * 4, c0 = (pair % col_groups) * 4 * kWarpSize + lane;
    A acc[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[a][q] = A(0);
#pragma unroll
    for (int i = 0; i < kSteps; i += 4) {
      Quad<A> rv[4], cv[4];
#pragma unroll
      for (int a = 0; a < 4; ++a)
        rv[a] = r0 + a < n_rows ? load_quad(rows_tile + (r0 + a) * kLd + i) : Quad<A>{0, 0, 0, 0};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t c = c0 + q * kWarpSize;
        cv[q] = c < columns ? load_quad(cols_tile + c * kLd + i) : Quad<A>{0, 0, 0, 0};
      }
#pragma unroll
      for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int q = 0; q < 4; ++q)
          acc[a][q] += rv[a].x * cv[q].x + rv[a].y * cv[q].y + rv[a].z * cv[q].z + rv[a].w * cv[q].w;
    }
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t r = r0 + a, c = c0 + q * kWarpSize;
        if (r < n_rows && c < columns) part[r * columns + c] += acc[a][q];
      }
  }
}

// __launch_bounds__(kThreads, 1): without the minimum of one CTA per SM, ptxas capped these
// two kernels at 128 (sm_90) / 80 (sm_80) registers and spilled (24/44 B and 4/20 B per
// thread in the backward); with it they use 158 / 72 registers and spill nothing. The
// backward then runs one CTA (8 warps) per SM instead of two: not measured on a GPU yet.
template <class T>
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
  attention_weights(h_tile, W_t, V_t, hidden, attention, u_tile, a_tile, red);
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

// Backward of the blocks of one chunk (see the file comment). Per block, after recomputing
// u and a:  da = g * h_t; ds = a * (da - sum(a * da)); dV += ds u^T; du = V^T ds;
//           dz = du * (1 - u^2); dW += dz h_t^T; dh_t = g * a + W^T dz.
template <class T>
__global__ void __launch_bounds__(kThreads, 1)
    feature_backward_chunk(const T* __restrict__ grad_out, StridedSteps h, const T* __restrict__ W,
                           const T* __restrict__ V, const T* __restrict__ W_t,
                           const T* __restrict__ V_t, const int64_t* __restrict__ lengths,
                           T* __restrict__ grad_h, int64_t steps, int64_t hidden, int64_t attention,
                           int blocks_per_row, int64_t total_blocks, acc_t<T>* __restrict__ part_W,
                           acc_t<T>* __restrict__ part_V) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char shared[];
  A* red = reinterpret_cast<A*>(shared);  // [kWarps * kSteps]
  A* h_tile = red + kWarps * kSteps;      // [hidden * kLd]
  A* a_tile = h_tile + hidden * kLd;      // [hidden * kLd]
  A* ds_tile = a_tile + hidden * kLd;     // [hidden * kLd]
  A* u_tile = ds_tile + hidden * kLd;     // [attention * kLd]: u, then dz
  A* g = u_tile + attention * kLd;        // [hidden]
  A* dW = part_W + int64_t(blockIdx.x) * attention * hidden;  // (d_a, H)
  A* dV = part_V + int64_t(blockIdx.x) * hidden * attention;  // (H, d_a)
  const int i_row = threadIdx.x % kSteps, slice = threadIdx.x / kSteps;

  for (int64_t block = blockIdx.x; block < total_blocks; block += gridDim.x) {
    const int64_t b = block / blocks_per_row, t0 = (block % blocks_per_row) * kSteps;
    const int64_t length = clamped_length(lengths, b, steps);
    if (t0 >= length) continue;  // uniform over the CTA
    const int n = int(min(int64_t(kSteps), length - t0));
    load_steps<T>(h, b, t0, n, hidden, h_tile);
    for (int64_t j = threadIdx.x; j < hidden; j += kThreads) g[j] = to_acc(grad_out[b * hidden + j]);
    __syncthreads();
    attention_weights(h_tile, W_t, V_t, hidden, attention, u_tile, a_tile, red);

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

    accumulate_outer(ds_tile, hidden, u_tile, attention, dV);  // dV += ds^T u
    __syncthreads();  // u is overwritten by dz next
    tile_matmul(ds_tile, hidden, V, attention, [&](int64_t k, A (&du)[kSteps]) {
      A u[kSteps];
      load_row(u_tile + k * kLd, u);
#pragma unroll
      for (int i = 0; i < kSteps; ++i) du[i] *= A(1) - u[i] * u[i];
      store_row(u_tile + k * kLd, du);  // column k belongs to this thread alone
    });
    __syncthreads();
    accumulate_outer(u_tile, attention, h_tile, hidden, dW);  // dW += dz^T h
    tile_matmul(u_tile, attention, W, hidden, [&](int64_t j, A (&dz_w)[kSteps]) {
      T* dh = grad_h + (b * steps + t0) * hidden + j;
#pragma unroll
      for (int i = 0; i < kSteps; ++i)  // static indices keep dz_w in registers
        if (i < n) dh[i * hidden] = from_acc<T>(g[j] * a_tile[j * kLd + i] + dz_w[i]);
    });
    __syncthreads();  // the next block overwrites the tiles
  }
}

// out[e] = sum_c parts[c * count + e], chunks in order.
template <class T>
__global__ void __launch_bounds__(kThreads)
    sum_partials(const acc_t<T>* __restrict__ parts, int chunks, int64_t count, T* __restrict__ out) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count;
       e += int64_t(gridDim.x) * blockDim.x) {
    acc_t<T> acc = 0;
    for (int c = 0; c < chunks; ++c) acc += parts[c * count + e];
    out[e] = from_acc<T>(acc);
  }
}

int64_t blocks_per_row(int64_t steps) { return (steps + kSteps - 1) / kSteps; }

int backward_chunks(int64_t batch, int64_t steps, int64_t hidden, int64_t attention, DType dtype) {
  const int64_t blocks = batch * blocks_per_row(steps);
  const int64_t by_memory = kMaxPartialBytes / (2 * hidden * attention * accumulator_bytes(dtype));
  int64_t chunks = blocks < kMaxChunks ? blocks : kMaxChunks;
  chunks = chunks < by_memory ? chunks : by_memory;
  return int(chunks > 1 ? chunks : 1);
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

int64_t feature_attention_backward_workspace(int64_t batch, int64_t steps, int64_t hidden,
                                             int64_t attention, DType dtype) {
  return int64_t(backward_chunks(batch, steps, hidden, attention, dtype)) * 2 * hidden * attention;
}

void feature_attention_forward(DType dtype, StridedSteps h, const void* W_t, const void* V_t,
                               const int64_t* lengths, void* out, void* workspace, int64_t batch,
                               int64_t steps, int64_t hidden, int64_t attention, Launch launch) {
  check_batch(batch);
  DeviceGuard guard(launch.device);
  const cudaStream_t stream = stream_of(launch);
  const int per_row = int(blocks_per_row(steps));
  const int64_t smem = (kWarps * kSteps + (2 * hidden + attention) * kLd) * accumulator_bytes(dtype);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    A* part_out = static_cast<A*>(workspace);
    request_shared_memory(feature_forward_block<T>, smem, launch.device, "feature_attention forward");
    feature_forward_block<T><<<dim3(per_row, unsigned(batch)), kThreads, smem, stream>>>(
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
                                int64_t attention, Launch launch) {
  DeviceGuard guard(launch.device);
  const cudaStream_t stream = stream_of(launch);
  const int per_row = int(blocks_per_row(steps));
  const int chunks = backward_chunks(batch, steps, hidden, attention, dtype);
  const int64_t weights = hidden * attention;
  const int64_t smem =
      (kWarps * kSteps + (3 * hidden + attention) * kLd + hidden) * accumulator_bytes(dtype);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    A* part_W = static_cast<A*>(workspace);  // (chunks, d_a, H), zero-filled by the caller
    A* part_V = part_W + chunks * weights;   // (chunks, H, d_a)
    T* dh = static_cast<T*>(grad_h);
    const int64_t dh_count = batch * steps * hidden;
    zero_padded_steps<T><<<grid_stride_blocks(dh_count, kThreads), kThreads, 0, stream>>>(
        dh, lengths, batch, steps, hidden);
    check_launch("zero_padded_steps launch");
    request_shared_memory(feature_backward_chunk<T>, smem, launch.device,
                          "feature_attention backward");
    feature_backward_chunk<T><<<chunks, kThreads, smem, stream>>>(
        static_cast<const T*>(grad_out), h, static_cast<const T*>(W), static_cast<const T*>(V),
        static_cast<const T*>(W_t), static_cast<const T*>(V_t), lengths, dh, steps, hidden,
        attention, per_row, batch * per_row, part_W, part_V);
    check_launch("feature_backward_chunk launch");
    sum_partials<T><<<grid_stride_blocks(weights, kThreads), kThreads, 0, stream>>>(
        part_W, chunks, weights, static_cast<T*>(grad_W));
    check_launch("sum_partials(dW) launch");
    sum_partials<T><<<grid_stride_blocks(weights, kThreads), kThreads, 0, stream>>>(
        part_V, chunks, weights, static_cast<T*>(grad_V));
    check_launch("sum_partials(dV) launch");
  });
}

}  // namespace sed_cuda
