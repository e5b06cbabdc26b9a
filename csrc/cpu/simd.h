// Vector types, vectorisable exp/tanh and the register-blocked matmul micro-kernel of the
// CPU kernels. Included by kernels.cpp only, which is compiled once per instruction set
// (see kernels.h): everything here has internal linkage, so no inline function compiled
// with AVX-512 can be picked by the linker for a translation unit built for a lesser
// instruction set. For the same reason these files use no C++ standard library templates,
// only compiler builtins and C functions.
#pragma once

#include <cstdint>

namespace {

#define SED_ALWAYS_INLINE inline __attribute__((always_inline))

// Width of one SIMD register for the instruction set this translation unit targets.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;  // SSE2 (x86-64 baseline) or NEON (aarch64)
#endif

// GCC/Clang vector extensions: arithmetic on `Vec<T>::type` compiles to one SIMD
// instruction per register; `Unaligned` is the same type for loads and stores at any
// element-aligned address (may_alias: it reads memory written as plain T).
template <class T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
  typedef float Unaligned __attribute__((vector_size(kVectorBytes), aligned(4), may_alias));
  static constexpr int lanes = kVectorBytes / 4;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
  typedef double Unaligned __attribute__((vector_size(kVectorBytes), aligned(8), may_alias));
  static constexpr int lanes = kVectorBytes / 8;
};

template <class T>
SED_ALWAYS_INLINE typename Vec<T>::type load(const T* p) {
  return *reinterpret_cast<const typename Vec<T>::Unaligned*>(p);
}
template <class T>
SED_ALWAYS_INLINE void store(T* p, typename Vec<T>::type v) {
  *reinterpret_cast<typename Vec<T>::Unaligned*>(p) = v;
}

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
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// tanh(x) for float, vectorisable: Cephes' odd polynomial for |x| < 0.625 (where
// 1 - 2 / (exp(2|x|) + 1) would lose relative precision), the exp form above it.
SED_ALWAYS_INLINE float tanh_approx(float x) {
  const float ax = __builtin_fabsf(x);
  const float z = x * x;
  const float small =
      ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
        1.33314422036e-1f) * z - 3.33332819422e-1f) * z * ax + ax;
  const float large = 1.0f - 2.0f / (exp_approx(2.0f * ax) + 1.0f);
  return __builtin_copysignf(ax < 0.625f ? small : large, x);
}

// Elementwise math per compute type: the approximations above for float, libm for double
// (float64 is for gradient checks, where accuracy matters more than speed).
template <class T>
struct Math;
template <>
struct Math<float> {
  static SED_ALWAYS_INLINE float exp(float x) { return exp_approx(x); }
  static SED_ALWAYS_INLINE float tanh(float x) { return tanh_approx(x); }
  static SED_ALWAYS_INLINE float log(float x) { return __builtin_logf(x); }
  static constexpr float neg_inf = -__builtin_inff();
};
template <>
struct Math<double> {
  static SED_ALWAYS_INLINE double exp(double x) { return __builtin_exp(x); }
  static SED_ALWAYS_INLINE double tanh(double x) { return __builtin_tanh(x); }
  static SED_ALWAYS_INLINE double log(double x) { return __builtin_log(x); }
  static constexpr double neg_inf = -__builtin_inf();
};

// ---------------------------------------------------------------------------------------
// Matmul micro-kernel. C (kRowsPerTile x kPanelWidth) (+)= sum_k A(i, k) * B(k, :), with
// the C tile in 2 * kRowsPerTile vector registers. A(i, k) = A[i * a_row + k * a_col]
// (so A may be stored transposed), B rows are contiguous with row stride ldb: either a
// packed weight panel (ldb = kPanelWidth) or a row-major activation buffer.
constexpr int kRowsPerTile = 6;

template <class T>
constexpr int panel_width() {
  return 2 * Vec<T>::lanes;
}

template <class T, bool Accumulate>
SED_ALWAYS_INLINE void micro_tile(int64_t K, const T* A, int64_t a_row, int64_t a_col,
                                  const T* B, int64_t ldb, T* C, int64_t ldc) {
  typedef typename Vec<T>::type V;
  constexpr int W = Vec<T>::lanes;
  V acc[kRowsPerTile][2];
#pragma GCC unroll 8
  for (int i = 0; i < kRowsPerTile; ++i) {
    acc[i][0] = Accumulate ? load(C + i * ldc) : V{};
    acc[i][1] = Accumulate ? load(C + i * ldc + W) : V{};
  }
  for (int64_t k = 0; k < K; ++k) {
    const V b0 = load(B + k * ldb);
    const V b1 = load(B + k * ldb + W);
#pragma GCC unroll 8
    for (int i = 0; i < kRowsPerTile; ++i) {
      const T a = A[i * a_row + k * a_col];
      acc[i][0] += a * b0;
      acc[i][1] += a * b1;
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < kRowsPerTile; ++i) {
    store(C + i * ldc, acc[i][0]);
    store(C + i * ldc + W, acc[i][1]);
  }
}

// Packs B (K x N), B(k, n) = src[k * k_stride + n * n_stride], into panels of
// panel_width<T>() columns: dst[p][k][w] = B(k, p * width + w), zero past column N.
// The matmuls then stream each panel contiguously.
template <class T>
void pack_panels(const T* src, int64_t k_stride, int64_t n_stride, int64_t K, int64_t N,
                 T* dst) {
  constexpr int width = panel_width<T>();
  const int64_t panels = (N + width - 1) / width;
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t k = 0; k < K; ++k)
      for (int w = 0; w < width; ++w) {
        const int64_t n = p * width + w;
        dst[(p * K + k) * width + w] = n < N ? src[k * k_stride + n * n_stride] : T(0);
      }
}

// C (M x panels*width, row stride ldc) (+)= A (M x K, row stride lda) @ packed B.
// M must be a multiple of kRowsPerTile (callers pad their row blocks with zero rows).
template <class T, bool Accumulate>
void matmul_packed(int64_t M, int64_t K, const T* A, int64_t lda, const T* B_packed,
                   int64_t panels, T* C, int64_t ldc) {
  constexpr int width = panel_width<T>();
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t i = 0; i < M; i += kRowsPerTile)
      micro_tile<T, Accumulate>(K, A + i * lda, lda, 1, B_packed + p * K * width, width,
                                C + i * ldc + p * width, ldc);
}

// C (M x panels*width) += A^T @ B where A is stored (K x M, row stride lda) and B is
// (K x panels*width, row stride ldb): the rank-K update of a weight gradient by one block
// of K steps. M must be a multiple of kRowsPerTile.
template <class T>
void matmul_transposed_accumulate(int64_t M, int64_t K, const T* A, int64_t lda, const T* B,
                                  int64_t ldb, int64_t panels, T* C, int64_t ldc) {
  constexpr int width = panel_width<T>();
  for (int64_t i = 0; i < M; i += kRowsPerTile)
    for (int64_t p = 0; p < panels; ++p)
      micro_tile<T, true>(K, A + i, 1, lda, B + p * width, ldb, C + i * ldc + p * width, ldc);
}

}  // namespace
