// The compiled edit path: one call per layer does what `IncrementalEngine._layer` and
// `Block.finish` do in torch (engine/incremental.py is the reference, and its docstring the
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

// ---- linears: y (R, O) = x (R, I) · W (I, O) + b, W packed as (ceil(O/16), I, 16) panels ----

struct Linear {
  int in = 0, out = 0, panels = 0;
  std::vector<float> w;     // (panels, I, 16), zero past O
  std::vector<float> bias;  // (panels·16,), zero past O
};

Linear pack(py::array_t<float, py::array::c_style | py::array::forcecast> weight,
            py::array_t<float, py::array::c_style | py::array::forcecast> bias) {
  // weight (O, I) as torch stores it, bias (O,)
  if (weight.ndim() != 2 || bias.ndim() != 1 || bias.shape(0) != weight.shape(0))
    throw std::invalid_argument("a linear needs a (out, in) weight and an (out,) bias");
  Linear l;
  l.out = int(weight.shape(0));
  l.in = int(weight.shape(1));
  l.panels = (l.out + PANEL - 1) / PANEL;
  l.w.assign(size_t(l.panels) * l.in * PANEL, 0.0f);
  l.bias.assign(size_t(l.panels) * PANEL, 0.0f);
  auto w = weight.unchecked<2>();
  for (int o = 0; o < l.out; ++o) {
    l.bias[o] = bias.data()[o];
    for (int i = 0; i < l.in; ++i)
      l.w[(size_t(o / PANEL) * l.in + i) * PANEL + o % PANEL] = w(o, i);
  }
  return l;
}

#if defined(__x86_64__)
template <int N>
__attribute__((target("avx512f"))) void panel_rows_avx512(const Linear& l, const float* x,
                                                          int ldx, float* y, int ldy) {
  for (int p = 0; p < l.panels; ++p) {
    __m512 acc[N];
    const __m512 bias = _mm512_loadu_ps(l.bias.data() + p * PANEL);
#pragma GCC unroll 8
    for (int r = 0; r < N; ++r) acc[r] = bias;
    const float* w = l.w.data() + size_t(p) * l.in * PANEL;
    for (int i = 0; i < l.in; ++i) {
      const __m512 wv = _mm512_loadu_ps(w + size_t(i) * PANEL);
#pragma GCC unroll 8
      for (int r = 0; r < N; ++r)
        acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * ldx + i]), wv, acc[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < N; ++r) _mm512_storeu_ps(y + r * ldy + p * PANEL, acc[r]);
  }
}
#endif

template <int N>
void panel_rows(const Linear& l, const float* x, int ldx, float* y, int ldy) {
  // Portable: the compiler vectorises the 16 columns (AVX2 with -march=x86-64-v3).
  for (int p = 0; p < l.panels; ++p) {
    float acc[N][PANEL];
    for (int r = 0; r < N; ++r)
      for (int j = 0; j < PANEL; ++j) acc[r][j] = l.bias[p * PANEL + j];
    const float* w = l.w.data() + size_t(p) * l.in * PANEL;
    for (int i = 0; i < l.in; ++i) {
      const float* wi = w + size_t(i) * PANEL;
      for (int r = 0; r < N; ++r) {
        const float xi = x[r * ldx + i];
        for (int j = 0; j < PANEL; ++j) acc[r][j] += xi * wi[j];
      }
    }
    for (int r = 0; r < N; ++r)
      std::memcpy(y + r * ldy + p * PANEL, acc[r], sizeof(acc[r]));
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

template <int N>
void rows_block(const Linear& l, const float* x, int ldx, float* y, int ldy) {
#if defined(__x86_64__)
  if (has_avx512()) return panel_rows_avx512<N>(l, x, ldx, y, ldy);
#endif
  panel_rows<N>(l, x, ldx, y, ldy);
}

// y rows have stride ldy ≥ panels·16 (the padded columns are written too).
void linear(const Linear& l, const float* x, int rows, int ldx, float* y, int ldy) {
  int r = 0;
  for (; r + ROW_BLOCK <= rows; r += ROW_BLOCK)
    rows_block<ROW_BLOCK>(l, x + r * ldx, ldx, y + r * ldy, ldy);
  const float* xr = x + r * ldx;
  float* yr = y + r * ldy;
  switch (rows - r) {
    case 7: rows_block<7>(l, xr, ldx, yr, ldy); break;
    case 6: rows_block<6>(l, xr, ldx, yr, ldy); break;
    case 5: rows_block<5>(l, xr, ldx, yr, ldy); break;
    case 4: rows_block<4>(l, xr, ldx, yr, ldy); break;
    case 3: rows_block<3>(l, xr, ldx, yr, ldy); break;
    case 2: rows_block<2>(l, xr, ldx, yr, ldy); break;
    case 1: rows_block<1>(l, xr, ldx, yr, ldy); break;
    default: break;
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

// x = exp(max(x, EXP_FLOOR)) over an array, eight at a time.
void exp_floor(float* x, int n) {
  int j = 0;
  for (; j + 8 <= n; j += 8) store8(x + j, exp8(load8(x + j)));
  if (j < n) {
    float rest[8] = {};
    std::memcpy(rest, x + j, (n - j) * sizeof(float));
    store8(rest, exp8(load8(rest)));
    std::memcpy(x + j, rest, (n - j) * sizeof(float));
  }
}

// scores (NP,) = Σ_d q[d]·keys[d, :] for keys transposed (Dh, NP), NP a multiple of 16, each
// block of 16 summed in registers.
void scores(const float* q, const float* keys, int dh, int np, float* out) {
  for (int j0 = 0; j0 < np; j0 += 16) {
    f8 a = {}, b = {};
    for (int d = 0; d < dh; ++d) {
      const float* kd = keys + size_t(d) * np + j0;
      a += q[d] * load8(kd);
      b += q[d] * load8(kd + 8);
    }
    store8(out + j0, a);
    store8(out + j0 + 8, b);
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

struct Counts {
  int64_t macs = 0, refreshed = 0, refresh_updates = 0, refresh_cancellation = 0,
          refresh_tie = 0, sweep_flips = 0;
};

}  // namespace

class CompiledModel {
 public:
  CompiledModel(int d_model, int n_heads, int d_ff, int groups, int codebook_size, bool causal,
                bool pre_norm, bool gelu, float eps, float delta)
      : d_(d_model), h_(n_heads), dh_(d_model / n_heads), f_(d_ff), g_(groups),
        q_(n_heads * groups), k_(codebook_size), dg_(d_model / n_heads / groups),
        causal_(causal), pre_norm_(pre_norm), gelu_(gelu), eps_(eps), delta_(delta) {}

  void add_layer(py::dict w) {
    auto lin = [&](const char* name) {
      return pack(w[(std::string(name) + ".weight").c_str()].cast<py::array_t<float>>(),
                  w[(std::string(name) + ".bias").c_str()].cast<py::array_t<float>>());
    };
    auto vec = [&](const char* name) {
      auto a = w[name].cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
      if (a.size() != d_) throw std::invalid_argument(std::string(name) + ": expected (D,)");
      return std::vector<float>(a.data(), a.data() + a.size());
    };
    Layer l{lin("q"), lin("k"), lin("v"), lin("o"), lin("up"), lin("down"),
            vec("attn_norm.weight"), vec("attn_norm.bias"), vec("mlp_norm.weight"),
            vec("mlp_norm.bias"), {}, {}};
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

  // One layer of an edit, in place on the layer's state (see `IncrementalEngine._layer`).
  // rows (|D|,) sorted dirty slots, their new input already in inputs; kept (|D|,) whether
  // each row held the same token before (its old key and value leave the softmax sums);
  // gone_k, gone_v (H, Rg, Dh) and gone_order (Rg,) the deleted tokens' keys, values and text
  // index; rank (T,) text index per slot; limit (T,) updates before a refresh; turn the sweep's
  // slots. Writes the layer's output rows into out (S, D) and returns (flipped slots outside
  // D, rows whose output was written (sorted), counts).
  py::tuple edit(int layer, int size, py::array qa, py::array ka, py::array va, py::array ma,
                 py::array sa, py::array heads_a, py::array codes_a, py::array slack_a,
                 py::array updates_a, py::array inputs_a, py::array out_a, py::array rows_a,
                 py::array kept_a, py::array gone_k_a, py::array gone_v_a,
                 py::array gone_order_a, py::array rank_a, py::array limit_a,
                 py::array turn_a) {
    if (layer < 0 || layer >= int(layers_.size())) throw std::out_of_range("no such layer");
    const Layer& L = layers_[layer];
    const py::ssize_t slots = qa.ndim() == 3 ? qa.shape(1) : -1;
    if (size < 0 || size > slots) throw std::invalid_argument("size exceeds the state's slots");
    float* q = data<float>(qa, "q", {h_, slots, dh_});
    float* k = data<float>(ka, "k", {h_, slots, dh_});
    float* v = data<float>(va, "v", {h_, slots, dh_});
    float* m = data<float>(ma, "m", {h_, slots});
    float* s = data<float>(sa, "s", {h_, slots});
    float* heads = data<float>(heads_a, "heads", {h_, slots, dh_});
    uint8_t* codes = data<uint8_t>(codes_a, "codes", {slots, q_});
    float* slack = data<float>(slack_a, "slack", {q_, slots});
    uint8_t* updates = data<uint8_t>(updates_a, "updates", {slots});
    float* inputs = data<float>(inputs_a, "inputs", {slots, d_});
    float* out = data<float>(out_a, "out", {slots, d_});
    const py::ssize_t n_rows = rows_a.ndim() == 1 ? rows_a.shape(0) : -1;
    int64_t* rows = data<int64_t>(rows_a, "rows", {n_rows});
    bool* kept = data<bool>(kept_a, "kept", {n_rows});
    const py::ssize_t n_gone = gone_order_a.ndim() == 1 ? gone_order_a.shape(0) : -1;
    float* gone_k = data<float>(gone_k_a, "gone_k", {h_, n_gone, dh_});
    float* gone_v = data<float>(gone_v_a, "gone_v", {h_, n_gone, dh_});
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

    Counts counts;
    const int nr = int(n_rows), ng = int(n_gone);
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
    counts.refreshed = int64_t(refresh.size());
    std::vector<int64_t> attend_rows(rows, rows + nr);
    attend_rows.insert(attend_rows.end(), refresh.begin(), refresh.end());
    attend(q, k, v, m, s, heads, updates, slots, size, rank, attend_rows, counts);

    // Which codes to decide: rows in D (nearest), rows that moved past their slack or were
    // refreshed (the mode's rule), and the sweep's turn (nearest).
    std::vector<char> in_check(size, 0), swept(size, 0);
    for (auto r : moved) in_check[r] = 1;
    for (auto r : refresh) in_check[r] = 1;
    for (py::ssize_t i = 0; i < n_turn; ++i)
      if (clean[turn[i]]) in_check[turn[i]] = swept[turn[i]] = 1;
    std::vector<int64_t> decide(rows, rows + nr);
    std::vector<char> nearest(nr, 1);
    for (int t = 0; t < size; ++t)
      if (in_check[t]) {
        decide.push_back(t);
        nearest.push_back(swept[t]);
      }
    const int n_decide = int(decide.size());
    std::vector<uint8_t> before(size_t(n_decide - nr) * q_);
    for (int i = nr; i < n_decide; ++i)
      std::memcpy(&before[size_t(i - nr) * q_], codes + decide[i] * q_, q_);
    std::vector<uint8_t> new_codes(size_t(n_decide) * q_);
    std::vector<float> new_slack(size_t(n_decide) * q_);
    std::vector<char> ties(n_decide);
    for (int i = 0; i < n_decide; ++i)
      quantize(L, heads, codes, slots, decide[i], nearest[i], &new_codes[size_t(i) * q_],
               &new_slack[size_t(i) * q_], ties[i], counts);
    std::vector<int64_t> tied;
    for (int i = 0; i < n_decide; ++i)
      if (ties[i] && updates[decide[i]] > 0) tied.push_back(decide[i]);
    if (!tied.empty()) {  // near ties are decided again on rows recomputed in full
      attend(q, k, v, m, s, heads, updates, slots, size, rank, tied, counts);
      counts.refresh_tie += int64_t(tied.size());
      for (int i = 0; i < n_decide; ++i)
        if (ties[i] && std::find(tied.begin(), tied.end(), decide[i]) != tied.end())
          quantize(L, heads, codes, slots, decide[i], nearest[i], &new_codes[size_t(i) * q_],
                   &new_slack[size_t(i) * q_], ties[i], counts);
    }
    std::vector<int64_t> flipped;
    for (int i = 0; i < n_decide; ++i) {
      const int64_t t = decide[i];
      std::memcpy(codes + t * q_, &new_codes[size_t(i) * q_], q_);
      for (int c = 0; c < q_; ++c) slack[size_t(c) * slots + t] = new_slack[size_t(i) * q_ + c];
      if (i >= nr && std::memcmp(&before[size_t(i - nr) * q_], &new_codes[size_t(i) * q_], q_)) {
        flipped.push_back(t);
        counts.sweep_flips += nearest[i];
      }
    }

    // Output projection and MLP for D ∪ flipped, in slot order.
    std::vector<int64_t> done(rows, rows + nr);
    done.insert(done.end(), flipped.begin(), flipped.end());
    std::sort(done.begin(), done.end());
    finish(L, done, inputs, codes, out, slots, counts);

    py::array_t<int64_t> flips_out(py::ssize_t(flipped.size()));
    std::copy(flipped.begin(), flipped.end(), flips_out.mutable_data());
    py::array_t<int64_t> done_out(py::ssize_t(done.size()));
    std::copy(done.begin(), done.end(), done_out.mutable_data());
    py::dict c;
    c["macs"] = counts.macs;
    c["refreshed"] = counts.refreshed;
    c["refresh_updates"] = counts.refresh_updates;
    c["refresh_cancellation"] = counts.refresh_cancellation;
    c["refresh_tie"] = counts.refresh_tie;
    c["sweep_flips"] = counts.sweep_flips;
    return py::make_tuple(flips_out, done_out, c);
  }

 private:
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
    std::vector<float> w(np), change(dh_);
    std::vector<char> cancelled_any(size, 0), seen(np, 1);
    const int dg = dh_ / g_;
    for (int hh = 0; hh < h_; ++hh) {
      const float* kh = &keys[size_t(hh) * dh_ * np];
      const float* vh = &values[size_t(hh) * n_keys * dh_];
      for (int t = 0; t < size; ++t) {
        if (!touched[t]) continue;
        if (causal_)
          for (int j = 0; j < n_keys; ++j) seen[j] = order[j] <= rank[t];
        const float* qt = q + (size_t(hh) * slots + t) * dh_;
        const size_t at = size_t(hh) * slots + t;
        const float m_old = m[at], s_old = s[at];
        scores(qt, kh, dh_, np, w.data());
        float m_new = m_old;
        for (int j = n_old; j < n_keys; ++j)
          if (seen[j]) m_new = std::max(m_new, w[j]);
        for (int j = 0; j < np; ++j) w[j] -= m_new;
        exp_floor(w.data(), np);
        float removed = 0, added = 0;
        for (int j = 0; j < n_keys; ++j) {
          if (!seen[j]) w[j] = 0.0f;
          if (j < n_old) {
            removed += w[j];
            w[j] = -w[j];
          }
          added += w[j];
        }
        float decay = m_old - m_new;
        exp_floor(&decay, 1);
        const float s_kept = s_old * decay;
        const float s_new = s_kept + added;
        // h' − h = Σ (w / s_new)·v − h·(Σ w / s_new)
        float* h = heads + at * dh_;
        const float keep = added / s_new;
        for (int d = 0; d < dh_; ++d) change[d] = -h[d] * keep;
        for (int j = 0; j < n_keys; ++j) w[j] /= s_new;
        weighted_sum(w.data(), vh, n_keys, dh_, change.data());
        for (int gg = 0; gg < g_; ++gg) {
          float sq = 0;
          for (int d = gg * dg; d < (gg + 1) * dg; ++d) sq += change[d] * change[d];
          slack[size_t(hh * g_ + gg) * slots + t] -= std::sqrt(sq);
        }
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
  // transpose (Dg, K) and |c|² (K,); returns the least.
  float distances(const float* x, const float* words, const float* square, float xx,
                  float* dist) const {
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
    return minimum(dist, k_);
  }

  // The codes (Q,) and slack (Q,) of slot t under the mode's rule (`IncrementalEngine._quantize`).
  void quantize(const Layer& L, const float* heads, const uint8_t* codes, py::ssize_t slots,
                int64_t t, bool nearest, uint8_t* code_out, float* slack_out, char& tie,
                Counts& counts) const {
    tie = 0;
    std::vector<float> dist(k_);
    for (int hh = 0; hh < h_; ++hh) {
      const float* h = heads + (size_t(hh) * slots + t) * dh_;
      const float norm = std::sqrt(dot(h, h, dh_));
      for (int gg = 0; gg < g_; ++gg) {
        const int c = hh * g_ + gg;
        const float* x = h + gg * dg_;
        const float xx = dot(x, x, dg_);
        const float* words = L.transposed.data() + size_t(c) * dg_ * k_;  // (Dg, K)
        const float* square = L.squared.data() + size_t(c) * k_;
        const float low = distances(x, words, square, xx, dist.data());
        const int best = first_equal(dist.data(), k_, low);  // the first of twins, as argmin
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
    counts.macs += int64_t(q_) * k_ * dg_;
  }

  // Everything after the codebook for `rows`: output projection, residual, norms, MLP.
  void finish(const Layer& L, const std::vector<int64_t>& rows, const float* inputs,
              const uint8_t* codes, float* out, py::ssize_t slots, Counts& counts) const {
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
    for (int i = 0; i < nr; ++i) {
      float* hi = &hidden[size_t(i) * ldf];
      for (int f = 0; f < f_; ++f)
        hi[f] = gelu_ ? 0.5f * hi[f] * (1.0f + std::erf(hi[f] * float(M_SQRT1_2)))
                      : std::max(hi[f], 0.0f);
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

  int d_, h_, dh_, f_, g_, q_, k_, dg_;
  bool causal_, pre_norm_, gelu_;
  float eps_, delta_;
  std::vector<Layer> layers_;
};

PYBIND11_MODULE(_compiled, m) {
  m.doc() = "The compiled edit path of the incremental engine (engine/compiled.py wraps it).";
  m.def("has_avx512", &has_avx512, "Whether the linears run their AVX-512 kernel.");
  py::class_<CompiledModel>(m, "CompiledModel")
      .def(py::init<int, int, int, int, int, bool, bool, bool, float, float>(),
           py::arg("d_model"), py::arg("n_heads"), py::arg("d_ff"), py::arg("groups"),
           py::arg("codebook_size"), py::arg("causal"), py::arg("pre_norm"), py::arg("gelu"),
           py::arg("eps"), py::arg("delta"))
      .def("add_layer", &CompiledModel::add_layer)
      .def("edit", &CompiledModel::edit);
}
