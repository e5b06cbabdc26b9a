// Time attention on CUDA: s_t = h_t . q, a = softmax over valid t, out = sum_t a_t h_t.
//
// Forward: one CTA per (row, chunk of steps), on a one-dimensional grid (B * chunks < 2^31).
// The chunk's steps are read once from global memory into shared memory (when H fits, see kTileBytes), its scores computed by one warp
// per step, and the CTA writes the chunk's softmax partial (max, sum of exp, weighted sum of
// h) to the workspace. A second kernel combines each row's chunks in chunk order (the
// split-softmax of flash-decoding), so the result does not depend on scheduling.
// Backward: one CTA per (chunk, row) again, with lse from the forward:
//   p_t = exp(s_t - lse), ds_t = p_t (g . h_t - g . out), dh_t = p_t g + ds_t q,
// one read of h and one write of dh; dq = sum_t ds_t h_t goes through per-chunk partials
// summed in chunk order by a second kernel (no atomics).
#include "common.cuh"

namespace sed_cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxChunkSteps = 64;
// Four CTAs (32 warps) per SM for these bandwidth-bound kernels: at most 64 registers. With
// no minimum ptxas gave them 32-48 registers and spilled 4-24 B per thread (ptxas -v).
constexpr int kMinBlocksPerSm = 4;
constexpr int64_t kTileBytes = 32 * 1024;  // shared-memory tile of one chunk's h

// Steps per chunk: as many as fit the tile (at most kMaxChunkSteps, at least 1).
int chunk_steps(int64_t hidden, DType dtype) {
  const int64_t steps = kTileBytes / (hidden * accumulator_bytes(dtype));
  return int(steps < 1 ? 1 : (steps > kMaxChunkSteps ? kMaxChunkSteps : steps));
}

// Whether one chunk's h fits the shared-memory tile; otherwise h is read from global memory
// twice per chunk (the second read mostly hits L2).
bool staged(int64_t hidden, DType dtype) { return hidden * accumulator_bytes(dtype) <= kTileBytes; }

// Step i (of the chunk) element j, from the tile or from global memory.
template <class T, bool Staged>
struct ChunkSteps {
  using A = acc_t<T>;
  const T* rows;  // h[b, t0]
  int64_t stride_t, stride_h;
  const A* tile;  // (n, hidden) when Staged
  int64_t hidden;
  __device__ __forceinline__ A operator()(int i, int64_t j) const {
    if (Staged) return tile[i * hidden + j];
    return to_acc(rows[i * stride_t + j * stride_h]);
  }
};

template <class T>
__device__ void load_tile(const T* rows, int64_t stride_t, int64_t stride_h, int n, int64_t hidden,
                          acc_t<T>* tile) {
  const int count = n * int(hidden);
  for (int e = threadIdx.x; e < count; e += blockDim.x) {
    const int i = e / int(hidden), j = e % int(hidden);
    tile[e] = to_acc(rows[i * stride_t + j * stride_h]);
  }
}

template <class T, bool Staged>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    time_forward_chunk(StridedSteps h, const T* __restrict__ q, const int64_t* __restrict__ lengths,
                       int64_t steps, int64_t hidden, int chunk, int chunks,
                       acc_t<T>* __restrict__ part_max, acc_t<T>* __restrict__ part_sum,
                       acc_t<T>* __restrict__ part_acc) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char shared[];
  A* p = reinterpret_cast<A*>(shared);  // [kMaxChunkSteps] scores, then exp(s - m)
  A* tile = p + kMaxChunkSteps;         // [n * hidden] when Staged
  // One-dimensional grid of (row, chunk) pairs: gridDim.y (65535) would bound the batch.
  const int64_t b = blockIdx.x / unsigned(chunks);
  const int c = int(blockIdx.x % unsigned(chunks));
  const int64_t t0 = int64_t(c) * chunk, length = clamped_length(lengths, b, steps);
  if (t0 >= length) return;  // the combine kernel reads only chunks with valid steps
  const int n = int(min(int64_t(chunk), length - t0));
  const T* rows = static_cast<const T*>(h.data) + b * h.stride_b + t0 * h.stride_t;
  const T* q_b = q + b * hidden;
  if (Staged) {
    load_tile(rows, h.stride_t, h.stride_h, n, hidden, tile);
    __syncthreads();
  }
  const ChunkSteps<T, Staged> x{rows, h.stride_t, h.stride_h, tile, hidden};
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  for (int i = warp; i < n; i += kThreads / kWarpSize) {
    A s = 0;
    for (int64_t j = lane; j < hidden; j += kWarpSize) s += x(i, j) * to_acc(q_b[j]);
    s = warp_sum(s);
    if (lane == 0) p[i] = s;
  }
  __syncthreads();
  A m = negative_infinity<A>();
  for (int i = 0; i < n; ++i) m = fmax(m, p[i]);
  __syncthreads();  // every thread has its m before p is overwritten
  if (threadIdx.x < n) p[threadIdx.x] = exp_acc(p[threadIdx.x] - m);
  __syncthreads();
  const int64_t part = b * chunks + c;
  for (int64_t j = threadIdx.x; j < hidden; j += kThreads) {
    A acc = 0;
    for (int i = 0; i < n; ++i) acc += p[i] * x(i, j);
    part_acc[part * hidden + j] = acc;
  }
  if (threadIdx.x == 0) {
    A l = 0;
    for (int i = 0; i < n; ++i) l += p[i];
    part_max[part] = m;
    part_sum[part] = l;
  }
}

// out[b] = sum_c e^{m_c - M} acc_c / L, L = sum_c e^{m_c - M} l_c, lse = M + log L.
template <class T>
__global__ void __launch_bounds__(kThreads)
    time_forward_combine(const int64_t* __restrict__ lengths, int64_t steps, int64_t hidden,
                         int chunk, int chunks, const acc_t<T>* __restrict__ part_max,
                         const acc_t<T>* __restrict__ part_sum,
                         const acc_t<T>* __restrict__ part_acc, acc_t<T>* __restrict__ out,
                         acc_t<T>* __restrict__ lse) {
  using A = acc_t<T>;
  const int64_t b = blockIdx.x;
  const int valid = int((clamped_length(lengths, b, steps) + chunk - 1) / chunk);
  const A* maxes = part_max + b * chunks;
  A m = negative_infinity<A>();
  for (int c = 0; c < valid; ++c) m = fmax(m, maxes[c]);
  A l = 0;
  for (int c = 0; c < valid; ++c) l += part_sum[b * chunks + c] * exp_acc(maxes[c] - m);
  const A inv_l = A(1) / l;
  for (int64_t j = threadIdx.x; j < hidden; j += kThreads) {
    A acc = 0;
    for (int c = 0; c < valid; ++c) acc += exp_acc(maxes[c] - m) * part_acc[(b * chunks + c) * hidden + j];
    out[b * hidden + j] = acc * inv_l;  // kept in the accumulator type for the backward
  }
  if (threadIdx.x == 0) lse[b] = m + log_acc(l);
}

template <class T, bool Staged>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    time_backward_chunk(const T* __restrict__ grad_out, StridedSteps h, const T* __restrict__ q,
                        const int64_t* __restrict__ lengths, const acc_t<T>* __restrict__ out,
                        const acc_t<T>* __restrict__ lse, T* __restrict__ grad_h, int64_t steps,
                        int64_t hidden, int chunk, int chunks, acc_t<T>* __restrict__ part_dq) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char shared[];
  A* p = reinterpret_cast<A*>(shared);  // [kMaxChunkSteps]
  A* ds = p + kMaxChunkSteps;           // [kMaxChunkSteps]
  A* d_shared = ds + kMaxChunkSteps;    // [1]: D = g . out
  A* tile = d_shared + 1;               // [n * hidden] when Staged
  const int64_t b = blockIdx.x / unsigned(chunks);  // one-dimensional grid, as in the forward
  const int c = int(blockIdx.x % unsigned(chunks));
  const int64_t t0 = int64_t(c) * chunk, length = clamped_length(lengths, b, steps);
  const int n_all = int(min(int64_t(chunk), steps - t0));
  const int n = int(max(int64_t(0), min(int64_t(chunk), length - t0)));  // valid steps
  const T* g = grad_out + b * hidden;
  const T* q_b = q + b * hidden;
  T* dh = grad_h + (b * steps + t0) * hidden;
  if (n == 0) {  // chunk entirely padded: dh = 0
    for (int64_t e = threadIdx.x; e < int64_t(n_all) * hidden; e += kThreads) dh[e] = from_acc<T>(A(0));
    return;
  }
  const T* rows = static_cast<const T*>(h.data) + b * h.stride_b + t0 * h.stride_t;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  if (warp == 0) {
    A d = 0;
    for (int64_t j = lane; j < hidden; j += kWarpSize) d += to_acc(g[j]) * out[b * hidden + j];
    d = warp_sum(d);
    if (lane == 0) *d_shared = d;
  }
  if (Staged) load_tile(rows, h.stride_t, h.stride_h, n, hidden, tile);
  __syncthreads();
  const ChunkSteps<T, Staged> x{rows, h.stride_t, h.stride_h, tile, hidden};
  const A lse_b = lse[b], d = *d_shared;
  for (int i = warp; i < n; i += kThreads / kWarpSize) {
    A s = 0, gh = 0;
    for (int64_t j = lane; j < hidden; j += kWarpSize) {
      const A xv = x(i, j);
      s += xv * to_acc(q_b[j]);
      gh += xv * to_acc(g[j]);
    }
    s = warp_sum(s);
    gh = warp_sum(gh);
    if (lane == 0) {
      const A pi = exp_acc(s - lse_b);
      p[i] = pi;
      ds[i] = pi * (gh - d);
    }
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < int64_t(n_all) * hidden; e += kThreads) {
    const int i = int(e / hidden);
    const int64_t j = e - int64_t(i) * hidden;
    dh[e] = from_acc<T>(i < n ? p[i] * to_acc(g[j]) + ds[i] * to_acc(q_b[j]) : A(0));
  }
  const int64_t part = b * chunks + c;
  for (int64_t j = threadIdx.x; j < hidden; j += kThreads) {
    A acc = 0;
    for (int i = 0; i < n; ++i) acc += ds[i] * x(i, j);
    part_dq[part * hidden + j] = acc;
  }
}

// dq[b] = sum over the row's valid chunks, in chunk order.
template <class T>
__global__ void __launch_bounds__(kThreads)
    time_backward_combine(const int64_t* __restrict__ lengths, int64_t steps, int64_t hidden,
                          int chunk, int chunks, const acc_t<T>* __restrict__ part_dq,
                          T* __restrict__ grad_q) {
  using A = acc_t<T>;
  const int64_t b = blockIdx.x;
  const int valid = int((clamped_length(lengths, b, steps) + chunk - 1) / chunk);
  for (int64_t j = threadIdx.x; j < hidden; j += kThreads) {
    A acc = 0;
    for (int c = 0; c < valid; ++c) acc += part_dq[(b * chunks + c) * hidden + j];
    grad_q[b * hidden + j] = from_acc<T>(acc);
  }
}

int chunk_count(int64_t steps, int chunk) { return int((steps + chunk - 1) / chunk); }

int64_t shared_bytes(int64_t extra_elements, int chunk, int64_t hidden, DType dtype, bool tile) {
  return (extra_elements + (tile ? chunk * hidden : 0)) * accumulator_bytes(dtype);
}

}  // namespace

int64_t time_attention_workspace(int64_t batch, int64_t steps, int64_t hidden, DType dtype) {
  return batch * chunk_count(steps, chunk_steps(hidden, dtype)) * (hidden + 2);
}

void time_attention_forward(DType dtype, StridedSteps h, const void* q, const int64_t* lengths,
                            void* out, void* lse, void* workspace, int64_t batch, int64_t steps,
                            int64_t hidden, Launch launch) {
  DeviceGuard guard(launch.device);
  const cudaStream_t stream = stream_of(launch);
  const int chunk = chunk_steps(hidden, dtype), chunks = chunk_count(steps, chunk);
  const bool tile = staged(hidden, dtype);
  const int64_t smem = shared_bytes(kMaxChunkSteps, chunk, hidden, dtype, tile);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    A* part_max = static_cast<A*>(workspace);
    A* part_sum = part_max + batch * chunks;
    A* part_acc = part_sum + batch * chunks;
    const unsigned grid = one_dimensional_grid(batch * chunks, "time_attention forward");
    auto kernel = tile ? time_forward_chunk<T, true> : time_forward_chunk<T, false>;
    request_shared_memory(kernel, smem, launch.device, "time_attention forward");
    kernel<<<grid, kThreads, smem, stream>>>(h, static_cast<const T*>(q), lengths, steps, hidden,
                                             chunk, chunks, part_max, part_sum, part_acc);
    check_launch("time_forward_chunk launch");
    time_forward_combine<T><<<one_dimensional_grid(batch, "time_attention forward"), kThreads, 0,
                              stream>>>(lengths, steps, hidden, chunk, chunks, part_max, part_sum,
                                        part_acc, static_cast<A*>(out), static_cast<A*>(lse));
    check_launch("time_forward_combine launch");
  });
}

void time_attention_backward(DType dtype, const void* grad_out, StridedSteps h, const void* q,
                             const int64_t* lengths, const void* out, const void* lse,
                             void* grad_h, void* grad_q, void* workspace, int64_t batch,
                             int64_t steps, int64_t hidden, Launch launch) {
  DeviceGuard guard(launch.device);
  const cudaStream_t stream = stream_of(launch);
  const int chunk = chunk_steps(hidden, dtype), chunks = chunk_count(steps, chunk);
  const bool tile = staged(hidden, dtype);
  const int64_t smem = shared_bytes(2 * kMaxChunkSteps + 1, chunk, hidden, dtype, tile);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    A* part_dq = static_cast<A*>(workspace);
    const unsigned grid = one_dimensional_grid(batch * chunks, "time_attention backward");
    auto kernel = tile ? time_backward_chunk<T, true> : time_backward_chunk<T, false>;
    request_shared_memory(kernel, smem, launch.device, "time_attention backward");
    kernel<<<grid, kThreads, smem, stream>>>(
        static_cast<const T*>(grad_out), h, static_cast<const T*>(q), lengths,
        static_cast<const A*>(out), static_cast<const A*>(lse), static_cast<T*>(grad_h), steps,
        hidden, chunk, chunks, part_dq);
    check_launch("time_backward_chunk launch");
    time_backward_combine<T><<<one_dimensional_grid(batch, "time_attention backward"), kThreads,
                               0, stream>>>(lengths, steps, hidden, chunk, chunks, part_dq,
                                            static_cast<T*>(grad_q));
    check_launch("time_backward_combine launch");
  });
}

}  // namespace sed_cuda
