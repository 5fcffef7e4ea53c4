// Fused edge attention on CPU: one pass per target over its in-edges (sorted by target, CSR),
// scores, softmax and the weighted sum of values without storing anything per edge; the
// backward pass recomputes the scores from the per-target log-sum-exp, once per target (for
// the query gradients) and once per source over the edges in source order (for the key and
// value gradients and the per-edge gradients), so no two threads write the same row.
//
// Layout: q (Nd, G, Dq), k (Ns, G, Dk), v (Ns, G, Dv), edge features ef (E, G, De), edge
// values ev (E, G, Dv), bias (E, G) (-inf removes an edge), all in the sorted edge order.
// Scores: 0 dot product  s = scale * <q_i, k_j + ef>,
//         1 GAT          s = LeakyReLU(q_i + k_j + ef)            (Dq = Dk = De = 1),
//         2 GATv2        s = <att_g, LeakyReLU(q_i + k_j + ef)>.
// Dropout on the weights uses a counter-based hash of (seed, edge, group), so that the
// backward pass draws the same mask without storing it.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

// Counter-based 32-bit hash (MurmurHash3's finaliser, twice), cheap and the same in both
// passes: edge e, group g keeps its weight when hash(seed, e * G + g) >= p * 2^32.
inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16; h *= 0x85EBCA6BU; h ^= h >> 13; h *= 0xC2B2AE35U; h ^= h >> 16;
  return h;
}

inline uint32_t hash32(int64_t seed, int64_t counter) {
  const uint64_t c = static_cast<uint64_t>(counter), s = static_cast<uint64_t>(seed);
  const uint32_t h = fmix32(static_cast<uint32_t>(c) * 0x9E3779B1U + static_cast<uint32_t>(s));
  return fmix32(h ^ static_cast<uint32_t>(c >> 32) ^ static_cast<uint32_t>(s >> 32));
}

template <typename T>
struct Args {
  const T* q; const T* k; const T* v; const T* ef; const T* ev; const T* bias; const T* att;
  const int64_t* ptr; const int64_t* src;
  int64_t G, Dq, Dk, Dv, De;
  int64_t ptr_end;  // E
  int kind; double scale, slope, p; int64_t seed;
  T scale_t, slope_t;  // the same in T, for the inner loops
  uint32_t drop_below;  // hashes below this are dropped: round(p * 2^32)
  T keep_scale;         // 1 / (1 - p)
};

// Random rows (a source's keys and values, a target's queries and output gradients) are the
// cost: prefetch the rows of the edge kPrefetch ahead, so that their loads overlap.
constexpr int64_t kPrefetch = 8;

inline void prefetch_row(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, 0, 1);
}

// exp for the softmax: Cephes' single-precision polynomial (within 2 ulp of expf) written
// with arithmetic only, so that loops over groups vectorize; exactly 0 below -87.3 (where
// expf is subnormal) and for -inf, NaN for NaN. Double precision calls std::exp.
inline float fexp(float x) {
  const float xc = std::min(std::max(x, -87.3f), 88.3f);
  const float fx = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - fx * 0.693359375f;
  r = r + fx * 2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  const int32_t n = static_cast<int32_t>(fx);
  int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  y = y * scale;
  y = x < -87.3f ? 0.0f : y;
  return x != x ? x : y;
}
inline double fexp(double x) { return std::exp(x); }

template <typename T>
inline T leaky(T x, T slope) { return x > T(0) ? x : x * slope; }

template <typename T>
inline T keep_factor(const Args<T>& a, int64_t e, int64_t g) {
  if (a.p <= 0.0) return T(1);
  return hash32(a.seed, e * a.G + g) >= a.drop_below ? a.keep_scale : T(0);
}

// Work chunks of about equal numbers of edges over rows 0..n-1 of a CSR pointer.
std::vector<int64_t> balanced_chunks(const int64_t* ptr, int64_t n, int64_t parts) {
  std::vector<int64_t> bounds{0};
  const int64_t total = ptr[n];
  if (n == 0) { bounds.push_back(0); return bounds; }
  parts = std::max<int64_t>(1, std::min<int64_t>(parts, n));
  int64_t row = 0;
  for (int64_t c = 1; c < parts; ++c) {
    const int64_t want = total * c / parts;
    while (row < n && ptr[row] < want) ++row;
    if (row > bounds.back() && row < n) bounds.push_back(row);
  }
  bounds.push_back(n);
  return bounds;
}

template <typename T>
Args<T> make_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& ef, const at::Tensor& ev, const at::Tensor& bias,
                  const at::Tensor& att, const at::Tensor& ptr, const at::Tensor& src,
                  int64_t kind, double scale, double slope, double p, int64_t seed) {
  Args<T> a;
  a.q = q.data_ptr<T>(); a.k = k.data_ptr<T>(); a.v = v.data_ptr<T>();
  a.ef = ef.numel() ? ef.data_ptr<T>() : nullptr;
  a.ev = ev.numel() ? ev.data_ptr<T>() : nullptr;
  a.bias = bias.numel() ? bias.data_ptr<T>() : nullptr;
  a.att = att.numel() ? att.data_ptr<T>() : nullptr;
  a.ptr = ptr.data_ptr<int64_t>(); a.src = src.data_ptr<int64_t>();
  a.G = q.size(1); a.Dq = q.size(2); a.Dk = k.size(2); a.Dv = v.size(2);
  a.De = ef.numel() ? ef.size(2) : 0;
  a.ptr_end = src.numel();
  a.kind = static_cast<int>(kind); a.scale = scale; a.slope = slope; a.p = p; a.seed = seed;
  a.scale_t = static_cast<T>(scale); a.slope_t = static_cast<T>(slope);
  a.drop_below = static_cast<uint32_t>(std::min(std::llround(p * 4294967296.0), 4294967295LL));
  a.keep_scale = static_cast<T>(p > 0.0 ? 1.0 / (1.0 - p) : 1.0);
  return a;
}

// Scores of edge e (target i, source j) for every group into s (G), bias included.
template <typename T, int KIND>
inline void edge_scores(const Args<T>& a, int64_t e, int64_t i, int64_t j, T* s) {
  const int64_t G = a.G, D = a.Dq;
  const T* qi = a.q + i * G * D;
  const T* kj = a.k + j * G * a.Dk;
  const T* fe = a.ef ? a.ef + e * G * a.De : nullptr;
  if constexpr (KIND == 0) {
    for (int64_t g = 0; g < G; ++g) {
      const T* qg = qi + g * D;
      const T* kg = kj + g * D;
      T acc = 0;
      if (fe) {
        const T* fg = fe + g * D;
        for (int64_t d = 0; d < D; ++d) acc += qg[d] * (kg[d] + fg[d]);
      } else {
        for (int64_t d = 0; d < D; ++d) acc += qg[d] * kg[d];
      }
      s[g] = acc * a.scale_t;
    }
  } else if constexpr (KIND == 1) {
    if (fe) {
      for (int64_t g = 0; g < G; ++g) s[g] = leaky(qi[g] + kj[g] + fe[g], a.slope_t);
    } else {
      for (int64_t g = 0; g < G; ++g) s[g] = leaky(qi[g] + kj[g], a.slope_t);
    }
  } else {
    const T sl = a.slope_t;
    for (int64_t g = 0; g < G; ++g) {
      const T* at = a.att + g * D;
      const T* qg = qi + g * D;
      const T* kg = kj + g * D;
      T acc = 0;
      if (fe) {
        const T* fg = fe + g * D;
        for (int64_t d = 0; d < D; ++d) acc += at[d] * leaky(qg[d] + kg[d] + fg[d], sl);
      } else {
        for (int64_t d = 0; d < D; ++d) acc += at[d] * leaky(qg[d] + kg[d], sl);
      }
      s[g] = acc;
    }
  }
  if (a.bias) {
    const T* bb = a.bias + e * G;
    const T ninf = -std::numeric_limits<T>::infinity();
    for (int64_t g = 0; g < G; ++g)  // -inf removes the edge, even where the score is NaN
      s[g] = bb[g] == ninf ? ninf : s[g] + bb[g];
  }
}

// Scores of the in-edges e0..e1 of target i into sc ((e1 - e0) x G).
template <typename T, int KIND>
inline void target_scores(const Args<T>& a, int64_t i, int64_t e0, int64_t e1, T* sc) {
  for (int64_t e = e0; e < e1; ++e) {
    if (e + kPrefetch < a.ptr_end)
      prefetch_row(a.k + a.src[e + kPrefetch] * a.G * a.Dk, a.G * a.Dk * sizeof(T));
    edge_scores<T, KIND>(a, e, i, a.src[e], sc + (e - e0) * a.G);
  }
}

template <typename T, int KIND>
void forward_kind(const Args<T>& a, int64_t nd, T* out, T* lse) {
  const auto bounds = balanced_chunks(a.ptr, nd, 8 * at::get_num_threads());
  const int64_t G = a.G, Dv = a.Dv;
  const T ninf = -std::numeric_limits<T>::infinity();
  at::parallel_for(0, static_cast<int64_t>(bounds.size()) - 1, 1, [&](int64_t c0, int64_t c1) {
    std::vector<T> sc, acc(G * Dv), m(G), l(G), w(G);
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
        const int64_t e0 = a.ptr[i], e1 = a.ptr[i + 1], deg = e1 - e0;
        if (sc.size() < static_cast<size_t>(deg * G)) sc.resize(deg * G);
        target_scores<T, KIND>(a, i, e0, e1, sc.data());
        for (int64_t g = 0; g < G; ++g) m[g] = ninf;
        for (int64_t t = 0; t < deg; ++t)
          for (int64_t g = 0; g < G; ++g) {  // a NaN score wins (and stays): NaN output
            const T x = sc[t * G + g];
            m[g] = (x > m[g] || x != x) && m[g] == m[g] ? x : m[g];
          }
        for (int64_t g = 0; g < G; ++g) l[g] = T(0);
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t t = 0; t < deg; ++t) {
          const int64_t e = e0 + t;
          if (e + kPrefetch < a.ptr_end)
            prefetch_row(a.v + a.src[e + kPrefetch] * G * Dv, G * Dv * sizeof(T));
          for (int64_t g = 0; g < G; ++g) {
            const T x = fexp(sc[t * G + g] - m[g]);  // m = -inf: NaN, rows skipped below
            l[g] += x;
            w[g] = x * keep_factor(a, e, g);
          }
          const T* vj = a.v + a.src[e] * G * Dv;
          const T* ee = a.ev ? a.ev + e * G * Dv : nullptr;
          for (int64_t g = 0; g < G; ++g) {
            const T wg = w[g];
            T* ag = acc.data() + g * Dv;
            const T* vg = vj + g * Dv;
            if (ee) {
              const T* eg = ee + g * Dv;
              for (int64_t d = 0; d < Dv; ++d) ag[d] += wg * (vg[d] + eg[d]);
            } else {
              for (int64_t d = 0; d < Dv; ++d) ag[d] += wg * vg[d];
            }
          }
        }
        for (int64_t g = 0; g < G; ++g) {
          T* o = out + (i * G + g) * Dv;
          if (m[g] == ninf) {  // no edge, or every edge removed: a zero message
            for (int64_t d = 0; d < Dv; ++d) o[d] = T(0);
            lse[i * G + g] = ninf;
            continue;
          }
          const T inv = T(1) / l[g];
          for (int64_t d = 0; d < Dv; ++d) o[d] = acc[g * Dv + d] * inv;
          lse[i * G + g] = m[g] + std::log(l[g]);
        }
      }
    }
  });
}

template <typename T>
void forward_impl(const Args<T>& a, int64_t nd, T* out, T* lse) {
  if (a.kind == 0) forward_kind<T, 0>(a, nd, out, lse);
  else if (a.kind == 1) forward_kind<T, 1>(a, nd, out, lse);
  else forward_kind<T, 2>(a, nd, out, lse);
}

// Per edge, for every group at once: the weight alpha, the dropout factor and ds = dL/ds
// (the gradient of the score, bias included), recomputed from the per-target log-sum-exp.
template <typename T, int KIND>
inline void edge_grads(const Args<T>& a, int64_t e, int64_t i, int64_t j, const T* lse,
                       const T* dout, const T* delta, T* s, T* alpha, T* keep, T* ds) {
  const int64_t G = a.G, Dv = a.Dv;
  edge_scores<T, KIND>(a, e, i, j, s);
  const T* li = lse + i * G;
  for (int64_t g = 0; g < G; ++g) alpha[g] = fexp(s[g] - li[g]);
  for (int64_t g = 0; g < G; ++g)
    alpha[g] = li[g] > -std::numeric_limits<T>::infinity() ? alpha[g] : T(0);
  for (int64_t g = 0; g < G; ++g) keep[g] = keep_factor(a, e, g);
  const T* go = dout + i * G * Dv;
  const T* vj = a.v + j * G * Dv;
  const T* ee = a.ev ? a.ev + e * G * Dv : nullptr;
  const T* di = delta + i * G;
  for (int64_t g = 0; g < G; ++g) {
    T dal = 0;
    const T* gg = go + g * Dv;
    const T* vg = vj + g * Dv;
    if (ee) {
      const T* eg = ee + g * Dv;
      for (int64_t d = 0; d < Dv; ++d) dal += gg[d] * (vg[d] + eg[d]);
    } else {
      for (int64_t d = 0; d < Dv; ++d) dal += gg[d] * vg[d];
    }
    ds[g] = alpha[g] == T(0) ? T(0) : alpha[g] * (dal * keep[g] - di[g]);
  }
}

// d score / d (q_i or k_j, and ef) times ds, for every group: out (G x Dq).
template <typename T, int KIND>
inline void score_grads(const Args<T>& a, int64_t e, int64_t i, int64_t j, const T* ds,
                        bool wrt_q, T* out, T* d_att) {
  const int64_t G = a.G, D = a.Dq;
  const T* qi = a.q + i * G * D;
  const T* kj = a.k + j * G * a.Dk;
  const T* fe = a.ef ? a.ef + e * G * a.De : nullptr;
  if constexpr (KIND == 0) {
    for (int64_t g = 0; g < G; ++g) {
      const T w = ds[g] * a.scale_t;
      T* og = out + g * D;
      if (wrt_q) {
        const T* kg = kj + g * D;
        if (fe) {
          const T* fg = fe + g * D;
          for (int64_t d = 0; d < D; ++d) og[d] = w * (kg[d] + fg[d]);
        } else {
          for (int64_t d = 0; d < D; ++d) og[d] = w * kg[d];
        }
      } else {
        const T* qg = qi + g * D;
        for (int64_t d = 0; d < D; ++d) og[d] = w * qg[d];
      }
    }
  } else if constexpr (KIND == 1) {
    const T sl = a.slope_t;
    for (int64_t g = 0; g < G; ++g) {
      const T pre = qi[g] + kj[g] + (fe ? fe[g] : T(0));
      out[g] = pre > T(0) ? ds[g] : ds[g] * sl;
    }
  } else {
    const T sl = a.slope_t;
    for (int64_t g = 0; g < G; ++g) {
      const T* at = a.att + g * D;
      const T* qg = qi + g * D;
      const T* kg = kj + g * D;
      const T* fg = fe ? fe + g * D : nullptr;
      T* og = out + g * D;
      const T dsg = ds[g];
      T* da = d_att ? d_att + g * D : nullptr;
      for (int64_t d = 0; d < D; ++d) {
        const T pre = qg[d] + kg[d] + (fg ? fg[d] : T(0));
        const bool pos = pre > T(0);
        og[d] = dsg * at[d] * (pos ? T(1) : sl);
      }
      if (da)
        for (int64_t d = 0; d < D; ++d) {
          const T pre = qg[d] + kg[d] + (fg ? fg[d] : T(0));
          da[d] += dsg * (pre > T(0) ? pre : pre * sl);
        }
    }
  }
}

template <typename T, int KIND>
void backward_dst_kind(const Args<T>& a, int64_t nd, const T* lse, const T* dout,
                       const T* delta, T* dq, T* d_att_parts) {
  const auto bounds = balanced_chunks(a.ptr, nd, 8 * at::get_num_threads());
  const int64_t G = a.G, D = a.Dq;
  at::parallel_for(0, static_cast<int64_t>(bounds.size()) - 1, 1, [&](int64_t c0, int64_t c1) {
    std::vector<T> s(G), alpha(G), keep(G), ds(G), tmp(G * D);
    T* d_att = d_att_parts ? d_att_parts + at::get_thread_num() * G * D : nullptr;
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
        T* o = dq + i * G * D;
        for (int64_t e = a.ptr[i]; e < a.ptr[i + 1]; ++e) {
          const int64_t j = a.src[e];
          if (e + kPrefetch < a.ptr_end) {
            const int64_t jn = a.src[e + kPrefetch];
            prefetch_row(a.k + jn * G * a.Dk, G * a.Dk * sizeof(T));
            prefetch_row(a.v + jn * G * a.Dv, G * a.Dv * sizeof(T));
          }
          edge_grads<T, KIND>(a, e, i, j, lse, dout, delta, s.data(), alpha.data(),
                              keep.data(), ds.data());
          score_grads<T, KIND>(a, e, i, j, ds.data(), true, tmp.data(), d_att);
          for (int64_t d = 0; d < G * D; ++d) o[d] += tmp[d];
        }
      }
    }
  });
}

template <typename T, int KIND>
void backward_src_kind(const Args<T>& a, int64_t ns, const int64_t* sptr, const int64_t* perm,
                       const int64_t* sdst, const T* lse, const T* dout, const T* delta,
                       T* dk, T* dv, T* d_ef, T* d_ev, T* d_bias) {
  const auto bounds = balanced_chunks(sptr, ns, 8 * at::get_num_threads());
  const int64_t G = a.G, Dk = a.Dk, Dv = a.Dv, De = a.De;
  at::parallel_for(0, static_cast<int64_t>(bounds.size()) - 1, 1, [&](int64_t c0, int64_t c1) {
    std::vector<T> s(G), alpha(G), keep(G), ds(G), tmp(G * std::max(Dk, a.Dq));
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t j = bounds[c]; j < bounds[c + 1]; ++j) {
        for (int64_t t = sptr[j]; t < sptr[j + 1]; ++t) {
          const int64_t e = perm[t], i = sdst[t];
          if (t + kPrefetch < a.ptr_end) {  // the target's rows, and the edge's own
            const int64_t in = sdst[t + kPrefetch], en = perm[t + kPrefetch];
            prefetch_row(a.q + in * G * a.Dq, G * a.Dq * sizeof(T));
            prefetch_row(dout + in * G * Dv, G * Dv * sizeof(T));
            prefetch_row(lse + in * G, G * sizeof(T));
            prefetch_row(delta + in * G, G * sizeof(T));
            if (a.bias) prefetch_row(a.bias + en * G, G * sizeof(T));
            if (a.ef) prefetch_row(a.ef + en * G * a.De, G * a.De * sizeof(T));
            if (a.ev) prefetch_row(a.ev + en * G * Dv, G * Dv * sizeof(T));
          }
          edge_grads<T, KIND>(a, e, i, j, lse, dout, delta, s.data(), alpha.data(),
                              keep.data(), ds.data());
          if (d_bias)
            for (int64_t g = 0; g < G; ++g) d_bias[e * G + g] = ds[g];
          const T* go = dout + i * G * Dv;
          if (dv || d_ev) {
            T* ov = dv ? dv + j * G * Dv : nullptr;
            T* oe = d_ev ? d_ev + e * G * Dv : nullptr;
            for (int64_t g = 0; g < G; ++g) {
              const T wd = alpha[g] * keep[g];
              for (int64_t d = 0; d < Dv; ++d) {
                const T x = wd * go[g * Dv + d];
                if (ov) ov[g * Dv + d] += x;
                if (oe) oe[g * Dv + d] = x;
              }
            }
          }
          if (!dk && !d_ef) continue;
          score_grads<T, KIND>(a, e, i, j, ds.data(), false, tmp.data(), nullptr);
          if (dk) {
            T* o = dk + j * G * Dk;
            for (int64_t d = 0; d < G * Dk; ++d) o[d] += tmp[d];
          }
          if (d_ef) {
            T* o = d_ef + e * G * De;
            for (int64_t d = 0; d < G * De; ++d) o[d] = tmp[d];
          }
        }
      }
    }
  });
}

template <typename T>
void backward_dst_impl(const Args<T>& a, int64_t nd, const T* lse, const T* dout,
                       const T* delta, T* dq, T* d_att_parts) {
  if (a.kind == 0) backward_dst_kind<T, 0>(a, nd, lse, dout, delta, dq, d_att_parts);
  else if (a.kind == 1) backward_dst_kind<T, 1>(a, nd, lse, dout, delta, dq, d_att_parts);
  else backward_dst_kind<T, 2>(a, nd, lse, dout, delta, dq, d_att_parts);
}

template <typename T>
void backward_src_impl(const Args<T>& a, int64_t ns, const int64_t* sptr, const int64_t* perm,
                       const int64_t* sdst, const T* lse, const T* dout, const T* delta,
                       T* dk, T* dv, T* d_ef, T* d_ev, T* d_bias) {
  if (a.kind == 0)
    backward_src_kind<T, 0>(a, ns, sptr, perm, sdst, lse, dout, delta, dk, dv, d_ef, d_ev, d_bias);
  else if (a.kind == 1)
    backward_src_kind<T, 1>(a, ns, sptr, perm, sdst, lse, dout, delta, dk, dv, d_ef, d_ev, d_bias);
  else
    backward_src_kind<T, 2>(a, ns, sptr, perm, sdst, lse, dout, delta, dk, dv, d_ef, d_ev, d_bias);
}

}  // namespace

std::vector<at::Tensor> fused_forward(at::Tensor q, at::Tensor k, at::Tensor v, at::Tensor ef,
                                      at::Tensor ev, at::Tensor bias, at::Tensor att,
                                      at::Tensor ptr, at::Tensor src, int64_t kind, double scale,
                                      double slope, double p, int64_t seed) {
  const int64_t nd = q.size(0), G = q.size(1), Dv = v.size(2);
  auto out = at::empty({nd, G, Dv}, v.options());
  auto lse = at::empty({nd, G}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "graphattn_fused_forward", [&] {
    auto a = make_args<scalar_t>(q, k, v, ef, ev, bias, att, ptr, src, kind, scale, slope, p, seed);
    forward_impl<scalar_t>(a, nd, out.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>());
  });
  return {out, lse};
}

std::vector<at::Tensor> fused_backward(at::Tensor q, at::Tensor k, at::Tensor v, at::Tensor ef,
                                       at::Tensor ev, at::Tensor bias, at::Tensor att,
                                       at::Tensor ptr, at::Tensor src, at::Tensor sptr,
                                       at::Tensor perm, at::Tensor sdst, at::Tensor lse,
                                       at::Tensor dout, at::Tensor delta, int64_t kind,
                                       double scale, double slope, double p, int64_t seed,
                                       std::vector<bool> needs) {
  // needs: q, k, v, ef, ev, bias, att
  const int64_t nd = q.size(0), ns = k.size(0), G = q.size(1);
  auto none = at::Tensor();
  auto dq = needs[0] || needs[6] ? at::zeros_like(q) : none;
  auto dk = needs[1] ? at::zeros_like(k) : none;
  auto dv = needs[2] ? at::zeros_like(v) : none;
  auto d_ef = needs[3] && ef.numel() ? at::empty_like(ef) : none;
  auto d_ev = needs[4] && ev.numel() ? at::empty_like(ev) : none;
  auto d_bias = needs[5] && bias.numel() ? at::empty_like(bias) : none;
  auto d_att_parts = needs[6] && att.numel()
      ? at::zeros({at::get_num_threads(), G, q.size(2)}, q.options()) : none;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "graphattn_fused_backward", [&] {
    auto a = make_args<scalar_t>(q, k, v, ef, ev, bias, att, ptr, src, kind, scale, slope, p, seed);
    const scalar_t* l = lse.data_ptr<scalar_t>();
    const scalar_t* go = dout.data_ptr<scalar_t>();
    const scalar_t* dl = delta.data_ptr<scalar_t>();
    if (dq.defined())
      backward_dst_impl<scalar_t>(a, nd, l, go, dl, dq.data_ptr<scalar_t>(),
                                  d_att_parts.defined() ? d_att_parts.data_ptr<scalar_t>() : nullptr);
    auto ptr_or_null = [](at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    if (dk.defined() || dv.defined() || d_ef.defined() || d_ev.defined() || d_bias.defined())
      backward_src_impl<scalar_t>(a, ns, sptr.data_ptr<int64_t>(), perm.data_ptr<int64_t>(),
                                  sdst.data_ptr<int64_t>(), l, go, dl, ptr_or_null(dk),
                                  ptr_or_null(dv), ptr_or_null(d_ef), ptr_or_null(d_ev),
                                  ptr_or_null(d_bias));
  });
  auto d_att = d_att_parts.defined() ? d_att_parts.sum(0) : none;
  return {needs[0] ? dq : none, dk, dv, d_ef, d_ev, d_bias, d_att};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &fused_forward, "fused edge attention, forward (CPU)");
  m.def("backward", &fused_backward, "fused edge attention, backward (CPU)");
}
