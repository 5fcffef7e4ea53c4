// Fused edge attention on CPU: one pass per target over its in-edges (sorted by target, CSR),
// scores, softmax and the weighted sum of values without storing anything per edge. The
// backward pass recomputes the scores from the per-target log-sum-exp: once per target (for
// the query gradients and every per-edge gradient) and once per source over the edges in
// source order (for the key and value gradients), so no two threads write the same row.
// Speed: the random rows of the sources are prefetched, head widths of 8, 16, 32 and 64 are
// fixed at compile time, exp is a branch-free polynomial that vectorizes over heads, and with
// AVX2 the per-head dot products of eight heads reduce in one transpose (sum8x8).
// Layout: q (Nd, G, Dq), k (Ns, G, Dk), v (Ns, G, Dv), edge features ef (E, G, De), edge
// values ev (E, G, Dv), bias (E, G) (-inf removes an edge), all in the sorted edge order.
// Scores: 0 dot product  s = scale * <q_i, k_j + ef>,
//         1 GAT          s = LeakyReLU(q_i + k_j + ef)            (Dq = Dk = De = 1),
//         2 GATv2        s = <att_g, LeakyReLU(q_i + k_j + ef)>.
// Dropout on the weights uses a counter-based hash of (seed, edge, group), so that the
// backward pass draws the same mask without storing it.
// Huge pages: rows read in random order (the sources' keys and values, and in the source
// pass the targets' packed rows) miss the TLB as well as the cache once they outgrow the
// TLB's reach (about 8 MiB of 4 KiB pages). paged_rows copies such rows into memory backed
// by 2 MiB pages (Linux, transparent huge pages); the copy is sequential and costs far less
// than the page walks it saves. Big outputs take reused huge-page blocks too (big_empty),
// which saves their page faults.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sys/mman.h>
#endif

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GRAPHATTN_AVX2 1
#endif

namespace {

// Row tensors of at least this many bytes that the kernel reads in random order go to huge
// pages (paged_rows); a negative value turns the copies off. Set from Python (set_huge_pages).
int64_t g_huge_min_bytes = -1;

// Whether rows of this many bytes, read in random order, go to huge pages.
inline bool wants_huge_pages(int64_t bytes) {
  return g_huge_min_bytes >= 0 && bytes >= g_huge_min_bytes;
}

// Bytes of huge-page blocks kept for reuse at most (set_huge_pages).
int64_t g_huge_cache_max = int64_t(2) << 30;

// Blocks of huge pages whose tensors have died, kept for the next calls: a fresh 2 MiB page
// costs a fault and zeroing (in a virtual machine often a fault on the host as well), a
// reused one nothing. Never destroyed: tensors may die after static destructors ran.
struct HugeCache {
  std::mutex mutex;
  std::vector<std::pair<void*, size_t>> blocks;  // (mapping, length), free
  int64_t bytes = 0;                              // their total length
};

// fork() copies only the calling thread, so a cache mutex that another thread held at that
// moment (a backward pass frees and takes blocks with the GIL released) would stay locked in
// the child for ever: the cache's lock is taken across fork and released on both sides.
HugeCache& huge_cache() {
  static auto* cache = [] {
    auto* c = new HugeCache();
#if defined(__linux__)
    pthread_atfork([] { huge_cache().mutex.lock(); }, [] { huge_cache().mutex.unlock(); },
                   [] { huge_cache().mutex.unlock(); });
#endif
    return c;
  }();
  return *cache;
}

// Holds the cache's lock for `ms` milliseconds with the GIL released (tests: a fork in the
// meantime must neither deadlock the child nor corrupt the cache).
void hold_huge_cache(int64_t ms) {
  std::lock_guard<std::mutex> lock(huge_cache().mutex);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

#if defined(__linux__) && defined(MADV_HUGEPAGE)
constexpr size_t kHuge = size_t(2) << 20;

// A mapping of at least `length` bytes: the smallest free block that fits (and wastes at
// most half of itself), else a new one advised for transparent huge pages.
std::pair<void*, size_t> take_block(size_t length) {
  {
    auto& c = huge_cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    size_t best = c.blocks.size();
    for (size_t b = 0; b < c.blocks.size(); ++b) {
      const size_t have = c.blocks[b].second;
      if (have >= length && have <= 2 * length &&
          (best == c.blocks.size() || have < c.blocks[best].second))
        best = b;
    }
    if (best < c.blocks.size()) {
      const auto block = c.blocks[best];
      c.blocks.erase(c.blocks.begin() + static_cast<std::ptrdiff_t>(best));
      c.bytes -= static_cast<int64_t>(block.second);
      return block;
    }
  }
  void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return {nullptr, 0};
  const auto at0 = reinterpret_cast<uintptr_t>(base);
  const uintptr_t start = (at0 + kHuge - 1) / kHuge * kHuge;
  madvise(reinterpret_cast<void*>(start), length - (start - at0), MADV_HUGEPAGE);
  return {base, length};
}

// Back to the cache, or unmapped where the cache is full.
void give_block(void* base, size_t length) {
  auto& c = huge_cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.bytes + static_cast<int64_t>(length) <= g_huge_cache_max) {
      c.blocks.emplace_back(base, length);
      c.bytes += static_cast<int64_t>(length);
      return;
    }
  }
  munmap(base, length);
}
#endif

// Unmaps every free block; returns their bytes.
int64_t release_huge_pages() {
  auto& c = huge_cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  const int64_t freed = c.bytes;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  for (const auto& block : c.blocks) munmap(block.first, block.second);
#endif
  c.blocks.clear();
  c.bytes = 0;
  return freed;
}

// The bytes of a contiguous tensor of these sizes and options.
inline int64_t tensor_bytes(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return c10::multiply_integers(sizes) *
         static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
}

#if defined(__linux__) && defined(MADV_HUGEPAGE)
// A block lent to a tensor's storage; its deleter gives it back to the cache.
struct LentBlock {
  void* base;
  size_t length;
};

void return_block(void* ctx) {
  const auto* lent = static_cast<LentBlock*>(ctx);
  give_block(lent->base, lent->length);
  delete lent;
}
#endif

// An uninitialised contiguous tensor in memory advised for transparent huge pages before it
// is first touched (Linux; blocks are reused, see HugeCache), or at::empty where that is not
// possible. The data start 64 bytes past a 2 MiB boundary, where glibc puts the other big
// tensors: measured at N=1M, rows that start on a 4 KiB boundary made the kernel up to 2x
// slower (cache or way-predictor conflicts with the rows of those tensors). The storage is
// resizable like at::empty's: resize_ (an out= argument of another shape) moves the data to
// memory from torch's CPU allocator and gives the block back.
at::Tensor huge_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kOffset = 64;
  const size_t bytes = static_cast<size_t>(tensor_bytes(sizes, options));
  const size_t length = (bytes + kOffset + kHuge - 1) / kHuge * kHuge + kHuge;  // room to align
  const auto [base, have] = take_block(length);
  if (base != nullptr) {
    const auto at0 = reinterpret_cast<uintptr_t>(base);
    const uintptr_t start = (at0 + kHuge - 1) / kHuge * kHuge;
    at::DataPtr data(reinterpret_cast<void*>(start + kOffset), new LentBlock{base, have},
                     &return_block, at::Device(at::kCPU));
    c10::Storage storage(c10::Storage::use_byte_size_t(), static_cast<int64_t>(bytes),
                         std::move(data), at::getCPUAllocator(), /*resizable=*/true);
    return at::empty({0}, options.device(at::kCPU)).set_(storage, 0, sizes);
  }
#endif
  return at::empty(sizes, options);
}

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

// Elements per row of a buffer whose rows hold `width` elements of `elem` bytes, rounded up
// so that each row fills whole 64-byte cache lines.
inline int64_t line_width(int64_t width, int64_t elem) {
  const int64_t per_line = std::max<int64_t>(1, 64 / elem);
  return (width + per_line - 1) / per_line * per_line;
}

template <typename T>
struct Args {
  const T* q; const T* k; const T* v; const T* ef; const T* ev; const T* bias; const T* att;
  const int64_t* ptr; const int64_t* src;
  int64_t G, Dq, Dk, Dv, De;
  int64_t sq, sk, sv;  // row strides of q, k, v: rows may be views of one projection's output
  int64_t ptr_end;  // E
  int kind; double scale, slope, p; int64_t seed;
  T scale_t, slope_t;  // the same in T, for the inner loops
  uint32_t drop_below;  // hashes below this are dropped: round(p * 2^32)
  T keep_scale;         // 1 / (1 - p)
};

// Random rows (a source's keys and values, a target's queries and output gradients) are the
// cost: prefetch the rows of the edge kPrefetch ahead, so that their loads overlap.
constexpr int64_t kPrefetch = 16;

inline void prefetch_row(const void* p, int64_t bytes) {
  // every 64-byte line the row touches: a row that does not start on a line spans one more
  const uintptr_t b = reinterpret_cast<uintptr_t>(p), end = b + static_cast<uintptr_t>(bytes);
  for (uintptr_t c = b & ~uintptr_t(63); c < end; c += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(c), 0, 1);
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
  const int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;
  const float scale = __builtin_bit_cast(float, bits);
  y = y * scale;
  y = x < -87.3f ? 0.0f : y;
  return x != x ? x : y;
}
inline double fexp(double x) { return std::exp(x); }

template <typename T>
inline T leaky(T x, T slope) { return x > T(0) ? x : x * slope; }

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
  for (const at::Tensor* t : {&q, &k, &v})  // rows of (G, D) contiguous values, any row stride
    TORCH_CHECK(t->dim() == 3 && (t->size(0) == 0 || t->select(0, 0).is_contiguous()),
                "graphattn fused kernel: q, k and v need contiguous (G, D) rows, got strides ",
                t->strides());
  Args<T> a;
  a.q = q.data_ptr<T>(); a.k = k.data_ptr<T>(); a.v = v.data_ptr<T>();
  a.sq = q.stride(0); a.sk = k.stride(0); a.sv = v.stride(0);
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

// The feature widths of the inner loops: fixed at compile time for the common head sizes
// (so that the loops over a head's features unroll and vectorize), else read from the call.
// Keys, key features and GATv2's attention vector have the queries' width (1 for GAT).
template <int DQ, int DV>
struct Width {
  template <typename T>
  static int64_t q(const Args<T>& a) { return DQ ? DQ : a.Dq; }
  template <typename T>
  static int64_t v(const Args<T>& a) { return DV ? DV : a.Dv; }
};

template <typename T>
inline T dot(const T* x, const T* y, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < n; ++d) acc += x[d] * y[d];
  return acc;
}

template <typename T>
inline T dot_sum(const T* x, const T* y, const T* z, int64_t n) {  // <x, y + z>
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < n; ++d) acc += x[d] * (y[d] + z[d]);
  return acc;
}

#ifdef GRAPHATTN_AVX2
// The sums of eight 8-float vectors, as one vector: [sum(v[0]), ..., sum(v[7])].
inline __m256 sum8x8(const __m256* v) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

inline float sum8(__m256 v) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

// Per-group sums over D features (D a multiple of 8) of part(g, d), the 8 terms of group g
// at features d..d+7, for all G groups into out (G): eight groups reduce in one transpose.
template <int D, typename P>
inline void group_sums(int64_t G, P&& part, float* out) {
  static_assert(D > 0 && D % 8 == 0, "D must be a multiple of 8");
  int64_t g = 0;
  for (; g + 8 <= G; g += 8) {
    __m256 v[8];
    for (int u = 0; u < 8; ++u) {
      v[u] = part(g + u, 0);
      for (int d = 8; d < D; d += 8) v[u] = _mm256_add_ps(v[u], part(g + u, d));
    }
    _mm256_storeu_ps(out + g, sum8x8(v));
  }
  for (; g < G; ++g) {
    __m256 x = part(g, 0);
    for (int d = 8; d < D; d += 8) x = _mm256_add_ps(x, part(g, d));
    out[g] = sum8(x);
  }
}

// Per-group <x, y + z> (z may be null) of rows of G groups of D floats, into out (G).
template <int D>
inline void group_dots(int64_t G, const float* x, const float* y, const float* z, float* out) {
  if (z) {
    group_sums<D>(G, [&](int64_t g, int d) {
      const int64_t o = g * D + d;
      return _mm256_mul_ps(_mm256_loadu_ps(x + o),
                           _mm256_add_ps(_mm256_loadu_ps(y + o), _mm256_loadu_ps(z + o)));
    }, out);
  } else {
    group_sums<D>(G, [&](int64_t g, int d) {
      const int64_t o = g * D + d;
      return _mm256_mul_ps(_mm256_loadu_ps(x + o), _mm256_loadu_ps(y + o));
    }, out);
  }
}

// Whether the per-group sums of T rows of width D take the vector path.
template <typename T, int D>
constexpr bool kVectorSums = std::is_same_v<T, float> && D > 0 && D % 8 == 0;
#else
template <typename T, int D>
constexpr bool kVectorSums = false;
#endif

// Scores of edge e (target i, source j) for every group into s (G), bias included.
template <typename T, int KIND, int DQ, int DV>
inline void edge_scores(const Args<T>& a, int64_t e, int64_t i, int64_t j, T* s) {
  const int64_t G = a.G, D = Width<DQ, DV>::q(a);
  const T* qi = a.q + i * a.sq;
  const T* kj = a.k + j * a.sk;
  const T* fe = a.ef ? a.ef + e * G * D : nullptr;
  if constexpr (KIND == 0) {
    if constexpr (kVectorSums<T, DQ>) {
#ifdef GRAPHATTN_AVX2
      group_dots<DQ>(G, qi, kj, fe, s);
#endif
    } else if (fe) {
      for (int64_t g = 0; g < G; ++g) s[g] = dot_sum(qi + g * D, kj + g * D, fe + g * D, D);
    } else {
      for (int64_t g = 0; g < G; ++g) s[g] = dot(qi + g * D, kj + g * D, D);
    }
#pragma omp simd
    for (int64_t g = 0; g < G; ++g) s[g] *= a.scale_t;
  } else if constexpr (KIND == 1) {
    if (fe) {
      for (int64_t g = 0; g < G; ++g) s[g] = leaky(qi[g] + kj[g] + fe[g], a.slope_t);
    } else {
      for (int64_t g = 0; g < G; ++g) s[g] = leaky(qi[g] + kj[g], a.slope_t);
    }
  } else if constexpr (kVectorSums<T, DQ>) {
#ifdef GRAPHATTN_AVX2
    const __m256 sl = _mm256_set1_ps(a.slope_t), zero = _mm256_setzero_ps();
    group_sums<DQ>(G, [&](int64_t g, int d) {
      const int64_t o = g * DQ + d;
      __m256 pre = _mm256_add_ps(_mm256_loadu_ps(qi + o), _mm256_loadu_ps(kj + o));
      if (fe) pre = _mm256_add_ps(pre, _mm256_loadu_ps(fe + o));
      const __m256 pos = _mm256_cmp_ps(pre, zero, _CMP_GT_OQ);
      const __m256 act = _mm256_blendv_ps(_mm256_mul_ps(pre, sl), pre, pos);  // LeakyReLU
      return _mm256_mul_ps(_mm256_loadu_ps(a.att + o), act);
    }, s);
#endif
  } else {
    const T sl = a.slope_t;
    for (int64_t g = 0; g < G; ++g) {
      const T* at = a.att + g * D;
      const T* qg = qi + g * D;
      const T* kg = kj + g * D;
      T acc = 0;
      if (fe) {
        const T* fg = fe + g * D;
#pragma omp simd reduction(+ : acc)
        for (int64_t d = 0; d < D; ++d) acc += at[d] * leaky(qg[d] + kg[d] + fg[d], sl);
      } else {
#pragma omp simd reduction(+ : acc)
        for (int64_t d = 0; d < D; ++d) acc += at[d] * leaky(qg[d] + kg[d], sl);
      }
      s[g] = acc;
    }
  }
  if (a.bias) {
    const T* bb = a.bias + e * G;
    const T ninf = -std::numeric_limits<T>::infinity();
#pragma omp simd
    for (int64_t g = 0; g < G; ++g)  // -inf removes the edge, even where the score is NaN
      s[g] = bb[g] == ninf ? ninf : s[g] + bb[g];
  }
}

// The dropout factors of edge e for every group into keep (G): 1 without dropout.
template <typename T>
inline void keep_factors(const Args<T>& a, int64_t e, T* keep) {
  if (a.p <= 0.0) {
    for (int64_t g = 0; g < a.G; ++g) keep[g] = T(1);
    return;
  }
  const int64_t G = a.G, seed = a.seed;
  const uint32_t below = a.drop_below;
  const T scale = a.keep_scale;  // a local: a struct field would be a conditional load
#pragma omp simd
  for (int64_t g = 0; g < G; ++g) keep[g] = hash32(seed, e * G + g) >= below ? scale : T(0);
}

template <typename T, int KIND, int DQ, int DV>
void forward_kind(const Args<T>& a, int64_t nd, T* out, T* lse) {
  const auto bounds = balanced_chunks(a.ptr, nd, 8 * at::get_num_threads());
  const int64_t G = a.G, D = Width<DQ, DV>::q(a), Dv = Width<DQ, DV>::v(a);
  const T ninf = -std::numeric_limits<T>::infinity();
  at::parallel_for(0, static_cast<int64_t>(bounds.size()) - 1, 1, [&](int64_t c0, int64_t c1) {
    std::vector<T> sc, acc(G * Dv), m(G), l(G), keep(G);
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
        const int64_t e0 = a.ptr[i], e1 = a.ptr[i + 1], deg = e1 - e0;
        if (sc.size() < static_cast<size_t>(deg * G)) sc.resize(deg * G);
        T* s = sc.data();
        for (int64_t e = e0; e < e1; ++e) {  // the scores of every in-edge, (deg, G)
          if (e + kPrefetch < a.ptr_end)
            prefetch_row(a.k + a.src[e + kPrefetch] * a.sk, G * D * sizeof(T));
          edge_scores<T, KIND, DQ, DV>(a, e, i, a.src[e], s + (e - e0) * G);
        }
        for (int64_t g = 0; g < G; ++g) m[g] = ninf;
        for (int64_t t = 0; t < deg; ++t)
#pragma omp simd
          for (int64_t g = 0; g < G; ++g) {  // a NaN score wins (and stays): NaN output
            const T x = s[t * G + g];
            m[g] = (x > m[g] || x != x) && m[g] == m[g] ? x : m[g];
          }
        for (int64_t g = 0; g < G; ++g) l[g] = T(0);
        for (int64_t t = 0; t < deg; ++t)  // exp in place; m = -inf: NaN, rows skipped below
#pragma omp simd
          for (int64_t g = 0; g < G; ++g) {
            const T x = fexp(s[t * G + g] - m[g]);
            l[g] += x;
            s[t * G + g] = x;
          }
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t t = 0; t < deg; ++t) {
          const int64_t e = e0 + t;
          if (e + kPrefetch < a.ptr_end)
            prefetch_row(a.v + a.src[e + kPrefetch] * a.sv, G * Dv * sizeof(T));
          T* w = s + t * G;
          if (a.p > 0.0) {
            keep_factors(a, e, keep.data());
            for (int64_t g = 0; g < G; ++g) w[g] *= keep[g];
          }
          const T* vj = a.v + a.src[e] * a.sv;
          const T* ee = a.ev ? a.ev + e * G * Dv : nullptr;
          for (int64_t g = 0; g < G; ++g) {
            const T wg = w[g];
            T* ag = acc.data() + g * Dv;
            const T* vg = vj + g * Dv;
            if (ee) {
              const T* eg = ee + g * Dv;
#pragma omp simd
              for (int64_t d = 0; d < Dv; ++d) ag[d] += wg * (vg[d] + eg[d]);
            } else {
#pragma omp simd
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

// Each target's row for the backward pass: its output gradient (G, Dv), log-sum-exp (G),
// delta = sum_d dout * out (G) and query (G, Dq) side by side, padded to whole cache lines
// (pack_targets). The source pass reads the row of each edge's target in random order: one
// row of adjacent lines instead of rows in three tensors. GAT at N=1M, 2 threads: 6 lines
// an edge either way; the source pass took 524 ms with three rows (and fresh gradient
// tensors), 424 ms with one row (and reused huge-page blocks), packing included.
template <typename T>
struct Targets {
  const T* base;
  int64_t stride;        // elements per row
  int64_t o_lse, o_q;    // offsets of the log-sum-exp (delta follows it) and of the query
  const T* row(int64_t i) const { return base + i * stride; }
};

// Per edge, for every group at once: the weight alpha, the dropout factor and ds = dL/ds
// (the gradient of the score, bias included), recomputed from the target's log-sum-exp.
template <typename T, int KIND, int DQ, int DV>
inline void edge_grads(const Args<T>& a, const Targets<T>& t, int64_t e, int64_t i, int64_t j,
                       T* s, T* alpha, T* keep, T* ds) {
  const int64_t G = a.G;
  const T ninf = -std::numeric_limits<T>::infinity();
  edge_scores<T, KIND, DQ, DV>(a, e, i, j, s);
  const T* go = t.row(i);      // the target's output gradient
  const T* li = go + t.o_lse;  // its log-sum-exp, then its delta
#pragma omp simd
  for (int64_t g = 0; g < G; ++g) {
    const T x = fexp(s[g] - li[g]);
    alpha[g] = li[g] > ninf ? x : T(0);
  }
  keep_factors(a, e, keep);
  const int64_t Dv = Width<DQ, DV>::v(a);
  const T* vj = a.v + j * a.sv;
  const T* ee = a.ev ? a.ev + e * G * Dv : nullptr;
  const T* di = li + G;
  if constexpr (kVectorSums<T, DV>) {  // ds holds dL/dalpha first
#ifdef GRAPHATTN_AVX2
    group_dots<DV>(G, go, vj, ee, ds);
#endif
  } else {
    for (int64_t g = 0; g < G; ++g)
      ds[g] = ee ? dot_sum(go + g * Dv, vj + g * Dv, ee + g * Dv, Dv)
                 : dot(go + g * Dv, vj + g * Dv, Dv);
  }
#pragma omp simd
  for (int64_t g = 0; g < G; ++g)
    ds[g] = alpha[g] == T(0) ? T(0) : alpha[g] * (ds[g] * keep[g] - di[g]);
}

// d score / d (q_i or k_j, and ef) times ds, for every group: out (G x Dq).
template <typename T, int KIND, int DQ, int DV>
inline void score_grads(const Args<T>& a, int64_t e, int64_t i, int64_t j, const T* ds,
                        bool wrt_q, T* out, T* d_att) {
  const int64_t G = a.G, D = Width<DQ, DV>::q(a);
  const T* qi = a.q + i * a.sq;
  const T* kj = a.k + j * a.sk;
  const T* fe = a.ef ? a.ef + e * G * D : nullptr;
  if constexpr (KIND == 0) {
    for (int64_t g = 0; g < G; ++g) {
      const T w = ds[g] * a.scale_t;
      T* og = out + g * D;
      if (wrt_q) {
        const T* kg = kj + g * D;
        if (fe) {
          const T* fg = fe + g * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) og[d] = w * (kg[d] + fg[d]);
        } else {
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) og[d] = w * kg[d];
        }
      } else {
        const T* qg = qi + g * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) og[d] = w * qg[d];
      }
    }
  } else if constexpr (KIND == 1) {
    const T sl = a.slope_t;
    if (fe) {
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) out[g] = qi[g] + kj[g] + fe[g] > T(0) ? ds[g] : ds[g] * sl;
    } else {
#pragma omp simd
      for (int64_t g = 0; g < G; ++g) out[g] = qi[g] + kj[g] > T(0) ? ds[g] : ds[g] * sl;
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
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        const T pre = qg[d] + kg[d] + (fg ? fg[d] : T(0));
        og[d] = dsg * at[d] * (pre > T(0) ? T(1) : sl);
      }
      if (da) {
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) {
          const T pre = qg[d] + kg[d] + (fg ? fg[d] : T(0));
          da[d] += dsg * (pre > T(0) ? pre : pre * sl);
        }
      }
    }
  }
}

// The gradient outputs of the backward pass (null where not needed).
template <typename T>
struct Grads {
  T* dq; T* d_att_parts;      // per target; GATv2's vector, one partial sum per thread
  T* d_ef; T* d_ev; T* d_bias;  // per edge
  T* dk; T* dv;               // per source
};

// The target pass: one thread per range of targets recomputes each in-edge's weight and
// score gradient, and writes everything that belongs to the target or to the edge.
template <typename T, int KIND, int DQ, int DV>
void backward_dst_kind(const Args<T>& a, int64_t nd, const Targets<T>& tg, const Grads<T>& o) {
  const auto bounds = balanced_chunks(a.ptr, nd, 8 * at::get_num_threads());
  const int64_t G = a.G, D = Width<DQ, DV>::q(a), Dv = Width<DQ, DV>::v(a);
  at::parallel_for(0, static_cast<int64_t>(bounds.size()) - 1, 1, [&](int64_t c0, int64_t c1) {
    std::vector<T> s(G), alpha(G), keep(G), ds(G), tmp(G * D);
    T* d_att = o.d_att_parts ? o.d_att_parts + at::get_thread_num() * G * D : nullptr;
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
        T* dqi = o.dq ? o.dq + i * G * D : nullptr;
        if (dqi) std::fill(dqi, dqi + G * D, T(0));  // the row is this thread's alone
        const T* go = tg.row(i);
        for (int64_t e = a.ptr[i]; e < a.ptr[i + 1]; ++e) {
          const int64_t j = a.src[e];
          if (e + kPrefetch < a.ptr_end) {
            const int64_t jn = a.src[e + kPrefetch];
            prefetch_row(a.k + jn * a.sk, G * D * sizeof(T));
            prefetch_row(a.v + jn * a.sv, G * Dv * sizeof(T));
          }
          edge_grads<T, KIND, DQ, DV>(a, tg, e, i, j, s.data(), alpha.data(), keep.data(),
                                      ds.data());
          if (dqi || d_att) {
            score_grads<T, KIND, DQ, DV>(a, e, i, j, ds.data(), true, tmp.data(), d_att);
            if (dqi) {
#pragma omp simd
              for (int64_t d = 0; d < G * D; ++d) dqi[d] += tmp[d];
            }
          }
          if (o.d_bias)
            for (int64_t g = 0; g < G; ++g) o.d_bias[e * G + g] = ds[g];
          if (o.d_ev)
            for (int64_t g = 0; g < G; ++g) {
              const T wd = alpha[g] * keep[g];
              T* oe = o.d_ev + (e * G + g) * Dv;
#pragma omp simd
              for (int64_t d = 0; d < Dv; ++d) oe[d] = wd * go[g * Dv + d];
            }
          if (o.d_ef) {  // d score / d ef = d score / d k
            score_grads<T, KIND, DQ, DV>(a, e, i, j, ds.data(), false, tmp.data(), nullptr);
            std::copy(tmp.begin(), tmp.end(), o.d_ef + e * G * D);
          }
        }
      }
    }
  });
}

// The source pass: one thread per range of sources sums the key and value gradients over
// the source's out-edges (in source order), recomputing each edge's weight and score
// gradient, so that no two threads write the same row and nothing per edge is stored. The
// targets' queries come from their packed rows.
template <typename T, int KIND, int DQ, int DV>
void backward_src_kind(const Args<T>& a_in, int64_t ns, const int64_t* sptr, const int64_t* perm,
                       const int64_t* sdst, const Targets<T>& tg, const Grads<T>& o) {
  Args<T> a = a_in;
  a.q = tg.base + tg.o_q;
  a.sq = tg.stride;
  const auto bounds = balanced_chunks(sptr, ns, 8 * at::get_num_threads());
  const int64_t G = a.G, D = Width<DQ, DV>::q(a), Dv = Width<DQ, DV>::v(a);
  const int64_t row_bytes = (tg.o_q + G * D) * static_cast<int64_t>(sizeof(T));
  at::parallel_for(0, static_cast<int64_t>(bounds.size()) - 1, 1, [&](int64_t c0, int64_t c1) {
    std::vector<T> s(G), alpha(G), keep(G), ds(G), tmp(G * D);
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t j = bounds[c]; j < bounds[c + 1]; ++j) {
        T* dkj = o.dk ? o.dk + j * G * D : nullptr;
        T* dvj = o.dv ? o.dv + j * G * Dv : nullptr;
        if (dkj) std::fill(dkj, dkj + G * D, T(0));  // the rows are this thread's alone
        if (dvj) std::fill(dvj, dvj + G * Dv, T(0));
        for (int64_t t = sptr[j]; t < sptr[j + 1]; ++t) {
          const int64_t e = perm[t], i = sdst[t];
          if (t + kPrefetch < a.ptr_end) {  // the target's rows, and the edge's own
            const int64_t in = sdst[t + kPrefetch], en = perm[t + kPrefetch];
            prefetch_row(tg.row(in), row_bytes);
            if (a.bias) prefetch_row(a.bias + en * G, G * sizeof(T));
            if (a.ef) prefetch_row(a.ef + en * G * D, G * D * sizeof(T));
            if (a.ev) prefetch_row(a.ev + en * G * Dv, G * Dv * sizeof(T));
          }
          edge_grads<T, KIND, DQ, DV>(a, tg, e, i, j, s.data(), alpha.data(), keep.data(),
                                      ds.data());
          if (dvj) {
            const T* go = tg.row(i);
            for (int64_t g = 0; g < G; ++g) {
              const T wg = alpha[g] * keep[g];
              T* og = dvj + g * Dv;
              const T* gg = go + g * Dv;
#pragma omp simd
              for (int64_t d = 0; d < Dv; ++d) og[d] += wg * gg[d];
            }
          }
          if (dkj) {
            score_grads<T, KIND, DQ, DV>(a, e, i, j, ds.data(), false, tmp.data(), nullptr);
#pragma omp simd
            for (int64_t d = 0; d < G * D; ++d) dkj[d] += tmp[d];
          }
        }
      }
    }
  });
}

// Calls f.template operator()<KIND, DQ, DV>() with the widths fixed where they are common
// (float32 heads of 8, 16, 32 or 64 features), else read at run time.
template <typename T, typename F>
void dispatch_widths(const Args<T>& a, F&& f) {
  const int64_t dq = a.Dq, dv = a.Dv;
  auto by_dv = [&](auto kind, auto dq_fixed) {
    constexpr int K = decltype(kind)::value;
    constexpr bool Q = decltype(dq_fixed)::value;  // the queries' width follows Dv
    constexpr int Q1 = K == 1 ? 1 : 0;            // GAT: one score feature per group
    if constexpr (std::is_same_v<T, float>) {     // float64 (gradcheck) reads them at run time
      if (!Q || dq == dv) {
        switch (dv) {
          case 8: return f.template operator()<K, Q ? 8 : Q1, 8>();
          case 16: return f.template operator()<K, Q ? 16 : Q1, 16>();
          case 32: return f.template operator()<K, Q ? 32 : Q1, 32>();
          case 64: return f.template operator()<K, Q ? 64 : Q1, 64>();
          default: break;
        }
      }
    }
    return f.template operator()<K, Q1, 0>();
  };
  using I0 = std::integral_constant<int, 0>;
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using Yes = std::true_type;
  using No = std::false_type;
  if (a.kind == 0) by_dv(I0{}, Yes{});
  else if (a.kind == 1) by_dv(I1{}, No{});
  else by_dv(I2{}, Yes{});
}

template <typename T>
void forward_impl(const Args<T>& a, int64_t nd, T* out, T* lse) {
  dispatch_widths(a, [&]<int K, int DQ, int DV>() { forward_kind<T, K, DQ, DV>(a, nd, out, lse); });
}

template <typename T>
void backward_impl(const Args<T>& a, int64_t nd, int64_t ns, const int64_t* sptr,
                   const int64_t* perm, const int64_t* sdst, const Targets<T>& tg,
                   const Grads<T>& o) {
  dispatch_widths(a, [&]<int K, int DQ, int DV>() {
    if (o.dq || o.d_att_parts || o.d_ef || o.d_ev || o.d_bias)
      backward_dst_kind<T, K, DQ, DV>(a, nd, tg, o);
    if (o.dk || o.dv) backward_src_kind<T, K, DQ, DV>(a, ns, sptr, perm, sdst, tg, o);
  });
}

}  // namespace

// An uninitialised tensor of these sizes: from the huge-page blocks where it is big enough
// (huge_empty: a reused block costs no page faults, while a fresh 256 MiB tensor costs 65,536
// of them, 38 ms measured at N=1M), else at::empty.
at::Tensor big_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return wants_huge_pages(tensor_bytes(sizes, options)) ? huge_empty(sizes, options)
                                                        : at::empty(sizes, options);
}

std::vector<at::Tensor> fused_forward(at::Tensor q, at::Tensor k, at::Tensor v, at::Tensor ef,
                                      at::Tensor ev, at::Tensor bias, at::Tensor att,
                                      at::Tensor ptr, at::Tensor src, int64_t kind, double scale,
                                      double slope, double p, int64_t seed) {
  const int64_t nd = q.size(0), G = q.size(1), Dv = v.size(2);
  auto out = big_empty({nd, G, Dv}, v.options());
  auto lse = big_empty({nd, G}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "graphattn_fused_forward", [&] {
    auto a = make_args<scalar_t>(q, k, v, ef, ev, bias, att, ptr, src, kind, scale, slope, p, seed);
    forward_impl<scalar_t>(a, nd, out.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>());
  });
  return {out, lse};
}

// Every target's row for the backward pass (Targets): dout, lse, delta = sum_d dout * out, q.
template <typename T>
Targets<T> pack_targets(at::Tensor& rows, const at::Tensor& q, const at::Tensor& lse,
                        const at::Tensor& dout, const at::Tensor& out) {
  const int64_t nd = q.size(0), G = q.size(1), Dq = q.size(2), Dv = dout.size(2);
  const int64_t o_lse = G * Dv, o_q = o_lse + 2 * G;
  rows = big_empty({nd, line_width(o_q + G * Dq, sizeof(T))}, q.options());
  T* base = rows.data_ptr<T>();
  const Targets<T> t{base, rows.size(1), o_lse, o_q};
  const T* qp = q.data_ptr<T>();
  const T* lp = lse.data_ptr<T>();
  const T* gp = dout.data_ptr<T>();
  const T* op = out.data_ptr<T>();
  const int64_t sq = q.stride(0);
  at::parallel_for(0, nd, 1024, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T* r = base + i * t.stride;
      const T* gi = gp + i * G * Dv;
      const T* oi = op + i * G * Dv;
      std::copy(gi, gi + G * Dv, r);
      std::copy(lp + i * G, lp + (i + 1) * G, r + o_lse);
      for (int64_t g = 0; g < G; ++g) r[o_lse + G + g] = dot(gi + g * Dv, oi + g * Dv, Dv);
      std::copy(qp + i * sq, qp + i * sq + G * Dq, r + o_q);
    }
  });
  return t;
}

std::vector<at::Tensor> fused_backward(at::Tensor q, at::Tensor k, at::Tensor v, at::Tensor ef,
                                       at::Tensor ev, at::Tensor bias, at::Tensor att,
                                       at::Tensor ptr, at::Tensor src, at::Tensor sptr,
                                       at::Tensor perm, at::Tensor sdst, at::Tensor lse,
                                       at::Tensor dout, at::Tensor out, int64_t kind,
                                       double scale, double slope, double p, int64_t seed,
                                       std::vector<bool> needs) {
  // needs: q, k, v, ef, ev, bias, att
  TORCH_CHECK(dout.is_contiguous() && out.is_contiguous() && lse.is_contiguous(),
              "graphattn fused kernel: dout, out and lse must be contiguous");
  const int64_t G = q.size(1);
  auto none = at::Tensor();
  // every row of dq, dk and dv is zeroed by the thread that owns it, in the pass that sums it
  auto dq = needs[0] || needs[6] ? big_empty(q.sizes(), q.options()) : none;  // contiguous
  auto dk = needs[1] ? big_empty(k.sizes(), k.options()) : none;
  auto dv = needs[2] ? big_empty(v.sizes(), v.options()) : none;
  auto d_ef = needs[3] && ef.numel() ? at::empty_like(ef) : none;
  auto d_ev = needs[4] && ev.numel() ? at::empty_like(ev) : none;
  auto d_bias = needs[5] && bias.numel() ? at::empty_like(bias) : none;
  auto d_att_parts = needs[6] && att.numel()
      ? at::zeros({at::get_num_threads(), G, q.size(2)}, q.options()) : none;
  at::Tensor rows;  // (Nd, packed row): read in random order by the source pass
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "graphattn_fused_backward", [&] {
    auto a = make_args<scalar_t>(q, k, v, ef, ev, bias, att, ptr, src, kind, scale, slope, p, seed);
    const auto tg = pack_targets<scalar_t>(rows, q, lse, dout, out);
    auto data = [](at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    Grads<scalar_t> o{data(dq), data(d_att_parts), data(d_ef), data(d_ev), data(d_bias),
                      data(dk), data(dv)};
    backward_impl<scalar_t>(a, q.size(0), k.size(0), sptr.data_ptr<int64_t>(),
                            perm.data_ptr<int64_t>(), sdst.data_ptr<int64_t>(), tg, o);
  });
  auto d_att = d_att_parts.defined() ? d_att_parts.sum(0) : none;
  return {needs[0] ? dq : none, dk, dv, d_ef, d_ev, d_bias, d_att};
}

// The rows of `parts` (each (N, G, D) with contiguous (G, D) rows, the same N), side by side
// in one buffer backed by huge pages, as views of it; `parts` themselves where their bytes
// are under the threshold (or the copies are off). Each row is padded to whole cache lines.
std::vector<at::Tensor> paged_rows(std::vector<at::Tensor> parts) {
  TORCH_CHECK(!parts.empty(), "graphattn paged_rows: no tensors");
  int64_t bytes = 0, width = 0;
  const int64_t n = parts[0].size(0);
  for (const auto& t : parts) {
    TORCH_CHECK(t.dim() == 3 && t.size(0) == n && t.dtype() == parts[0].dtype(),
                "graphattn paged_rows: needs (N, G, D) tensors of one dtype and N, got sizes ",
                t.sizes());
    bytes += t.numel() * static_cast<int64_t>(t.element_size());
    width += t.size(1) * t.size(2);
  }
  if (!wants_huge_pages(bytes) || n == 0) return parts;
  // (N, sum of G * D rounded up to whole 64-byte lines): every row starts on a line, so that
  // reading one touches no more lines than its bytes need (GAT's 288-byte rows: 5, not 5-6)
  auto buffer = huge_empty({n, line_width(width, parts[0].element_size())}, parts[0].options());
  std::vector<at::Tensor> views;
  int64_t at0 = 0;
  for (const auto& t : parts) {
    const int64_t w = t.size(1) * t.size(2);
    auto view = buffer.narrow(1, at0, w);
    view.copy_(t.reshape({n, w}));  // parallel, so the pages fault in on every thread
    views.push_back(view.view({n, t.size(1), t.size(2)}));
    at0 += w;
  }
  return views;
}

void set_huge_pages(int64_t min_bytes, int64_t cache_bytes) {
  g_huge_min_bytes = min_bytes;
  if (cache_bytes < 0) return;  // the cache's cap unchanged
  g_huge_cache_max = cache_bytes;
  if (huge_cache().bytes > cache_bytes) release_huge_pages();  // kept blocks over the new cap
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &fused_forward, "fused edge attention, forward (CPU)");
  m.def("backward", &fused_backward, "fused edge attention, backward (CPU)");
  m.attr("row_strides") = true;  // q, k and v may be row-strided views (Args::sq, sk, sv)
  m.attr("packs_targets") = true;  // backward takes out, not delta (pack_targets computes it)
  m.def("paged_rows", &paged_rows, "row tensors side by side in huge pages, above a size");
  m.def("set_huge_pages", &set_huge_pages, py::arg("min_bytes"),
        py::arg("cache_bytes") = -1,
        "bytes from which paged_rows copies (< 0: never); bytes of free blocks kept (< 0: as is)");
  m.def("huge_pages", [] { return g_huge_min_bytes; }, "paged_rows' threshold in bytes");
  m.def("release_huge_pages", &release_huge_pages, "unmaps the kept free blocks; their bytes");
  m.def("huge_cache_bytes", [] { return huge_cache().bytes; }, "bytes of free blocks kept");
  m.def("_hold_huge_cache", &hold_huge_cache, py::arg("ms"),
        py::call_guard<py::gil_scoped_release>(), "tests: holds the cache's lock for ms");
}
