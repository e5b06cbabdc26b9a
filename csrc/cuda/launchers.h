// Host entry points of the CUDA kernels (time_attention.cu, feature_attention.cu), called by
// the pybind11 module (bindings.cpp). Plain C++ types only, so bindings.cpp compiles without
// the CUDA headers; tensors are device addresses with sizes and element strides, and every
// launch goes to the caller's stream (the integer handle of a cudaStream_t) on `device`.
//
// Conventions: h (B, T, H) has arbitrary element strides; every other tensor is contiguous;
// lengths is int64 on the device, values in [1, T]; padded steps of h are never read.
// Workspaces are device buffers of the accumulator type (float32, float64 for float64
// inputs) with the element counts the *_workspace functions return, allocated by the caller
// (feature_backward's must be zero-filled). Errors, including failed launches
// (cudaGetLastError after every launch), are thrown as std::runtime_error.
#pragma once

#include <cstdint>

namespace sed_cuda {

enum class DType { float32, float16, bfloat16, float64 };

struct Launch {
  int device;
  std::uintptr_t stream;
};

struct StridedSteps {
  const void* data;
  int64_t stride_b, stride_t, stride_h;
};

// ---- time attention ----
int64_t time_attention_workspace(int64_t batch, int64_t steps, int64_t hidden, DType dtype);

// out (B, H) in the input dtype, lse (B,) in the accumulator type.
void time_attention_forward(DType dtype, StridedSteps h, const void* q, const int64_t* lengths,
                            void* out, void* lse, void* workspace, int64_t batch, int64_t steps,
                            int64_t hidden, Launch launch);

// grad_h (B, T, H) contiguous (zero on padded steps), grad_q (B, H), in the input dtype;
// lse in the accumulator type.
void time_attention_backward(DType dtype, const void* grad_out, StridedSteps h, const void* q,
                             const int64_t* lengths, const void* out, const void* lse,
                             void* grad_h, void* grad_q, void* workspace, int64_t batch,
                             int64_t steps, int64_t hidden, Launch launch);

// ---- feature attention ----
// W_t = W^T (H, d_a) and V_t = V^T (d_a, H) contiguous, prepared by the caller.
int64_t feature_attention_forward_workspace(int64_t batch, int64_t steps, int64_t hidden);
int64_t feature_attention_backward_workspace(int64_t batch, int64_t steps, int64_t hidden,
                                             int64_t attention, DType dtype);

void feature_attention_forward(DType dtype, StridedSteps h, const void* W_t, const void* V_t,
                               const int64_t* lengths, void* out, void* workspace, int64_t batch,
                               int64_t steps, int64_t hidden, int64_t attention, bool tf32,
                               Launch launch);

void feature_attention_backward(DType dtype, const void* grad_out, StridedSteps h, const void* W,
                                const void* V, const void* W_t, const void* V_t,
                                const int64_t* lengths, void* grad_h, void* grad_W, void* grad_V,
                                void* workspace, int64_t batch, int64_t steps, int64_t hidden,
                                int64_t attention, bool tf32, Launch launch);

}  // namespace sed_cuda
