// CPU (OpenMP) forward and backward kernels of time attention and feature attention.
//
// Compiled once per instruction set with -DSED_CPU_ISA=<name> and that set's -m flags
// (see kernels.h and setup.py). Everything except the exported kernel_table() has internal
// linkage; see simd.h for why no standard-library templates are used here.
//
// Work decomposition, shared by all kernels: each row's valid steps [0, lengths[b]) are cut
// into blocks of a fixed number of steps (StepBlocks); threads take blocks dynamically;
// every quantity summed over blocks (softmax partials, dq, out, dW, dV) goes to a per-block
// or per-chunk buffer that is reduced afterwards in block order, so results do not depend
// on thread scheduling.

#include <cstdint>
#include <cstdlib>
#include <new>

#include "kernels.h"
#include "simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef SED_CPU_ISA
#error "compile with -DSED_CPU_ISA=<avx512|avx2|baseline>"
#endif

namespace {

using sed_cpu::FeatureBackwardArgs;
using sed_cpu::FeatureForwardArgs;
using sed_cpu::Sizes;
using sed_cpu::StridedSteps;
using sed_cpu::TimeBackwardArgs;
using sed_cpu::TimeForwardArgs;

#ifndef _OPENMP
SED_ALWAYS_INLINE int omp_get_thread_num() { return 0; }
#endif

SED_ALWAYS_INLINE int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
SED_ALWAYS_INLINE int64_t round_up(int64_t x, int64_t multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

// Zero-initialised, 64-byte aligned heap buffer (allocated outside parallel regions, so
// std::bad_alloc reaches Python as MemoryError).
template <class T>
class Scratch {
 public:
  explicit Scratch(int64_t count) {
    const size_t bytes = round_up((count > 0 ? count : 1) * int64_t(sizeof(T)), 64);
    data_ = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (data_ == nullptr) throw std::bad_alloc();
    __builtin_memset(static_cast<void*>(data_), 0, bytes);
  }
  ~Scratch() { std::free(data_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return data_; }
  T& operator[](int64_t i) const { return data_[i]; }

 private:
  T* data_;
};

// Threads for `work` independent pieces: the caller's count, at most one per piece.
int thread_count(const Sizes& size, int64_t work) {
  const int64_t wanted = size.num_threads > 0 ? size.num_threads : 1;
  return int(min_i64(wanted, work > 0 ? work : 1));
}

// h (B, T, H) with element strides, typed.
template <class T>
struct StepsView {
  const T* data;
  int64_t stride_b, stride_t, stride_h;
  explicit StepsView(const StridedSteps& h)
      : data(static_cast<const T*>(h.data)),
        stride_b(h.stride_b),
        stride_t(h.stride_t),
        stride_h(h.stride_h) {}
  const T* row(int64_t b, int64_t t) const { return data + b * stride_b + t * stride_t; }
};

// Element j of a step row: contiguous when UnitStride (the vectorised path).
template <bool UnitStride, class T>
SED_ALWAYS_INLINE T element(const T* row, int64_t j, int64_t stride_h) {
  return UnitStride ? row[j] : row[j * stride_h];
}

struct StepBlock {
  int64_t b, t0, t1;  // steps [t0, t1) of row b, all valid
};

// Every row's valid steps cut into blocks of at most `block_steps` steps, row after row;
// blocks first[b] .. first[b + 1] - 1 belong to row b.
class StepBlocks {
 public:
  StepBlocks(const int64_t* lengths, int64_t batch, int64_t block_steps)
      : first_(batch + 1), blocks_(count_blocks(lengths, batch, block_steps)) {
    int64_t i = 0;
    for (int64_t b = 0; b < batch; ++b) {
      first_[b] = i;
      for (int64_t t0 = 0; t0 < lengths[b]; t0 += block_steps)
        blocks_[i++] = StepBlock{b, t0, min_i64(t0 + block_steps, lengths[b])};
    }
    first_[batch] = i;
    count_ = i;
  }
  int64_t count() const { return count_; }
  const StepBlock& operator[](int64_t i) const { return blocks_[i]; }
  int64_t first(int64_t b) const { return first_[b]; }

 private:
  static int64_t count_blocks(const int64_t* lengths, int64_t batch, int64_t block_steps) {
    int64_t n = 0;
    for (int64_t b = 0; b < batch; ++b) n += (lengths[b] + block_steps - 1) / block_steps;
    return n;
  }
  Scratch<int64_t> first_;
  Scratch<StepBlock> blocks_;
  int64_t count_ = 0;
};

// =======================================================================================
// Time attention: s_t = h_t . q, a = softmax over valid t, out = sum_t a_t h_t.
// Memory-bound; each block streams its steps once (scores of kScoreBatch steps, then the
// weighted sum re-reads those steps from L1).
constexpr int64_t kTimeStepsPerBlock = 64;
constexpr int kScoreBatch = 16;

// Online softmax over one block: acc = sum_t exp(s_t - m) h_t, l = sum_t exp(s_t - m),
// m = max_t s_t.
template <class T, bool UnitStride>
void time_forward_block(const StepsView<T>& h, const T* q, int64_t H, const StepBlock& block,
                        T* acc, T* max_out, T* sum_out) {
  const int64_t sh = h.stride_h;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) acc[j] = T(0);
  T m = Math<T>::neg_inf, l = T(0);
  T score[kScoreBatch];
  for (int64_t s0 = block.t0; s0 < block.t1; s0 += kScoreBatch) {
    const int n = int(min_i64(kScoreBatch, block.t1 - s0));
    T batch_max = Math<T>::neg_inf;
    for (int i = 0; i < n; ++i) {
      const T* row = h.row(block.b, s0 + i);
      T s = T(0);
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < H; ++j) s += element<UnitStride>(row, j, sh) * q[j];
      score[i] = s;
      batch_max = s > batch_max ? s : batch_max;
    }
    if (batch_max > m) {  // rescale the running sums to the new maximum
      const T rescale = Math<T>::exp(m - batch_max);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) acc[j] *= rescale;
      l *= rescale;
      m = batch_max;
    }
    for (int i = 0; i < n; ++i) {
      const T p = Math<T>::exp(score[i] - m);
      l += p;
      const T* row = h.row(block.b, s0 + i);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) acc[j] += p * element<UnitStride>(row, j, sh);
    }
  }
  *max_out = m;
  *sum_out = l;
}

template <class T>
void time_forward(const TimeForwardArgs& args) {
  const Sizes& size = args.size;
  const int64_t H = size.hidden;
  const StepsView<T> h(args.h);
  const T* q = static_cast<const T*>(args.q);
  T* out = static_cast<T*>(args.out);
  T* lse = static_cast<T*>(args.lse);
  const StepBlocks blocks(args.lengths, size.batch, kTimeStepsPerBlock);
  Scratch<T> acc(blocks.count() * H), maxes(blocks.count()), sums(blocks.count());
  const bool unit_stride = h.stride_h == 1;

#pragma omp parallel num_threads(thread_count(size, blocks.count()))
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < blocks.count(); ++i) {
      const StepBlock& block = blocks[i];
      const T* q_b = q + block.b * H;
      if (unit_stride)
        time_forward_block<T, true>(h, q_b, H, block, &acc[i * H], &maxes[i], &sums[i]);
      else
        time_forward_block<T, false>(h, q_b, H, block, &acc[i * H], &maxes[i], &sums[i]);
    }
    // Combine the blocks of each row in block order: out = sum_i e^{m_i - M} acc_i / L.
#pragma omp for schedule(static)
    for (int64_t b = 0; b < size.batch; ++b) {
      T m = Math<T>::neg_inf;
      for (int64_t i = blocks.first(b); i < blocks.first(b + 1); ++i)
        m = maxes[i] > m ? maxes[i] : m;
      T l = T(0);
      T* out_b = out + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) out_b[j] = T(0);
      for (int64_t i = blocks.first(b); i < blocks.first(b + 1); ++i) {
        const T weight = Math<T>::exp(maxes[i] - m);
        l += weight * sums[i];
        const T* acc_i = &acc[i * H];
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) out_b[j] += weight * acc_i[j];
      }
      const T inv_l = T(1) / l;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) out_b[j] *= inv_l;
      lse[b] = m + Math<T>::log(l);
    }
  }
}

// One block of the backward: p_t = exp(s_t - lse), ds_t = p_t (g . h_t - g . out),
// dh_t = p_t g + ds_t q, dq_part = sum_t ds_t h_t. Reads each h_t once from memory.
template <class T, bool UnitStride>
void time_backward_block(const TimeBackwardArgs& args, const StepsView<T>& h,
                         const StepBlock& block, T* dq_part) {
  const int64_t H = args.size.hidden, T_steps = args.size.steps, b = block.b;
  const int64_t sh = h.stride_h;
  const T* g = static_cast<const T*>(args.grad_out) + b * H;
  const T* q = static_cast<const T*>(args.q) + b * H;
  const T* out = static_cast<const T*>(args.out) + b * H;
  const T lse = static_cast<const T*>(args.lse)[b];
  T* grad_h = static_cast<T*>(args.grad_h);
  T d = T(0);  // D = g . out
#pragma omp simd reduction(+ : d)
  for (int64_t j = 0; j < H; ++j) d += g[j] * out[j];
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) dq_part[j] = T(0);
  for (int64_t t = block.t0; t < block.t1; ++t) {
    const T* row = h.row(b, t);
    T s = T(0), gh = T(0);
#pragma omp simd reduction(+ : s, gh)
    for (int64_t j = 0; j < H; ++j) {
      const T x = element<UnitStride>(row, j, sh);
      s += x * q[j];
      gh += x * g[j];
    }
    const T p = Math<T>::exp(s - lse);
    const T ds = p * (gh - d);
    T* dh = grad_h + (b * T_steps + t) * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      dh[j] = p * g[j] + ds * q[j];
      dq_part[j] += ds * element<UnitStride>(row, j, sh);
    }
  }
}

template <class T>
void time_backward(const TimeBackwardArgs& args) {
  const Sizes& size = args.size;
  const int64_t H = size.hidden;
  const StepsView<T> h(args.h);
  T* grad_h = static_cast<T*>(args.grad_h);
  T* grad_q = static_cast<T*>(args.grad_q);
  const StepBlocks blocks(args.lengths, size.batch, kTimeStepsPerBlock);
  Scratch<T> dq_parts(blocks.count() * H);
  const bool unit_stride = h.stride_h == 1;

#pragma omp parallel num_threads(thread_count(size, blocks.count()))
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < blocks.count(); ++i) {
      if (unit_stride)
        time_backward_block<T, true>(args, h, blocks[i], &dq_parts[i * H]);
      else
        time_backward_block<T, false>(args, h, blocks[i], &dq_parts[i * H]);
    }
#pragma omp for schedule(static)
    for (int64_t b = 0; b < size.batch; ++b) {
      T* dq = grad_q + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) dq[j] = T(0);
      for (int64_t i = blocks.first(b); i < blocks.first(b + 1); ++i) {
        const T* part = &dq_parts[i * H];
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dq[j] += part[j];
      }
      T* padded = grad_h + (b * size.steps + args.lengths[b]) * H;
      const int64_t padded_count = (size.steps - args.lengths[b]) * H;
#pragma omp simd
      for (int64_t j = 0; j < padded_count; ++j) padded[j] = T(0);
    }
  }
}

// =======================================================================================
// Feature attention, per valid step: u = tanh(W h_t) (d_a), s = V u (H), a = softmax(s),
// out += a * h_t. Compute-bound: a block of kFeatureStepsPerBlock steps becomes four small
// matmuls against the packed weights; the block's h, u, s tiles live in per-thread scratch
// (no (B, T, d_a) or (B, T, H) buffer), and the backward recomputes them.
constexpr int64_t kFeatureStepsPerBlock = 8 * kRowsPerTile;
constexpr int kChunksPerThread = 4;  // dW/dV partials of the backward, per thread

// Padded sizes and scratch row strides of one feature-attention call.
template <class T>
struct FeatureLayout {
  int64_t hidden, attention;        // H, d_a
  int64_t hidden_panels, attention_panels;  // panels of panel_width<T>() columns
  int64_t hidden_rows, attention_rows;      // H, d_a rounded up to kRowsPerTile
  int64_t ld_hidden, ld_attention;  // row strides of (steps x H) and (steps x d_a) tiles
  FeatureLayout(int64_t H, int64_t A)
      : hidden(H),
        attention(A),
        hidden_panels((H + panel_width<T>() - 1) / panel_width<T>()),
        attention_panels((A + panel_width<T>() - 1) / panel_width<T>()),
        hidden_rows(round_up(H, kRowsPerTile)),
        attention_rows(round_up(A, kRowsPerTile)),
        ld_hidden(padded_stride(hidden_panels * panel_width<T>(), hidden_rows)),
        ld_attention(padded_stride(attention_panels * panel_width<T>(), attention_rows)) {}

 private:
  // Wide enough for both uses of a tile, plus one vector so that rows 2^k elements apart
  // do not map to the same L1 cache sets.
  static int64_t padded_stride(int64_t columns, int64_t rows) {
    return (columns > rows ? columns : rows) + Vec<T>::lanes;
  }
};

// Copies the block's steps into hs (rows x ld_hidden), zero rows past the block's steps.
// Columns >= H are never written and stay zero from the allocation.
template <class T>
void load_steps(const StepsView<T>& h, const StepBlock& block, int64_t H, int64_t rows,
                T* hs, int64_t ld) {
  const int64_t m = block.t1 - block.t0;
  for (int64_t r = 0; r < rows; ++r) {
    T* dst = hs + r * ld;
    if (r >= m) {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) dst[j] = T(0);
      continue;
    }
    const T* src = h.row(block.b, block.t0 + r);
    if (h.stride_h == 1) {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) dst[j] = src[j];
    } else {
      for (int64_t j = 0; j < H; ++j) dst[j] = src[j * h.stride_h];
    }
  }
}

// Softmax of the first H entries of s in place; returns nothing else (entries >= H untouched).
template <class T>
SED_ALWAYS_INLINE void softmax_in_place(T* s, int64_t H) {
  T m = Math<T>::neg_inf;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < H; ++j) m = s[j] > m ? s[j] : m;
  T sum = T(0);
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < H; ++j) {
    const T e = Math<T>::exp(s[j] - m);
    s[j] = e;
    sum += e;
  }
  const T inv = T(1) / sum;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) s[j] *= inv;
}

template <class T>
SED_ALWAYS_INLINE void tanh_in_place(T* x, int64_t n) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) x[k] = Math<T>::tanh(x[k]);
}

// Forward recomputation shared by forward and backward: u = tanh(h W^T) into u (rows x
// ld_attention) and a = softmax(u V^T) into a (rows x ld_hidden) for the block's m steps.
template <class T>
void attention_weights(const FeatureLayout<T>& L, int64_t rows, int64_t m, const T* hs,
                       const T* Wt_packed, const T* Vt_packed, T* u, T* a) {
  matmul_packed<T, false>(rows, L.hidden, hs, L.ld_hidden, Wt_packed, L.attention_panels, u,
                          L.ld_attention);  // z = h W^T   (rows x d_a)
  for (int64_t r = 0; r < rows; ++r)
    tanh_in_place(u + r * L.ld_attention, L.attention_panels * panel_width<T>());
  matmul_packed<T, false>(rows, L.attention, u, L.ld_attention, Vt_packed, L.hidden_panels, a,
                          L.ld_hidden);  // s = u V^T   (rows x H)
  for (int64_t r = 0; r < m; ++r) softmax_in_place(a + r * L.ld_hidden, L.hidden);
}

template <class T>
void feature_forward(const FeatureForwardArgs& args) {
  const Sizes& size = args.size;
  const FeatureLayout<T> L(size.hidden, size.attention);
  const int64_t H = L.hidden, A = L.attention, width = panel_width<T>();
  const StepsView<T> h(args.h);
  const T* W = static_cast<const T*>(args.W);  // (d_a, H)
  const T* V = static_cast<const T*>(args.V);  // (H, d_a)
  T* out = static_cast<T*>(args.out);

  // B operands of the two matmuls: W^T (H x d_a) and V^T (d_a x H), packed in panels.
  Scratch<T> Wt_packed(L.attention_panels * width * H), Vt_packed(L.hidden_panels * width * A);
  pack_panels(W, 1, H, H, A, Wt_packed.get());
  pack_panels(V, 1, A, A, H, Vt_packed.get());

  const StepBlocks blocks(args.lengths, size.batch, kFeatureStepsPerBlock);
  const int threads = thread_count(size, blocks.count());
  const int64_t rows = kFeatureStepsPerBlock;
  const int64_t thread_scratch = rows * (2 * L.ld_hidden + L.ld_attention);
  Scratch<T> scratch(threads * thread_scratch), out_parts(blocks.count() * H);

#pragma omp parallel num_threads(threads)
  {
    T* hs = scratch.get() + omp_get_thread_num() * thread_scratch;  // (rows x ld_hidden)
    T* a = hs + rows * L.ld_hidden;                                  // (rows x ld_hidden)
    T* u = a + rows * L.ld_hidden;                                   // (rows x ld_attention)
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < blocks.count(); ++i) {
      const StepBlock& block = blocks[i];
      const int64_t m = block.t1 - block.t0, block_rows = round_up(m, kRowsPerTile);
      load_steps(h, block, H, block_rows, hs, L.ld_hidden);
      attention_weights(L, block_rows, m, hs, Wt_packed.get(), Vt_packed.get(), u, a);
      T* part = &out_parts[i * H];  // sum over the block's steps of a_t * h_t
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) part[j] = T(0);
      for (int64_t r = 0; r < m; ++r) {
        const T* a_r = a + r * L.ld_hidden;
        const T* h_r = hs + r * L.ld_hidden;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) part[j] += a_r[j] * h_r[j];
      }
    }
#pragma omp for schedule(static)
    for (int64_t b = 0; b < size.batch; ++b) {
      T* out_b = out + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) out_b[j] = T(0);
      for (int64_t i = blocks.first(b); i < blocks.first(b + 1); ++i) {
        const T* part = &out_parts[i * H];
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) out_b[j] += part[j];
      }
    }
  }
}

// Buffers of one backward chunk: the recomputed tiles of one block and the chunk's dW, dV.
template <class T>
struct FeatureBackwardScratch {
  T *hs, *a, *ds, *dh, *u, *dz;  // (rows x ld_hidden) x 4, (rows x ld_attention) x 2
  T *dW, *dV;                    // (attention_rows x ld_hidden), (hidden_rows x ld_attention)
  static int64_t size(const FeatureLayout<T>& L) {
    return kFeatureStepsPerBlock * (4 * L.ld_hidden + 2 * L.ld_attention) +
           L.attention_rows * L.ld_hidden + L.hidden_rows * L.ld_attention;
  }
  FeatureBackwardScratch(const FeatureLayout<T>& L, T* base) {
    const int64_t tile_h = kFeatureStepsPerBlock * L.ld_hidden;
    const int64_t tile_a = kFeatureStepsPerBlock * L.ld_attention;
    hs = base, a = hs + tile_h, ds = a + tile_h, dh = ds + tile_h;
    u = dh + tile_h, dz = u + tile_a;
    dW = dz + tile_a;
    dV = dW + L.attention_rows * L.ld_hidden;
  }
};

// Backward of one block (recompute, then):
//   da = g * h_t; ds = a * (da - sum(a * da)); dV += ds u^T; du = V^T ds;
//   dz = du * (1 - u^2); dW += dz h_t^T; dh_t = g * a + W^T dz.
template <class T>
void feature_backward_block(const FeatureBackwardArgs& args, const FeatureLayout<T>& L,
                            const StepsView<T>& h, const StepBlock& block, const T* Wt_packed,
                            const T* Vt_packed, const T* V_packed, const T* W_packed,
                            const FeatureBackwardScratch<T>& s) {
  const int64_t H = L.hidden, A = L.attention, ldh = L.ld_hidden, lda = L.ld_attention;
  const int64_t m = block.t1 - block.t0, rows = round_up(m, kRowsPerTile);
  const T* g = static_cast<const T*>(args.grad_out) + block.b * H;
  load_steps(h, block, H, rows, s.hs, ldh);
  attention_weights(L, rows, m, s.hs, Wt_packed, Vt_packed, s.u, s.a);
  for (int64_t r = 0; r < rows; ++r) {
    T* ds = s.ds + r * ldh;
    T* dh = s.dh + r * ldh;
    if (r >= m) {  // padding rows of the tile: no gradient
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) ds[j] = dh[j] = T(0);
      continue;
    }
    const T* a = s.a + r * ldh;
    const T* x = s.hs + r * ldh;
    // da = g * h is rounded once and stored, so that the same da enters sum(a * da) and
    // da - sum(a * da): with near one-hot a this difference cancels, and an FMA-contracted
    // g * h - sum(...) would not cancel (measured: 6x eager's error in dW at large logits).
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) ds[j] = g[j] * x[j];
    T a_dot_da = T(0);
#pragma omp simd reduction(+ : a_dot_da)
    for (int64_t j = 0; j < H; ++j) a_dot_da += a[j] * ds[j];
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      ds[j] = a[j] * (ds[j] - a_dot_da);
      dh[j] = g[j] * a[j];
    }
  }
  // dV (H x d_a) += ds^T u over the block's m steps.
  matmul_transposed_accumulate(L.hidden_rows, m, s.ds, ldh, s.u, lda, L.attention_panels, s.dV,
                               lda);
  // du = ds V (rows x d_a), then dz = du * (1 - u^2) in place.
  matmul_packed<T, false>(rows, H, s.ds, ldh, V_packed, L.attention_panels, s.dz, lda);
  const int64_t a_cols = L.attention_panels * panel_width<T>();
  for (int64_t r = 0; r < rows; ++r) {
    T* dz = s.dz + r * lda;
    const T* u = s.u + r * lda;
#pragma omp simd
    for (int64_t k = 0; k < a_cols; ++k) dz[k] *= T(1) - u[k] * u[k];
  }
  // dW (d_a x H) += dz^T h over the block's m steps.
  matmul_transposed_accumulate(L.attention_rows, m, s.dz, lda, s.hs, ldh, L.hidden_panels, s.dW,
                               ldh);
  // dh = g * a + dz W (rows x H).
  matmul_packed<T, true>(rows, A, s.dz, lda, W_packed, L.hidden_panels, s.dh, ldh);
  T* grad_h = static_cast<T*>(args.grad_h);
  for (int64_t r = 0; r < m; ++r) {
    T* dst = grad_h + (block.b * args.size.steps + block.t0 + r) * H;
    const T* src = s.dh + r * ldh;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) dst[j] = src[j];
  }
}

template <class T>
void feature_backward(const FeatureBackwardArgs& args) {
  const Sizes& size = args.size;
  const FeatureLayout<T> L(size.hidden, size.attention);
  const int64_t H = L.hidden, A = L.attention, width = panel_width<T>();
  const StepsView<T> h(args.h);
  const T* W = static_cast<const T*>(args.W);  // (d_a, H)
  const T* V = static_cast<const T*>(args.V);  // (H, d_a)

  // B operands: W^T (H x d_a), V^T (d_a x H), V (H x d_a), W (d_a x H).
  Scratch<T> Wt_packed(L.attention_panels * width * H), Vt_packed(L.hidden_panels * width * A);
  Scratch<T> V_packed(L.attention_panels * width * H), W_packed(L.hidden_panels * width * A);
  pack_panels(W, 1, H, H, A, Wt_packed.get());
  pack_panels(V, 1, A, A, H, Vt_packed.get());
  pack_panels(V, A, 1, H, A, V_packed.get());
  pack_panels(W, H, 1, A, H, W_packed.get());

  // Chunks: kChunksPerThread per thread, consecutive blocks with about equal step counts,
  // taken by the threads dynamically (so a descheduled thread does not hold up the others).
  // Each chunk sums its dW, dV in block order; the chunks are then summed in chunk order.
  // So the result is the same run after run (for a given thread count), whatever thread
  // computed which chunk.
  const StepBlocks blocks(args.lengths, size.batch, kFeatureStepsPerBlock);
  const int threads = thread_count(size, blocks.count());
  const int chunks = int(min_i64(int64_t(threads) * kChunksPerThread, blocks.count()));
  Scratch<int64_t> chunk_first(chunks + 1);
  {
    int64_t total = 0;
    for (int64_t b = 0; b < size.batch; ++b) total += args.lengths[b];
    int64_t before = 0, c = 1;
    for (int64_t i = 0; i < blocks.count() && c < chunks; ++i) {
      while (c < chunks && before * chunks >= c * total) chunk_first[c++] = i;
      before += blocks[i].t1 - blocks[i].t0;
    }
    while (c <= chunks) chunk_first[c++] = blocks.count();
  }
  const int64_t chunk_scratch = FeatureBackwardScratch<T>::size(L);
  Scratch<T> scratch(chunks * chunk_scratch);
  T* grad_h = static_cast<T*>(args.grad_h);
  T* grad_W = static_cast<T*>(args.grad_W);
  T* grad_V = static_cast<T*>(args.grad_V);

#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(dynamic, 1)
    for (int c = 0; c < chunks; ++c) {
      const FeatureBackwardScratch<T> s(L, scratch.get() + c * chunk_scratch);
      for (int64_t i = chunk_first[c]; i < chunk_first[c + 1]; ++i)
        feature_backward_block(args, L, h, blocks[i], Wt_packed.get(), Vt_packed.get(),
                               V_packed.get(), W_packed.get(), s);
    }
    // nowait: the padded-step zeros touch no chunk data.
#pragma omp for schedule(static) nowait
    for (int64_t b = 0; b < size.batch; ++b) {
      T* padded = grad_h + (b * size.steps + args.lengths[b]) * H;
      const int64_t padded_count = (size.steps - args.lengths[b]) * H;
#pragma omp simd
      for (int64_t j = 0; j < padded_count; ++j) padded[j] = T(0);
    }
#pragma omp for schedule(static)
    for (int64_t k = 0; k < A; ++k) {  // dW row k, chunks in order
      T* dst = grad_W + k * H;
      for (int c = 0; c < chunks; ++c) {
        const T* part = FeatureBackwardScratch<T>(L, scratch.get() + c * chunk_scratch).dW +
                        k * L.ld_hidden;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dst[j] = (c == 0 ? T(0) : dst[j]) + part[j];
      }
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < H; ++i) {  // dV row i, chunks in order
      T* dst = grad_V + i * A;
      for (int c = 0; c < chunks; ++c) {
        const T* part = FeatureBackwardScratch<T>(L, scratch.get() + c * chunk_scratch).dV +
                        i * L.ld_attention;
#pragma omp simd
        for (int64_t k = 0; k < A; ++k) dst[k] = (c == 0 ? T(0) : dst[k]) + part[k];
      }
    }
  }
}

}  // namespace

namespace sed_cpu {
namespace SED_CPU_ISA {

#define SED_STRINGIFY_(x) #x
#define SED_STRINGIFY(x) SED_STRINGIFY_(x)

const KernelTable& kernel_table() {
  static const KernelTable table = {
      SED_STRINGIFY(SED_CPU_ISA),
      {&time_forward<float>, &time_forward<double>},
      {&time_backward<float>, &time_backward<double>},
      {&feature_forward<float>, &feature_forward<double>},
      {&feature_backward<float>, &feature_backward<double>},
  };
  return table;
}

}  // namespace SED_CPU_ISA
}  // namespace sed_cpu
