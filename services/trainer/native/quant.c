// Frozen linear weights held by the addon, outside the wasm heap, in the checkpoint's own dtype
// (F32, BF16, F16) or quantized (per-output-channel absmax int8; QLoRA's NF4 in blocks of 64 with
// optional double quantization of the block scales): created from a checkpoint tensor's bytes in
// one pass, so no full-precision copy of a quantized weight ever exists. Their products live in
// quant-matmul.c.
#include <math.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "napi-args.h"
#include "quant.h"

enum { SOURCE_F32, SOURCE_BF16, SOURCE_F16 };

// The 16 NormalFloat levels of QLoRA (Dettmers et al. 2023, appendix E; bitsandbytes' NF4 table).
const float NF4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
    0.7229568362236023f, 1.0f};

float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  if (exponent == 0) return (sign ? -1.0f : 1.0f) * ldexpf((float)mantissa, -24);
  uint32_t bits = exponent == 0x1f ? sign | 0x7f800000u | (mantissa << 13) : sign | ((exponent + 112) << 23) | (mantissa << 13);
  float out;
  memcpy(&out, &bits, 4);
  return out;
}

static float bf16_to_float(uint16_t b) {
  const uint32_t bits = (uint32_t)b << 16;
  float out;
  memcpy(&out, &bits, 4);
  return out;
}

/** Source elements [start, start + count) as floats. */
static void source_floats(const uint8_t* source, int dtype, size_t start, size_t count, float* out) {
  if (dtype == SOURCE_F32) {
    memcpy(out, source + 4 * start, 4 * count);
    return;
  }
  const uint8_t* p = source + 2 * start;
  for (size_t i = 0; i < count; i++) {
    const uint16_t v = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
    out[i] = dtype == SOURCE_BF16 ? bf16_to_float(v) : half_to_float(v);
  }
}

static uint8_t nf4_code(float normalised) {
  // Nearest level: the midpoints between neighbouring levels split the line, as bitsandbytes does.
  uint8_t code = 0;
  for (int i = 1; i < 16; i++) if (normalised > 0.5f * (NF4[i - 1] + NF4[i])) code = (uint8_t)i;
  return code;
}

/** Frees the stored weight, leaving a released handle (values NULL). */
static void release_storage(frozen_t* f) {
  free(f->values);
  free(f->scales);
  free(f->scale_codes);
  free(f->scale_steps);
  f->values = NULL;
  f->scales = NULL;
  f->scale_codes = NULL;
  f->scale_steps = NULL;
}

static void frozen_free(frozen_t* f) {
  release_storage(f);
  free(f);
}

static void finalize(napi_env env, void* data, void* hint) {
  (void)hint;
  frozen_t* f = (frozen_t*)data;
  int64_t adjusted;
  if (f->values) napi_adjust_external_memory(env, -(int64_t)f->bytes, &adjusted);
  frozen_free(f);
}

/** Block absmax scales → 8-bit codes per SCALE_BLOCK blocks after subtracting their mean (QLoRA's double quantization). */
static int double_quantize(frozen_t* f, size_t blocks) {
  double sum = 0;
  for (size_t b = 0; b < blocks; b++) sum += f->scales[b];
  f->scale_offset = blocks ? (float)(sum / (double)blocks) : 0.0f;
  const size_t groups = (blocks + SCALE_BLOCK - 1) / SCALE_BLOCK;
  f->scale_codes = malloc(blocks);
  f->scale_steps = malloc(4 * (groups ? groups : 1));
  if (!f->scale_codes || !f->scale_steps) return 0;
  for (size_t g = 0; g < groups; g++) {
    const size_t begin = g * SCALE_BLOCK, end = begin + SCALE_BLOCK < blocks ? begin + SCALE_BLOCK : blocks;
    float absmax = 0.0f;
    for (size_t b = begin; b < end; b++) absmax = fmaxf(absmax, fabsf(f->scales[b] - f->scale_offset));
    const float step = absmax > 0.0f ? absmax / 127.0f : 1.0f;
    f->scale_steps[g] = step;
    for (size_t b = begin; b < end; b++) f->scale_codes[b] = (int8_t)lrintf((f->scales[b] - f->scale_offset) / step);
  }
  free(f->scales);
  f->scales = NULL;
  f->bytes = f->bytes - 4 * blocks + blocks + 4 * groups;
  return 1;
}

static int quantize(frozen_t* f, const uint8_t* source, int dtype, bool double_quant) {
  const size_t rows = (size_t)f->rows, cols = (size_t)f->cols, n = rows * cols;
  // NF4_BLOCK rows at a time: a whole number of blocks, whatever cols is.
  float* chunk = malloc(4 * NF4_BLOCK * (cols ? cols : 1));
  if (!chunk) return 0;
  if (f->mode == STORE_INT8) {
    f->values = malloc(n ? n : 1);
    f->scales = malloc(4 * (rows ? rows : 1));
    f->bytes = n + 4 * rows;
  } else {
    const size_t blocks = (n + NF4_BLOCK - 1) / NF4_BLOCK;
    f->values = calloc((n + 1) / 2 + 1, 1);
    f->scales = malloc(4 * (blocks ? blocks : 1));
    f->bytes = (n + 1) / 2 + 4 * blocks;
  }
  if (!f->values || !f->scales) {
    free(chunk);
    return 0;
  }
  for (size_t row = 0; row < rows; row += NF4_BLOCK) {
    const size_t count = (row + NF4_BLOCK < rows ? NF4_BLOCK : rows - row) * cols, start = row * cols;
    source_floats(source, dtype, start, count, chunk);
    if (f->mode == STORE_INT8) {
      for (size_t r = 0; r < count / (cols ? cols : 1); r++) {
        const float* x = chunk + r * cols;
        float absmax = 0.0f;
        for (size_t c = 0; c < cols; c++) absmax = fmaxf(absmax, fabsf(x[c]));
        const float scale = absmax > 0.0f ? absmax / 127.0f : 1.0f;
        f->scales[row + r] = scale;
        int8_t* codes = (int8_t*)f->values + start + r * cols;
        for (size_t c = 0; c < cols; c++) codes[c] = (int8_t)lrintf(x[c] / scale);
      }
      continue;
    }
    uint8_t* packed = (uint8_t*)f->values;
    for (size_t b = 0; b < count; b += NF4_BLOCK) {
      const size_t size = b + NF4_BLOCK < count ? NF4_BLOCK : count - b;
      float absmax = 0.0f;
      for (size_t i = 0; i < size; i++) absmax = fmaxf(absmax, fabsf(chunk[b + i]));
      f->scales[(start + b) / NF4_BLOCK] = absmax;
      const float inverse = absmax > 0.0f ? 1.0f / absmax : 0.0f;
      for (size_t i = 0; i < size; i++) {
        const size_t at = start + b + i;
        packed[at >> 1] |= (uint8_t)(nf4_code(chunk[b + i] * inverse) << ((at & 1) * 4));
      }
    }
  }
  free(chunk);
  return f->mode == STORE_NF4 && double_quant ? double_quantize(f, (n + NF4_BLOCK - 1) / NF4_BLOCK) : 1;
}

int frozen_of(napi_env env, napi_value value, frozen_t** out) {
  void* data;
  if (napi_get_value_external(env, value, &data) != napi_ok || !data || !((frozen_t*)data)->values) return 0;
  *out = (frozen_t*)data;
  return 1;
}

// frozenCreate(bytes: Uint8Array, sourceDtype: 0 F32 | 1 BF16 | 2 F16, rows, cols, mode: 0 keep | 3 int8 | 4 nf4, doubleQuant)
// → an external handle owning the stored weight; `bytes` is only read during the call.
napi_value frozen_create(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  napi_typedarray_type type;
  napi_value buffer;
  size_t length, offset;
  void* raw;
  int64_t dtype, rows, cols, mode;
  bool double_quant;
  if (!args_of(env, info, 6, argv) || napi_get_typedarray_info(env, argv[0], &type, &length, &raw, &buffer, &offset) != napi_ok ||
      type != napi_uint8_array || !arg_size(env, argv[1], &dtype) || dtype > SOURCE_F16 || !arg_size(env, argv[2], &rows) ||
      !arg_size(env, argv[3], &cols) || !arg_size(env, argv[4], &mode) || (mode != 0 && mode != STORE_INT8 && mode != STORE_NF4) ||
      !arg_bool(env, argv[5], &double_quant)) {
    return fail(env, "blas addon: frozenCreate(bytes, sourceDtype, rows, cols, mode, doubleQuant)");
  }
  const size_t n = (size_t)rows * (size_t)cols, element = dtype == SOURCE_F32 ? 4 : 2;
  if (length != n * element) return fail(env, "blas addon: frozenCreate: bytes do not match rows × cols of the dtype");
  frozen_t* f = calloc(1, sizeof(frozen_t));
  if (!f) return fail(env, "blas addon: frozenCreate: out of memory");
  f->rows = rows;
  f->cols = cols;
  int ok;
  if (mode == 0) {
    f->mode = dtype == SOURCE_F32 ? STORE_F32 : dtype == SOURCE_BF16 ? STORE_BF16 : STORE_F16;
    f->bytes = length;
    f->values = malloc(length ? length : 1);
    ok = f->values != NULL;
    if (ok) memcpy(f->values, raw, length);
  } else {
    f->mode = (int)mode;
    ok = quantize(f, (const uint8_t*)raw, (int)dtype, double_quant);
  }
  if (!ok) {
    frozen_free(f);
    return fail(env, "blas addon: frozenCreate: out of memory for the stored weight");
  }
  napi_value handle;
  int64_t adjusted;
  if (napi_create_external(env, f, finalize, NULL, &handle) != napi_ok) {
    frozen_free(f);
    return fail(env, "blas addon: frozenCreate: could not create the handle");
  }
  napi_adjust_external_memory(env, (int64_t)f->bytes, &adjusted);
  return handle;
}

// frozenRelease(handle): frees the stored weight now rather than at garbage collection.
napi_value frozen_release(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  frozen_t* f;
  if (!args_of(env, info, 1, argv) || !frozen_of(env, argv[0], &f)) return fail(env, "blas addon: frozenRelease(handle) of a live handle");
  int64_t adjusted;
  napi_adjust_external_memory(env, -(int64_t)f->bytes, &adjusted);
  release_storage(f);
  return NULL;
}

// frozenBytes(handle): bytes the stored weight takes.
napi_value frozen_bytes(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  frozen_t* f;
  if (!args_of(env, info, 1, argv) || !frozen_of(env, argv[0], &f)) return fail(env, "blas addon: frozenBytes(handle) of a live handle");
  napi_create_double(env, (double)f->bytes, &result);
  return result;
}

// frozenDequantize(handle, out): the whole weight [rows, cols] as floats (merging, tests).
napi_value frozen_dequantize(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  frozen_t* f;
  float* out;
  size_t length;
  if (!args_of(env, info, 2, argv) || !frozen_of(env, argv[0], &f) || !arg_f32(env, argv[1], false, &out, &length) ||
      length != (size_t)(f->rows * f->cols)) {
    return fail(env, "blas addon: frozenDequantize(handle, out) with out of rows × cols floats");
  }
  frozen_dequantize_range(f, 0, (size_t)(f->rows * f->cols), out);
  return NULL;
}
