// The compiled edit path: one call per edit does, layer by layer, what `IncrementalEngine._layer`
// and `Block.finish` do in torch (engine/incremental.py is the reference, and its docstring the
// algorithm): projections of the dirty rows, the running softmax update of every other row,
// full attention rows, codebook decisions with slack skipping, output projection and MLP.
//
// Why compiled: an edit touches a handful of rows, where torch pays dispatch on ~1,300 small
// operations and MKL's small products stream the weights at a fraction of the bandwidth.
// Here the linears read weights packed in panels of 16 output columns, so each weight is loaded
// once per edit and multiplied into every dirty row held in registers (ARCHITECTURE.md has the
// measurements that chose this over numba and torch).
//
// Shapes as in engine/model.py: S slots, T tokens in use (slots [0, T)), D model width, H heads,
// Dh head width, F MLP width, G groups per head, Q = H·G codes per token, Dg = Dh / G, K
// codewords per group; R rows of a call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace py = pybind11;

namespace {

constexpr int PANEL = 16;           // output columns per weight panel
constexpr int ROW_BLOCK = 8;        // rows multiplied at once, their accumulators in registers
constexpr float EXP_FLOOR = -80.0f;  // as in incremental.py
constexpr float CANCELLATION = 0.8f;
constexpr float TIE = 1e-3f;
enum Decision : char { NONE, NEAREST, RULE, PAST_SLACK };  // how a row's codes are decided

// ---- linears: y (R, O) = x (R, I) · W (I, O) + b, W packed as (ceil(O/16), I, 16) panels ----
//
// Weights are stored as float32, bfloat16 (the top half of a float32) or int8 with a scale per
// output column, whichever the model's weights were rounded to (engine/weights.py): the
// values are the same as the torch model's, only smaller, so that the ~10-20 MB of a
// MiniLM's linears stay in the last-level cache between edits instead of streaming from memory.
// Activations and sums stay float32.

enum class Format { FLOAT32, BFLOAT16, INT8 };

struct Linear {
  Format format = Format::FLOAT32;
  int in = 0, out = 0, panels = 0;
  std::vector<float> w32;     // (panels, I, 16) float32, zero past O
  std::vector<uint16_t> w16;  // (panels, I, 16) bfloat16 bits
  std::vector<int8_t> w8;     // (panels, I, 16) int8, times `scale` per column
  std::vector<float> scale;   // (panels·16,) 1 unless int8
  std::vector<float> bias;    // (panels·16,), zero past O
};

Format parse_format(const std::string& name) {
  if (name == "float32") return Format::FLOAT32;
  if (name == "bfloat16") return Format::BFLOAT16;
  if (name == "int8") return Format::INT8;
  throw std::invalid_argument("unknown weight format " + name);
}

// weight (O, I) as torch stores it, already rounded to `format`; bias (O,).
Linear pack(py::array_t<float, py::array::c_style | py::array::forcecast> weight,
            py::array_t<float, py::array::c_style | py::array::forcecast> bias, Format format) {
  if (weight.ndim() != 2 || bias.ndim() != 1 || bias.shape(0) != weight.shape(0))
    throw std::invalid_argument("a linear needs a (out, in) weight and an (out,) bias");
  Linear l;
  l.format = format;
  l.out = int(weight.shape(0));
  l.in = int(weight.shape(1));
  l.panels = (l.out + PANEL - 1) / PANEL;
  const size_t n = size_t(l.panels) * l.in * PANEL;
  l.scale.assign(size_t(l.panels) * PANEL, 1.0f);
  l.bias.assign(size_t(l.panels) * PANEL, 0.0f);
  if (format == Format::FLOAT32) l.w32.assign(n, 0.0f);
  if (format == Format::BFLOAT16) l.w16.assign(n, 0);
  if (format == Format::INT8) l.w8.assign(n, 0);
  auto w = weight.unchecked<2>();
  for (int o = 0; o < l.out; ++o) {
    l.bias[o] = bias.data()[o];
    float largest = 0;
    for (int i = 0; i < l.in; ++i) largest = std::max(largest, std::fabs(w(o, i)));
    if (format == Format::INT8 && largest > 0) l.scale[o] = largest / 127;
    for (int i = 0; i < l.in; ++i) {
      const size_t at = (size_t(o / PANEL) * l.in + i) * PANEL + o % PANEL;
      const float value = w(o, i);
      uint32_t bits;
      std::memcpy(&bits, &value, sizeof(bits));
      switch (format) {
        case Format::FLOAT32: l.w32[at] = value; break;
        case Format::BFLOAT16:
          if (bits & 0xFFFF) throw std::invalid_argument("weights are not rounded to bfloat16");
          l.w16[at] = uint16_t(bits >> 16);
          break;
        case Format::INT8: {
          const float level = std::nearbyint(value / l.scale[o]);
          if (std::fabs(level * l.scale[o] - value) > 1e-6f * largest)
            throw std::invalid_argument("weights are not rounded to int8 per output column");
          l.w8[at] = int8_t(level);
          break;
        }
      }
    }
  }
  return l;
}

#if defined(__x86_64__)
// 16 weights widened to float32.
__attribute__((target("avx512f"))) inline __m512 widen16(const float* w) {
  return _mm512_loadu_ps(w);
}
__attribute__((target("avx512f"))) inline __m512 widen16(const uint16_t* w) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)w));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
__attribute__((target("avx512f"))) inline __m512 widen16(const int8_t* w) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)w)));
}

// N rows through every panel, their 16 sums each in one AVX-512 register.
template <int N, typename W>
__attribute__((target("avx512f"))) void panel_rows_avx512(const Linear& l, const W* weights,
                                                          const float* x, int ldx, float* y,
                                                          int ldy) {
  for (int p = 0; p < l.panels; ++p) {
    __m512 acc[N];
#pragma GCC unroll 8
    for (int r = 0; r < N; ++r) acc[r] = _mm512_setzero_ps();
    const W* w = weights + size_t(p) * l.in * PANEL;
    for (int i = 0; i < l.in; ++i) {
      const __m512 wv = widen16(w + size_t(i) * PANEL);
#pragma GCC unroll 8
      for (int r = 0; r < N; ++r)
        acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * ldx + i]), wv, acc[r]);
    }
    const __m512 scale = _mm512_loadu_ps(l.scale.data() + p * PANEL);
    const __m512 bias = _mm512_loadu_ps(l.bias.data() + p * PANEL);
#pragma GCC unroll 8
    for (int r = 0; r < N; ++r)
      _mm512_storeu_ps(y + r * ldy + p * PANEL, _mm512_fmadd_ps(acc[r], scale, bias));
  }
}

// 8 weights widened to float32.
inline __m256 widen8(const float* w) { return _mm256_loadu_ps(w); }
inline __m256 widen8(const uint16_t* w) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
inline __m256 widen8(const int8_t* w) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)w)));
}

// The same with AVX2: a panel's 16 sums in two registers per row.
template <int N, typename W>
void panel_rows_avx2(const Linear& l, const W* weights, const float* x, int ldx, float* y,
                     int ldy) {
  for (int p = 0; p < l.panels; ++p) {
    __m256 lo[N], hi[N];
#pragma GCC unroll 8
    for (int r = 0; r < N; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
    const W* w = weights + size_t(p) * l.in * PANEL;
    for (int i = 0; i < l.in; ++i) {
      const __m256 w0 = widen8(w + size_t(i) * PANEL), w1 = widen8(w + size_t(i) * PANEL + 8);
#pragma GCC unroll 8
      for (int r = 0; r < N; ++r) {
        const __m256 xi = _mm256_set1_ps(x[r * ldx + i]);
        lo[r] = _mm256_fmadd_ps(xi, w0, lo[r]);
        hi[r] = _mm256_fmadd_ps(xi, w1, hi[r]);
      }
    }
    const float* scale = l.scale.data() + p * PANEL;
    const float* bias = l.bias.data() + p * PANEL;
#pragma GCC unroll 8
    for (int r = 0; r < N; ++r) {
      float* out = y + r * ldy + p * PANEL;
      _mm256_storeu_ps(out, _mm256_fmadd_ps(lo[r], _mm256_loadu_ps(scale),
                                            _mm256_loadu_ps(bias)));
      _mm256_storeu_ps(out + 8, _mm256_fmadd_ps(hi[r], _mm256_loadu_ps(scale + 8),
                                                _mm256_loadu_ps(bias + 8)));
    }
  }
}
#endif

inline float widen(float w) { return w; }
inline float widen(int8_t w) { return float(w); }
inline float widen(uint16_t w) {
  const uint32_t bits = uint32_t(w) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// Portable: plain loops (architectures without AVX2).
template <int N, typename W>
void panel_rows_portable(const Linear& l, const W* weights, const float* x, int ldx, float* y,
                         int ldy) {
  for (int p = 0; p < l.panels; ++p) {
    float acc[N][PANEL] = {};
    const W* w = weights + size_t(p) * l.in * PANEL;
    for (int i = 0; i < l.in; ++i)
      for (int r = 0; r < N; ++r)
        for (int j = 0; j < PANEL; ++j) acc[r][j] += x[r * ldx + i] * widen(w[i * PANEL + j]);
    for (int r = 0; r < N; ++r)
      for (int j = 0; j < PANEL; ++j)
        y[r * ldy + p * PANEL + j] = acc[r][j] * l.scale[p * PANEL + j] + l.bias[p * PANEL + j];
  }
}

bool has_avx512() {
#if defined(__x86_64__)
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
#else
  return false;
#endif
}

template <int N, typename W>
void rows_block(const Linear& l, const W* w, const float* x, int ldx, float* y, int ldy) {
#if defined(__x86_64__)
  if (has_avx512()) return panel_rows_avx512<N>(l, w, x, ldx, y, ldy);
  return panel_rows_avx2<N>(l, w, x, ldx, y, ldy);
#else
  panel_rows_portable<N>(l, w, x, ldx, y, ldy);
#endif
}

template <typename W>
void linear(const Linear& l, const W* w, const float* x, int rows, int ldx, float* y, int ldy) {
  int r = 0;
  for (; r + ROW_BLOCK <= rows; r += ROW_BLOCK)
    rows_block<ROW_BLOCK>(l, w, x + r * ldx, ldx, y + r * ldy, ldy);
  const float* xr = x + r * ldx;
  float* yr = y + r * ldy;
  switch (rows - r) {
    case 7: rows_block<7>(l, w, xr, ldx, yr, ldy); break;
    case 6: rows_block<6>(l, w, xr, ldx, yr, ldy); break;
    case 5: rows_block<5>(l, w, xr, ldx, yr, ldy); break;
    case 4: rows_block<4>(l, w, xr, ldx, yr, ldy); break;
    case 3: rows_block<3>(l, w, xr, ldx, yr, ldy); break;
    case 2: rows_block<2>(l, w, xr, ldx, yr, ldy); break;
    case 1: rows_block<1>(l, w, xr, ldx, yr, ldy); break;
    default: break;
  }
}

// y rows have stride ldy ≥ panels·16 (the padded columns are written too).
void linear(const Linear& l, const float* x, int rows, int ldx, float* y, int ldy) {
  switch (l.format) {
    case Format::FLOAT32: return linear(l, l.w32.data(), x, rows, ldx, y, ldy);
    case Format::BFLOAT16: return linear(l, l.w16.data(), x, rows, ldx, y, ldy);
    case Format::INT8: return linear(l, l.w8.data(), x, rows, ldx, y, ldy);
  }
}

int padded(int width) { return (width + PANEL - 1) / PANEL * PANEL; }

void layer_norm(float* x, int width, const std::vector<float>& gain,
                const std::vector<float>& shift, float eps) {
  double mean = 0;  // (width,) in place; statistics as torch takes them, in float32 terms
  for (int d = 0; d < width; ++d) mean += x[d];
  const float mu = float(mean / width);
  double var = 0;
  for (int d = 0; d < width; ++d) var += double(x[d] - mu) * (x[d] - mu);
  const float inv = 1.0f / std::sqrt(float(var / width) + eps);
  for (int d = 0; d < width; ++d) x[d] = (x[d] - mu) * inv * gain[d] + shift[d];
}

// ---- small vector helpers: attention rows, softmax, codebook distances ----

// Eight floats in a register (AVX2). GCC's loop vectoriser leaves the small fixed-size sums of
// this file scalar, so they are written on these types. Loads and stores go through memcpy
// (unaligned).
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));

inline f8 load8(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store8(float* p, f8 v) { std::memcpy(p, &v, sizeof(v)); }

// exp(max(x, EXP_FLOOR)) of eight floats, branch-free (std::exp is a scalar call per element,
// which made attention rows 10x slower than torch's). Cephes' expf: x = n·ln2 + r with n the
// nearest integer, exp(r) by a degree-6 polynomial, 2^n through the exponent bits; ~1 ulp.
inline f8 exp8(f8 x) {
  x = x < EXP_FLOOR ? EXP_FLOOR : x;
  x = x > 88.0f ? 88.0f : x;
  const f8 whole = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const f8 r = x - whole * 0.693359375f + whole * 2.12194440e-4f;
  f8 p = 1.9875691500e-4f * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const f8 e = p * r * r + r + 1.0f;
  const i8 bits = (__builtin_convertvector(whole, i8) + 127) << 23;
  f8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return e * scale;
}

// GELU, x·(1 + erf(x/√2))/2, of eight floats (std::erf is a scalar call, ~5% of an edit).
// erf by Abramowitz & Stegun 7.1.26: 1 − t·P(t)·exp(−z²), t = 1/(1 + 0.3275911·|z|), absolute
// error under 1.5e-7.
inline f8 gelu8(f8 x) {
  const f8 z = x * 0.70710678118654752f;
  const f8 a = z < 0 ? -z : z;
  const f8 t = 1.0f / (1.0f + 0.3275911f * a);
  f8 p = 1.061405429f * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const f8 magnitude = 1.0f - p * t * exp8(-a * a);
  const f8 erf = z < 0 ? -magnitude : magnitude;
  return 0.5f * x * (1.0f + erf);
}

// x = exp(max(x, EXP_FLOOR)) over an array, eight at a time.
inline void exp_floor(float* x, int n) {
  int j = 0;
  for (; j + 8 <= n; j += 8) store8(x + j, exp8(load8(x + j)));
  if (j < n) {
    float rest[8] = {};
    std::memcpy(rest, x + j, (n - j) * sizeof(float));
    store8(rest, exp8(load8(rest)));
    std::memcpy(x + j, rest, (n - j) * sizeof(float));
  }
}

// scores (NP,) = Σ_d q[d]·keys[d, :] for keys transposed (Dh, NP), NP a multiple of 16: each
// block of 16 summed in registers, in two chains each so that the multiply-adds do not wait on each
// other.
void scores(const float* q, const float* keys, int dh, int np, float* out) {
  for (int j0 = 0; j0 < np; j0 += 16) {
    f8 a0 = {}, a1 = {}, b0 = {}, b1 = {};
    int d = 0;
    for (; d + 2 <= dh; d += 2) {
      const float* k0 = keys + size_t(d) * np + j0;
      const float* k1 = k0 + np;
      a0 += q[d] * load8(k0);
      b0 += q[d] * load8(k0 + 8);
      a1 += q[d + 1] * load8(k1);
      b1 += q[d + 1] * load8(k1 + 8);
    }
    if (d < dh) {
      const float* k0 = keys + size_t(d) * np + j0;
      a0 += q[d] * load8(k0);
      b0 += q[d] * load8(k0 + 8);
    }
    store8(out + j0, a0 + a1);
    store8(out + j0 + 8, b0 + b1);
  }
}

// out (DH,) += Σ_j w[j]·values[j, :] for values (n, DH), DH a multiple of 8, in registers.
template <int DH>
void weighted_sum(const float* w, const float* values, int n, float* out) {
  f8 acc[DH / 8];
  for (int c = 0; c < DH / 8; ++c) acc[c] = load8(out + 8 * c);
  for (int j = 0; j < n; ++j) {
    const float* vj = values + size_t(j) * DH;
    for (int c = 0; c < DH / 8; ++c) acc[c] += w[j] * load8(vj + 8 * c);
  }
  for (int c = 0; c < DH / 8; ++c) store8(out + 8 * c, acc[c]);
}

void weighted_sum(const float* w, const float* values, int n, int dh, float* out) {
  switch (dh) {
    case 8: return weighted_sum<8>(w, values, n, out);
    case 16: return weighted_sum<16>(w, values, n, out);
    case 32: return weighted_sum<32>(w, values, n, out);
    case 64: return weighted_sum<64>(w, values, n, out);
    case 128: return weighted_sum<128>(w, values, n, out);
    default:
      for (int j = 0; j < n; ++j)
        for (int d = 0; d < dh; ++d) out[d] += w[j] * values[size_t(j) * dh + d];
  }
}

// x = √x over an array, eight at a time.
inline void root(float* x, int n) {
  int j = 0;
#if defined(__AVX2__)
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_sqrt_ps(_mm256_loadu_ps(x + j)));
#endif
  for (; j < n; ++j) x[j] = std::sqrt(x[j]);
}

// The least of x (n,); NaN never wins.
float minimum(const float* x, int n) {
  f8 low8 = {};
  low8 += std::numeric_limits<float>::infinity();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const f8 v = load8(x + j);
    low8 = v < low8 ? v : low8;
  }
  float low = std::numeric_limits<float>::infinity();
  for (int i = 0; i < 8; ++i) low = low8[i] < low ? low8[i] : low;
  for (; j < n; ++j) low = x[j] < low ? x[j] : low;
  return low;
}

// The first index of value in x (n,), or n - 1 if there is none (a NaN row).
int first_equal(const float* x, int n, float value) {
  int j = 0;
#if defined(__AVX2__)
  const __m256 target = _mm256_set1_ps(value);
  for (; j + 8 <= n; j += 8) {
    const int mask =
        _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + j), target, _CMP_EQ_OQ));
    if (mask) return j + __builtin_ctz(mask);
  }
#endif
  for (; j < n; ++j)
    if (x[j] == value) return j;
  return n - 1;
}

float dot(const float* a, const float* b, int n) {
  float acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// ---- arrays from Python: checked once per call, so a wrong array is an error, not a crash ----

template <typename T>
T* data(py::array& a, const char* name, std::vector<py::ssize_t> shape) {
  if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style) ||
      !a.writeable())
    throw std::invalid_argument(std::string(name) + ": expected a writeable C-contiguous " +
                                py::str(py::dtype::of<T>()).cast<std::string>() + " array");
  if (a.ndim() != py::ssize_t(shape.size()))
    throw std::invalid_argument(std::string(name) + ": wrong number of dimensions");
  for (size_t d = 0; d < shape.size(); ++d)
    if (shape[d] >= 0 && a.shape(d) != shape[d])
      throw std::invalid_argument(std::string(name) + ": wrong shape in dimension " +
                                  std::to_string(d));
  return static_cast<T*>(a.mutable_data());
}

struct Layer {
  Linear q, k, v, o, up, down;
  std::vector<float> attn_gain, attn_shift, mlp_gain, mlp_shift;
  std::vector<float> codewords;    // (Q, K, Dg)
  std::vector<float> transposed;   // (Q, Dg, K): distances to all K words as Dg vector FMAs
  std::vector<float> squared;      // (Q, K) |c|²
};

struct LayerArrays {  // one layer's state, as in engine/state.py's LayerState
  float *q, *k, *v, *m, *s, *heads;
  uint8_t* codes;
  float* slack;
  uint8_t* updates;
};

struct Counts {
  int64_t macs = 0, refreshed = 0, refresh_updates = 0, refresh_cancellation = 0,
          refresh_tie = 0, sweep_flips = 0;
};

}  // namespace

class CompiledModel {
 public:
  CompiledModel(int d_model, int n_heads, int d_ff, int groups, int codebook_size, bool causal,
                bool pre_norm, bool gelu, float eps, float delta, const std::string& weights)
      : format_(parse_format(weights)), d_(d_model), h_(n_heads), dh_(d_model / n_heads), f_(d_ff), g_(groups),
        q_(n_heads * groups), k_(codebook_size), dg_(d_model / n_heads / groups),
        causal_(causal), pre_norm_(pre_norm), gelu_(gelu), eps_(eps), delta_(delta) {}

  void add_layer(py::dict w) {
    auto lin = [&](const char* name) {
      return pack(w[(std::string(name) + ".weight").c_str()].cast<py::array_t<float>>(),
                  w[(std::string(name) + ".bias").c_str()].cast<py::array_t<float>>(), format_);
    };
    auto vec = [&](const char* name) {
      auto a = w[name].cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
      if (a.size() != d_) throw std::invalid_argument(std::string(name) + ": expected (D,)");
      return std::vector<float>(a.data(), a.data() + a.size());
    };
    Layer l{lin("q"), lin("k"), lin("v"), lin("o"), lin("up"), lin("down"),
            vec("attn_norm.weight"), vec("attn_norm.bias"), vec("mlp_norm.weight"),
            vec("mlp_norm.bias"), {}, {}, {}};
    auto cw = w["codewords"].cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
    if (cw.ndim() != 3 || cw.shape(0) != q_ || cw.shape(1) != k_ || cw.shape(2) != dg_)
      throw std::invalid_argument("codewords: expected (Q, K, Dg)");
    l.codewords.assign(cw.data(), cw.data() + cw.size());
    l.transposed.assign(l.codewords.size(), 0.0f);
    for (int c = 0; c < q_; ++c)
      for (int j = 0; j < k_; ++j)
        for (int d = 0; d < dg_; ++d)
          l.transposed[(size_t(c) * dg_ + d) * k_ + j] = l.codewords[(size_t(c) * k_ + j) * dg_ + d];
    l.squared.assign(size_t(q_) * k_, 0.0f);
    for (int c = 0; c < q_ * k_; ++c) {
      const float* word = l.codewords.data() + size_t(c) * dg_;
      l.squared[c] = dot(word, word, dg_);
    }
    layers_.push_back(std::move(l));
  }

  // Every layer of an edit, in place on the state (see `IncrementalEngine.apply`).
  // layers: per layer (q, k, v, m, s, heads, codes, slack, updates); inputs: per layer its
  // input (S, D), the next layer's input being the layer's output; out (S, D) the last layer's
  // output rows. rows (|D|,) sorted dirty slots, their new embeddings in inputs[0]; is_new
  // (S,) whether a slot holds an inserted token (the others' old keys and values leave the
  // softmax sums); gone: per layer the deleted tokens' keys and values (H, Rg, Dh), gone_order
  // (Rg,) their text index; rank (T,) text index per slot; limit (T,) updates before a
  // refresh; turn the sweep's slots. Returns (rows written to out, sorted; |D| per layer;
  // flips outside D per layer; counts).
  py::tuple edit(int size, py::list layers, py::list inputs, py::array out_a, py::array rows_a,
                 py::array is_new_a, py::list gone, py::array gone_order_a, py::array rank_a,
                 py::array limit_a, py::array turn_a) {
    const int n_layers = int(layers_.size());
    if (int(layers.size()) != n_layers || int(inputs.size()) != n_layers ||
        int(gone.size()) != n_layers)
      throw std::invalid_argument("layers, inputs and gone need one entry per layer");
    auto first = layers[0].cast<py::tuple>();
    auto q0 = first[0].cast<py::array>();
    const py::ssize_t slots = q0.ndim() == 3 ? q0.shape(1) : -1;
    if (size < 0 || size > slots) throw std::invalid_argument("size exceeds the state's slots");
    float* out = data<float>(out_a, "out", {slots, d_});
    const py::ssize_t n_rows = rows_a.ndim() == 1 ? rows_a.shape(0) : -1;
    int64_t* rows = data<int64_t>(rows_a, "rows", {n_rows});
    bool* is_new = data<bool>(is_new_a, "is_new", {size});
    const py::ssize_t n_gone = gone_order_a.ndim() == 1 ? gone_order_a.shape(0) : -1;
    int64_t* gone_order = data<int64_t>(gone_order_a, "gone_order", {n_gone});
    int64_t* rank = data<int64_t>(rank_a, "rank", {size});
    int64_t* limit = data<int64_t>(limit_a, "limit", {size});
    const py::ssize_t n_turn = turn_a.ndim() == 1 ? turn_a.shape(0) : -1;
    int64_t* turn = data<int64_t>(turn_a, "turn", {n_turn});
    for (py::ssize_t i = 0; i < n_rows; ++i)
      if (rows[i] < 0 || rows[i] >= size || (i && rows[i] <= rows[i - 1]))
        throw std::invalid_argument("rows must be sorted, distinct slots in use");
    for (py::ssize_t i = 0; i < n_turn; ++i)
      if (turn[i] < 0 || turn[i] >= size) throw std::invalid_argument("turn: slot not in use");
    for (py::ssize_t i = 0; i < size; ++i)
      if (rank[i] < 0 || rank[i] >= size) throw std::invalid_argument("rank: not a text index");
    std::vector<LayerArrays> arrays(n_layers);
    std::vector<float*> ins(n_layers), gone_k(n_layers), gone_v(n_layers);
    for (int l = 0; l < n_layers; ++l) {
      auto t = layers[l].cast<py::tuple>();
      if (t.size() != 9) throw std::invalid_argument("layers: nine arrays per layer");
      auto arr = [&](int i) { return t[i].cast<py::array>(); };
      py::array a0 = arr(0), a1 = arr(1), a2 = arr(2), a3 = arr(3), a4 = arr(4), a5 = arr(5),
                a6 = arr(6), a7 = arr(7), a8 = arr(8);
      arrays[l] = {data<float>(a0, "q", {h_, slots, dh_}), data<float>(a1, "k", {h_, slots, dh_}),
                   data<float>(a2, "v", {h_, slots, dh_}), data<float>(a3, "m", {h_, slots}),
                   data<float>(a4, "s", {h_, slots}),
                   data<float>(a5, "heads", {h_, slots, dh_}),
                   data<uint8_t>(a6, "codes", {slots, q_}), data<float>(a7, "slack", {q_, slots}),
                   data<uint8_t>(a8, "updates", {slots})};
      py::array input = inputs[l].cast<py::array>();
      ins[l] = data<float>(input, "inputs", {slots, d_});
      auto pair = gone[l].cast<py::tuple>();
      py::array gk = pair[0].cast<py::array>(), gv = pair[1].cast<py::array>();
      gone_k[l] = data<float>(gk, "gone", {h_, n_gone, dh_});
      gone_v[l] = data<float>(gv, "gone", {h_, n_gone, dh_});
    }
    Counts counts;
    std::vector<int64_t> dirty(rows, rows + n_rows);
    py::list sizes, flips;
    for (int l = 0; l < n_layers; ++l) {
      sizes.append(dirty.size());
      std::vector<char> kept(dirty.size());
      for (size_t i = 0; i < dirty.size(); ++i) kept[i] = !is_new[dirty[i]];
      float* next = l + 1 < n_layers ? ins[l + 1] : out;
      const int flipped = edit_layer(layers_[l], arrays[l], slots, size, ins[l], next, dirty,
                                     kept, gone_k[l], gone_v[l], gone_order, int(n_gone), rank,
                                     limit, turn, int(n_turn), counts);
      flips.append(flipped);
    }
    py::array_t<int64_t> done(py::ssize_t(dirty.size()));
    std::copy(dirty.begin(), dirty.end(), done.mutable_data());
    py::dict c;
    c["macs"] = counts.macs;
    c["refreshed"] = counts.refreshed;
    c["refresh_updates"] = counts.refresh_updates;
    c["refresh_cancellation"] = counts.refresh_cancellation;
    c["refresh_tie"] = counts.refresh_tie;
    c["sweep_flips"] = counts.sweep_flips;
    return py::make_tuple(done, sizes, flips, c);
  }

 private:
  // One layer: rows (the dirty slots, sorted) become the rows written to `out` (D ∪ flipped);
  // returns how many flipped.
  int edit_layer(const Layer& L, const LayerArrays& a, py::ssize_t slots, int size,
                 const float* inputs, float* out, std::vector<int64_t>& dirty,
                 const std::vector<char>& kept, const float* gone_k, const float* gone_v,
                 const int64_t* gone_order, int ng, const int64_t* rank, const int64_t* limit,
                 const int64_t* turn, int n_turn, Counts& counts) const {
    float *q = a.q, *k = a.k, *v = a.v, *m = a.m, *s = a.s, *heads = a.heads, *slack = a.slack;
    uint8_t *codes = a.codes, *updates = a.updates;
    const int64_t* rows = dirty.data();
    const int nr = int(dirty.size());

    std::vector<char> clean(size, 1);
    for (int i = 0; i < nr; ++i) clean[rows[i]] = 0;

    // What leaves the softmax sums: deleted tokens, and the old keys and values of rows that
    // keep their token; then the dirty rows' new projections.
    int n_kept = 0;
    for (int i = 0; i < nr; ++i) n_kept += kept[i];
    const int n_old = ng + n_kept;
    std::vector<float> old_k(size_t(h_) * n_old * dh_), old_v(old_k.size());
    std::vector<int64_t> old_order(n_old);
    for (int hh = 0; hh < h_; ++hh) {
      for (int j = 0; j < ng; ++j) {
        std::memcpy(&old_k[(size_t(hh) * n_old + j) * dh_], gone_k + (size_t(hh) * ng + j) * dh_,
                    dh_ * sizeof(float));
        std::memcpy(&old_v[(size_t(hh) * n_old + j) * dh_], gone_v + (size_t(hh) * ng + j) * dh_,
                    dh_ * sizeof(float));
      }
      for (int i = 0, j = ng; i < nr; ++i)
        if (kept[i]) {
          std::memcpy(&old_k[(size_t(hh) * n_old + j) * dh_], k + (size_t(hh) * slots + rows[i]) * dh_,
                      dh_ * sizeof(float));
          std::memcpy(&old_v[(size_t(hh) * n_old + j) * dh_], v + (size_t(hh) * slots + rows[i]) * dh_,
                      dh_ * sizeof(float));
          ++j;
        }
    }
    for (int j = 0; j < ng; ++j) old_order[j] = gone_order[j];
    for (int i = 0, j = ng; i < nr; ++i)
      if (kept[i]) old_order[j++] = rank[rows[i]];

    project(L, rows, nr, inputs, q, k, v, slots, counts);
    std::vector<int64_t> refresh, moved;
    update_rows(k, v, q, m, s, heads, slack, updates, slots, size, rows, nr, old_k, old_v,
                old_order, n_old, rank, limit, clean, refresh, moved, counts);
    counts.refreshed += int64_t(refresh.size());
    std::vector<int64_t> attend_rows(rows, rows + nr);
    attend_rows.insert(attend_rows.end(), refresh.begin(), refresh.end());
    attend(q, k, v, m, s, heads, updates, slots, size, rank, attend_rows, counts);

    // Which codes to decide: rows in D and the sweep's turn (nearest), refreshed rows (the
    // mode's rule), and rows that moved past their slack. Of those, only the groups past their
    // slack: the others' codes still obey the rule (the torch reference decides every group of
    // such a row, which keeps the same codes and only renews their slack; 6x the work here).
    std::vector<char> kind(size, NONE);
    for (auto r : moved) kind[r] = PAST_SLACK;
    for (auto r : refresh) kind[r] = RULE;
    for (int i = 0; i < n_turn; ++i)
      if (clean[turn[i]]) kind[turn[i]] = NEAREST;
    std::vector<int64_t> decide(rows, rows + nr);
    std::vector<char> nearest(nr, NEAREST);
    for (int t = 0; t < size; ++t)
      if (kind[t] != NONE) {
        decide.push_back(t);
        nearest.push_back(kind[t]);
      }
    const int n_decide = int(decide.size());
    std::vector<uint8_t> before(size_t(n_decide - nr) * q_);
    for (int i = nr; i < n_decide; ++i)
      std::memcpy(&before[size_t(i - nr) * q_], codes + decide[i] * q_, q_);
    std::vector<uint8_t> new_codes(size_t(n_decide) * q_);
    std::vector<float> new_slack(size_t(n_decide) * q_);
    std::vector<char> ties(n_decide);
    for (int i = 0; i < n_decide; ++i)
      quantize(L, heads, codes, slack, slots, decide[i], nearest[i], &new_codes[size_t(i) * q_],
               &new_slack[size_t(i) * q_], ties[i], counts);
    std::vector<int64_t> tied;
    for (int i = 0; i < n_decide; ++i)
      if (ties[i] && updates[decide[i]] > 0) tied.push_back(decide[i]);
    if (!tied.empty()) {  // near ties are decided again on rows recomputed in full
      attend(q, k, v, m, s, heads, updates, slots, size, rank, tied, counts);
      counts.refresh_tie += int64_t(tied.size());
      for (int i = 0; i < n_decide; ++i)
        if (ties[i] && std::find(tied.begin(), tied.end(), decide[i]) != tied.end())
          quantize(L, heads, codes, slack, slots, decide[i], nearest[i],
                   &new_codes[size_t(i) * q_], &new_slack[size_t(i) * q_], ties[i], counts);
    }
    std::vector<int64_t> flipped;
    for (int i = 0; i < n_decide; ++i) {
      const int64_t t = decide[i];
      std::memcpy(codes + t * q_, &new_codes[size_t(i) * q_], q_);
      for (int c = 0; c < q_; ++c) slack[size_t(c) * slots + t] = new_slack[size_t(i) * q_ + c];
      if (i >= nr && std::memcmp(&before[size_t(i - nr) * q_], &new_codes[size_t(i) * q_], q_)) {
        flipped.push_back(t);
        counts.sweep_flips += nearest[i] == NEAREST;
      }
    }

    // Output projection and MLP for D ∪ flipped, in slot order.
    std::vector<int64_t> done(rows, rows + nr);
    done.insert(done.end(), flipped.begin(), flipped.end());
    std::sort(done.begin(), done.end());
    finish(L, done, inputs, codes, out, counts);

    dirty = std::move(done);
    return int(flipped.size());
  }

  // q, k, v of the dirty rows from their inputs (after the pre-norm where there is one).
  void project(const Layer& L, const int64_t* rows, int nr, const float* inputs, float* q,
               float* k, float* v, py::ssize_t slots, Counts& counts) const {
    if (!nr) return;
    const int ld = padded(d_);
    std::vector<float> x(size_t(nr) * d_), y(size_t(nr) * ld);
    for (int i = 0; i < nr; ++i) {
      std::memcpy(&x[size_t(i) * d_], inputs + rows[i] * d_, d_ * sizeof(float));
      if (pre_norm_) layer_norm(&x[size_t(i) * d_], d_, L.attn_gain, L.attn_shift, eps_);
    }
    const Linear* lins[3] = {&L.q, &L.k, &L.v};
    float* dest[3] = {q, k, v};
    for (int p = 0; p < 3; ++p) {
      linear(*lins[p], x.data(), nr, d_, y.data(), ld);
      for (int i = 0; i < nr; ++i)
        for (int hh = 0; hh < h_; ++hh)  // (H, S, Dh) head-major
          std::memcpy(dest[p] + (size_t(hh) * slots + rows[i]) * dh_, &y[size_t(i) * ld + hh * dh_],
                      dh_ * sizeof(float));
    }
    counts.macs += int64_t(3) * nr * d_ * d_;
  }

  bool visible(int64_t key_rank, int64_t query_rank) const {
    return !causal_ || key_rank <= query_rank;
  }

  // Running softmax update of the clean rows (see `IncrementalEngine._update_rows`).
  void update_rows(const float* k, const float* v, const float* q, float* m, float* s,
                   float* heads, float* slack, uint8_t* updates, py::ssize_t slots, int size,
                   const int64_t* rows, int nr, const std::vector<float>& old_k,
                   const std::vector<float>& old_v, const std::vector<int64_t>& old_order,
                   int n_old, const int64_t* rank, const int64_t* limit,
                   const std::vector<char>& clean, std::vector<int64_t>& refresh,
                   std::vector<int64_t>& moved, Counts& counts) const {
    const int n_keys = n_old + nr;
    if (!size || !n_keys) return;
    std::vector<int64_t> order(old_order);  // text index of every key
    for (int i = 0; i < nr; ++i) order.push_back(rank[rows[i]]);
    std::vector<char> touched(size, 0);
    int64_t pairs = 0;
    for (int t = 0; t < size; ++t) {
      if (!clean[t]) continue;
      int seen = 0;
      for (int j = 0; j < n_keys; ++j) seen += visible(order[j], rank[t]);
      touched[t] = seen > 0;
      pairs += seen;
    }
    if (2 * n_keys > size) {  // cheaper to recompute the touched rows in full
      for (int t = 0; t < size; ++t)
        if (touched[t]) refresh.push_back(t);
      return;
    }
    counts.macs += 2 * pairs * h_ * dh_;
    const float scale = 1.0f / std::sqrt(float(dh_));
    // The keys and values in play, head-major: (H, n_keys, Dh), old ones first.
    // Keys transposed, (H, Dh, NP) with NP = n_keys rounded up to a whole vector, zero past
    // n_keys: a row's scores are then Dh broadcast multiply-adds over the keys. Values
    // (H, n_keys, Dh).
    const int np = (n_keys + 15) / 16 * 16;
    std::vector<float> keys(size_t(h_) * dh_ * np, 0.0f), values(size_t(h_) * n_keys * dh_);
    for (int hh = 0; hh < h_; ++hh)
      for (int j = 0; j < n_keys; ++j) {
        const float* key = j < n_old ? &old_k[(size_t(hh) * n_old + j) * dh_]
                                     : k + (size_t(hh) * slots + rows[j - n_old]) * dh_;
        const float* value = j < n_old ? &old_v[(size_t(hh) * n_old + j) * dh_]
                                       : v + (size_t(hh) * slots + rows[j - n_old]) * dh_;
        for (int d = 0; d < dh_; ++d) keys[(size_t(hh) * dh_ + d) * np + j] = key[d] * scale;
        std::memcpy(&values[(size_t(hh) * n_keys + j) * dh_], value, dh_ * sizeof(float));
      }
    // Per key lane (NP,): whether the key is in play (not padding), and whether it is leaving
    // (its weight is taken out of the sums) — as 0/1 floats, so a row's sums are vector work.
    std::vector<float> in_play(np, 0.0f), leaving(np, 0.0f), lanes(np), w(np), acc(dh_),
        change(dh_), shift(g_);
    order.resize(np, 0);
    for (int j = 0; j < n_keys; ++j) {
      in_play[j] = 1.0f;
      leaving[j] = j < n_old;
    }
    std::vector<char> cancelled_any(size, 0);
    const int dg = dh_ / g_;
    const f8 minus_infinity = f8{} - std::numeric_limits<float>::infinity();
    for (int hh = 0; hh < h_; ++hh) {
      const float* kh = &keys[size_t(hh) * dh_ * np];
      const float* vh = &values[size_t(hh) * n_keys * dh_];
      for (int t = 0; t < size; ++t) {
        if (!touched[t]) continue;
        const float* seen = in_play.data();  // the keys this row sees
        if (causal_) {
          for (int j = 0; j < np; ++j) lanes[j] = in_play[j] * (order[j] <= rank[t]);
          seen = lanes.data();
        }
        const float* qt = q + (size_t(hh) * slots + t) * dh_;
        const size_t at = size_t(hh) * slots + t;
        const float m_old = m[at], s_old = s[at];
        scores(qt, kh, dh_, np, w.data());
        f8 top = minus_infinity;  // the reference max moves up to the new keys' best score
        for (int j = 0; j < np; j += 8) {
          const f8 arriving = load8(seen + j) - load8(leaving.data() + j);
          top = arriving > 0 ? (load8(w.data() + j) > top ? load8(w.data() + j) : top) : top;
        }
        float m_new = m_old;
        for (int i = 0; i < 8; ++i) m_new = std::max(m_new, top[i]);
        f8 all = {}, gone = {};  // softmax mass of every key in play, of the leaving ones
        for (int j = 0; j < np; j += 8) {
          const f8 e = exp8(load8(w.data() + j) - m_new) * load8(seen + j);
          const f8 out = load8(leaving.data() + j);
          all += e;
          gone += e * out;
          store8(w.data() + j, e - 2.0f * e * out);  // leaving keys' weights count negatively
        }
        float removed = 0, mass = 0;
        for (int i = 0; i < 8; ++i) {
          removed += gone[i];
          mass += all[i];
        }
        const float added = mass - 2 * removed;  // net softmax mass added
        float decay = m_old - m_new;
        exp_floor(&decay, 1);
        const float s_kept = s_old * decay;
        const float s_new = s_kept + added;
        // h' − h = (Σ w·v) / s_new − h·(Σ w / s_new)
        float* h = heads + at * dh_;
        const float inverse = 1.0f / s_new, keep = added * inverse;
        std::fill(acc.begin(), acc.end(), 0.0f);
        weighted_sum(w.data(), vh, n_keys, dh_, acc.data());
        for (int d = 0; d < dh_; ++d) change[d] = acc[d] * inverse - h[d] * keep;
        for (int gg = 0; gg < g_; ++gg) {  // each group's shift, summed first, rooted at once
          float sq = 0;
          for (int d = gg * dg; d < (gg + 1) * dg; ++d) sq += change[d] * change[d];
          shift[gg] = sq;
        }
        root(shift.data(), g_);
        for (int gg = 0; gg < g_; ++gg) slack[size_t(hh * g_ + gg) * slots + t] -= shift[gg];
        for (int d = 0; d < dh_; ++d) h[d] += change[d];
        m[at] = m_new;
        s[at] = s_new;
        if (removed > CANCELLATION * s_kept) cancelled_any[t] = 1;
      }
    }
    for (int t = 0; t < size; ++t) {
      if (!touched[t]) continue;
      updates[t] += 1;
      const bool tired = updates[t] >= limit[t];
      if (tired || cancelled_any[t]) {
        refresh.push_back(t);
        (tired ? counts.refresh_updates : counts.refresh_cancellation) += 1;
        continue;
      }
      for (int c = 0; c < q_; ++c)
        if (slack[size_t(c) * slots + t] < 0) {
          moved.push_back(t);
          break;
        }
    }
  }

  // Softmax statistics and head outputs of `rows` from their queries, over every visible key.
  void attend(const float* q, const float* k, const float* v, float* m, float* s, float* heads,
              uint8_t* updates, py::ssize_t slots, int size, const int64_t* rank,
              const std::vector<int64_t>& rows, Counts& counts) const {
    const float scale = 1.0f / std::sqrt(float(dh_));
    std::vector<float> w(size), qs(dh_), acc(dh_);
    int64_t pairs = 0;
    for (int64_t t : rows) {
      for (int hh = 0; hh < h_; ++hh) {
        const float* qt = q + (size_t(hh) * slots + t) * dh_;
        for (int d = 0; d < dh_; ++d) qs[d] = qt[d] * scale;
        const float* kh = k + size_t(hh) * slots * dh_;
        const float* vh = v + size_t(hh) * slots * dh_;
        float mx = -std::numeric_limits<float>::infinity();
        for (int j = 0; j < size; ++j) {
          w[j] = visible(rank[j], rank[t]) ? dot(qs.data(), kh + size_t(j) * dh_, dh_)
                                           : -std::numeric_limits<float>::infinity();
          mx = std::max(mx, w[j]);
        }
        for (int j = 0; j < size; ++j) w[j] -= mx;
        exp_floor(w.data(), size);
        float sum = 0;
        for (int j = 0; j < size; ++j) {
          if (!visible(rank[j], rank[t])) w[j] = 0.0f;
          sum += w[j];
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        weighted_sum(w.data(), vh, size, dh_, acc.data());
        const size_t at = size_t(hh) * slots + t;
        m[at] = mx;
        s[at] = sum;
        for (int d = 0; d < dh_; ++d) heads[at * dh_ + d] = acc[d] / sum;
      }
      updates[t] = 0;
      pairs += causal_ ? rank[t] + 1 : size;
    }
    counts.macs += 2 * pairs * h_ * dh_;
  }

  // Squared distances (K,) of one group's head output x (Dg,) to its codewords, from their
  // transpose (Dg, K) and |c|² (K,); returns the least and writes the first index holding it.
  float distances(const float* x, const float* words, const float* square, float xx,
                  float* dist, int& best) const {
    int j = 0;
    for (; j + 8 <= k_; j += 8) {
      f8 acc = load8(square + j) + xx;
      for (int d = 0; d < dg_; ++d) acc += (-2 * x[d]) * load8(words + size_t(d) * k_ + j);
      store8(dist + j, acc);
    }
    for (; j < k_; ++j) {
      float acc = square[j] + xx;
      for (int d = 0; d < dg_; ++d) acc += (-2 * x[d]) * words[size_t(d) * k_ + j];
      dist[j] = acc;
    }
    const float low = minimum(dist, k_);
    best = first_equal(dist, k_, low);
    return low;
  }

  // The codes (Q,) and slack (Q,) of slot t under the mode's rule (`IncrementalEngine._quantize`).
  // `kind` says which codes (NEAREST, RULE or PAST_SLACK: only the groups whose slack is
  // negative, the others keep their code and slack).
  void quantize(const Layer& L, const float* heads, const uint8_t* codes,
                const float* slack, py::ssize_t slots, int64_t t, char kind, uint8_t* code_out,
                float* slack_out, char& tie, Counts& counts) const {
    tie = 0;
    const bool nearest = kind == NEAREST;
    std::vector<float> dist(k_);
    for (int hh = 0; hh < h_; ++hh) {
      const float* h = heads + (size_t(hh) * slots + t) * dh_;
      const float norm = std::sqrt(dot(h, h, dh_));
      for (int gg = 0; gg < g_; ++gg) {
        const int c = hh * g_ + gg;
        if (kind == PAST_SLACK && slack[size_t(c) * slots + t] >= 0) {
          code_out[c] = codes[t * q_ + c];
          slack_out[c] = slack[size_t(c) * slots + t];
          continue;
        }
        counts.macs += int64_t(k_) * dg_;
        const float* x = h + gg * dg_;
        const float xx = dot(x, x, dg_);
        const float* words = L.transposed.data() + size_t(c) * dg_ * k_;  // (Dg, K)
        const float* square = L.squared.data() + size_t(c) * k_;
        int best;  // the first of twin codewords, as torch's argmin
        const float low = distances(x, words, square, xx, dist.data(), best);
        const int current = codes[t * q_ + c];
        const float d_best = std::sqrt(std::max(low, 0.0f));
        const float d_current = std::sqrt(std::max(dist[current], 0.0f));
        const bool keep = !nearest && d_current <= (1 + delta_) * d_best;
        const int code = keep ? current : best;
        const float d_code = keep ? d_current : d_best;
        dist[code] = std::numeric_limits<float>::infinity();
        const float other = minimum(dist.data(), k_);
        const float d_other = std::sqrt(std::max(other, 0.0f));
        code_out[c] = uint8_t(code);
        slack_out[c] = ((1 + delta_) * d_other - d_code) / (2 + delta_);
        if (slack_out[c] < TIE * norm) tie = 1;
      }
    }
  }

  // Everything after the codebook for `rows`: output projection, residual, norms, MLP.
  void finish(const Layer& L, const std::vector<int64_t>& rows, const float* inputs,
              const uint8_t* codes, float* out, Counts& counts) const {
    const int nr = int(rows.size());
    if (!nr) return;
    const int ld = padded(d_), ldf = padded(f_);
    std::vector<float> words(size_t(nr) * d_), a(size_t(nr) * ld), hidden(size_t(nr) * ldf),
        mlp_in(size_t(nr) * d_), y(size_t(nr) * ld);
    for (int i = 0; i < nr; ++i)
      for (int c = 0; c < q_; ++c)  // codeword of every group, as head outputs (D,)
        std::memcpy(&words[size_t(i) * d_ + c * dg_],
                    L.codewords.data() + (size_t(c) * k_ + codes[rows[i] * q_ + c]) * dg_,
                    dg_ * sizeof(float));
    linear(L.o, words.data(), nr, d_, a.data(), ld);
    for (int i = 0; i < nr; ++i) {
      float* ai = &a[size_t(i) * ld];
      const float* xi = inputs + rows[i] * d_;
      for (int d = 0; d < d_; ++d) ai[d] += xi[d];  // residual
      if (!pre_norm_) layer_norm(ai, d_, L.attn_gain, L.attn_shift, eps_);
      std::memcpy(&mlp_in[size_t(i) * d_], ai, d_ * sizeof(float));
      if (pre_norm_) layer_norm(&mlp_in[size_t(i) * d_], d_, L.mlp_gain, L.mlp_shift, eps_);
    }
    linear(L.up, mlp_in.data(), nr, d_, hidden.data(), ldf);
    for (int i = 0; i < nr; ++i) {  // ldf is a whole number of 16-wide panels
      float* hi = &hidden[size_t(i) * ldf];
      for (int f = 0; f < ldf; f += 8) {
        const f8 h = load8(hi + f);
        store8(hi + f, gelu_ ? gelu8(h) : (h > 0 ? h : 0));
      }
    }
    linear(L.down, hidden.data(), nr, ldf, y.data(), ld);
    for (int i = 0; i < nr; ++i) {
      float* yi = &y[size_t(i) * ld];
      const float* ai = &a[size_t(i) * ld];
      for (int d = 0; d < d_; ++d) yi[d] += ai[d];
      if (!pre_norm_) layer_norm(yi, d_, L.mlp_gain, L.mlp_shift, eps_);
      std::memcpy(out + rows[i] * d_, yi, d_ * sizeof(float));
    }
    counts.macs += int64_t(nr) * (d_ * d_ + 2 * d_ * f_);
  }

  Format format_;
  int d_, h_, dh_, f_, g_, q_, k_, dg_;
  bool causal_, pre_norm_, gelu_;
  float eps_, delta_;
  std::vector<Layer> layers_;
};

PYBIND11_MODULE(_compiled, m) {
  m.doc() = "The compiled edit path of the incremental engine (engine/compiled.py wraps it).";
  m.def("has_avx512", &has_avx512, "Whether the linears run their AVX-512 kernel.");
  py::class_<CompiledModel>(m, "CompiledModel")
      .def(py::init<int, int, int, int, int, bool, bool, bool, float, float, std::string>(),
           py::arg("d_model"), py::arg("n_heads"), py::arg("d_ff"), py::arg("groups"),
           py::arg("codebook_size"), py::arg("causal"), py::arg("pre_norm"), py::arg("gelu"),
           py::arg("eps"), py::arg("delta"), py::arg("weights"))
      .def("add_layer", &CompiledModel::add_layer)
      .def("edit", &CompiledModel::edit);
}
