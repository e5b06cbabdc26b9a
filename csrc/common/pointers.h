// Pointer and stride plumbing shared by the pybind11 bindings of both native modules:
// Python passes tensor.data_ptr() as an integer and h's element strides separately.
#pragma once

#include <cstdint>

namespace sed_bindings {

// The address of a tensor's data as a typed pointer.
template <class P>
P ptr(std::uintptr_t address) {
  return reinterpret_cast<P>(address);
}

// h (B, T, H) as the kernels take it: data pointer and element strides. Steps is each
// module's StridedSteps struct ({data, stride_b, stride_t, stride_h}).
template <class Steps>
Steps strided_steps(std::uintptr_t h, int64_t stride_b, int64_t stride_t, int64_t stride_h) {
  return Steps{ptr<const void*>(h), stride_b, stride_t, stride_h};
}

}  // namespace sed_bindings
