// Single-precision batched matrix products for the tfjs wasm backend, computed by OpenBLAS
// directly on Float32Array views of the wasm heap: no copies in or out. Also registers the fused
// training kernels of attention.c and norms.c and the frozen (quantized) linear weights of quant.c.
#include <cblas.h>
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "napi-args.h"

#define CHECK(call)                                                     \
  do {                                                                  \
    if ((call) != napi_ok) {                                            \
      napi_throw_error(env, NULL, "blas addon: N-API call failed: " #call); \
      return NULL;                                                      \
    }                                                                   \
  } while (0)

// matmul(a, b, out, aBatchIndex, bBatchIndex, m, n, k, transposeA, transposeB)
// out[i] = op(a[aBatchIndex[i]]) x op(b[bBatchIndex[i]]) for each output batch i, where a holds
// m x k matrices (k x m when transposed) and b holds k x n (n x k when transposed).
// A caller whose b is shared by every batch of an untransposed a passes one batch of m * batch rows:
// one large product runs faster than many small ones.
static napi_value matmul(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 10) {
    napi_throw_type_error(env, NULL, "blas addon: matmul takes 10 arguments");
    return NULL;
  }
  float *a, *b, *out;
  int32_t *a_index, *b_index;
  size_t a_len, b_len, out_len, batch, b_batch;
  if (!arg_f32(env, argv[0], false, &a, &a_len) || !arg_f32(env, argv[1], false, &b, &b_len) ||
      !arg_f32(env, argv[2], false, &out, &out_len)) {
    napi_throw_type_error(env, NULL, "blas addon: a, b and out must be Float32Arrays");
    return NULL;
  }
  if (!arg_i32(env, argv[3], &a_index, &batch) || !arg_i32(env, argv[4], &b_index, &b_batch) ||
      b_batch != batch) {
    napi_throw_type_error(env, NULL, "blas addon: batch indices must be Int32Arrays of equal length");
    return NULL;
  }
  int64_t dims[3];
  bool trans[2];
  for (int i = 0; i < 3; i++) CHECK(napi_get_value_int64(env, argv[5 + i], &dims[i]));
  for (int i = 0; i < 2; i++) CHECK(napi_get_value_bool(env, argv[8 + i], &trans[i]));
  const int64_t m = dims[0], n = dims[1], k = dims[2];
  if (m < 0 || n < 0 || k < 0 || (size_t)(m * n) * batch > out_len) {
    napi_throw_range_error(env, NULL, "blas addon: output too small for the product");
    return NULL;
  }
  const size_t a_size = (size_t)(m * k), b_size = (size_t)(k * n), out_size = (size_t)(m * n);
  for (size_t i = 0; i < batch; i++) {
    if (a_index[i] < 0 || b_index[i] < 0 || (size_t)(a_index[i] + 1) * a_size > a_len ||
        (size_t)(b_index[i] + 1) * b_size > b_len) {
      napi_throw_range_error(env, NULL, "blas addon: batch index outside its operand");
      return NULL;
    }
  }
  if (out_size == 0) return NULL;
  if (k == 0) {
    memset(out, 0, out_size * batch * sizeof(float));
    return NULL;
  }
  const int lda = trans[0] ? (int)m : (int)k;
  const int ldb = trans[1] ? (int)k : (int)n;
  if (m == 1) {
    // One row (a generation step): a matrix-vector product reads b once, where OpenBLAS 0.3.21's sgemm
    // first packs all of b (3 to 40 times slower for a 768 × 50257 head). Either form of a is one contiguous row.
    for (size_t i = 0; i < batch; i++) {
      cblas_sgemv(CblasRowMajor, trans[1] ? CblasNoTrans : CblasTrans, trans[1] ? (int)n : (int)k, trans[1] ? (int)k : (int)n, 1.0f,
                  b + b_index[i] * b_size, ldb, a + a_index[i] * a_size, 1, 0.0f, out + i * out_size, 1);
    }
    return NULL;
  }
  for (size_t i = 0; i < batch; i++) {
    cblas_sgemm(CblasRowMajor, trans[0] ? CblasTrans : CblasNoTrans, trans[1] ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, 1.0f, a + a_index[i] * a_size, lda, b + b_index[i] * b_size, ldb, 0.0f,
                out + i * out_size, (int)n);
  }
  return NULL;
}

// biasRelu(out, bias, relu): adds bias (length n) to every row of out (rows of n) and clamps at
// zero when relu is set, in one pass over out.
static napi_value bias_activation(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float *out, *bias;
  size_t out_len, n;
  bool relu;
  if (argc != 3 || !arg_f32(env, argv[0], false, &out, &out_len) || !arg_f32(env, argv[1], false, &bias, &n) ||
      napi_get_value_bool(env, argv[2], &relu) != napi_ok || n == 0 || out_len % n != 0) {
    napi_throw_type_error(env, NULL, "blas addon: biasActivation(out, bias, relu) with out a whole number of bias rows");
    return NULL;
  }
  for (size_t row = 0; row < out_len; row += n) {
    float* r = out + row;
    if (relu) {
      for (size_t j = 0; j < n; j++) {
        const float v = r[j] + bias[j];
        r[j] = v > 0.0f ? v : 0.0f;
      }
    } else {
      for (size_t j = 0; j < n; j++) r[j] += bias[j];
    }
  }
  return NULL;
}

// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, float32's own resolution):
// branch-free, so the loops below vectorise, unlike libm's erff.
static inline float erf_approx(float x) {
  const float a = fabsf(x);
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  const float poly = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  return copysignf(1.0f - poly * expf(-a * a), x);
}

VECTOR_CLONES static void gelu_values(const float* x, size_t n, float* out) {
  for (size_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + erf_approx(x[i] * 0.70710678f));
}

VECTOR_CLONES static void gelu_grads(const float* x, const float* dy, size_t n, float* out) {
  for (size_t i = 0; i < n; i++) {
    const float cdf = 0.5f * (1.0f + erf_approx(x[i] * 0.70710678f));
    const float pdf = 0.39894228f * expf(-0.5f * x[i] * x[i]);
    out[i] = dy[i] * (cdf + x[i] * pdf);
  }
}

// geluForward(x, out): out = x·Φ(x) = x/2·(1 + erf(x/√2)).
static napi_value gelu_forward(napi_env env, napi_callback_info info) {
  float* v[2];
  size_t n = 0;
  if (!same_length_f32(env, info, 2, v, &n)) {
    napi_throw_type_error(env, NULL, "blas addon: geluForward(x, out) takes two Float32Arrays of one length");
    return NULL;
  }
  gelu_values(v[0], n, v[1]);
  return NULL;
}

// geluBackward(x, dy, out): out = dy·(Φ(x) + x·φ(x)).
static napi_value gelu_backward(napi_env env, napi_callback_info info) {
  float* v[3];
  size_t n = 0;
  if (!same_length_f32(env, info, 3, v, &n)) {
    napi_throw_type_error(env, NULL, "blas addon: geluBackward(x, dy, out) takes three Float32Arrays of one length");
    return NULL;
  }
  gelu_grads(v[0], v[1], n, v[2]);
  return NULL;
}

static napi_value threads(napi_env env, napi_callback_info info) {
  napi_value result;
  CHECK(napi_create_int32(env, openblas_get_num_threads(), &result));
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor properties[] = {
      {"matmul", NULL, matmul, NULL, NULL, NULL, napi_enumerable, NULL},
      {"biasActivation", NULL, bias_activation, NULL, NULL, NULL, napi_enumerable, NULL},
      {"geluForward", NULL, gelu_forward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"geluBackward", NULL, gelu_backward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"attentionForward", NULL, attention_forward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"attentionBackward", NULL, attention_backward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"layerNormForward", NULL, layer_norm_forward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"layerNormBackward", NULL, layer_norm_backward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"rmsNormForward", NULL, rms_norm_forward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"rmsNormBackward", NULL, rms_norm_backward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"softmaxCrossEntropy", NULL, softmax_cross_entropy, NULL, NULL, NULL, napi_enumerable, NULL},
      {"softmaxCrossEntropyBackward", NULL, softmax_cross_entropy_backward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"geluTanhForward", NULL, gelu_tanh_forward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"geluTanhBackward", NULL, gelu_tanh_backward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"siluGateForward", NULL, silu_gate_forward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"siluGateBackward", NULL, silu_gate_backward, NULL, NULL, NULL, napi_enumerable, NULL},
      {"frozenCreate", NULL, frozen_create, NULL, NULL, NULL, napi_enumerable, NULL},
      {"frozenRelease", NULL, frozen_release, NULL, NULL, NULL, napi_enumerable, NULL},
      {"frozenBytes", NULL, frozen_bytes, NULL, NULL, NULL, napi_enumerable, NULL},
      {"frozenDequantize", NULL, frozen_dequantize, NULL, NULL, NULL, napi_enumerable, NULL},
      {"frozenMatmul", NULL, frozen_matmul, NULL, NULL, NULL, napi_enumerable, NULL},
      {"threads", NULL, threads, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(properties) / sizeof(properties[0]), properties) != napi_ok) {
    return NULL;
  }
  return exports;
}
