/* 3x3 convolutions of float32 NCHW images with few channels (Fig. 2: 3 -> 6 -> 3), on the CPU.
 *
 * Stride 1, zero padding 1, `groups` independent groups of ci input and co output channels.
 * Vectorised along the image rows: each output row is LANES pixels at a time, one register
 * per output channel (up to BLOCK of them), so every input value loaded feeds BLOCK
 * multiply-adds. Images (or blocks of them) are split over OpenMP threads: built with
 * -fopenmp against the libgomp PyTorch has loaded, they are PyTorch's own intra-op threads.
 * Built and loaded by ssvae_core/native.py; called by ssvae_core/conv3x3.py, which checks
 * every shape, dtype and layout before it calls (nothing here checks them).
 *
 *   y[n, o, r, c]  = b[o] + sum_{i, kh, kw} x[n, i, r + kh - 1, c + kw - 1] w[o, i, kh, kw]
 *   dw[o, i, kh, kw] = sum_{n, r, c} g[n, o, r, c] x[n, i, r + kh - 1, c + kw - 1],
 *   db[o] = sum g[n, o, ., .]
 * (the input gradient is the forward of g with w flipped and transposed: conv3x3.py).
 */
#include <stdlib.h>
#include <string.h>

#define LANES 8
#define BLOCK 8
typedef float vec __attribute__((vector_size(LANES * sizeof(float))));

static inline vec load(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vec v) { memcpy(p, &v, sizeof v); }

/* The input of a convolution that follows a batch norm and its ReLU, computed again from the
 * batch norm's input: row p [n] := relu((p - mean) a + bias) in place, rounded as
 * batchnorm.c's bn_apply rounds it (no fused multiply-add; 0 where the sum is <= 0), so the
 * same floats to the bit. */
#ifndef __clang__
__attribute__((optimize("fp-contract=off")))
#endif
static void bn_relu_row(float *p, long n, float mean, float a, float bias) {
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif
    for (long k = 0; k < n; k++) {
        float v = (p[k] - mean) * a + bias;
        p[k] = v <= 0 ? 0.0f : v;
    }
}

/* Rows r - 1, r, r + 1 of the ci planes at x (each H x W) into pad[i][kh][1 + c], zero
 * outside the image; pad rows are `stride` floats (>= W rounded up to LANES, plus LANES).
 * bn: NULL, or {mean, a, bias} [ci] each: x is a batch norm's input, and the rows are its
 * output after the ReLU (bn_relu_row). */
static void fill(float *pad, const float *x, long ci, long r, long H, long W, long stride,
                 const float *const *bn) {
    memset(pad, 0, sizeof(float) * ci * 3 * stride);
    for (long i = 0; i < ci; i++)
        for (long kh = 0; kh < 3; kh++) {
            long src = r + kh - 1;
            float *row = pad + (i * 3 + kh) * stride + 1;
            if (src < 0 || src >= H) continue;
            memcpy(row, x + (i * H + src) * W, sizeof(float) * W);
            if (bn) bn_relu_row(row, W, bn[0][i], bn[1][i], bn[2][i]);
        }
}

/* One image's output channels [o, o + CO) (CO <= BLOCK): x its ci input planes, w [CO, ci, 3,
 * 3], b [CO] or NULL, y its CO output planes. */
#define FORWARD(CO)                                                                          \
    static void forward_##CO(const float *x, const float *w, const float *b, float *y,      \
                             long ci, long H, long W, float *pad, long stride) {            \
        for (long r = 0; r < H; r++) {                                                       \
            fill(pad, x, ci, r, H, W, stride, 0);                                            \
            for (long c = 0; c < W; c += LANES) {                                            \
                vec acc[CO];                                                                 \
                for (int o = 0; o < CO; o++) acc[o] = (vec){0} + (b ? b[o] : 0.0f);          \
                for (long i = 0; i < ci; i++)                                                \
                    for (int kh = 0; kh < 3; kh++)                                           \
                        for (int kw = 0; kw < 3; kw++) {                                     \
                            vec v = load(pad + (i * 3 + kh) * stride + c + kw);              \
                            const float *wk = w + (i * 3 + kh) * 3 + kw;                     \
                            for (int o = 0; o < CO; o++) acc[o] += v * wk[o * ci * 9];       \
                        }                                                                    \
                long m = W - c < LANES ? W - c : LANES;                                      \
                for (int o = 0; o < CO; o++) {                                               \
                    float out[LANES], *to = y + (o * H + r) * W + c;                         \
                    if (m == LANES) {                                                        \
                        store(to, acc[o]);                                                   \
                    } else {                                                                 \
                        store(out, acc[o]);                                                  \
                        memcpy(to, out, sizeof(float) * m);                                  \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }

/* One image's part of dw and db for output channels [o, o + CO): adds LANES partial sums
 * per weight to dw [CO, ci, 3, 3][LANES] and per bias to db [CO][LANES]. gbuf: CO rows of
 * `stride` floats, zero past W. bn: as for fill. */
#define WEIGHT_GRAD(CO)                                                                      \
    static void weight_grad_##CO(const float *x, const float *g, vec *dw, vec *db, long ci,  \
                                 long H, long W, float *pad, float *gbuf, long stride,       \
                                 const float *const *bn) {                                   \
        for (long r = 0; r < H; r++) {                                                       \
            fill(pad, x, ci, r, H, W, stride, bn);                                           \
            for (int o = 0; o < CO; o++) {                                                   \
                memcpy(gbuf + o * stride, g + (o * H + r) * W, sizeof(float) * W);          \
                vec s = {0};                                                                 \
                for (long c = 0; c < W; c += LANES) s += load(gbuf + o * stride + c);       \
                db[o] += s;                                                                  \
            }                                                                                \
            for (long k = 0; k < ci * 9; k++) {                                              \
                const float *px = pad + (k / 3) * stride + k % 3; /* (i * 3 + kh), kw */     \
                vec acc[CO];                                                                 \
                for (int o = 0; o < CO; o++) acc[o] = (vec){0};                              \
                for (long c = 0; c < W; c += LANES) {                                        \
                    vec v = load(px + c);                                                    \
                    for (int o = 0; o < CO; o++) acc[o] += v * load(gbuf + o * stride + c);  \
                }                                                                            \
                for (int o = 0; o < CO; o++) dw[o * ci * 9 + k] += acc[o];                   \
            }                                                                                \
        }                                                                                    \
    }

FORWARD(1) FORWARD(2) FORWARD(3) FORWARD(4) FORWARD(5) FORWARD(6) FORWARD(7) FORWARD(8)
WEIGHT_GRAD(1) WEIGHT_GRAD(2) WEIGHT_GRAD(3) WEIGHT_GRAD(4)
WEIGHT_GRAD(5) WEIGHT_GRAD(6) WEIGHT_GRAD(7) WEIGHT_GRAD(8)

typedef void (*forward_fn)(const float *, const float *, const float *, float *, long, long,
                           long, float *, long);
typedef void (*weight_grad_fn)(const float *, const float *, vec *, vec *, long, long, long,
                               float *, float *, long, const float *const *);
static const forward_fn FORWARDS[BLOCK + 1] = {
    0, forward_1, forward_2, forward_3, forward_4, forward_5, forward_6, forward_7, forward_8};
static const weight_grad_fn WEIGHT_GRADS[BLOCK + 1] = {
    0, weight_grad_1, weight_grad_2, weight_grad_3, weight_grad_4,
    weight_grad_5, weight_grad_6, weight_grad_7, weight_grad_8};

static long row_stride(long W) { return (W + LANES - 1) / LANES * LANES + LANES; }

/* y [n, groups * co, H, W] = conv(x [n, groups * ci, H, W], w [groups * co, ci, 3, 3]) + b,
 * b may be NULL; images split over `threads` OpenMP threads (PyTorch's own). Returns 0, or 1
 * when scratch memory could not be had. */
int conv3x3_forward(const float *x, const float *w, const float *b, float *y, long n,
                    long groups, long ci, long co, long H, long W, int threads) {
    long stride = row_stride(W), plane = H * W;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *pad = malloc(sizeof(float) * ci * 3 * stride);
        failed = !pad;
#pragma omp for schedule(static)
        for (long img = 0; img < n; img++)
            for (long grp = 0; pad && grp < groups; grp++)
                for (long o = 0; o < co; o += BLOCK) {
                    long m = co - o < BLOCK ? co - o : BLOCK;
                    long out = grp * co + o;
                    FORWARDS[m](x + (img * groups + grp) * ci * plane, w + out * ci * 9,
                                b ? b + out : 0, y + (img * groups * co + out) * plane, ci, H,
                                W, pad, stride);
                }
        free(pad);
    }
    return failed;
}

/* The weight and bias gradients of conv3x3_forward over n images, as LANES partial sums:
 * part [groups * co * ci * 9 + groups * co][LANES] (weights, then biases), each image summed
 * on its own and added in image order. bn: NULL, or {mean, a, bias} [groups * ci] each (see
 * fill). Returns 0, or 1 when scratch memory could not be had. */
static int weight_grad_block(const float *x, const float *g, float *part, long n, long groups,
                             long ci, long co, long H, long W, const float *const *bn) {
    long stride = row_stride(W), plane = H * W, weights = groups * co * ci * 9;
    long total = weights + groups * co;
    float *pad = malloc(sizeof(float) * ci * 3 * stride);
    float *gbuf = calloc(BLOCK * stride, sizeof(float));
    vec *image = aligned_alloc(sizeof(vec), sizeof(vec) * total); /* vec needs its alignment */
    vec *sum = aligned_alloc(sizeof(vec), sizeof(vec) * total);
    if (!pad || !gbuf || !image || !sum) {
        free(pad); free(gbuf); free(image); free(sum);
        return 1;
    }
    memset(sum, 0, sizeof(vec) * total);
    for (long img = 0; img < n; img++) {
        memset(image, 0, sizeof(vec) * total);
        for (long grp = 0; grp < groups; grp++)
            for (long o = 0; o < co; o += BLOCK) {
                long m = co - o < BLOCK ? co - o : BLOCK;
                long out = grp * co + o;
                const float *own[3] = {0}; /* this group's input channels */
                for (int j = 0; bn && j < 3; j++) own[j] = bn[j] + grp * ci;
                WEIGHT_GRADS[m](x + (img * groups + grp) * ci * plane,
                                g + (img * groups * co + out) * plane, image + out * ci * 9,
                                image + weights + out, ci, H, W, pad, gbuf, stride,
                                bn ? own : 0);
            }
        for (long k = 0; k < total; k++) sum[k] += image[k];
    }
    memcpy(part, sum, sizeof(vec) * total);
    free(pad); free(gbuf); free(image); free(sum);
    return 0;
}

/* weight_grad_block of each block of `per_block` images (the last may be shorter) into
 * parts [blocks][groups * co * ci * 9 + groups * co][LANES], the blocks split over `threads`
 * OpenMP threads: the same numbers at any thread count. mean, scale, bias: NULL, or
 * [groups * ci] each, when x is a batch norm's input and the convolution's input was
 * relu((x - mean) scale + bias) (fill). Returns 0, or 1 when scratch memory could not be had. */
int conv3x3_weight_grad(const float *x, const float *g, float *parts, long n, long per_block,
                        long groups, long ci, long co, long H, long W, const float *mean,
                        const float *scale, const float *bias, int threads) {
    long plane = H * W, blocks = (n + per_block - 1) / per_block;
    long total = groups * co * ci * 9 + groups * co;
    const float *given[3] = {mean, scale, bias};
    const float *const *bn = mean ? given : 0;
    int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(| : failed)
    for (long k = 0; k < blocks; k++) {
        long a = k * per_block, count = n - a < per_block ? n - a : per_block;
        failed |= weight_grad_block(x + a * groups * ci * plane, g + a * groups * co * plane,
                                    parts + k * total * LANES, count, groups, ci, co, H, W,
                                    bn);
    }
    return failed;
}
