// Shared pieces of the CUDA kernels: element types and their fp32/fp64 accumulator, warp
// reductions, error checks, the device guard and the dtype dispatch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "launchers.h"

namespace sed_cuda {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpSize = 32;

// Accumulator type: float for float/half/bfloat16 inputs, double for double.
template <class T>
struct AccumulatorOf {
  using type = float;
};
template <>
struct AccumulatorOf<double> {
  using type = double;
};
template <class T>
using acc_t = typename AccumulatorOf<T>::type;

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_acc(acc_t<T> x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <>
__device__ __forceinline__ double from_acc<double>(double x) { return x; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Accurate (not the fast-math intrinsic) exp, log and tanh in the accumulator type.
__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float log_acc(float x) { return logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }
__device__ __forceinline__ float tanh_acc(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_acc(double x) { return tanh(x); }

// Product rounded to the accumulator type, never fused into a following add.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <class A>
__device__ __forceinline__ A negative_infinity();
template <>
__device__ __forceinline__ float negative_infinity<float>() { return -INFINITY; }
template <>
__device__ __forceinline__ double negative_infinity<double>() { return -static_cast<double>(INFINITY); }

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

template <class A>
__device__ __forceinline__ A warp_max(A v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v = fmax(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// dh = 0 on the padded steps t >= lengths[b] of a contiguous (B, T, H) buffer.
template <class T>
__global__ void zero_padded_steps(T* grad_h, const int64_t* lengths, int64_t batch, int64_t steps,
                                  int64_t hidden) {
  const int64_t total = batch * steps * hidden;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row_step = idx / hidden;
    if (row_step % steps >= lengths[row_step / steps]) grad_h[idx] = from_acc<T>(acc_t<T>(0));
  }
}

// lengths[b] clamped to [0, steps]: the op does not read lengths on the host for CUDA tensors
// (no device sync per call), so the kernels never trust a length beyond the buffer.
__device__ __forceinline__ int64_t clamped_length(const int64_t* lengths, int64_t b,
                                                  int64_t steps) {
  const int64_t length = lengths[b];
  return length < 0 ? 0 : (length > steps ? steps : length);
}

inline int grid_stride_blocks(int64_t elements, int threads) {
  const int64_t blocks = (elements + threads - 1) / threads;
  return int(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

// ---- host side ---------------------------------------------------------------------------

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("sed_kernels._cuda: ") + what + " failed: " +
                             cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
}

// gridDim.x of a one-dimensional grid of `blocks` CTAs (at most 2^31 - 1), else a clear error.
inline unsigned one_dimensional_grid(int64_t blocks, const char* name) {
  if (blocks < 1 || blocks > int64_t(0x7fffffff))
    throw std::runtime_error(std::string("sed_kernels._cuda: ") + name + " needs " +
                             std::to_string(blocks) + " thread blocks; at most 2^31 - 1 fit a grid");
  return unsigned(blocks);
}

// Every kernel launch is followed by this (launch-configuration errors, missing kernel image
// for this GPU's architecture, ...).
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// Makes `device` current for the launches of one call, restoring the previous device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int current = previous_;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

inline cudaStream_t stream_of(const Launch& launch) {
  return reinterpret_cast<cudaStream_t>(launch.stream);
}

// Calls f(T{}) with T the element type of `dtype`.
template <class F>
void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::float32: f(float{}); return;
    case DType::float16: f(__half{}); return;
    case DType::bfloat16: f(__nv_bfloat16{}); return;
    case DType::float64: f(double{}); return;
  }
  throw std::runtime_error("sed_kernels._cuda: unknown dtype");
}

inline int64_t accumulator_bytes(DType dtype) { return dtype == DType::float64 ? 8 : 4; }

// Dynamic shared memory above 48 KiB must be requested per kernel; fails clearly when the
// device has less than `bytes` per block. The device limit and the largest size already set
// per (kernel, device) are cached, so a call costs cudaFuncSetAttribute only when a kernel
// needs more than before on that device (not on every call).
inline std::mutex& shared_memory_mutex() {
  static std::mutex mutex;
  return mutex;
}

template <class Kernel>
void request_shared_memory(Kernel kernel, int64_t bytes, int device, const char* name) {
  static_assert(sizeof(Kernel) == sizeof(const void*), "a __global__ function pointer");
  static std::map<int, int> limits;                                // device -> opt-in limit
  static std::map<std::pair<const void*, int>, int64_t> granted;  // (kernel, device) -> bytes
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device);
  std::lock_guard<std::mutex> lock(shared_memory_mutex());
  if (bytes <= 48 * 1024) return;  // the default limit of every GPU since sm_20
  const auto known = granted.find(key);
  if (known != granted.end() && known->second >= bytes) return;
  auto found = limits.find(device);
  if (found == limits.end()) {
    int value = 0;
    check(cudaDeviceGetAttribute(&value, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
          "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
    found = limits.emplace(device, value).first;
  }
  const int limit = found->second;
  if (bytes > limit)
    throw std::runtime_error(std::string("sed_kernels._cuda: ") + name + " needs " +
                             std::to_string(bytes) + " bytes of shared memory per block for these "
                             "sizes, the device allows " + std::to_string(limit) +
                             "; use the 'triton' or 'reference' backend for such large H / d_a");
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
        "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  granted[key] = bytes;
}

}  // namespace sed_cuda
