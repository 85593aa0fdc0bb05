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
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace py = pybind11;

namespace {

constexpr int PANEL = 16;           // output columns per weight panel
constexpr int ROW_BLOCK = 8;        // rows multiplied at once, their accumulators in registers
constexpr float EXP_FLOOR = -80.0f;  // as in incremental.py
constexpr float CANCELLATION = 4.0f;  // as in incremental.py
constexpr float TIE = 1e-3f;
constexpr int AHEAD = 1;  // tiles ahead that `update_rows` asks for (more measured no better)
enum Decision : char { NONE, NEAREST, RULE };  // how a row's codes are decided
// A row's blocks of eight groups, bit b for groups 8b to 8b + 7: those with a group past its
// slack, or those to decide. Sixty-four blocks: up to 512 codes per token.
typedef uint64_t Blocks;
constexpr int MAX_CODES = 512;
inline Blocks block_of(int group) { return Blocks(1) << (group / 8); }

// ---- linears: y (R, O) = x (R, I) · W (I, O) + b, W packed as (ceil(O/16), I, 16) panels ----
//
// Weights are stored as float32, bfloat16 (the top half of a float32) or int8 with a scale per
// output column, whichever the model's weights were rounded to (engine/weights.py): the
// values are the same as the torch model's, only smaller, so that the ~10-20 MB of a
// MiniLM's linears stay in the last-level cache between edits instead of streaming from memory.
//
// In int8 the inputs are rounded too, each row to integers q in [−levels, levels] times a step
// of its own (engine/ops.py `on_grid`; levels < 2^22). Where the CPU has AVX-512 VNNI, a row's
// integers are split into as many bytes as the levels need (one for the 127 levels vqedit
// serves, three at most) and multiplied with the weight bytes four at a time into int32 sums,
// exactly, with no widening of weights: one byte is ~3x three bytes' rate, and three bytes
// were 1.3-2.5x float32's. Elsewhere the rounded rows are multiplied in float32, which gives
// the same numbers within float32 rounding.
// Sums stay int32 or float32; the rest of an edit is float32.

enum class Format { FLOAT32, BFLOAT16, INT8 };

struct Linear {
  Format format = Format::FLOAT32;
  int in = 0, out = 0, panels = 0;
  int levels = 0;             // inputs rounded per row to this many levels a side (0: as they are)
  bool vnni = false;          // rounded inputs and int8 weights multiplied as bytes (w4, offset)
  std::vector<float> w32;     // (panels, I, 16) float32, zero past O
  std::vector<uint16_t> w16;  // (panels, I, 16) bfloat16 bits
  std::vector<int8_t> w8;     // (panels, I, 16) int8, times `scale` per column
  std::vector<int8_t> w4;     // vnni: (panels, ceil(I/4), 16, 4) int8, a column's 4 inputs together
  std::vector<int32_t> offset;  // vnni: (panels·16,) 128 · Σ_i w8 of each column
  std::vector<float> scale;   // (panels·16,) 1 unless int8
  std::vector<float> bias;    // (panels·16,), zero past O
};

bool has_vnni() {
#if defined(__x86_64__)
  static const bool yes = __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vnni");
  return yes;
#else
  return false;
#endif
}

Format parse_format(const std::string& name) {
  if (name == "float32") return Format::FLOAT32;
  if (name == "bfloat16") return Format::BFLOAT16;
  if (name == "int8") return Format::INT8;
  throw std::invalid_argument("unknown weight format " + name);
}

// weight (O, I) as torch stores it, already rounded to `format`; bias (O,); inputs rounded to
// `levels` a side (0: not). `vnni`: multiply bytes where the format and the CPU allow.
Linear pack(py::array_t<float, py::array::c_style | py::array::forcecast> weight,
            py::array_t<float, py::array::c_style | py::array::forcecast> bias, Format format,
            int levels, bool vnni) {
  if (weight.ndim() != 2 || bias.ndim() != 1 || bias.shape(0) != weight.shape(0))
    throw std::invalid_argument("a linear needs a (out, in) weight and an (out,) bias");
  if (levels < 0 || levels >= (1 << 22))
    throw std::invalid_argument("input levels must be in [0, 2^22) (at most three bytes)");
  Linear l;
  l.format = format;
  l.levels = levels;
  l.vnni = vnni && format == Format::INT8 && levels > 0 && has_vnni();
  l.out = int(weight.shape(0));
  l.in = int(weight.shape(1));
  l.panels = (l.out + PANEL - 1) / PANEL;
  const size_t n = size_t(l.panels) * l.in * PANEL;
  l.scale.assign(size_t(l.panels) * PANEL, 1.0f);
  l.bias.assign(size_t(l.panels) * PANEL, 0.0f);
  if (format == Format::FLOAT32) l.w32.assign(n, 0.0f);
  if (format == Format::BFLOAT16) l.w16.assign(n, 0);
  if (format == Format::INT8 && !l.vnni) l.w8.assign(n, 0);
  const int groups = (l.in + 3) / 4;
  if (l.vnni) l.w4.assign(size_t(l.panels) * groups * PANEL * 4, 0);
  if (l.vnni) l.offset.assign(size_t(l.panels) * PANEL, 0);
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
          if (l.vnni) {
            l.w4[((size_t(o / PANEL) * groups + i / 4) * PANEL + o % PANEL) * 4 + i % 4] =
                int8_t(level);
            l.offset[o] += 128 * int32_t(level);
          } else {
            l.w8[at] = int8_t(level);
          }
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

// The step of a row of n inputs for `levels` integer levels a side, as `on_grid` computes it.
float row_step(const float* x, int n, int levels) {
  float largest = 0;
  for (int i = 0; i < n; ++i) largest = std::max(largest, std::fabs(x[i]));
  return std::max(largest / float(levels), std::numeric_limits<float>::min());
}

#if defined(__x86_64__)
// Bytes an input integer takes: levels < 2^7 fit one, < 2^15 two, else three.
int input_bytes(int levels) { return levels < (1 << 7) ? 1 : levels < (1 << 15) ? 2 : 3; }

// N rows of integers as B bytes each, q = 256^(B−1)·(b0 − 128) + … + 256·b(B−2) + b(B−1), every
// byte plane (N, ld), through panel p of a vnni linear: each row's B int32 sums per column in
// registers.
template <int N, int B>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void panel_rows_vnni(
    const Linear& l, int p, const uint8_t* const bytes[B], int ld, const float* step, float* y,
    int ldy) {
  __m512i sums[B][N];
#pragma GCC unroll 12
  for (int k = 0; k < B; ++k)
    for (int r = 0; r < N; ++r) sums[k][r] = _mm512_setzero_si512();
  const int8_t* w = l.w4.data() + size_t(p) * (ld / 4) * PANEL * 4;
  for (int i = 0; i < ld; i += 4) {
    const __m512i wv = _mm512_loadu_si512(w + size_t(i) * PANEL);  // (16, 4)
#pragma GCC unroll 12
    for (int k = 0; k < B; ++k)
#pragma GCC unroll 12
      for (int r = 0; r < N; ++r) {
        int32_t four;  // a row's byte k at inputs i..i+3, in every column's lane
        std::memcpy(&four, bytes[k] + r * ld + i, 4);
        sums[k][r] = _mm512_dpbusd_epi32(sums[k][r], _mm512_set1_epi32(four), wv);
      }
  }
  const __m512 scale = _mm512_loadu_ps(l.scale.data() + p * PANEL);
  const __m512 bias = _mm512_loadu_ps(l.bias.data() + p * PANEL);
  const __m512i offset = _mm512_loadu_si512(l.offset.data() + p * PANEL);
#pragma GCC unroll 12
  for (int r = 0; r < N; ++r) {  // Σ q·w = 256^(B−1)·(Σ b0·w − 128·Σ w) + … + Σ b(B−1)·w
    __m512 sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums[0][r], offset));
#pragma GCC unroll 3
    for (int k = 1; k < B; ++k)
      sum = _mm512_fmadd_ps(sum, _mm512_set1_ps(256.0f), _mm512_cvtepi32_ps(sums[k][r]));
    _mm512_storeu_ps(y + r * ldy + p * PANEL,
                     _mm512_fmadd_ps(sum, _mm512_mul_ps(scale, _mm512_set1_ps(step[r])), bias));
  }
}

// A row of n inputs as the B bytes of its integers (see above), with q the nearest integer
// (ties to even) to x / step as `on_grid` rounds it; returns the step.
template <int B>
__attribute__((target("avx512f,avx512bw"))) float split_row(const float* x, int n, int levels,
                                                             uint8_t* const bytes[B]) {
  __m512 largest = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) {
    const __mmask16 in = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    largest = _mm512_max_ps(largest, _mm512_abs_ps(_mm512_maskz_loadu_ps(in, x + i)));
  }
  const float step = std::max(_mm512_reduce_max_ps(largest) / float(levels),
                              std::numeric_limits<float>::min());
  const __m512 steps = _mm512_set1_ps(step);
  for (int i = 0; i < n; i += 16) {
    const __mmask16 in = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512i q = _mm512_cvtps_epi32(_mm512_div_ps(_mm512_maskz_loadu_ps(in, x + i), steps));
    const __m512i top = _mm512_add_epi32(_mm512_srai_epi32(q, 8 * (B - 1)), _mm512_set1_epi32(128));
    _mm512_mask_cvtepi32_storeu_epi8(bytes[0] + i, in, top);  // the low byte of each
#pragma GCC unroll 3
    for (int k = 1; k < B; ++k)
      _mm512_mask_cvtepi32_storeu_epi8(bytes[k] + i, in, _mm512_srai_epi32(q, 8 * (B - 1 - k)));
  }
  return step;
}

// Up to n rows through panel p, as many at once as their B sums a row fit in 12 registers
// (leaving room for the operands); returns how many rows it took.
template <int B>
int panel_block(const Linear& l, int p, const uint8_t* const rows[B], int ld, const float* step,
                float* y, int ldy, int n) {
  if constexpr (B == 1)
    if (n >= 12) return panel_rows_vnni<12, B>(l, p, rows, ld, step, y, ldy), 12;
  if constexpr (B <= 2)
    if (n >= 6) return panel_rows_vnni<6, B>(l, p, rows, ld, step, y, ldy), 6;
  switch (std::min(n, 4)) {
    case 4: return panel_rows_vnni<4, B>(l, p, rows, ld, step, y, ldy), 4;
    case 3: return panel_rows_vnni<3, B>(l, p, rows, ld, step, y, ldy), 3;
    case 2: return panel_rows_vnni<2, B>(l, p, rows, ld, step, y, ldy), 2;
    default: return panel_rows_vnni<1, B>(l, p, rows, ld, step, y, ldy), 1;
  }
}

template <int B>
void linear_vnni(const Linear& l, const float* x, int rows, int ldx, float* y, int ldy) {
  const int ld = (l.in + 3) / 4 * 4;  // padding is multiplied by zero weights
  std::vector<uint8_t> planes(static_cast<size_t>(B) * rows * ld);  // (B, rows, ld)
  auto plane = [&](int k, int r) { return &planes[(size_t(k) * rows + r) * ld]; };
  std::vector<float> step(rows);
  for (int r = 0; r < rows; ++r) {
    uint8_t* row[B];
    for (int k = 0; k < B; ++k) row[k] = plane(k, r);
    step[r] = split_row<B>(x + size_t(r) * ldx, l.in, l.levels, row);
  }
  // Panel by panel, every block of rows: a panel's weights (16 columns) are read from memory
  // once and stay in the first-level cache for the next blocks.
  for (int p = 0; p < l.panels; ++p)
    for (int r = 0; r < rows;) {
      const uint8_t* block[B];
      for (int k = 0; k < B; ++k) block[k] = plane(k, r);
      r += panel_block<B>(l, p, block, ld, &step[r], y + size_t(r) * ldy, ldy, rows - r);
    }
}
#endif

// y rows have stride ldy ≥ panels·16 (the padded columns are written too).
void linear(const Linear& l, const float* x, int rows, int ldx, float* y, int ldy) {
#if defined(__x86_64__)
  if (l.vnni) switch (input_bytes(l.levels)) {
      case 1: return linear_vnni<1>(l, x, rows, ldx, y, ldy);
      case 2: return linear_vnni<2>(l, x, rows, ldx, y, ldy);
      default: return linear_vnni<3>(l, x, rows, ldx, y, ldy);
    }
#endif
  std::vector<float> rounded;
  if (l.levels) {  // the rows on their grids, multiplied in float32
    rounded.resize(size_t(rows) * l.in);
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + size_t(r) * ldx;
      const float step = row_step(xr, l.in, l.levels);
      for (int i = 0; i < l.in; ++i)
        rounded[size_t(r) * l.in + i] = std::nearbyint(xr[i] / step) * step;
    }
    x = rounded.data();
    ldx = l.in;
  }
  switch (l.format) {
    case Format::FLOAT32: return linear(l, l.w32.data(), x, rows, ldx, y, ldy);
    case Format::BFLOAT16: return linear(l, l.w16.data(), x, rows, ldx, y, ldy);
    case Format::INT8: return linear(l, l.w8.data(), x, rows, ldx, y, ldy);
  }
}

int padded(int width) { return (width + PANEL - 1) / PANEL * PANEL; }

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

// x (width,) normalised in place. Its statistics are summed in eight float32 lanes: summed in
// double one element at a time, they were 3.5% of an edit of a short segment.
void layer_norm(float* x, int width, const std::vector<float>& gain,
                const std::vector<float>& shift, float eps) {
  const int whole = width / 8 * 8;
  f8 lanes = {};
  for (int d = 0; d < whole; d += 8) lanes += load8(x + d);
  float sum = 0;
  for (int i = 0; i < 8; ++i) sum += lanes[i];
  for (int d = whole; d < width; ++d) sum += x[d];
  const float mu = sum / float(width);
  lanes = f8{};
  for (int d = 0; d < whole; d += 8) {
    const f8 centred = load8(x + d) - mu;
    lanes += centred * centred;
  }
  float var = 0;
  for (int i = 0; i < 8; ++i) var += lanes[i];
  for (int d = whole; d < width; ++d) var += (x[d] - mu) * (x[d] - mu);
  const float inv = 1.0f / std::sqrt(var / float(width) + eps);
  for (int d = 0; d < whole; d += 8)
    store8(x + d, (load8(x + d) - mu) * inv * load8(gain.data() + d) + load8(shift.data() + d));
  for (int d = whole; d < width; ++d) x[d] = (x[d] - mu) * inv * gain[d] + shift[d];
}

// Queries, keys and values are float32, or bfloat16 (the top half of a float32, stored as
// uint16_t) where the model rounds them so (engine/weights.py): eight of them widened, one
// widened, and a float32 rounded to bfloat16 as torch rounds (to nearest, ties to even).
inline f8 load8(const uint16_t* p) {
#if defined(__AVX2__)
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
  return f8(_mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
#else
  f8 v;
  for (int i = 0; i < 8; ++i) v[i] = widen(p[i]);
  return v;
#endif
}

inline void narrow(float x, float* to) { *to = x; }
inline void narrow(float x, uint16_t* to) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  *to = uint16_t((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

// n values, widened to float32 or rounded from it.
template <typename A>
inline void widen_row(const A* from, int n, float* to) {
  for (int i = 0; i < n; ++i) to[i] = widen(from[i]);
}
template <typename A>
inline void narrow_row(const float* from, int n, A* to) {
  for (int i = 0; i < n; ++i) narrow(from[i], to + i);
}

// x (n,) = row `row` of an (·, n) array of float32 or bfloat16, widened.
void read_row(const void* a, bool bfloat16, size_t row, int n, float* x) {
  if (bfloat16) widen_row(static_cast<const uint16_t*>(a) + row * n, n, x);
  else widen_row(static_cast<const float*>(a) + row * n, n, x);
}

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

// √x of eight floats.
inline f8 sqrt8(f8 x) {
#if defined(__AVX2__)
  return _mm256_sqrt_ps(x);
#else
  for (int i = 0; i < 8; ++i) x[i] = std::sqrt(x[i]);
  return x;
#endif
}

inline f8 max8(f8 a, f8 b) { return a > b ? a : b; }

// The first n of eight floats at p, zero past n; and the store that writes only those n.
// (A copy of variable length would stall the vector load after it: full vectors go direct.)
inline f8 load_lanes(const float* p, int n) {
  if (n == 8) return load8(p);
  f8 v = {};
  for (int i = 0; i < n; ++i) v[i] = p[i];
  return v;
}

inline void store_lanes(float* p, f8 v, int n) {
  if (n == 8) return store8(p, v);
  for (int i = 0; i < n; ++i) p[i] = v[i];
}

// Which lanes of x are not ≥ 0 (negative or NaN), as bits. A running update that cancelled
// leaves NaN slack behind, and that row must be decided again like any other past its slack.
inline int negative_lanes(f8 x) {
#if defined(__AVX2__)
  return _mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NGE_UQ));
#else
  int bits = 0;
  for (int i = 0; i < 8; ++i) bits |= !(x[i] >= 0) << i;
  return bits;
#endif
}

// ---- rows in lanes: up to eight rows of one head side by side, one per vector lane ----
//
// Attention visits every row of a segment at each edit (the running update) and a few rows
// against every key (full rows). Both take eight rows at a time, row i in lane i: scores,
// softmax statistics, head-output changes and group shifts are then plain vector arithmetic
// with no sums across a vector. A tile holds those rows' Dh-vectors transposed, (Dh, 8).

#if defined(__AVX2__)
// The 8 × 8 block in r, transposed in place.
inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
      u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
      u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; ++i) {
      r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
      r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}
#endif

// tile (Dh, 8) = the Dh-vectors at rows[0..n) transposed, zero past n.
template <typename A>
void gather_tile(const A* const* rows, int n, int dh, float* tile) {
  int d0 = 0;
#if defined(__AVX2__)
  if (n == 8)
    for (; d0 + 8 <= dh; d0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = __m256(load8(rows[i] + d0));
      transpose8(r);
      for (int c = 0; c < 8; ++c) _mm256_storeu_ps(tile + (d0 + c) * 8, r[c]);
    }
#endif
  for (; d0 < dh; ++d0)
    for (int i = 0; i < 8; ++i) tile[d0 * 8 + i] = i < n ? widen(rows[i][d0]) : 0.0f;
}

// The inverse: rows[0..n) = the tile's lanes.
void scatter_tile(const float* tile, int n, int dh, float* const* rows) {
  int d0 = 0;
#if defined(__AVX2__)
  if (n == 8)
    for (; d0 + 8 <= dh; d0 += 8) {
      __m256 r[8];
      for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(tile + (d0 + c) * 8);
      transpose8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(rows[i] + d0, r[i]);
    }
#endif
  for (; d0 < dh; ++d0)
    for (int i = 0; i < n; ++i) rows[i][d0] = tile[d0 * 8 + i];
}


// out (n, 8) = the scores of the tile's rows q (Dh, 8) against keys (n, Dh): four keys at a
// time, so that each query vector loaded serves four multiply-adds.
void lane_scores(const float* q, const float* keys, int n, int dh, float* out) {
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const float* k0 = keys + size_t(j) * dh;
    const float *k1 = k0 + dh, *k2 = k1 + dh, *k3 = k2 + dh;
    f8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int d = 0; d < dh; ++d) {
      const f8 qd = load8(q + d * 8);
      a0 += qd * k0[d];
      a1 += qd * k1[d];
      a2 += qd * k2[d];
      a3 += qd * k3[d];
    }
    store8(out + j * 8, a0);
    store8(out + (j + 1) * 8, a1);
    store8(out + (j + 2) * 8, a2);
    store8(out + (j + 3) * 8, a3);
  }
  for (; j < n; ++j) {
    const float* kj = keys + size_t(j) * dh;
    f8 a = {};
    for (int d = 0; d < dh; ++d) a += load8(q + d * 8) * kj[d];
    store8(out + j * 8, a);
  }
}

// out (Dh, 8) = Σ_j w[j]·values[j] for weights w (n, 8) and values (n, Dh): eight components
// at a time, each weight vector loaded once for them.
void lane_mix(const float* w, const float* values, int n, int dh, float* out) {
  int d0 = 0;
  for (; d0 + 8 <= dh; d0 += 8) {
    f8 a[8] = {};
    for (int j = 0; j < n; ++j) {
      const f8 wj = load8(w + j * 8);
      const float* vj = values + size_t(j) * dh + d0;
      for (int b = 0; b < 8; ++b) a[b] += wj * vj[b];
    }
    for (int b = 0; b < 8; ++b) store8(out + (d0 + b) * 8, a[b]);
  }
  for (; d0 < dh; ++d0) {
    f8 a = {};
    for (int j = 0; j < n; ++j) a += load8(w + j * 8) * values[size_t(j) * dh + d0];
    store8(out + d0 * 8, a);
  }
}

// ---- one row against keys in lanes: a row's scores against eight keys as one vector ----

// The eight sums of a[0..8) as one vector: lane i holds the sum of a[i]'s lanes.
inline f8 lane_sums(const f8 a[8]) {
#if defined(__AVX2__)
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]),
               t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);  // halves' sums
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
#else
  f8 out = {};
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) out[i] += a[i][j];
  return out;
#endif
}

// The scores of one query row q (Dh,) against keys [0, N) of keys (·, Dh), lanes past N
// zero; Dh a multiple of 8. N is fixed at compile time so that the sums stay in registers.
template <int N, typename A>
inline f8 row_scores(const A* q, const A* keys, int dh) {
  f8 a[8] = {};
  for (int d = 0; d < dh; d += 8) {
    const f8 qd = load8(q + d);
#pragma GCC unroll 8
    for (int j = 0; j < N; ++j) a[j] += qd * load8(keys + size_t(j) * dh + d);
  }
  return lane_sums(a);
}

// `row_scores` for the last n < 8 keys.
template <typename A>
inline f8 row_scores_tail(const A* q, const A* keys, int n, int dh) {
  switch (n) {
    case 1: return row_scores<1>(q, keys, dh);
    case 2: return row_scores<2>(q, keys, dh);
    case 3: return row_scores<3>(q, keys, dh);
    case 4: return row_scores<4>(q, keys, dh);
    case 5: return row_scores<5>(q, keys, dh);
    case 6: return row_scores<6>(q, keys, dh);
    default: return row_scores<7>(q, keys, dh);
  }
}

// out (8C,) = Σ_j w[j]·values[j] over n value rows of stride ld (default 8C): C chunks of
// eight components, two chains of multiply-adds per chunk so that they overlap.
template <int C, typename A>
void mix_rows(const float* w, const A* values, int n, float* out, int ld = 8 * C) {
  f8 even[C] = {}, odd[C] = {};
  int j = 0;
  for (; j + 2 <= n; j += 2) {
    const A* a = values + size_t(j) * ld;
    for (int c = 0; c < C; ++c) {
      even[c] += w[j] * load8(a + 8 * c);
      odd[c] += w[j + 1] * load8(a + ld + 8 * c);
    }
  }
  if (j < n)
    for (int c = 0; c < C; ++c) even[c] += w[j] * load8(values + size_t(j) * ld + 8 * c);
  for (int c = 0; c < C; ++c) store8(out + 8 * c, even[c] + odd[c]);
}

float dot(const float* a, const float* b, int n) {
  float acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// ---- arrays from Python: checked once per call, so a wrong array is an error, not a crash ----

template <typename T>
T* data(py::array a, const char* name, const std::vector<py::ssize_t>& shape) {
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

// One pass over a block's K codewords for eight groups, one per lane: each group's least and
// second least |c|² − 2x·c, the first index of the least (as torch's argmin), and the value at
// its current code. DG is the group width where fixed at compile time (0: `dg` at run time).
struct Scan {
  f8 best = f8{} + std::numeric_limits<float>::infinity(), second = best, at_current = {};
  i8 closest = {}, current = {};

  // x2 (Dg, 8) is −2x, words (K, Dg, 8), square (K, 8).
  template <int DG>
  void run(const float* x2, const float* words, const float* square, int k, int dg) {
    const int width = DG ? DG : dg;
    f8 x[DG ? DG : 1];
    if (DG)
      for (int d = 0; d < DG; ++d) x[d] = load8(x2 + d * 8);
    for (int j = 0; j < k; ++j) {
      f8 acc = load8(square + j * 8);
      const float* word = words + size_t(j) * width * 8;
      for (int d = 0; d < width; ++d) acc += (DG ? x[d] : load8(x2 + d * 8)) * load8(word + d * 8);
      const i8 closer = acc < best;
      second = closer ? best : (acc < second ? acc : second);
      best = closer ? acc : best;
      closest = closer ? i8{} + j : closest;
      at_current = current == j ? acc : at_current;
    }
  }
};

struct Layer {
  Linear q, k, v, o, up, down;
  std::vector<float> attn_gain, attn_shift, mlp_gain, mlp_shift;
  std::vector<float> codewords;    // (Q, K, Dg)
  // Eight groups side by side, one per lane, zero past Q: (⌈Q/8⌉, K, Dg, 8) codewords and
  // (⌈Q/8⌉, K, 8) their |c|², so that a row's decisions take eight groups at once.
  std::vector<float> lanes, squared;
};

struct LayerArrays {  // one layer's state, as in engine/state.py's LayerState
  void *q, *k, *v;  // float32, or bfloat16 where `StateArrays::bfloat16`
  float *m, *s, *heads;
  uint8_t* codes;
  float* slack;
  uint8_t* updates;
};

struct Counts {
  int64_t macs = 0, refreshed = 0, refresh_updates = 0, refresh_cancellation = 0,
          refresh_tie = 0, sweep_flips = 0;
};

}  // namespace

// An array with a slot dimension (0 or 1), as raw bytes: `outer` blocks of `slots` chunks.
struct SlotArray {
  char* base;
  size_t outer, slots, chunk;  // index count before the slot dimension, slots, bytes per slot
};

SlotArray slot_array(py::array a, int dim) {
  if (!(a.flags() & py::array::c_style) || !a.writeable() || dim < 0 || dim > 1 ||
      a.ndim() <= dim)
    throw std::invalid_argument("arrays: writeable C-contiguous arrays, slot dimension 0 or 1");
  SlotArray m{static_cast<char*>(a.mutable_data()), 1, size_t(a.shape(dim)),
              size_t(a.itemsize())};
  for (py::ssize_t d = dim + 1; d < a.ndim(); ++d) m.chunk *= a.shape(d);
  for (py::ssize_t d = 0; d < dim; ++d) m.outer *= a.shape(d);
  return m;
}

// Copy slots `source` into slots `to` of every array (checked to be in range by the caller).
void move_rows(const std::vector<SlotArray>& arrays, const int64_t* to, const int64_t* source,
               size_t n) {
  for (const SlotArray& m : arrays)
    for (size_t o = 0; o < m.outer; ++o)
      for (size_t i = 0; i < n; ++i)
        std::memmove(m.base + (o * m.slots + to[i]) * m.chunk,
                     m.base + (o * m.slots + source[i]) * m.chunk, m.chunk);
}

// Copy rows `source` into rows `to` along each array's slot dimension (0 or 1), in place: a
// deletion fills the freed slots with the last rows (`SegmentState.move_rows`).
void move_slots(py::list arrays, py::array to_a, py::array source_a) {
  const py::ssize_t n = to_a.ndim() == 1 ? to_a.shape(0) : -1;
  const int64_t* to = data<int64_t>(to_a, "to", {n});
  const int64_t* source = data<int64_t>(source_a, "source", {n});
  std::vector<SlotArray> moves;  // every array checked before any is changed
  for (auto item : arrays) {
    auto pair = item.cast<py::tuple>();
    moves.push_back(slot_array(pair[0].cast<py::array>(), pair[1].cast<int>()));
    for (py::ssize_t i = 0; i < n; ++i)
      if (to[i] < 0 || size_t(to[i]) >= moves.back().slots || source[i] < 0 ||
          size_t(source[i]) >= moves.back().slots)
        throw std::invalid_argument("to, source: slots outside an array");
  }
  move_rows(moves, to, source, size_t(n));
}

// A segment state's arrays (engine/state.py's `StateViews`), checked once per allocation of
// the state, so that an edit hands compiled code only what changes from edit to edit.
struct StateArrays {
  StateArrays(py::array ids, py::array positions, py::list layers, py::list residual,
              py::array output, py::list slot_arrays) {
    auto hold = [&](py::array a) { keep.push_back(a); return a; };
    slots = ids.ndim() == 1 ? ids.shape(0) : -1;
    this->ids = data<int64_t>(hold(ids), "ids", {slots});
    this->positions = data<double>(hold(positions), "positions", {slots});
    d = output.ndim() == 2 ? int(output.shape(1)) : -1;
    this->output = data<float>(hold(output), "output", {slots, d});
    if (layers.size() != residual.size() || layers.empty())
      throw std::invalid_argument("layers, residual: one entry per layer");
    for (size_t l = 0; l < layers.size(); ++l) {
      auto t = layers[l].cast<py::tuple>();
      if (t.size() != 9) throw std::invalid_argument("layers: nine arrays per layer");
      auto arr = [&](int i) { return hold(t[i].cast<py::array>()); };
      py::array q0 = arr(0);
      if (l == 0) {
        h = q0.ndim() == 3 ? int(q0.shape(0)) : -1;
        dh = q0.ndim() == 3 ? int(q0.shape(2)) : -1;
        py::array c = t[6].cast<py::array>();
        q = c.ndim() == 2 ? int(c.shape(1)) : -1;
      }
      py::array a1 = arr(1), a2 = arr(2), a3 = arr(3), a4 = arr(4), a5 = arr(5), a6 = arr(6),
                a7 = arr(7), a8 = arr(8);
      if (l == 0) bfloat16 = q0.itemsize() == 2;
      auto attention = [&](py::array a, const char* name) -> void* {
        // bfloat16 comes as int16 (numpy has no bfloat16)
        if (bfloat16) return data<int16_t>(a, name, {h, slots, dh});
        return data<float>(a, name, {h, slots, dh});
      };
      this->layers.push_back(
          {attention(q0, "q"), attention(a1, "k"), attention(a2, "v"),
           data<float>(a3, "m", {h, slots}),
           data<float>(a4, "s", {h, slots}), data<float>(a5, "heads", {h, slots, dh}),
           data<uint8_t>(a6, "codes", {slots, q}), data<float>(a7, "slack", {q, slots}),
           data<uint8_t>(a8, "updates", {slots})});
      inputs.push_back(data<float>(hold(residual[l].cast<py::array>()), "inputs", {slots, d}));
    }
    for (auto item : slot_arrays) {
      auto pair = item.cast<py::tuple>();
      moves.push_back(slot_array(hold(pair[0].cast<py::array>()), pair[1].cast<int>()));
      if (moves.back().slots != size_t(slots))
        throw std::invalid_argument("slot arrays: every one has the state's slots");
    }
  }

  std::vector<py::object> keep;  // the arrays, alive as long as their pointers here
  py::ssize_t slots;
  int h, dh, d, q;
  bool bfloat16;  // queries, keys and values are bfloat16 (else float32)
  int64_t* ids;
  double* positions;
  float* output;
  std::vector<LayerArrays> layers;
  std::vector<float*> inputs;  // layer l's input (S, D); the next layer's is its output
  std::vector<SlotArray> moves;  // every per-slot array, to move rows
};

// One linear packed and applied to x (R, I): what the tests compare with torch.
py::array_t<float> linear_rows(py::array_t<float, py::array::c_style | py::array::forcecast> weight,
                               py::array_t<float, py::array::c_style | py::array::forcecast> bias,
                               const std::string& weights, int input_levels,
                               py::array_t<float, py::array::c_style | py::array::forcecast> x,
                               bool vnni) {
  const Linear l = pack(weight, bias, parse_format(weights), input_levels, vnni);
  if (x.ndim() != 2 || x.shape(1) != l.in)
    throw std::invalid_argument("x must be (rows, in) for this weight");
  const int rows = int(x.shape(0)), ld = padded(l.out);
  std::vector<float> y(size_t(rows) * ld);
  linear(l, x.data(), rows, l.in, y.data(), ld);
  py::array_t<float> out({py::ssize_t(rows), py::ssize_t(l.out)});
  for (int r = 0; r < rows; ++r)
    std::memcpy(out.mutable_data(r, 0), &y[size_t(r) * ld], l.out * sizeof(float));
  return out;
}

class CompiledModel {
 public:
  CompiledModel(int d_model, int n_heads, int d_ff, int groups, int codebook_size, bool causal,
                bool pre_norm, bool gelu, float eps, float delta, const std::string& weights,
                int input_levels)
      : format_(parse_format(weights)), levels_(input_levels), d_(d_model), h_(n_heads), dh_(d_model / n_heads), f_(d_ff), g_(groups),
        q_(n_heads * groups), k_(codebook_size), dg_(d_model / n_heads / groups),
        causal_(causal), pre_norm_(pre_norm), gelu_(gelu), eps_(eps), delta_(delta) {
    if (codebook_size < 1 || codebook_size > 256)
      throw std::invalid_argument("codes are bytes: 1 to 256 codewords per group");
    if (q_ > MAX_CODES) throw std::invalid_argument("at most 512 codes per token");
  }

  void add_layer(py::dict w) {
    auto lin = [&](const char* name) {
      return pack(w[(std::string(name) + ".weight").c_str()].cast<py::array_t<float>>(),
                  w[(std::string(name) + ".bias").c_str()].cast<py::array_t<float>>(), format_,
                  levels_, true);
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
    const int blocks = (q_ + 7) / 8;
    l.lanes.assign(size_t(blocks) * k_ * dg_ * 8, 0.0f);
    l.squared.assign(size_t(blocks) * k_ * 8, 0.0f);
    for (int c = 0; c < q_; ++c)
      for (int j = 0; j < k_; ++j) {
        const float* word = l.codewords.data() + (size_t(c) * k_ + j) * dg_;
        const size_t at = size_t(c / 8) * k_ + j;
        for (int d = 0; d < dg_; ++d) l.lanes[(at * dg_ + d) * 8 + c % 8] = word[d];
        l.squared[at * 8 + c % 8] = dot(word, word, dg_);
      }
    layers_.push_back(std::move(l));
  }

  // The embedding tables of `VQTransformer.embed`, read in place (the model keeps them alive
  // as long as this object): token (V, D), position (P, D) read at real-valued positions with
  // `offset` unused rows first, and where the model has them a type row (D,) added to every
  // token and a norm; and the final norm after the last layer, where the model has one.
  void set_embedding(py::dict w, int offset) {
    auto table = [&](const char* name, py::ssize_t rows) {
      auto a = w[name].cast<py::array_t<float, py::array::c_style>>();
      if (a.ndim() != 2 || a.shape(1) != d_ || (rows >= 0 && a.shape(0) != rows))
        throw std::invalid_argument(std::string(name) + ": expected (rows, D)");
      return a;
    };
    token_ = table("token", -1);
    position_ = table("position", -1);
    if (offset < 0 || offset >= position_.shape(0))
      throw std::invalid_argument("offset: outside the position table");
    offset_ = offset;
    type_.clear();
    gain_.clear();
    shift_.clear();
    auto vector = [&](const char* name) {
      auto a = w[name].cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
      if (a.size() != d_) throw std::invalid_argument(std::string(name) + ": expected (D,)");
      return std::vector<float>(a.data(), a.data() + a.size());
    };
    if (w.contains("type")) type_ = vector("type");
    if (w.contains("norm.weight")) {
      gain_ = vector("norm.weight");
      shift_ = vector("norm.bias");
    }
    final_gain_.clear();
    final_shift_.clear();
    if (w.contains("final_norm.weight")) {
      final_gain_ = vector("final_norm.weight");
      final_shift_ = vector("final_norm.bias");
    }
  }

  // An edit of the state `st` in place, as `IncrementalEngine.apply` makes it: tokens
  // [start, end) of `order` (T,) (the slot of each token in text order) become `new_ids`
  // (n,), the segment's positions become `new_positions` (T',) in text order, of which the kept
  // tokens at indices `moved` changed. Slots are allocated as `IncrementalEngine._allocate`
  // does; then every layer runs (`IncrementalEngine._layers_torch`), then the final norm of
  // the rows the last layer wrote, into the state's outputs and their sum `total` (D,)
  // float64. `codes` (L, n, Q) uint8, or None: the new tokens keep these codes instead of
  // being decided (a full pass forced to given codes, which `verify` checks states against).
  // The sweep re-quantizes `sweep_tokens` tokens per layer from text index `sweep`; a row is
  // refreshed after `max_updates` running updates at most. Returns (the new order (T',), |D|
  // per layer, flips outside D per layer, counts), or (the new order, None, None, None) when
  // half the rows or more are dirty from the start: then only the tokens and positions are
  // updated, and the caller computes a full pass instead.
  py::tuple apply(StateArrays& st, py::array order_a, int start, int end, py::array new_ids_a,
                  py::array new_positions_a, py::array moved_a, py::object codes_obj,
                  py::array total_a, int sweep, int sweep_tokens, int max_updates) {
    if (token_.ndim() != 2) throw std::invalid_argument("set_embedding must come before edits");
    const int n_layers = int(layers_.size());
    if (int(st.layers.size()) != n_layers || st.h != h_ || st.dh != dh_ || st.d != d_ ||
        st.q != q_)
      throw std::invalid_argument("state: its arrays do not have this model's shapes");
    const py::ssize_t slots = st.slots;
    const py::ssize_t old_size = order_a.ndim() == 1 ? order_a.shape(0) : -1;
    const int64_t* order = data<int64_t>(order_a, "order", {old_size});
    if (!(0 <= start && start <= end && end <= old_size))
      throw std::invalid_argument("start, end: not a range of the segment");
    const py::ssize_t n_new = new_ids_a.ndim() == 1 ? new_ids_a.shape(0) : -1;
    const int64_t* new_ids = data<int64_t>(new_ids_a, "new_ids", {n_new});
    const int removed = end - start, size = int(old_size - removed + n_new);
    const double* new_positions = data<double>(new_positions_a, "new_positions", {size});
    const py::ssize_t n_moved = moved_a.ndim() == 1 ? moved_a.shape(0) : -1;
    const int64_t* moved = data<int64_t>(moved_a, "moved", {n_moved});
    double* total = data<double>(total_a, "total", {d_});
    const uint8_t* forced_codes = nullptr;
    py::array codes_a;
    if (!codes_obj.is_none()) {
      codes_a = codes_obj.cast<py::array>();
      forced_codes = data<uint8_t>(codes_a, "codes", {n_layers, n_new, q_});
    }
    const bool forced = forced_codes != nullptr;
    const int fresh = std::max(int(n_new) - removed, 0);
    if (old_size + fresh > slots)
      throw std::invalid_argument("state: reserve room for the new tokens first");
    std::vector<char> in_use(old_size, 0);
    for (py::ssize_t i = 0; i < old_size; ++i) {
      if (order[i] < 0 || order[i] >= old_size || in_use[order[i]])
        throw std::invalid_argument("order: not a permutation of the slots in use");
      in_use[order[i]] = 1;
    }
    for (py::ssize_t i = 0; i < n_moved; ++i)
      if (moved[i] < 0 || moved[i] >= size || (moved[i] >= start && moved[i] < start + n_new))
        throw std::invalid_argument("moved: not the index of a kept token");
    for (py::ssize_t i = 0; i < n_new; ++i)
      if (new_ids[i] < 0 || new_ids[i] >= token_.shape(0))
        throw std::invalid_argument("ids, positions: a token outside the vocabulary");
    const double last = double(position_.shape(0) - 1 - offset_);
    for (int i = 0; i < size; ++i)
      if (!(new_positions[i] >= 0 && new_positions[i] <= last))
        throw std::invalid_argument("ids, positions: a position outside the window");

    // What the removed tokens take with them: their keys and values at every layer (H, R, Dh)
    // and their final states out of the total.
    std::vector<std::vector<float>> gone_k(n_layers), gone_v(n_layers);
    for (int l = 0; l < n_layers; ++l) {
      gone_k[l].resize(size_t(h_) * removed * dh_);
      gone_v[l].resize(gone_k[l].size());
      for (int hh = 0; hh < h_; ++hh)
        for (int j = 0; j < removed; ++j) {
          const size_t from = size_t(hh) * slots + order[start + j];
          const size_t to = (size_t(hh) * removed + j) * dh_;
          read_row(st.layers[l].k, st.bfloat16, from, dh_, &gone_k[l][to]);
          read_row(st.layers[l].v, st.bfloat16, from, dh_, &gone_v[l][to]);
        }
    }
    for (int j = 0; j < removed; ++j) {
      const float* y = st.output + order[start + j] * d_;
      for (int dd = 0; dd < d_; ++dd) total[dd] -= double(y[dd]);
    }
    const std::vector<int64_t> gone_order(removed, start);

    // Slots: new tokens reuse the removed tokens' slots first, then take fresh ones at the
    // end; the slots removed tokens leave free are filled with the last rows, so that the
    // slots in use stay [0, T').
    py::array_t<int64_t> order_out(size);
    int64_t* now = order_out.mutable_data();
    std::copy(order, order + start, now);
    const int reused = std::min(removed, int(n_new));
    std::copy(order + start, order + start + reused, now + start);
    for (int i = 0; i < fresh; ++i) now[start + reused + i] = old_size + i;
    std::copy(order + end, order + old_size, now + start + n_new);
    if (removed > n_new) {
      const int freed = removed - int(n_new), n = int(old_size) - freed;
      std::vector<char> is_freed(old_size, 0);
      for (int j = reused; j < removed; ++j) is_freed[order[start + j]] = 1;
      std::vector<int64_t> movers, targets;
      for (int t = n; t < old_size; ++t)
        if (!is_freed[t]) movers.push_back(t);
      for (int t = 0; t < n; ++t)
        if (is_freed[t]) targets.push_back(t);
      move_rows(st.moves, targets.data(), movers.data(), movers.size());
      std::vector<int64_t> remap(old_size);
      for (int t = 0; t < old_size; ++t) remap[t] = t;
      for (size_t i = 0; i < movers.size(); ++i) remap[movers[i]] = targets[i];
      for (int i = 0; i < size; ++i) now[i] = remap[now[i]];
    }
    int64_t* ids = st.ids;
    double* positions = st.positions;
    std::vector<char> is_new(size, 0);
    std::vector<int64_t> rows;
    for (py::ssize_t i = 0; i < n_new; ++i) {
      const int64_t t = now[start + i];
      ids[t] = new_ids[i];
      is_new[t] = 1;
      rows.push_back(t);
      if (forced)
        for (int l = 0; l < n_layers; ++l)
          std::memcpy(st.layers[l].codes + t * q_,
                      forced_codes + (size_t(l) * n_new + i) * q_, q_);
    }
    for (py::ssize_t i = 0; i < n_moved; ++i) rows.push_back(now[moved[i]]);
    std::sort(rows.begin(), rows.end());
    std::vector<int64_t> rank(size), limit(size);
    for (int i = 0; i < size; ++i) {
      positions[now[i]] = new_positions[i];
      rank[now[i]] = i;
    }
    if (2 * int64_t(rows.size()) > size && size > n_new)  // cheaper as a full pass
      return py::make_tuple(order_out, py::none(), py::none(), py::none());
    // Each row's limit lies between max_updates / 2 and max_updates, so that rows built
    // together are not all refreshed by the same edit.
    for (int t = 0; t < size; ++t) limit[t] = max_updates - rank[t] % (max_updates + 1) / 2;
    const int n_turn = delta_ > 0 ? std::min(sweep_tokens, size) : 0;
    std::vector<int64_t> turn(n_turn);
    for (int i = 0; i < n_turn; ++i) turn[i] = now[(i + sweep) % size];
    auto edit_result = run(st, size, rows, is_new, gone_k, gone_v, gone_order, rank, limit,
                           turn, forced, total);
    return py::make_tuple(order_out, edit_result[0], edit_result[1], edit_result[2]);
  }

 private:
  // Every layer of an edit, then the final norm (see `apply`): rows (|D|,) the sorted dirty
  // slots, embedded into the first layer's input here. Returns (|D| per layer, flips outside
  // D per layer, counts).
  py::tuple run(StateArrays& st, int size, const std::vector<int64_t>& rows,
                const std::vector<char>& is_new, const std::vector<std::vector<float>>& gone_k,
                const std::vector<std::vector<float>>& gone_v,
                const std::vector<int64_t>& gone_order, const std::vector<int64_t>& rank,
                const std::vector<int64_t>& limit, const std::vector<int64_t>& turn, bool forced,
                double* total) {
    const int n_layers = int(layers_.size());
    const py::ssize_t slots = st.slots;
    const int64_t* ids = st.ids;
    const double* positions = st.positions;
    const std::vector<float*>& ins = st.inputs;
    float* output = st.output;
    const int n_rows = int(rows.size()), n_gone = int(gone_order.size()),
              n_turn = int(turn.size());
    for (int i = 0; i < n_rows; ++i)
      embed(ids[rows[i]], positions[rows[i]], ins[0] + rows[i] * d_);
    Counts counts;
    std::vector<int64_t> dirty(rows);
    last_.resize(size_t(slots) * d_);  // the last layer's output rows, before the final norm
    py::list sizes, flips;
    for (int l = 0; l < n_layers; ++l) {
      sizes.append(dirty.size());
      std::vector<char> kept(dirty.size());
      for (size_t i = 0; i < dirty.size(); ++i) kept[i] = !is_new[dirty[i]];
      float* next = l + 1 < n_layers ? ins[l + 1] : last_.data();
      auto layer = [&](auto attention) {  // queries, keys and values of this element type
        return edit_layer<decltype(attention)>(
            layers_[l], st.layers[l], slots, size, ins[l], next, dirty, kept, gone_k[l].data(),
            gone_v[l].data(), gone_order.data(), n_gone, rank.data(), limit.data(), turn.data(),
            n_turn, forced, counts);
      };
      const int flipped = st.bfloat16 ? layer(uint16_t{}) : layer(float{});
      flips.append(flipped);
    }
    for (const int64_t t : dirty) {  // final states, and their sum over the segment
      float* y = last_.data() + t * d_;
      if (!final_gain_.empty()) layer_norm(y, d_, final_gain_, final_shift_, eps_);
      float* old = output + t * d_;
      for (int d = 0; d < d_; ++d) total[d] += double(y[d]) - (is_new[t] ? 0.0 : double(old[d]));
      std::memcpy(old, y, d_ * sizeof(float));
    }
    py::dict c;
    c["macs"] = counts.macs;
    c["refreshed"] = counts.refreshed;
    c["refresh_updates"] = counts.refresh_updates;
    c["refresh_cancellation"] = counts.refresh_cancellation;
    c["refresh_tie"] = counts.refresh_tie;
    c["sweep_flips"] = counts.sweep_flips;
    return py::make_tuple(sizes, flips, c);
  }

  // x (D,) = the token's embedding at a real-valued position: between two integers the
  // position rows are interpolated as torch.lerp does.
  void embed(int64_t id, double position, float* x) const {
    const double below = std::floor(position);
    const py::ssize_t row = py::ssize_t(below) + offset_;
    const py::ssize_t above = std::min(row + 1, position_.shape(0) - 1);
    const float frac = float(position - below);
    const float* word = token_.data() + id * d_;
    const float *a = position_.data() + row * d_, *b = position_.data() + above * d_;
    for (int d = 0; d < d_; ++d) {
      const float token = type_.empty() ? word[d] : word[d] + type_[d];
      const float step = b[d] - a[d];
      x[d] = token + (frac < 0.5f ? a[d] + frac * step : b[d] - step * (1 - frac));
    }
    if (!gain_.empty()) layer_norm(x, d_, gain_, shift_, eps_);
  }

  // One layer: rows (the dirty slots, sorted) become the rows written to `out` (D ∪ flipped);
  // returns how many flipped. A: the element type of queries, keys and values.
  template <typename A>
  int edit_layer(const Layer& L, const LayerArrays& a, py::ssize_t slots, int size,
                 const float* inputs, float* out, std::vector<int64_t>& dirty,
                 const std::vector<char>& kept, const float* gone_k, const float* gone_v,
                 const int64_t* gone_order, int ng, const int64_t* rank, const int64_t* limit,
                 const int64_t* turn, int n_turn, bool forced, Counts& counts) const {
    A *q = static_cast<A*>(a.q), *k = static_cast<A*>(a.k), *v = static_cast<A*>(a.v);
    float *m = a.m, *s = a.s, *heads = a.heads, *slack = a.slack;
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
          widen_row(k + (size_t(hh) * slots + rows[i]) * dh_, dh_,
                    &old_k[(size_t(hh) * n_old + j) * dh_]);
          widen_row(v + (size_t(hh) * slots + rows[i]) * dh_, dh_,
                    &old_v[(size_t(hh) * n_old + j) * dh_]);
          ++j;
        }
    }
    for (int j = 0; j < ng; ++j) old_order[j] = gone_order[j];
    for (int i = 0, j = ng; i < nr; ++i)
      if (kept[i]) old_order[j++] = rank[rows[i]];

    project(L, rows, nr, inputs, q, k, v, slots, counts);
    std::vector<int64_t> refresh;
    // Where each row's groups' slack ran out at this layer (by an update or a refresh).
    std::vector<Blocks> past(size, 0);
    update_rows(k, v, q, m, s, heads, slack, updates, slots, size, rows, nr, old_k, old_v,
                old_order, n_old, rank, limit, clean, past.data(), refresh, counts);
    counts.refreshed += int64_t(refresh.size());
    std::vector<int64_t> attend_rows(rows, rows + nr);
    attend_rows.insert(attend_rows.end(), refresh.begin(), refresh.end());
    attend(q, k, v, m, s, heads, slack, past.data(), updates, slots, size, rank, attend_rows,
           counts);

    // Which codes to decide: rows in D and the sweep's turn (nearest), and rows with a group
    // past its slack, after a running update or a refresh (the mode's rule). The torch
    // reference also decides refreshed rows within their slack, and every group of a row past
    // its slack: the same codes stay, only their slack is renewed.
    std::vector<char> kind(size, NONE);
    for (int t = 0; t < size; ++t)
      if (clean[t] && past[t]) kind[t] = RULE;
    for (int i = 0; i < n_turn; ++i)
      if (clean[turn[i]]) kind[turn[i]] = NEAREST;
    // Under the rule only the blocks of eight groups holding a group past its slack are
    // searched: the rule would keep the other codes (a row runs out a group or two at a time).
    const int nd = forced ? 0 : nr;  // the rows in D that are decided
    const int n_blocks = (q_ + 7) / 8;
    const Blocks every = n_blocks == 64 ? ~Blocks(0) : (Blocks(1) << n_blocks) - 1;
    std::vector<int64_t> decide(rows, rows + nd);
    std::vector<char> nearest(nd, NEAREST);
    for (int t = 0; t < size; ++t)
      if (kind[t] != NONE) {
        decide.push_back(t);
        nearest.push_back(kind[t]);
      }
    const int n_decide = int(decide.size());
    std::vector<uint8_t> new_codes(size_t(n_decide) * q_);  // the codes before, then decided
    for (int i = 0; i < n_decide; ++i)
      std::memcpy(&new_codes[size_t(i) * q_], codes + decide[i] * q_, q_);
    std::vector<float> new_slack(size_t(n_decide) * q_), scratch(h_ + 8 * dg_);
    std::vector<char> ties(n_decide);
    auto blocks = [&](int i) { return nearest[i] == NEAREST ? every : past[decide[i]]; };
    auto decide_row = [&](int i) {
      quantize(L, heads, codes, slots, decide[i], nearest[i] == NEAREST, blocks(i),
               &new_codes[size_t(i) * q_], &new_slack[size_t(i) * q_], ties[i], scratch.data(),
               counts);
    };
    for (int i = 0; i < n_decide; ++i) decide_row(i);
    std::vector<int64_t> tied;
    for (int i = 0; i < n_decide; ++i)
      if (ties[i] && updates[decide[i]] > 0) tied.push_back(decide[i]);
    if (!tied.empty()) {  // near ties are decided again on rows recomputed in full
      attend(q, k, v, m, s, heads, slack, past.data(), updates, slots, size, rank, tied, counts);
      counts.refresh_tie += int64_t(tied.size());
      for (int i = 0; i < n_decide; ++i)
        if (ties[i] && std::find(tied.begin(), tied.end(), decide[i]) != tied.end())
          decide_row(i);
    }
    std::vector<int64_t> flipped;
    for (int i = 0; i < n_decide; ++i) {
      const int64_t t = decide[i];
      for (int c = 0; c < q_; ++c)
        if (blocks(i) & block_of(c)) slack[size_t(c) * slots + t] = new_slack[size_t(i) * q_ + c];
      if (i >= nd && std::memcmp(codes + t * q_, &new_codes[size_t(i) * q_], q_)) {
        flipped.push_back(t);
        counts.sweep_flips += nearest[i] == NEAREST;
      }
      std::memcpy(codes + t * q_, &new_codes[size_t(i) * q_], q_);
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
  template <typename A>
  void project(const Layer& L, const int64_t* rows, int nr, const float* inputs, A* q, A* k,
               A* v, py::ssize_t slots, Counts& counts) const {
    if (!nr) return;
    const int ld = padded(d_);
    std::vector<float> x(size_t(nr) * d_), y(size_t(nr) * ld);
    for (int i = 0; i < nr; ++i) {
      std::memcpy(&x[size_t(i) * d_], inputs + rows[i] * d_, d_ * sizeof(float));
      if (pre_norm_) layer_norm(&x[size_t(i) * d_], d_, L.attn_gain, L.attn_shift, eps_);
    }
    const Linear* lins[3] = {&L.q, &L.k, &L.v};
    A* dest[3] = {q, k, v};
    for (int p = 0; p < 3; ++p) {
      linear(*lins[p], x.data(), nr, d_, y.data(), ld);
      for (int i = 0; i < nr; ++i)
        for (int hh = 0; hh < h_; ++hh)  // (H, S, Dh) head-major
          narrow_row(&y[size_t(i) * ld + hh * dh_], dh_,
                     dest[p] + (size_t(hh) * slots + rows[i]) * dh_);
    }
    counts.macs += int64_t(3) * nr * d_ * d_;
  }

  bool visible(int64_t key_rank, int64_t query_rank) const {
    return !causal_ || key_rank <= query_rank;
  }

  // Running softmax update of the clean rows (see `IncrementalEngine._update_rows`), eight
  // rows of a head at a time, one per lane: adds the rows due for a full refresh to `refresh`
  // and marks in `past` each row's blocks with a group past its slack.
  template <typename A>
  void update_rows(const A* k, const A* v, const A* q, float* m, float* s,
                   float* heads, float* slack, uint8_t* updates, py::ssize_t slots, int size,
                   const int64_t* rows, int nr, const std::vector<float>& old_k,
                   const std::vector<float>& old_v, const std::vector<int64_t>& old_order,
                   int n_old, const int64_t* rank, const int64_t* limit,
                   const std::vector<char>& clean, Blocks* past, std::vector<int64_t>& refresh,
                   Counts& counts) const {
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
    // The keys (scaled, so that no score needs it) and values in play, (H, n_keys, Dh), the
    // leaving ones first.
    const float scale = 1.0f / std::sqrt(float(dh_));
    std::vector<float> keys(size_t(h_) * n_keys * dh_), values(keys.size());
    for (int hh = 0; hh < h_; ++hh)
      for (int j = 0; j < n_keys; ++j) {
        const size_t at = size_t(hh) * slots;
        float* key = &keys[(size_t(hh) * n_keys + j) * dh_];
        float* value = &values[(size_t(hh) * n_keys + j) * dh_];
        if (j < n_old) {
          std::memcpy(key, &old_k[(size_t(hh) * n_old + j) * dh_], dh_ * sizeof(float));
          std::memcpy(value, &old_v[(size_t(hh) * n_old + j) * dh_], dh_ * sizeof(float));
        } else {
          widen_row(k + (at + rows[j - n_old]) * dh_, dh_, key);
          widen_row(v + (at + rows[j - n_old]) * dh_, dh_, value);
        }
        for (int d = 0; d < dh_; ++d) key[d] *= scale;
      }
    std::vector<float> qt(size_t(dh_) * 8), ht(qt.size()), change(qt.size()),
        w(size_t(n_keys) * 8);  // tiles (Dh, 8), weights (n_keys, 8)
    std::vector<char> cancelled(size, 0);
    const f8 minus_infinity = f8{} - std::numeric_limits<float>::infinity();
    const int dg = dh_ / g_;
    const A* q_rows[8];
    float* h_rows[8];
    for (int hh = 0; hh < h_; ++hh) {
      const float* kh = &keys[size_t(hh) * n_keys * dh_];
      const float* vh = &values[size_t(hh) * n_keys * dh_];
      for (int t0 = 0; t0 < size; t0 += 8) {
        const int n = std::min(8, size - t0);
        i8 active = {}, query_rank = {};
        bool any = false;
        for (int i = 0; i < n; ++i) {
          active[i] = touched[t0 + i] ? -1 : 0;
          query_rank[i] = int32_t(rank[t0 + i]);
          any |= touched[t0 + i];
        }
        if (!any) continue;
        const size_t at = size_t(hh) * slots + t0;
#if defined(__x86_64__)
        if (t0 + 8 * (AHEAD + 1) <= size) {  // a later tile's queries, head outputs, slack
          for (int b = 0; b < 8 * dh_ * 4; b += 64) {
            if (b < 8 * dh_ * int(sizeof(A)))
              _mm_prefetch(reinterpret_cast<const char*>(q + (at + 8 * AHEAD) * dh_) + b,
                           _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(heads + (at + 8 * AHEAD) * dh_) + b,
                         _MM_HINT_T0);
          }
          for (int gg = 0; gg < g_; ++gg)  // (Q, S): a line of each group's slack
            _mm_prefetch(reinterpret_cast<const char*>(
                             slack + size_t(hh * g_ + gg) * slots + t0 + 8 * AHEAD),
                         _MM_HINT_T0);
        }
#endif
        for (int i = 0; i < n; ++i) {
          q_rows[i] = q + (at + i) * dh_;
          h_rows[i] = heads + (at + i) * dh_;
        }
        gather_tile(q_rows, n, dh_, qt.data());
        lane_scores(qt.data(), kh, n_keys, dh_, w.data());
        const f8 m_old = load_lanes(m + at, n), s_old = load_lanes(s + at, n);
        f8 top = minus_infinity;  // the reference max moves up to the new keys' best score
        for (int j = n_old; j < n_keys; ++j) {
          f8 score = load8(&w[j * 8]);
          if (causal_) score = int32_t(order[j]) <= query_rank ? score : minus_infinity;
          top = max8(top, score);
        }
        const f8 m_new = max8(m_old, top);
        f8 mass = {}, gone = {};  // softmax mass of every key seen, of the leaving ones
        for (int j = 0; j < n_keys; ++j) {
          f8 e = exp8(load8(&w[j * 8]) - m_new);
          if (causal_) e = int32_t(order[j]) <= query_rank ? e : f8{};
          mass += e;
          if (j < n_old) {  // leaving keys' weights count negatively
            gone += e;
            e = -e;
          }
          store8(&w[j * 8], e);
        }
        const f8 added = mass - 2 * gone;  // net softmax mass added
        const f8 s_kept = s_old * exp8(m_old - m_new);
        const f8 s_new = s_kept + added;
        // h' − h = (Σ w·v) / s_new − h·(Σ w / s_new)
        const f8 inverse = 1.0f / s_new, keep = added * inverse;
        gather_tile(h_rows, n, dh_, ht.data());
        lane_mix(w.data(), vh, n_keys, dh_, change.data());
        for (int d = 0; d < dh_; ++d) {
          f8 c = load8(&change[d * 8]) * inverse - load8(&ht[d * 8]) * keep;
          c = active ? c : f8{};
          store8(&change[d * 8], c);
          store8(&ht[d * 8], load8(&ht[d * 8]) + c);
        }
        for (int gg = 0; gg < g_; ++gg) {  // each group's slack shrinks by how far it moved
          f8 squares = {};
          for (int d = gg * dg; d < (gg + 1) * dg; ++d)
            squares += load8(&change[d * 8]) * load8(&change[d * 8]);
          const int c = hh * g_ + gg;
          float* at_slack = slack + size_t(c) * slots + t0;
          const f8 left = load_lanes(at_slack, n) - sqrt8(squares);
          store_lanes(at_slack, left, n);
          for (int bits = negative_lanes(left) & ((1 << n) - 1); bits; bits &= bits - 1)
            past[t0 + __builtin_ctz(bits)] |= block_of(c);
        }
        scatter_tile(ht.data(), n, dh_, h_rows);
        store_lanes(m + at, active ? m_new : m_old, n);
        store_lanes(s + at, active ? s_new : s_old, n);
        const i8 cancel = active & (gone > CANCELLATION * s_new);
        for (int i = 0; i < n; ++i) cancelled[t0 + i] |= cancel[i] != 0;
      }
    }
    for (int t = 0; t < size; ++t) {
      if (!touched[t]) continue;
      updates[t] += 1;
      const bool tired = updates[t] >= limit[t];
      if (tired || cancelled[t]) {
        refresh.push_back(t);
        (tired ? counts.refresh_updates : counts.refresh_cancellation) += 1;
      }
    }
  }

  // Softmax statistics and head outputs of `rows` from their queries, over every visible key,
  // eight rows of a head at a time. Each group's slack shrinks by how far its head output
  // moved, so that a refreshed row is decided again only where a group ran past its slack
  // (marked in `past`).
  template <typename A>
  void attend(const A* q, const A* k, const A* v, float* m, float* s, float* heads,
              float* slack, Blocks* past, uint8_t* updates, py::ssize_t slots, int size,
              const int64_t* rank, const std::vector<int64_t>& rows, Counts& counts) const {
    const int nr = int(rows.size());
    if (!nr) return;
    const float scale = 1.0f / std::sqrt(float(dh_));
    std::vector<float> qt(size_t(dh_) * 8), ht(qt.size()), acc(qt.size()), w(size_t(size) * 8);
    const f8 minus_infinity = f8{} - std::numeric_limits<float>::infinity();
    const int dg = dh_ / g_;
    const A* q_rows[8];
    float* h_rows[8];
    // Tiles read every key and value once per eight rows, a component at a time: bfloat16
    // ones are widened once per head first (widening each one as it was read cost a full pass
    // 15%).
    const bool widened = !std::is_same<A, float>::value && (nr >= 8 || !row_major_);
    std::vector<float> wide(widened ? 2 * size_t(size) * dh_ : 0);
    for (int hh = 0; hh < h_; ++hh) {
      const A* kh = k + size_t(hh) * slots * dh_;
      const A* vh = v + size_t(hh) * slots * dh_;
      if (widened) {
        widen_row(kh, size * dh_, wide.data());
        widen_row(vh, size * dh_, wide.data() + size_t(size) * dh_);
      }
      const float* tile_k = widened ? wide.data() : reinterpret_cast<const float*>(kh);
      const float* tile_v =
          widened ? wide.data() + size_t(size) * dh_ : reinterpret_cast<const float*>(vh);
      for (int r0 = 0; r0 < nr; r0 += 8) {
        const int n = std::min(8, nr - r0);
        if (n < 8 && row_major_) {  // fewer rows than lanes: one row at a time, keys in lanes
          for (int i = r0; i < nr; ++i)
            attend_row(q, kh, vh, m, s, heads, slack, past, slots, size, rank, hh, rows[i],
                       w.data(), acc.data());
          break;
        }
        i8 query_rank = {};
        for (int i = 0; i < n; ++i) {
          const size_t at = size_t(hh) * slots + rows[r0 + i];
          q_rows[i] = q + at * dh_;
          h_rows[i] = heads + at * dh_;
          query_rank[i] = int32_t(rank[rows[r0 + i]]);
        }
        gather_tile(q_rows, n, dh_, qt.data());
        for (int d = 0; d < dh_; ++d) store8(&qt[d * 8], load8(&qt[d * 8]) * scale);
        lane_scores(qt.data(), tile_k, size, dh_, w.data());
        f8 top = minus_infinity;
        for (int j = 0; j < size; ++j) {
          f8 score = load8(&w[j * 8]);
          if (causal_) {
            score = int32_t(rank[j]) <= query_rank ? score : minus_infinity;
            store8(&w[j * 8], score);
          }
          top = max8(top, score);
        }
        f8 sum = {};
        for (int j = 0; j < size; ++j) {
          f8 e = exp8(load8(&w[j * 8]) - top);
          if (causal_) e = int32_t(rank[j]) <= query_rank ? e : f8{};
          sum += e;
          store8(&w[j * 8], e);
        }
        lane_mix(w.data(), tile_v, size, dh_, acc.data());
        gather_tile(h_rows, n, dh_, ht.data());  // the head outputs before
        for (int gg = 0; gg < g_; ++gg) {
          f8 squares = {};
          for (int d = gg * dg; d < (gg + 1) * dg; ++d) {
            const f8 now = load8(&acc[d * 8]) / sum;
            const f8 moved = now - load8(&ht[d * 8]);
            squares += moved * moved;
            store8(&ht[d * 8], now);
          }
          const f8 shift = sqrt8(squares);
          const int c = hh * g_ + gg;
          for (int i = 0; i < n; ++i) {
            float& left = slack[size_t(c) * slots + rows[r0 + i]];
            left -= shift[i];
            if (!(left >= 0)) past[rows[r0 + i]] |= block_of(c);  // NaN too
          }
        }
        scatter_tile(ht.data(), n, dh_, h_rows);
        for (int i = 0; i < n; ++i) {
          const size_t at = size_t(hh) * slots + rows[r0 + i];
          m[at] = top[i];
          s[at] = sum[i];
        }
      }
    }
    int64_t pairs = 0;
    for (int64_t t : rows) {
      updates[t] = 0;
      pairs += causal_ ? rank[t] + 1 : size;
    }
    counts.macs += 2 * pairs * h_ * dh_;
  }

  // `attend` for one row t of head hh when too few rows fill a tile: its scores against
  // eight keys at a time as one vector (`row_scores`), its head output as a sum of value rows.
  // w: room for `size` weights, rounded up to eight; scratch: room for 2·Dh floats.
  template <typename A>
  void attend_row(const A* q, const A* kh, const A* vh, float* m, float* s,
                  float* heads, float* slack, Blocks* past, py::ssize_t slots, int size,
                  const int64_t* rank, int hh, int64_t t, float* w, float* scratch) const {
    const size_t at = size_t(hh) * slots + t;
    const A* qt = q + at * dh_;
    const float scale = 1.0f / std::sqrt(float(dh_));
    const f8 minus_infinity = f8{} - std::numeric_limits<float>::infinity();
    f8 top = minus_infinity;
    for (int j0 = 0; j0 < size; j0 += 8) {
      const int n = std::min(8, size - j0);
      const A* keys = kh + size_t(j0) * dh_;
      f8 score = (n == 8 ? row_scores<8>(qt, keys, dh_) : row_scores_tail(qt, keys, n, dh_)) *
                 scale;
      if (n < 8 || causal_)  // lanes past the keys, and keys the row may not see
        for (int j = 0; j < 8; ++j)
          if (j >= n || (causal_ && rank[j0 + j] > rank[t])) score[j] = minus_infinity[j];
      store8(w + j0, score);
      top = max8(top, score);
    }
    float m_new = top[0];
    for (int j = 1; j < 8; ++j) m_new = std::max(m_new, top[j]);
    f8 sum8 = {};
    for (int j0 = 0; j0 < size; j0 += 8) {
      const f8 score = load8(w + j0);
      const f8 e = score > minus_infinity ? exp8(score - m_new) : f8{};  // masked: no weight
      store8(w + j0, e);
      sum8 += e;
    }
    float sum = 0;
    for (int j = 0; j < 8; ++j) sum += sum8[j];
    float* h = heads + at * dh_;
    const int dg = dh_ / g_;
    float* mixed = scratch;  // Σ_j w_j·v_j (Dh,)
    float* squares = scratch + dh_;  // how far each component moved, squared (Dh,)
    if (dh_ == 8) mix_rows<1>(w, vh, size, mixed);
    else if (dh_ == 16) mix_rows<2>(w, vh, size, mixed);
    else  // a multiple of 32 (`row_major_`)
      for (int d0 = 0; d0 < dh_; d0 += 32) mix_rows<4>(w, vh + d0, size, mixed + d0, dh_);
    for (int d0 = 0; d0 < dh_; d0 += 8) {  // the head output, eight components at a time
      const f8 now = load8(&mixed[d0]) / sum, moved = now - load8(h + d0);
      store8(h + d0, now);
      store8(&squares[d0], moved * moved);
    }
    for (int gg = 0; gg < g_; ++gg) {  // each group's slack shrinks by how far it moved
      float group = 0;
      for (int d = gg * dg; d < (gg + 1) * dg; ++d) group += squares[d];
      float& left = slack[size_t(hh * g_ + gg) * slots + t];
      left -= std::sqrt(group);
      if (!(left >= 0)) past[t] |= block_of(hh * g_ + gg);  // NaN too
    }
    m[at] = m_new;
    s[at] = sum;
  }

  // The codes and slack of slot t's groups in `blocks` (bit b: groups 8b to 8b + 7) under the
  // mode's rule (`IncrementalEngine._quantize`), into code_out (Q,) and slack_out (Q,); other
  // groups are left as they are. `nearest`: every group takes its nearest codeword, whatever its
  // code. Eight groups at a time, one per lane: one pass over the K codewords finds each group's
  // nearest, second nearest and current distance (the first of twin codewords wins, as torch's
  // argmin). `scratch`: room for H + 8·Dg floats.
  void quantize(const Layer& L, const float* heads, const uint8_t* codes, py::ssize_t slots,
                int64_t t, bool nearest, Blocks blocks, uint8_t* code_out, float* slack_out,
                char& tie, float* scratch, Counts& counts) const {
    tie = 0;
    float* norms = scratch;  // |h| of each head, where needed
    float* x2 = scratch + h_;  // −2x (Dg, 8)
    for (int hh = 0; hh < h_; ++hh) norms[hh] = -1;
    for (; blocks; blocks &= blocks - 1) {
      const int c0 = 8 * __builtin_ctzll(blocks), n = std::min(8, q_ - c0);
      counts.macs += int64_t(n) * k_ * dg_;
      Scan scan;
      f8 xx = {};
      for (int i = 0; i < 8; ++i) {
        const int c = c0 + i;
        const float* h = i < n ? heads + (size_t(c / g_) * slots + t) * dh_ : nullptr;
        scan.current[i] = i < n ? codes[t * q_ + c] : 0;
        for (int d = 0; d < dg_; ++d) {
          const float value = h ? h[(c % g_) * dg_ + d] : 0.0f;
          x2[d * 8 + i] = -2 * value;
          xx[i] += value * value;
        }
      }
      const float* words = L.lanes.data() + size_t(c0 / 8) * k_ * dg_ * 8;
      const float* square = L.squared.data() + size_t(c0 / 8) * k_ * 8;
      switch (dg_) {  // the common widths with x in registers
        case 1: scan.run<1>(x2, words, square, k_, dg_); break;
        case 2: scan.run<2>(x2, words, square, k_, dg_); break;
        case 4: scan.run<4>(x2, words, square, k_, dg_); break;
        case 8: scan.run<8>(x2, words, square, k_, dg_); break;
        default: scan.run<0>(x2, words, square, k_, dg_);
      }
      const f8 d_best = sqrt8(max8(scan.best + xx, f8{}));
      const f8 d_second = sqrt8(max8(scan.second + xx, f8{}));
      const f8 d_current = sqrt8(max8(scan.at_current + xx, f8{}));
      const i8 keep = nearest ? i8{} : d_current <= (1 + delta_) * d_best;
      const i8 code = keep ? scan.current : scan.closest;
      const f8 d_code = keep ? d_current : d_best;
      const f8 d_other = code == scan.closest ? d_second : d_best;  // the nearest other word
      const f8 slack = ((1 + delta_) * d_other - d_code) / (2 + delta_);
      for (int i = 0; i < n; ++i) {
        const int c = c0 + i, hh = c / g_;
        code_out[c] = uint8_t(code[i]);
        slack_out[c] = slack[i];
        if (norms[hh] < 0) {
          const float* h = heads + (size_t(hh) * slots + t) * dh_;
          norms[hh] = std::sqrt(dot(h, h, dh_));
        }
        if (slack[i] < TIE * norms[hh]) tie = 1;
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
  int levels_;
  int d_, h_, dh_, f_, g_, q_, k_, dg_;
  // Heads whose width `attend_row` takes (eight or sixteen components, or a multiple of 32).
  bool row_major_ = dh_ == 8 || dh_ == 16 || dh_ % 32 == 0;
  bool causal_, pre_norm_, gelu_;
  float eps_, delta_;
  std::vector<Layer> layers_;
  py::array_t<float, py::array::c_style> token_, position_;  // (V, D), (P, D)
  int offset_ = 0;
  std::vector<float> type_, gain_, shift_;  // (D,) each, or empty
  std::vector<float> final_gain_, final_shift_;  // (D,) each, or empty
  std::vector<float> last_;  // (S, D) scratch: the last layer's output rows of an edit
};

PYBIND11_MODULE(_compiled, m) {
  m.doc() = "The compiled edit path of the incremental engine (engine/compiled.py wraps it).";
  m.def("has_avx512", &has_avx512, "Whether the linears run their AVX-512 kernel.");
  m.def("has_vnni", &has_vnni, "Whether int8 linears multiply bytes (AVX-512 VNNI).");
  m.def("linear", &linear_rows, py::arg("weight"), py::arg("bias"), py::arg("weights"),
        py::arg("input_levels"), py::arg("x"), py::arg("vnni"),
        "y (R, O) = x (R, I) through one linear as an edit computes it (tests).");
  m.def("move_slots", &move_slots, py::arg("arrays"), py::arg("to"), py::arg("source"),
        "Copy rows `source` into rows `to` of every (array, slot dimension) pair.");
  py::class_<CompiledModel>(m, "CompiledModel")
      .def(py::init<int, int, int, int, int, bool, bool, bool, float, float, std::string, int>(),
           py::arg("d_model"), py::arg("n_heads"), py::arg("d_ff"), py::arg("groups"),
           py::arg("codebook_size"), py::arg("causal"), py::arg("pre_norm"), py::arg("gelu"),
           py::arg("eps"), py::arg("delta"), py::arg("weights"), py::arg("input_levels"))
      .def("add_layer", &CompiledModel::add_layer)
      .def("set_embedding", &CompiledModel::set_embedding)
      .def("apply", &CompiledModel::apply, py::arg("state"), py::arg("order"), py::arg("start"),
           py::arg("end"), py::arg("new_ids"), py::arg("new_positions"), py::arg("moved"),
           py::arg("codes"), py::arg("total"), py::arg("sweep"), py::arg("sweep_tokens"),
           py::arg("max_updates"));
  py::class_<StateArrays>(m, "StateArrays")
      .def(py::init<py::array, py::array, py::list, py::list, py::array, py::list>(),
           py::arg("ids"), py::arg("positions"), py::arg("layers"), py::arg("residual"),
           py::arg("output"), py::arg("slots"));
}
