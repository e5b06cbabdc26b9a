// Elementwise math of the CPU kernels, written so that `#pragma omp simd` loops vectorise
// it. Included by kernels.cpp only, which is compiled once per instruction set (see
// kernels.h): everything here has internal linkage, so no inline function compiled with
// AVX-512 can be picked by the linker for a translation unit built for a lesser one. For
// the same reason these files use no C++ standard library templates, only compiler builtins
// and C functions.
#pragma once

#include <cstdint>

namespace {

#define SED_ALWAYS_INLINE inline __attribute__((always_inline))

// exp(x) for float, written so that `#pragma omp simd` loops vectorise it (libm's expf
// does not vectorise without -ffast-math). Cephes' range reduction and degree-5
// polynomial: about 1 ulp on [-87, 88]; inputs are clamped to that range, so exp(-inf)
// gives 1.6e-38 instead of 0 (harmless in a softmax, where it multiplies finite values).
SED_ALWAYS_INLINE float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (exact for |n| < 2^22).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 127]
  // A bit cast, not memcpy: GCC does not vectorise loops around the memcpy's temporary.
  return p * __builtin_bit_cast(float, bits);
}

// The same exp on a whole SIMD register (GCC vector extensions). Written out because GCC 12
// turns the clamps of the scalar version into branches to constant results inside loops
// (exp(-87) is known at compile time), which leaves those loops scalar.
#if defined(__AVX512F__)
constexpr int kFloatLanes = 16;
#elif defined(__AVX__)
constexpr int kFloatLanes = 8;
#else
constexpr int kFloatLanes = 4;  // SSE2 (x86-64 baseline) or NEON (aarch64)
#endif
typedef float FloatVec __attribute__((vector_size(4 * kFloatLanes)));
typedef int32_t IntVec __attribute__((vector_size(4 * kFloatLanes)));

SED_ALWAYS_INLINE FloatVec load_floats(const float* p) {
  FloatVec v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
SED_ALWAYS_INLINE void store_floats(float* p, FloatVec v) { __builtin_memcpy(p, &v, sizeof(v)); }

SED_ALWAYS_INLINE FloatVec exp_approx(FloatVec x) {
  const FloatVec lo = -87.0f - FloatVec{}, hi = 88.0f - FloatVec{};
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const FloatVec n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  FloatVec r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  FloatVec p = 1.9875691500e-4f - FloatVec{};
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const IntVec bits = (__builtin_convertvector(n, IntVec) + 127) << 23;
  return p * __builtin_bit_cast(FloatVec, bits);
}

SED_ALWAYS_INLINE float horizontal_sum(FloatVec v) {
  float sum = 0.0f;
  for (int i = 0; i < kFloatLanes; ++i) sum += v[i];
  return sum;
}

// Elementwise math per compute type: the approximations above for float, libm for double
// (float64 is for gradient checks, where accuracy matters more than speed).
template <class T>
struct Math;
template <>
struct Math<float> {
  static SED_ALWAYS_INLINE float exp(float x) { return exp_approx(x); }
  static SED_ALWAYS_INLINE float log(float x) { return __builtin_logf(x); }
  static constexpr float neg_inf = -__builtin_inff();
};
template <>
struct Math<double> {
  static SED_ALWAYS_INLINE double exp(double x) { return __builtin_exp(x); }
  static SED_ALWAYS_INLINE double log(double x) { return __builtin_log(x); }
  static constexpr double neg_inf = -__builtin_inf();
};

}  // namespace
