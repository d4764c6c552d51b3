// Row-wise kernels that tfjs runs as chains of whole-tensor passes: layer norm and RMSNorm with their
// backwards, softmax cross-entropy per row (and its gradient), GPT-2's tanh GELU and Llama's SwiGLU
// gating silu(gate)·up, each with its gradient. One pass (or two) over each row, on the wasm heap, on
// one thread (the addon is built without OpenMP, see services/trainer/README.md), in vector clones
// (VECTOR_CLONES in napi-args.h).
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "napi-args.h"

VECTOR_CLONES static void layer_norm_rows(const float* x, const float* gamma, const float* beta, float eps, size_t rows, size_t d, float* y, float* mean,
                                          float* rstd) {
  for (size_t r = 0; r < rows; r++) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    float sum = 0.0f;
    for (size_t j = 0; j < d; j++) sum += xr[j];
    const float m = sum / (float)d;
    float squares = 0.0f;
    for (size_t j = 0; j < d; j++) squares += (xr[j] - m) * (xr[j] - m);
    const float inverse = 1.0f / sqrtf(squares / (float)d + eps);
    for (size_t j = 0; j < d; j++) yr[j] = (xr[j] - m) * inverse * gamma[j] + beta[j];
    mean[r] = m;
    rstd[r] = inverse;
  }
}

// layerNormForward(x, gamma, beta, epsilon, y, mean, rstd): rows of gamma's length; mean and 1/σ per row.
napi_value layer_norm_forward(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  float *x, *gamma, *beta, *y, *mean, *rstd;
  size_t x_len, d, beta_len, y_len, mean_len, rstd_len;
  double eps;
  if (!args_of(env, info, 7, argv) || !arg_f32(env, argv[0], false, &x, &x_len) || !arg_f32(env, argv[1], false, &gamma, &d) ||
      !arg_f32(env, argv[2], false, &beta, &beta_len) || !arg_number(env, argv[3], &eps) || !arg_f32(env, argv[4], false, &y, &y_len) ||
      !arg_f32(env, argv[5], false, &mean, &mean_len) || !arg_f32(env, argv[6], false, &rstd, &rstd_len) || d == 0 || beta_len != d ||
      x_len % d != 0 || y_len != x_len || mean_len != x_len / d || rstd_len != mean_len) {
    return fail(env, "blas addon: layerNormForward(x, gamma, beta, epsilon, y, mean, rstd) with x whole rows of gamma's length");
  }
  layer_norm_rows(x, gamma, beta, (float)eps, mean_len, d, y, mean, rstd);
  return NULL;
}

// layerNormBackward(dy, x, gamma, mean, rstd, dx, dgamma|null, dbeta|null): dgamma and dbeta are overwritten with sums over rows.
napi_value layer_norm_backward(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  float *dy, *x, *gamma, *mean, *rstd, *dx, *dgamma, *dbeta;
  size_t dy_len, x_len, d, mean_len, rstd_len, dx_len, dgamma_len, dbeta_len;
  if (!args_of(env, info, 8, argv) || !arg_f32(env, argv[0], false, &dy, &dy_len) || !arg_f32(env, argv[1], false, &x, &x_len) ||
      !arg_f32(env, argv[2], false, &gamma, &d) || !arg_f32(env, argv[3], false, &mean, &mean_len) || !arg_f32(env, argv[4], false, &rstd, &rstd_len) ||
      !arg_f32(env, argv[5], false, &dx, &dx_len) || !arg_f32(env, argv[6], true, &dgamma, &dgamma_len) || !arg_f32(env, argv[7], true, &dbeta, &dbeta_len) ||
      d == 0 || x_len % d != 0 || dy_len != x_len || dx_len != x_len || mean_len != x_len / d || rstd_len != mean_len ||
      (dgamma && dgamma_len != d) || (dbeta && dbeta_len != d)) {
    return fail(env, "blas addon: layerNormBackward(dy, x, gamma, mean, rstd, dx, dgamma|null, dbeta|null) with matching sizes");
  }
  if (dgamma) memset(dgamma, 0, d * sizeof(float));
  if (dbeta) memset(dbeta, 0, d * sizeof(float));
  for (size_t r = 0; r < mean_len; r++) {
    const float *dyr = dy + r * d, *xr = x + r * d;
    float* dxr = dx + r * d;
    const float m = mean[r], s = rstd[r];
    float g_sum = 0.0f, gx_sum = 0.0f;
    for (size_t j = 0; j < d; j++) {
      const float g = dyr[j] * gamma[j];
      g_sum += g;
      gx_sum += g * (xr[j] - m) * s;
    }
    const float g_mean = g_sum / (float)d, gx_mean = gx_sum / (float)d;
    for (size_t j = 0; j < d; j++) {
      const float x_hat = (xr[j] - m) * s;
      dxr[j] = s * (dyr[j] * gamma[j] - g_mean - x_hat * gx_mean);
      if (dgamma) dgamma[j] += dyr[j] * x_hat;
      if (dbeta) dbeta[j] += dyr[j];
    }
  }
  return NULL;
}

VECTOR_CLONES static void rms_norm_rows(const float* x, const float* weight, float eps, size_t rows, size_t d, float* y, float* rstd) {
  for (size_t r = 0; r < rows; r++) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    float squares = 0.0f;
    for (size_t j = 0; j < d; j++) squares += xr[j] * xr[j];
    const float inverse = 1.0f / sqrtf(squares / (float)d + eps);
    for (size_t j = 0; j < d; j++) yr[j] = xr[j] * inverse * weight[j];
    rstd[r] = inverse;
  }
}

// dx = s·(g − x̂·mean(g·x̂)) with g = dy·weight, x̂ = x·s and s = 1/rms of the row; dweight = Σ_rows dy·x̂.
VECTOR_CLONES static void rms_norm_grad_rows(const float* dy, const float* x, const float* weight, const float* rstd, size_t rows, size_t d, float* dx,
                                             float* dweight) {
  if (dweight) memset(dweight, 0, d * sizeof(float));
  for (size_t r = 0; r < rows; r++) {
    const float *dyr = dy + r * d, *xr = x + r * d;
    float* dxr = dx + r * d;
    const float s = rstd[r];
    float gx_sum = 0.0f;
    for (size_t j = 0; j < d; j++) gx_sum += dyr[j] * weight[j] * xr[j];
    const float gx_mean = gx_sum * s / (float)d;
    for (size_t j = 0; j < d; j++) dxr[j] = s * (dyr[j] * weight[j] - xr[j] * s * gx_mean);
    if (dweight) {
      for (size_t j = 0; j < d; j++) dweight[j] += dyr[j] * xr[j] * s;
    }
  }
}

// rmsNormForward(x, weight, epsilon, y, rstd): y = x·rsqrt(mean(x²) + epsilon)·weight over rows of weight's length (LlamaRMSNorm); 1/rms per row.
napi_value rms_norm_forward(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  float *x, *weight, *y, *rstd;
  size_t x_len, d, y_len, rstd_len;
  double eps;
  if (!args_of(env, info, 5, argv) || !arg_f32(env, argv[0], false, &x, &x_len) || !arg_f32(env, argv[1], false, &weight, &d) ||
      !arg_number(env, argv[2], &eps) || !arg_f32(env, argv[3], false, &y, &y_len) || !arg_f32(env, argv[4], false, &rstd, &rstd_len) || d == 0 ||
      x_len % d != 0 || y_len != x_len || rstd_len != x_len / d) {
    return fail(env, "blas addon: rmsNormForward(x, weight, epsilon, y, rstd) with x whole rows of weight's length");
  }
  rms_norm_rows(x, weight, (float)eps, rstd_len, d, y, rstd);
  return NULL;
}

// rmsNormBackward(dy, x, weight, rstd, dx, dweight|null): dweight is overwritten with its sum over rows.
napi_value rms_norm_backward(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  float *dy, *x, *weight, *rstd, *dx, *dweight;
  size_t dy_len, x_len, d, rstd_len, dx_len, dweight_len;
  if (!args_of(env, info, 6, argv) || !arg_f32(env, argv[0], false, &dy, &dy_len) || !arg_f32(env, argv[1], false, &x, &x_len) ||
      !arg_f32(env, argv[2], false, &weight, &d) || !arg_f32(env, argv[3], false, &rstd, &rstd_len) || !arg_f32(env, argv[4], false, &dx, &dx_len) ||
      !arg_f32(env, argv[5], true, &dweight, &dweight_len) || d == 0 || x_len % d != 0 || dy_len != x_len || dx_len != x_len ||
      rstd_len != x_len / d || (dweight && dweight_len != d)) {
    return fail(env, "blas addon: rmsNormBackward(dy, x, weight, rstd, dx, dweight|null) with matching sizes");
  }
  rms_norm_grad_rows(dy, x, weight, rstd, rstd_len, d, dx, dweight);
  return NULL;
}

// The largest value of a row.
static inline float row_max(const float* row, size_t n) {
  float max = row[0];
  for (size_t j = 1; j < n; j++) max = row[j] > max ? row[j] : max;
  return max;
}

// nll[r] = logsumexp(logits[r]) − logits[r][labels[r]]; 0 for a label outside the n classes.
VECTOR_CLONES static void cross_entropy_rows(const float* logits, const int32_t* labels, size_t rows, size_t n, float* nll) {
  for (size_t r = 0; r < rows; r++) {
    const float* row = logits + r * n;
    const float max = row_max(row, n);
    float sum = 0.0f;
    for (size_t j = 0; j < n; j++) sum += expf(row[j] - max);
    const int32_t label = labels[r];
    nll[r] = label >= 0 && (size_t)label < n ? max + logf(sum) - row[label] : 0.0f;
  }
}

// dLogits[r] = dNll[r]·(softmax(logits[r]) − onehot(labels[r])); 0 for a label outside. One exp per
// logit: the exponentials are written first and scaled by dNll/sum once the sum is known.
VECTOR_CLONES static void cross_entropy_grad_rows(const float* logits, const int32_t* labels, const float* d_nll, size_t rows, size_t n, float* grad) {
  for (size_t r = 0; r < rows; r++) {
    const float* row = logits + r * n;
    float* g = grad + r * n;
    const int32_t label = labels[r];
    if (label < 0 || (size_t)label >= n) {
      memset(g, 0, n * sizeof(float));
      continue;
    }
    const float max = row_max(row, n);
    float sum = 0.0f;
    for (size_t j = 0; j < n; j++) {
      g[j] = expf(row[j] - max);
      sum += g[j];
    }
    const float scale = d_nll[r] / sum;
    for (size_t j = 0; j < n; j++) g[j] *= scale;
    g[label] -= d_nll[r];
  }
}

// softmaxCrossEntropy(logits, labels, nll): nll[r] = logsumexp(logits[r]) − logits[r][labels[r]]; 0 for a label outside the classes.
// softmaxCrossEntropyBackward(logits, labels, dNll, dLogits): dLogits[r] = dNll[r]·(softmax(logits[r]) − onehot(labels[r])); 0 for a label outside.
static napi_value cross_entropy(napi_env env, napi_callback_info info, bool backward) {
  napi_value argv[4];
  float *logits, *d_nll = NULL, *out;
  int32_t* labels;
  size_t logits_len, rows, d_nll_len = 0, out_len;
  const size_t count = backward ? 4 : 3;
  if (!args_of(env, info, count, argv) || !arg_f32(env, argv[0], false, &logits, &logits_len) || !arg_i32(env, argv[1], &labels, &rows) ||
      (backward && !arg_f32(env, argv[2], false, &d_nll, &d_nll_len)) || !arg_f32(env, argv[count - 1], false, &out, &out_len) || rows == 0 ||
      logits_len % rows != 0 || (backward ? (d_nll_len != rows || out_len != logits_len) : out_len != rows)) {
    return fail(env, backward ? "blas addon: softmaxCrossEntropyBackward(logits [rows, classes], labels Int32Array [rows], dNll [rows], dLogits)"
                              : "blas addon: softmaxCrossEntropy(logits [rows, classes], labels Int32Array [rows], nll [rows])");
  }
  const size_t n = logits_len / rows;
  if (backward) cross_entropy_grad_rows(logits, labels, d_nll, rows, n, out);
  else cross_entropy_rows(logits, labels, rows, n, out);
  return NULL;
}

napi_value softmax_cross_entropy(napi_env env, napi_callback_info info) {
  return cross_entropy(env, info, false);
}

napi_value softmax_cross_entropy_backward(napi_env env, napi_callback_info info) {
  return cross_entropy(env, info, true);
}

#define SQRT_2_OVER_PI 0.7978845608f
#define GELU_CUBIC 0.044715f

VECTOR_CLONES static void gelu_tanh_values(const float* x, size_t n, float* out) {
  for (size_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + tanhf(SQRT_2_OVER_PI * (x[i] + GELU_CUBIC * x[i] * x[i] * x[i])));
}

VECTOR_CLONES static void gelu_tanh_grads(const float* x, const float* dy, size_t n, float* out) {
  for (size_t i = 0; i < n; i++) {
    const float th = tanhf(SQRT_2_OVER_PI * (x[i] + GELU_CUBIC * x[i] * x[i] * x[i]));
    const float du = SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_CUBIC * x[i] * x[i]);
    out[i] = dy[i] * (0.5f * (1.0f + th) + 0.5f * x[i] * (1.0f - th * th) * du);
  }
}

// geluTanhForward(x, out): out = x/2·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (GPT-2's gelu_new).
napi_value gelu_tanh_forward(napi_env env, napi_callback_info info) {
  float* v[2];
  size_t n = 0;
  if (!same_length_f32(env, info, 2, v, &n)) return fail(env, "blas addon: geluTanhForward(x, out) takes two Float32Arrays of one length");
  gelu_tanh_values(v[0], n, v[1]);
  return NULL;
}

// geluTanhBackward(x, dy, out): out = dy·(½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715·x²)).
napi_value gelu_tanh_backward(napi_env env, napi_callback_info info) {
  float* v[3];
  size_t n = 0;
  if (!same_length_f32(env, info, 3, v, &n)) return fail(env, "blas addon: geluTanhBackward(x, dy, out) takes three Float32Arrays of one length");
  gelu_tanh_grads(v[0], v[1], n, v[2]);
  return NULL;
}

// σ(g) from exp(−|g|), which never overflows (−ffast-math assumes no infinities).
static inline float sigmoid(float g) {
  const float e = expf(-fabsf(g));
  return (g >= 0.0f ? 1.0f : e) / (1.0f + e);
}

VECTOR_CLONES static void silu_gate_values(const float* gate, const float* up, size_t n, float* out) {
  for (size_t i = 0; i < n; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

VECTOR_CLONES static void silu_gate_grads(const float* gate, const float* up, const float* dy, size_t n, float* d_gate, float* d_up) {
  for (size_t i = 0; i < n; i++) {
    const float g = gate[i], s = sigmoid(g);
    d_gate[i] = dy[i] * up[i] * s * (1.0f + g * (1.0f - s));
    d_up[i] = dy[i] * g * s;
  }
}

// siluGateForward(gate, up, out): out = silu(gate)·up = gate·σ(gate)·up (the SwiGLU MLP's gating).
napi_value silu_gate_forward(napi_env env, napi_callback_info info) {
  float* v[3];
  size_t n = 0;
  if (!same_length_f32(env, info, 3, v, &n)) return fail(env, "blas addon: siluGateForward(gate, up, out) takes three Float32Arrays of one length");
  silu_gate_values(v[0], v[1], n, v[2]);
  return NULL;
}

// siluGateBackward(gate, up, dy, dGate, dUp): dGate = dy·up·σ(g)·(1 + g·(1 − σ(g))), dUp = dy·silu(g).
napi_value silu_gate_backward(napi_env env, napi_callback_info info) {
  float* v[5];
  size_t n = 0;
  if (!same_length_f32(env, info, 5, v, &n)) return fail(env, "blas addon: siluGateBackward(gate, up, dy, dGate, dUp) takes five Float32Arrays of one length");
  silu_gate_grads(v[0], v[1], v[2], n, v[3], v[4]);
  return NULL;
}
