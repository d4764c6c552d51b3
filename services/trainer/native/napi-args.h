// Argument reading shared by the addon's kernels: typed-array views (no copies) and numbers, each
// failing with a JS TypeError that names the kernel.
#ifndef NAPI_ARGS_H
#define NAPI_ARGS_H
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// A Float32Array's data and length; null or undefined give data NULL and length 0 when optional.
static inline int arg_f32(napi_env env, napi_value value, bool optional, float** data, size_t* length) {
  napi_valuetype kind;
  if (napi_typeof(env, value, &kind) != napi_ok) return 0;
  if (optional && (kind == napi_null || kind == napi_undefined)) {
    *data = NULL;
    *length = 0;
    return 1;
  }
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  void* raw;
  if (napi_get_typedarray_info(env, value, &type, length, &raw, &buffer, &offset) != napi_ok || type != napi_float32_array) return 0;
  *data = (float*)raw;
  return 1;
}

static inline int arg_i32(napi_env env, napi_value value, int32_t** data, size_t* length) {
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  void* raw;
  if (napi_get_typedarray_info(env, value, &type, length, &raw, &buffer, &offset) != napi_ok || type != napi_int32_array) return 0;
  *data = (int32_t*)raw;
  return 1;
}

static inline int arg_size(napi_env env, napi_value value, int64_t* out) {
  return napi_get_value_int64(env, value, out) == napi_ok && *out >= 0;
}

static inline int arg_number(napi_env env, napi_value value, double* out) {
  return napi_get_value_double(env, value, out) == napi_ok;
}

static inline int arg_bool(napi_env env, napi_value value, bool* out) {
  return napi_get_value_bool(env, value, out) == napi_ok;
}

static inline int args_of(napi_env env, napi_callback_info info, size_t count, napi_value* argv) {
  size_t argc = count;
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == count;
}

// `count` Float32Arrays of one length, as views; the length in *n. At most 5.
static inline int same_length_f32(napi_env env, napi_callback_info info, size_t count, float** views, size_t* n) {
  napi_value argv[5];
  if (count > 5 || !args_of(env, info, count, argv)) return 0;
  for (size_t i = 0; i < count; i++) {
    size_t length;
    if (!arg_f32(env, argv[i], false, &views[i], &length) || (i > 0 && length != *n)) return 0;
    *n = length;
  }
  return 1;
}

static inline napi_value fail(napi_env env, const char* message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

// The elementwise and row loops (exp, tanh, erf, sums) are compiled three times, for AVX-512, AVX2/FMA
// and the x86-64 baseline, and the loader picks the best the CPU runs (function multiversioning):
// -ffast-math turns expf and tanhf into glibc's vector forms, 16 or 8 lanes wide instead of SSE's 4,
// while the addon still loads on any x86-64 machine it was built for. The choice needs glibc's ifunc;
// other compilers, C libraries and CPUs get one plain build.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

// Kernels defined in attention.c, norms.c and quant.c, registered by blas.c.
napi_value attention_forward(napi_env env, napi_callback_info info);
napi_value attention_backward(napi_env env, napi_callback_info info);
napi_value layer_norm_forward(napi_env env, napi_callback_info info);
napi_value layer_norm_backward(napi_env env, napi_callback_info info);
napi_value rms_norm_forward(napi_env env, napi_callback_info info);
napi_value rms_norm_backward(napi_env env, napi_callback_info info);
napi_value softmax_cross_entropy(napi_env env, napi_callback_info info);
napi_value softmax_cross_entropy_backward(napi_env env, napi_callback_info info);
napi_value gelu_tanh_forward(napi_env env, napi_callback_info info);
napi_value gelu_tanh_backward(napi_env env, napi_callback_info info);
napi_value silu_gate_forward(napi_env env, napi_callback_info info);
napi_value silu_gate_backward(napi_env env, napi_callback_info info);
napi_value frozen_create(napi_env env, napi_callback_info info);
napi_value frozen_release(napi_env env, napi_callback_info info);
napi_value frozen_bytes(napi_env env, napi_callback_info info);
napi_value frozen_dequantize(napi_env env, napi_callback_info info);
napi_value frozen_matmul(napi_env env, napi_callback_info info);
#endif
