// CPU (OpenMP) kernels: time attention's forward and backward, and the fused passes of
// feature attention that lie between its matrix products (which the launcher runs as
// torch.mm GEMMs).
//
// Compiled once per instruction set with -DSED_CPU_ISA=<name> and that set's -m flags
// (see kernels.h and setup.py). Everything except the exported kernel_table() has internal
// linkage; see simd.h for why no standard-library templates are used here.
//
// Work decomposition, shared by all kernels: each row's valid steps [0, lengths[b]) are cut
// into blocks of a fixed number of steps (StepBlocks); threads take blocks dynamically;
// every quantity summed over blocks (softmax partials, dq, out) goes to a per-block buffer
// that is reduced afterwards in block order, so results do not depend on thread scheduling.

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
// out = sum_t a * h_t. The launcher packs the valid steps into (N, H) matrices and runs the
// four matrix products with torch.mm; these kernels fuse everything between them, each in
// one pass over its operands. Rows of the packed matrices are steps: row offset(b) + t.

// offsets[b] = first packed row of batch row b; offsets[B] = N.
class PackedRows {
 public:
  PackedRows(const int64_t* lengths, int64_t batch) : offsets_(batch + 1) {
    offsets_[0] = 0;
    for (int64_t b = 0; b < batch; ++b) offsets_[b + 1] = offsets_[b] + lengths[b];
  }
  int64_t operator()(int64_t b, int64_t t) const { return offsets_[b] + t; }
  int64_t total(int64_t batch) const { return offsets_[batch]; }

 private:
  Scratch<int64_t> offsets_;
};

constexpr int64_t kFeatureStepsPerBlock = 64;

template <class T>
void pack(const sed_cpu::PackArgs& args) {
  const Sizes& size = args.size;
  const int64_t H = size.hidden;
  const StepsView<T> h(args.h);
  T* packed = static_cast<T*>(args.packed);
  const PackedRows rows(args.lengths, size.batch);
  const StepBlocks blocks(args.lengths, size.batch, kFeatureStepsPerBlock);
#pragma omp parallel for schedule(static) num_threads(thread_count(size, blocks.count()))
  for (int64_t i = 0; i < blocks.count(); ++i) {
    const StepBlock& block = blocks[i];
    for (int64_t t = block.t0; t < block.t1; ++t) {
      const T* src = h.row(block.b, t);
      T* dst = packed + rows(block.b, t) * H;
      if (h.stride_h == 1) {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dst[j] = src[j];
      } else {
        for (int64_t j = 0; j < H; ++j) dst[j] = src[j * h.stride_h];
      }
    }
  }
}

template <class T>
void unpack(const sed_cpu::UnpackArgs& args) {
  const Sizes& size = args.size;
  const int64_t H = size.hidden, steps = size.steps;
  const T* packed = static_cast<const T*>(args.packed);
  T* out = static_cast<T*>(args.out);
  const PackedRows rows(args.lengths, size.batch);
#pragma omp parallel for schedule(static) num_threads(thread_count(size, size.batch * steps))
  for (int64_t bt = 0; bt < size.batch * steps; ++bt) {
    const int64_t b = bt / steps, t = bt % steps;
    T* dst = out + bt * H;
    if (t < args.lengths[b]) {
      const T* src = packed + rows(b, t) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) dst[j] = src[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) dst[j] = T(0);
    }
  }
}

// Softmax of the H entries of s in place.
template <class T>
SED_ALWAYS_INLINE void softmax_in_place(T* s, int64_t H) {
  T m = Math<T>::neg_inf;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < H; ++j) m = s[j] > m ? s[j] : m;
  T sum = T(0);
  int64_t j = 0;
  if constexpr (sizeof(T) == sizeof(float)) {  // whole registers through the vector exp
    FloatVec sums{};
    for (; j + kFloatLanes <= H; j += kFloatLanes) {
      const FloatVec e = exp_approx(load_floats(s + j) - m);
      store_floats(s + j, e);
      sums += e;
    }
    sum = horizontal_sum(sums);
  }
  for (; j < H; ++j) {
    const T e = Math<T>::exp(s[j] - m);
    s[j] = e;
    sum += e;
  }
  const T inv = T(1) / sum;
#pragma omp simd
  for (int64_t k = 0; k < H; ++k) s[k] *= inv;
}

// Blocks of steps run in parallel; each sums a_t * h_t over its steps into its own partial,
// and the partials of a row are added in block order (the result does not depend on which
// thread ran which block).
template <class T>
void softmax_pool(const sed_cpu::SoftmaxPoolArgs& args) {
  const Sizes& size = args.size;
  const int64_t H = size.hidden;
  T* scores = static_cast<T*>(args.scores);
  const T* packed_h = static_cast<const T*>(args.packed_h);
  T* out = static_cast<T*>(args.out);
  const PackedRows rows(args.lengths, size.batch);
  const StepBlocks blocks(args.lengths, size.batch, kFeatureStepsPerBlock);
  Scratch<T> parts(blocks.count() * H);

#pragma omp parallel num_threads(thread_count(size, blocks.count()))
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < blocks.count(); ++i) {
      const StepBlock& block = blocks[i];
      T* part = &parts[i * H];
      for (int64_t t = block.t0; t < block.t1; ++t) {
        T* a = scores + rows(block.b, t) * H;
        const T* x = packed_h + rows(block.b, t) * H;
        softmax_in_place(a, H);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) part[j] += a[j] * x[j];
      }
    }
#pragma omp for schedule(static)
    for (int64_t b = 0; b < size.batch; ++b) {
      T* out_b = out + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) out_b[j] = T(0);
      for (int64_t i = blocks.first(b); i < blocks.first(b + 1); ++i) {
        const T* part = &parts[i * H];
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) out_b[j] += part[j];
      }
    }
  }
}

// Per step: da = g * h; ds = a * (da - sum(a * da)); the direct term of dh is g * a.
// With a near one-hot, da_m - sum(a * da) cancels for the largest weight a_m: computed as
// written, what is left of it is the rounding error of a_m (its 1 - a_m) and of the sum, and
// that dominates dW and dh (the eager formula has the same error; how large it comes out
// depends on the summation order, hence on the vector width). Since the weights sum to one,
// da_m - sum_k a_k da_k = sum_{k != m} a_k (da_m - da_k): small terms, each accurate, and the
// k = m term is zero by itself. That form is used for ds_m, the direct form for the other
// features (where nothing cancels that a_j does not multiply away), both summed in double.
// In the fuzz case that failed the AVX2 build, this gives dW errors 5x below eager's.
// Index of the first largest of the H entries of x.
template <class T>
SED_ALWAYS_INLINE int64_t index_of_max(const T* x, int64_t H) {
  T m = Math<T>::neg_inf;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < H; ++j) m = x[j] > m ? x[j] : m;
  int64_t j = 0;
  while (j + 1 < H && x[j] != m) ++j;
  return j;
}

template <class T>
void softmax_backward(const sed_cpu::SoftmaxBackwardArgs& args) {
  const Sizes& size = args.size;
  const int64_t H = size.hidden;
  const T* weights = static_cast<const T*>(args.weights);
  const T* packed_h = static_cast<const T*>(args.packed_h);
  const T* grad_out = static_cast<const T*>(args.grad_out);
  T* grad_scores = static_cast<T*>(args.grad_scores);
  T* grad_h = static_cast<T*>(args.grad_h);
  const PackedRows rows(args.lengths, size.batch);
  const StepBlocks blocks(args.lengths, size.batch, kFeatureStepsPerBlock);
#pragma omp parallel for schedule(static) num_threads(thread_count(size, blocks.count()))
  for (int64_t i = 0; i < blocks.count(); ++i) {
    const StepBlock& block = blocks[i];
    const T* g = grad_out + block.b * H;
    for (int64_t t = block.t0; t < block.t1; ++t) {
      const int64_t row = rows(block.b, t);
      const T* a = weights + row * H;
      const T* x = packed_h + row * H;
      T* ds = grad_scores + row * H;
      T* dh = grad_h + row * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) ds[j] = g[j] * x[j];  // da
      const int64_t top = index_of_max(a, H);
      const double da_top = double(ds[top]);
      double a_dot_da = 0.0, rest = 0.0;  // sum_k a_k da_k, sum_k a_k (da_top - da_k)
#pragma omp simd reduction(+ : a_dot_da, rest)
      for (int64_t j = 0; j < H; ++j) {
        a_dot_da += double(a[j]) * double(ds[j]);
        rest += double(a[j]) * (da_top - double(ds[j]));
      }
      const T ds_top = a[top] * T(rest);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        ds[j] = a[j] * T(double(ds[j]) - a_dot_da);
        dh[j] = g[j] * a[j];
      }
      ds[top] = ds_top;
    }
  }
}

template <class T>
void tanh_backward(const sed_cpu::TanhBackwardArgs& args) {
  T* grad = static_cast<T*>(args.grad);
  const T* u = static_cast<const T*>(args.tanh_out);
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (args.count + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(thread_count(args.size, chunks))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = min_i64(args.count, (c + 1) * kChunk);
#pragma omp simd
    for (int64_t k = c * kChunk; k < end; ++k) grad[k] *= T(1) - u[k] * u[k];
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
      {&pack<float>, &pack<double>},
      {&unpack<float>, &unpack<double>},
      {&softmax_pool<float>, &softmax_pool<double>},
      {&softmax_backward<float>, &softmax_backward<double>},
      {&tanh_backward<float>, &tanh_backward<double>},
  };
  return table;
}

}  // namespace SED_CPU_ISA
}  // namespace sed_cpu
