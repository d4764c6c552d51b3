// Fused multi-head attention for training, forward and backward, on the wasm heap. Heads are read
// and written by strides: q, k and v are [batch*length, rowStride] matrices (separate, or one fused
// qkv) with head h of each at a column offset, and the context is written as [batch*length,
// heads*headSize], so no head split/merge transposes are needed either way. Per (batch, head):
// scores by one sgemm, scale, key mask or causal mask, softmax and dropout in one pass over the
// rows, the context by a second sgemm; the probabilities are kept for the backward. The addon is
// built without OpenMP (see services/trainer/README.md: OpenMP threads crashed a sandbox thread that
// was ended mid-kernel), so the (batch, head) pairs run one after another on BLAS's threads.
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "napi-args.h"

typedef struct {
  int64_t batch, heads, length, head_size, row_stride, offsets[3];
} Layout;

// Checks that every head of every row fits in an operand of `len` floats whose heads start at `offset`.
static int fits(const Layout* l, int64_t offset, int64_t stride, size_t len) {
  const int64_t rows = l->batch * l->length;
  return rows == 0 || (size_t)((rows - 1) * stride + offset + l->heads * l->head_size) <= len;
}

static int read_layout(napi_env env, napi_value* argv, Layout* l) {
  int32_t* offsets;
  size_t count;
  if (!arg_i32(env, argv[0], &offsets, &count) || count != 3) return 0;
  for (int i = 0; i < 3; i++) {
    if (offsets[i] < 0) return 0;
    l->offsets[i] = offsets[i];
  }
  return arg_size(env, argv[1], &l->row_stride) && arg_size(env, argv[2], &l->batch) && arg_size(env, argv[3], &l->heads) &&
         arg_size(env, argv[4], &l->length) && arg_size(env, argv[5], &l->head_size);
}

// Row softmax of scores (already scaled) with an additive key mask or a causal mask, in place.
static void softmax_rows(float* s, int64_t t, const float* key_mask, bool causal) {
  for (int64_t i = 0; i < t; i++) {
    float* row = s + i * t;
    const int64_t visible = causal ? i + 1 : t;
    if (key_mask) for (int64_t j = 0; j < t; j++) row[j] += key_mask[j];
    float max = row[0];
    for (int64_t j = 1; j < visible; j++) max = row[j] > max ? row[j] : max;
    float sum = 0.0f;
    for (int64_t j = 0; j < visible; j++) {
      row[j] = expf(row[j] - max);
      sum += row[j];
    }
    const float inverse = 1.0f / sum;
    for (int64_t j = 0; j < visible; j++) row[j] *= inverse;
    for (int64_t j = visible; j < t; j++) row[j] = 0.0f;
  }
}

// attentionForward(q, k, v, offsets, rowStride, batch, heads, length, headSize, scale, causal, keyMaskAdd, keep, probs, context)
napi_value attention_forward(napi_env env, napi_callback_info info) {
  static const char* usage = "blas addon: attentionForward(q, k, v, offsets, rowStride, batch, heads, length, headSize, scale, causal, keyMaskAdd|null, keep|null, probs, context)";
  napi_value argv[15];
  float *q, *k, *v, *mask, *keep, *probs, *context;
  size_t q_len, k_len, v_len, mask_len, keep_len, probs_len, context_len;
  Layout l;
  double scale;
  bool causal;
  if (!args_of(env, info, 15, argv) || !arg_f32(env, argv[0], false, &q, &q_len) || !arg_f32(env, argv[1], false, &k, &k_len) ||
      !arg_f32(env, argv[2], false, &v, &v_len) || !read_layout(env, argv + 3, &l) || !arg_number(env, argv[9], &scale) ||
      !arg_bool(env, argv[10], &causal) || !arg_f32(env, argv[11], true, &mask, &mask_len) || !arg_f32(env, argv[12], true, &keep, &keep_len) ||
      !arg_f32(env, argv[13], false, &probs, &probs_len) || !arg_f32(env, argv[14], false, &context, &context_len)) {
    return fail(env, usage);
  }
  const int64_t b = l.batch, h = l.heads, t = l.length, d = l.head_size, rs = l.row_stride, hd = h * d;
  const size_t square = (size_t)(t * t);
  if (!fits(&l, l.offsets[0], rs, q_len) || !fits(&l, l.offsets[1], rs, k_len) || !fits(&l, l.offsets[2], rs, v_len) ||
      (mask && mask_len != (size_t)(b * t)) || (keep && keep_len != (size_t)(b * h) * square) || probs_len != (size_t)(b * h) * square ||
      context_len != (size_t)(b * t * hd)) {
    napi_throw_range_error(env, NULL, "blas addon: attentionForward operand sizes do not match the layout");
    return NULL;
  }
  if (b * h * t * d == 0) {
    memset(context, 0, context_len * sizeof(float));
    return NULL;
  }
  {
    float* dropped = keep ? malloc(square * sizeof(float)) : NULL;
    for (int64_t pair = 0; pair < b * h; pair++) {
      const int64_t bi = pair / h, hi = pair % h;
      const int64_t row0 = bi * t * rs;
      float* s = probs + (bi * h + hi) * square;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t, (int)t, (int)d, (float)scale, q + row0 + l.offsets[0] + hi * d, (int)rs,
                  k + row0 + l.offsets[1] + hi * d, (int)rs, 0.0f, s, (int)t);
      softmax_rows(s, t, mask ? mask + bi * t : NULL, causal);
      const float* weights = s;
      if (keep) {
        const float* kp = keep + (bi * h + hi) * square;
        for (size_t i = 0; i < square; i++) dropped[i] = s[i] * kp[i];
        weights = dropped;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)t, (int)d, (int)t, 1.0f, weights, (int)t, v + row0 + l.offsets[2] + hi * d, (int)rs,
                  0.0f, context + bi * t * hd + hi * d, (int)hd);
    }
    free(dropped);
  }
  return NULL;
}

// attentionBackward(q, k, v, offsets, rowStride, batch, heads, length, headSize, scale, probs, keep, dContext, dq, dk, dv, outOffsets, outStride)
// dq, dk and dv may be one array (a fused dqkv) with the heads of each at outOffsets.
napi_value attention_backward(napi_env env, napi_callback_info info) {
  static const char* usage = "blas addon: attentionBackward(q, k, v, offsets, rowStride, batch, heads, length, headSize, scale, probs, keep|null, dContext, dq, dk, dv, outOffsets, outStride)";
  napi_value argv[18];
  float *q, *k, *v, *probs, *keep, *dc, *dq, *dk, *dv;
  size_t q_len, k_len, v_len, probs_len, keep_len, dc_len, dq_len, dk_len, dv_len;
  Layout l, out;
  double scale;
  if (!args_of(env, info, 18, argv) || !arg_f32(env, argv[0], false, &q, &q_len) || !arg_f32(env, argv[1], false, &k, &k_len) ||
      !arg_f32(env, argv[2], false, &v, &v_len) || !read_layout(env, argv + 3, &l) || !arg_number(env, argv[9], &scale) ||
      !arg_f32(env, argv[10], false, &probs, &probs_len) || !arg_f32(env, argv[11], true, &keep, &keep_len) ||
      !arg_f32(env, argv[12], false, &dc, &dc_len) || !arg_f32(env, argv[13], false, &dq, &dq_len) || !arg_f32(env, argv[14], false, &dk, &dk_len) ||
      !arg_f32(env, argv[15], false, &dv, &dv_len)) {
    return fail(env, usage);
  }
  out = l;
  int32_t* out_offsets;
  size_t count;
  if (!arg_i32(env, argv[16], &out_offsets, &count) || count != 3 || !arg_size(env, argv[17], &out.row_stride)) return fail(env, usage);
  for (int i = 0; i < 3; i++) out.offsets[i] = out_offsets[i] < 0 ? 0 : out_offsets[i];
  const int64_t b = l.batch, h = l.heads, t = l.length, d = l.head_size, rs = l.row_stride, os = out.row_stride, hd = h * d;
  const size_t square = (size_t)(t * t);
  if (!fits(&l, l.offsets[0], rs, q_len) || !fits(&l, l.offsets[1], rs, k_len) || !fits(&l, l.offsets[2], rs, v_len) ||
      !fits(&out, out.offsets[0], os, dq_len) || !fits(&out, out.offsets[1], os, dk_len) || !fits(&out, out.offsets[2], os, dv_len) ||
      probs_len != (size_t)(b * h) * square || (keep && keep_len != probs_len) || dc_len != (size_t)(b * t * hd)) {
    napi_throw_range_error(env, NULL, "blas addon: attentionBackward operand sizes do not match the layout");
    return NULL;
  }
  if (b * h * t * d == 0) return NULL;
  {
    float* ds = malloc(2 * square * sizeof(float));
    float* dropped = ds + square;
    for (int64_t pair = 0; pair < b * h; pair++) {
      const int64_t bi = pair / h, hi = pair % h;
      const int64_t row0 = bi * t * rs, out0 = bi * t * os;
      const float* p = probs + (bi * h + hi) * square;
      const float* kp = keep ? keep + (bi * h + hi) * square : NULL;
      const float* dc_bh = dc + bi * t * hd + hi * d;
      const float* q_bh = q + row0 + l.offsets[0] + hi * d;
      const float* k_bh = k + row0 + l.offsets[1] + hi * d;
      const float* v_bh = v + row0 + l.offsets[2] + hi * d;
      const float* weights = p;
      if (kp) {
        for (size_t i = 0; i < square; i++) dropped[i] = p[i] * kp[i];
        weights = dropped;
      }
      // dV = (P∘keep)ᵀ·dC; dP = (dC·Vᵀ)∘keep; dS = P∘(dP − rowsum(dP∘P))·scale; dQ = dS·K; dK = dSᵀ·Q.
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)t, (int)d, (int)t, 1.0f, weights, (int)t, dc_bh, (int)hd, 0.0f,
                  dv + out0 + out.offsets[2] + hi * d, (int)os);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t, (int)t, (int)d, 1.0f, dc_bh, (int)hd, v_bh, (int)rs, 0.0f, ds, (int)t);
      for (int64_t i = 0; i < t; i++) {
        float* row = ds + i * t;
        const float* prow = p + i * t;
        if (kp) for (int64_t j = 0; j < t; j++) row[j] *= kp[i * t + j];
        float dot = 0.0f;
        for (int64_t j = 0; j < t; j++) dot += row[j] * prow[j];
        for (int64_t j = 0; j < t; j++) row[j] = prow[j] * (row[j] - dot) * (float)scale;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)t, (int)d, (int)t, 1.0f, ds, (int)t, k_bh, (int)rs, 0.0f,
                  dq + out0 + out.offsets[0] + hi * d, (int)os);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)t, (int)d, (int)t, 1.0f, ds, (int)t, q_bh, (int)rs, 0.0f,
                  dk + out0 + out.offsets[1] + hi * d, (int)os);
    }
    free(ds);
  }
  return NULL;
}
