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

// Lanes of one SIMD register of floats for the instruction set of this translation unit;
// FloatVec/IntVec are such registers (GCC vector extensions).
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

SED_ALWAYS_INLINE int32_t truncate_to_int(float x) { return static_cast<int32_t>(x); }
SED_ALWAYS_INLINE IntVec truncate_to_int(FloatVec x) { return __builtin_convertvector(x, IntVec); }

// exp(x) of a float (F = float) or of every lane of a register (F = FloatVec): Cephes' range
// reduction and degree-5 polynomial, about 1 ulp on [-87, 88]; inputs are clamped to that
// range, so exp(-inf) gives 1.6e-38 instead of 0 (harmless in a softmax, where it multiplies
// finite values). libm's expf does not vectorise without -ffast-math; and inside loops GCC 12
// turns the scalar clamps into branches to constant results (exp(-87) is known at compile
// time), which leaves such loops scalar: hot loops call the FloatVec form on whole registers.
template <class F>
SED_ALWAYS_INLINE F exp_approx(F x) {
  const F lo = -87.0f - F{}, hi = 88.0f - F{};  // - F{}: broadcast to every lane
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (exact for |n| < 2^22).
  const F n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  F r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  F p = 1.9875691500e-4f - F{};
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const auto bits = (truncate_to_int(n) + 127) << 23;  // 2^n, n in [-126, 127]
  // A bit cast, not memcpy: GCC does not vectorise loops around the memcpy's temporary.
  return p * __builtin_bit_cast(F, bits);
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
