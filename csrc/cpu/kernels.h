// Interface between the pybind11 module (bindings.cpp) and the CPU kernels (kernels.cpp).
//
// kernels.cpp is compiled once per instruction set -- AVX-512, AVX2+FMA and the baseline
// of the architecture (SSE2 on x86-64) -- each copy in its own namespace and exposing one
// KernelTable; bindings.cpp picks the best table the running CPU supports
// (__builtin_cpu_supports), so one build runs fast on new CPUs and still runs on old ones
// (function multiversioning by translation unit; no -march=native needed).
//
// Tensors are passed as raw pointers with sizes and element strides, so the extension never
// links libtorch. Conventions shared by all kernels:
//   h (B, T, H) with arbitrary element strides (stride_b, stride_t, stride_h);
//   every other tensor contiguous; lengths int64 in [1, T]; T is float or double.
//   Steps t >= lengths[b] of h are never read; every output element is written.
#pragma once

#include <cstdint>

namespace sed_cpu {

struct StridedSteps {  // h (B, T, H)
  const void* data;
  int64_t stride_b, stride_t, stride_h;
};

struct Sizes {
  int64_t batch, steps, hidden;
  int64_t attention;  // d_a (feature attention only)
  int num_threads;    // OpenMP threads to use (the caller passes torch.get_num_threads())
};

struct TimeForwardArgs {
  StridedSteps h;
  const void* q;            // (B, H)
  const int64_t* lengths;   // (B,)
  void* out;                // (B, H)
  void* lse;                // (B,) logsumexp of the valid scores
  Sizes size;
};

struct TimeBackwardArgs {
  const void* grad_out;     // (B, H)
  StridedSteps h;
  const void* q;            // (B, H)
  const int64_t* lengths;   // (B,)
  const void* out;          // (B, H) forward output
  const void* lse;          // (B,)
  void* grad_h;             // (B, T, H) contiguous; zero on padded steps
  void* grad_q;             // (B, H)
  Sizes size;
};

// Feature attention runs on packed steps: the valid steps of all rows, row after row, as one
// (N, H) matrix (N = sum of lengths), so that its four matrix products are plain GEMMs that the
// Python launcher hands to torch.mm. The kernels below are everything between those GEMMs.
struct PackArgs {           // packed (N, H) <- the valid steps of h
  StridedSteps h;
  const int64_t* lengths;   // (B,)
  void* packed;             // (N, H) contiguous
  Sizes size;
};

struct UnpackArgs {         // out (B, T, H) <- packed, zero on padded steps
  const void* packed;       // (N, H) contiguous
  const int64_t* lengths;   // (B,)
  void* out;                // (B, T, H) contiguous
  Sizes size;
};

struct SoftmaxPoolArgs {    // a = softmax over features of each score row (in place);
  void* scores;             //   (N, H) in: s = V u_t, out: a
  const void* packed_h;     // (N, H)
  const int64_t* lengths;   // (B,)
  void* out;                // (B, H) out[b] = sum over row b's steps of a_t * h_t
  Sizes size;
};

struct SoftmaxBackwardArgs {
  const void* weights;      // (N, H) a
  const void* packed_h;     // (N, H)
  const void* grad_out;     // (B, H) g
  const int64_t* lengths;   // (B,)
  void* grad_scores;        // (N, H) ds = a * (g*h - sum(a * g*h))
  void* grad_h;             // (N, H) g * a (the direct term of dh)
  Sizes size;
};

struct TanhBackwardArgs {   // du <- du * (1 - u^2), elementwise over count elements
  void* grad;               // du, in place
  const void* tanh_out;     // u
  int64_t count;
  Sizes size;
};

// Entry points of one instruction set; index 0 computes in float, index 1 in double.
struct KernelTable {
  const char* isa;
  void (*time_forward[2])(const TimeForwardArgs&);
  void (*time_backward[2])(const TimeBackwardArgs&);
  void (*pack[2])(const PackArgs&);
  void (*unpack[2])(const UnpackArgs&);
  void (*softmax_pool[2])(const SoftmaxPoolArgs&);
  void (*softmax_backward[2])(const SoftmaxBackwardArgs&);
  void (*tanh_backward[2])(const TanhBackwardArgs&);
};

#if defined(__x86_64__) || defined(_M_X64)
namespace avx512 { const KernelTable& kernel_table(); }
namespace avx2 { const KernelTable& kernel_table(); }
#endif
namespace baseline { const KernelTable& kernel_table(); }

}  // namespace sed_cpu
