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

struct FeatureForwardArgs {
  StridedSteps h;
  const void* W;            // (d_a, H)
  const void* V;            // (H, d_a)
  const int64_t* lengths;   // (B,)
  void* out;                // (B, H)
  Sizes size;
};

struct FeatureBackwardArgs {
  const void* grad_out;     // (B, H)
  StridedSteps h;
  const void* W;            // (d_a, H)
  const void* V;            // (H, d_a)
  const int64_t* lengths;   // (B,)
  void* grad_h;             // (B, T, H) contiguous; zero on padded steps
  void* grad_W;             // (d_a, H)
  void* grad_V;             // (H, d_a)
  Sizes size;
};

// Entry points of one instruction set; index 0 computes in float, index 1 in double.
struct KernelTable {
  const char* isa;
  void (*time_forward[2])(const TimeForwardArgs&);
  void (*time_backward[2])(const TimeBackwardArgs&);
  void (*feature_forward[2])(const FeatureForwardArgs&);
  void (*feature_backward[2])(const FeatureBackwardArgs&);
};

#if defined(__x86_64__) || defined(_M_X64)
namespace avx512 { const KernelTable& kernel_table(); }
namespace avx2 { const KernelTable& kernel_table(); }
#endif
namespace baseline { const KernelTable& kernel_table(); }

}  // namespace sed_cpu
