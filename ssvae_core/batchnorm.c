/* Batch norm of float32 NCHW maps with a fused ReLU (Fig. 2's BN + ReLU), on the CPU.
 *
 * Each (image, channel) plane of P = H * W floats is contiguous, so every pass runs along
 * long rows, LANES floats per register, one channel's numbers in scalars. Built and loaded
 * by ssvae_core/native.py; called by ssvae_core/batchnorm.py, which checks every shape,
 * dtype and layout before it calls (nothing here checks them). With x̂ = (x - mean) / σ,
 * a = weight / σ and M the pixels of a channel (Ioffe and Szegedy 2015):
 *
 *   y  = relu? ((x - mean) a + bias)
 *   ∂L/∂x = a g' - a Σg' / M - (x - mean) a σ⁻² Σ(g' (x - mean)) / M,
 *   ∂L/∂weight = σ⁻¹ Σ g' (x - mean),  ∂L/∂bias = Σ g',
 *
 * where g' is the output's gradient g, zero where the ReLU was. The mask is recomputed from x
 * with the forward's own operations, so it is the forward's to the bit (NaN passes, as in
 * PyTorch's ReLU). `mean` and `bias` below are what batchnorm.py passes: the mean rounded to
 * float32, and the bias less the shift that rounding makes; batchnorm.py corrects the
 * backward's sums to match. Planes are split over `threads` OpenMP threads (PyTorch's own, as in
 * conv3x3.c); each plane's sums are LANES float partial sums added into double every 512
 * floats, so no number depends on the thread count.
 */
#include <string.h>

/* (x - mean) a + bias must round the same in the forward and in the backward's ReLU mask,
 * in vector and scalar code alike: no fused multiply-adds in this file. */
#pragma GCC optimize("fp-contract=off")
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define LANES 8
typedef float vec __attribute__((vector_size(LANES * sizeof(float))));
typedef int ivec __attribute__((vector_size(LANES * sizeof(int))));

static inline vec load(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vec v) { memcpy(p, &v, sizeof v); }
/* v where the ReLU lets `pre` through (not pre <= 0, so NaN passes, as in PyTorch), else 0 */
static inline vec relu_mask(vec v, vec pre) { return (vec)((ivec)v & ~(pre <= 0)); }
static inline double total(vec v) {
    double s = 0;
    for (int k = 0; k < LANES; k++) s += v[k];
    return s;
}

/* A plane's sum in double: `vector` adds LANES floats at k_ into acc_, `scalar` one float at
 * k_ into sum_ (the tail). */
#define PLANE_SUM(P, vector, scalar)                                                      \
    ({                                                                                     \
        double sum_ = 0;                                                                   \
        vec acc_ = {0};                                                                    \
        long k_ = 0, chunk_ = 0;                                                           \
        for (; k_ + LANES <= (P); k_ += LANES) {                                           \
            vector;                                                                        \
            if (++chunk_ == 64) { sum_ += total(acc_); acc_ = (vec){0}; chunk_ = 0; }     \
        }                                                                                  \
        sum_ += total(acc_);                                                               \
        for (; k_ < (P); k_++) { scalar; }                                                 \
        sum_;                                                                              \
    })

/* stats [n, C, 2]: per plane of x [n, C, P], Σx and Σ(x - Σx / P)² (two passes over the
 * plane, the second from the cache); the caller pools the planes of a channel. */
void bn_plane_stats(const float *x, double *stats, long n, long C, long P, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < n * C; p++) {
        const float *xp = x + p * P;
        double sum = PLANE_SUM(P, acc_ += load(xp + k_), sum_ += xp[k_]);
        float mean = (float)(sum / P);
        double m2 = PLANE_SUM(P, { vec d = load(xp + k_) - mean; acc_ += d * d; },
                              { float d = xp[k_] - mean; sum_ += (double)d * d; });
        double off = sum / P - mean; /* m2 is about the rounded mean: move it to the exact */
        stats[2 * p] = sum;
        stats[2 * p + 1] = m2 - P * off * off;
    }
}

/* y [n, C, P] = relu? ((x - mean[c]) a[c] + bias[c]) */
void bn_apply(const float *x, float *y, const float *mean, const float *a, const float *bias,
              long n, long C, long P, int relu, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < n * C; p++) {
        long c = p % C;
        const float *xp = x + p * P;
        float *yp = y + p * P, m = mean[c], s = a[c], b = bias[c];
        long k = 0;
        for (; k + LANES <= P; k += LANES) {
            vec v = (load(xp + k) - m) * s + b;
            if (relu) v = relu_mask(v, v);
            store(yp + k, v);
        }
        for (; k < P; k++) {
            float v = (xp[k] - m) * s + b;
            yp[k] = relu && v <= 0 ? 0.0f : v;
        }
    }
}

/* sums [n, C, 2]: per plane, Σg' and Σg' (x - mean[c]) (see the top) */
void bn_backward_sums(const float *x, const float *g, double *sums, const float *mean,
                      const float *a, const float *bias, long n, long C, long P, int relu,
                      int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < n * C; p++) {
        long c = p % C;
        const float *xp = x + p * P, *gp = g + p * P;
        float m = mean[c], s = a[c], b = bias[c];
#define MASKED_V(d) (relu ? relu_mask(load(gp + k_), (d) * s + b) : load(gp + k_))
#define MASKED_S(d) (relu && (d) * s + b <= 0 ? 0.0f : gp[k_])
        sums[2 * p] = PLANE_SUM(P, { vec d = load(xp + k_) - m; acc_ += MASKED_V(d); },
                                { float d = xp[k_] - m; sum_ += MASKED_S(d); });
        sums[2 * p + 1] = PLANE_SUM(
            P, { vec d = load(xp + k_) - m; acc_ += MASKED_V(d) * d; },
            { float d = xp[k_] - m; sum_ += (double)MASKED_S(d) * d; });
    }
}

/* gx [n, C, P] = a[c] g' + k0[c] + (x - mean[c]) k1[c] */
void bn_backward_apply(const float *x, const float *g, float *gx, const float *mean,
                       const float *a, const float *bias, const float *k0, const float *k1,
                       long n, long C, long P, int relu, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < n * C; p++) {
        long c = p % C;
        const float *xp = x + p * P, *gp = g + p * P;
        float *out = gx + p * P, m = mean[c], s = a[c], b = bias[c], z = k0[c], w = k1[c];
        long k = 0;
        for (; k + LANES <= P; k += LANES) {
            vec d = load(xp + k) - m, gv = load(gp + k);
            if (relu) gv = relu_mask(gv, d * s + b);
            store(out + k, gv * s + z + d * w);
        }
        for (; k < P; k++) {
            float d = xp[k] - m, gv = gp[k];
            if (relu && d * s + b <= 0) gv = 0.0f;
            out[k] = gv * s + z + d * w;
        }
    }
}
