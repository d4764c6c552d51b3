// Products with a frozen linear weight (quant.h): out = x·Wᵀ (the forward) and dx = dy·W (the input
// gradient). A stored F32 weight goes to sgemm as it is; any other is dequantized a tile at a time
// into a bounded float scratch that sgemm then reads, so no full-precision copy of a quantized weight
// is made. Tiles are large enough that sgemm's own packing of the activations, redone per call, and
// its thread hand-offs stay a small share of the product, and the dequantizing loops are branch-free
// over whole NF4 blocks (a 16-entry codebook scaled once per block, one lookup per nibble).
#include <cblas.h>
// x86's vector paths, each used when the CPU running it has the instructions; elsewhere the plain loops.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QUANT_X86 1
#else
#define QUANT_X86 0
#endif
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "napi-args.h"
#include "quant.h"

static float block_scale(const frozen_t* f, size_t block) {
  if (f->scales) return f->scales[block];
  return (float)f->scale_codes[block] * f->scale_steps[block / SCALE_BLOCK] + f->scale_offset;
}

static void bf16_range(const uint16_t* source, size_t count, float* out) {
  uint32_t* bits = (uint32_t*)out;
  for (size_t i = 0; i < count; i++) bits[i] = (uint32_t)source[i] << 16;
}

#if QUANT_X86
/** F16 to float, 8 at a time with F16C's conversion where the CPU has it (exact either way). */
__attribute__((target("avx,f16c"))) static size_t f16_range_f16c(const uint16_t* source, size_t count, float* out) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(source + i))));
  return i;
}
#endif

static void f16_range(const uint16_t* source, size_t count, float* out) {
  size_t i = 0;
#if QUANT_X86
  static int f16c = -1;
  if (f16c < 0) f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx") ? 1 : 0;
  if (f16c) i = f16_range_f16c(source, count, out);
#endif
  for (; i < count; i++) out[i] = half_to_float(source[i]);
}

static void int8_range(const frozen_t* f, size_t start, size_t count, float* out) {
  const size_t cols = (size_t)f->cols;
  const int8_t* codes = (const int8_t*)f->values;
  for (size_t i = 0; i < count;) {
    const size_t at = start + i, row = at / cols, end = (row + 1) * cols - start < count ? (row + 1) * cols - start : count;
    const float scale = f->scales[row];
    for (; i < end; i++) out[i] = (float)codes[start + i] * scale;
  }
}

/** One nibble-indexed element of the NF4 weight, for the ragged ends of a range. */
static float nf4_at(const frozen_t* f, size_t at) {
  const uint8_t code = (((const uint8_t*)f->values)[at >> 1] >> ((at & 1) * 4)) & 0xf;
  return NF4[code] * block_scale(f, at / NF4_BLOCK);
}

/** A whole NF4 block (32 bytes → 64 floats), one codebook lookup per nibble. */
static void nf4_block(const uint8_t* bytes, float scale, float* out) {
  float level[16];
  for (int c = 0; c < 16; c++) level[c] = NF4[c] * scale;
  for (int b = 0; b < NF4_BLOCK / 2; b++) {
    out[2 * b] = level[bytes[b] & 0xf];
    out[2 * b + 1] = level[bytes[b] >> 4];
  }
}

#if QUANT_X86
/**
 * The same with AVX2, 8 nibbles per step: each indexes the scaled low and high halves of the codebook
 * (a permute each) and its bit 3 picks between them.
 */
__attribute__((target("avx2"))) static void nf4_block_avx2(const uint8_t* bytes, float scale, float* out) {
  const __m256 s = _mm256_set1_ps(scale);
  const __m256 low = _mm256_mul_ps(_mm256_loadu_ps(NF4), s), high = _mm256_mul_ps(_mm256_loadu_ps(NF4 + 8), s);
  const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), nibble = _mm256_set1_epi32(0xf);
  for (int b = 0; b < NF4_BLOCK / 2; b += 4) {
    uint32_t word;
    memcpy(&word, bytes + b, 4);
    // Little-endian: nibble i of the word is element i of these 8 (low nibble of each byte first).
    const __m256i code = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)word), shifts), nibble);
    const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(code, 28));
    _mm256_storeu_ps(out + 2 * b, _mm256_blendv_ps(_mm256_permutevar8x32_ps(low, code), _mm256_permutevar8x32_ps(high, code), upper));
  }
}
#endif

static void nf4_range(const frozen_t* f, size_t start, size_t count, float* out) {
#if QUANT_X86
  static int avx2 = -1;
  if (avx2 < 0) avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
  void (*block)(const uint8_t*, float, float*) = avx2 ? nf4_block_avx2 : nf4_block;
#else
  void (*block)(const uint8_t*, float, float*) = nf4_block;
#endif
  const uint8_t* packed = (const uint8_t*)f->values;
  size_t i = 0;
  // Up to the first block boundary one element at a time; then whole blocks; then the ragged end.
  for (; i < count && (start + i) % NF4_BLOCK != 0; i++) out[i] = nf4_at(f, start + i);
  for (; i + NF4_BLOCK <= count; i += NF4_BLOCK) {
    const size_t at = start + i;
    block(packed + at / 2, block_scale(f, at / NF4_BLOCK), out + i);
  }
  for (; i < count; i++) out[i] = nf4_at(f, start + i);
}

void frozen_dequantize_range(const frozen_t* f, size_t start, size_t count, float* out) {
  switch (f->mode) {
    case STORE_F32:
      memcpy(out, (const float*)f->values + start, 4 * count);
      break;
    case STORE_BF16:
      bf16_range((const uint16_t*)f->values + start, count, out);
      break;
    case STORE_F16:
      f16_range((const uint16_t*)f->values + start, count, out);
      break;
    case STORE_INT8:
      int8_range(f, start, count, out);
      break;
    default:
      nf4_range(f, start, count, out);
  }
}

// Floats of dequantized scratch per product (8 MiB): at TinyLlama's widths a tile of 1,024 rows of
// 2,048 or 372 of 5,632, enough for sgemm to run near its speed on the whole weight (fewer, larger
// calls); a weight smaller than this fits in one tile.
#define TILE_FLOATS ((size_t)1 << 21)

// Fewer input rows than this: tiles of whole weight rows, whatever the shape (see frozen_matmul).
#define SMALL_M 64

/** Rows (or columns) per tile of `width` floats each: the scratch's share, a multiple of 64, at least 64. */
static int64_t tile_of(int64_t width, int64_t limit) {
  int64_t t = (int64_t)(TILE_FLOATS / (size_t)(width ? width : 1));
  t = t < 64 ? 64 : t - t % 64;
  return t < limit ? t : limit;
}

/** out [m, rows] = x [m, cols] · Wᵀ, a tile of output rows per sgemm: out is written once, x packed per tile. */
static void forward_row_tiles(const frozen_t* f, const float* x, float* out, int64_t m, float* scratch, int64_t tile) {
  const int64_t rows = f->rows, cols = f->cols;
  for (int64_t r = 0; r < rows; r += tile) {
    const int64_t count = r + tile < rows ? tile : rows - r;
    frozen_dequantize_range(f, (size_t)(r * cols), (size_t)(count * cols), scratch);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)count, (int)cols, 1.0f, x, (int)cols, scratch, (int)cols, 0.0f, out + r, (int)rows);
  }
}

/** The same a tile of input columns at a time, adding into out: x packed once in all, out read and written per tile. */
static void forward_column_tiles(const frozen_t* f, const float* x, float* out, int64_t m, float* scratch, int64_t tile) {
  const int64_t rows = f->rows, cols = f->cols;
  for (int64_t c = 0; c < cols; c += tile) {
    const int64_t count = c + tile < cols ? tile : cols - c;
    for (int64_t r = 0; r < rows; r++) frozen_dequantize_range(f, (size_t)(r * cols + c), (size_t)count, scratch + r * count);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)rows, (int)count, 1.0f, x + c, (int)cols, scratch, (int)count, c == 0 ? 0.0f : 1.0f, out,
                (int)rows);
  }
}

/** out [m, cols] = dy [m, rows] · W, a tile of output columns per sgemm, each over all rows: out is written once, dy packed per tile. */
static void backward_column_tiles(const frozen_t* f, const float* dy, float* out, int64_t m, float* scratch, int64_t tile) {
  const int64_t rows = f->rows, cols = f->cols;
  for (int64_t c = 0; c < cols; c += tile) {
    const int64_t count = c + tile < cols ? tile : cols - c;
    for (int64_t r = 0; r < rows; r++) frozen_dequantize_range(f, (size_t)(r * cols + c), (size_t)count, scratch + r * count);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)count, (int)rows, 1.0f, dy, (int)rows, scratch, (int)count, 0.0f, out + c, (int)cols);
  }
}

/** The same a tile of rows at a time, adding into out: dy packed once in all, out read and written per tile. */
static void backward_row_tiles(const frozen_t* f, const float* dy, float* out, int64_t m, float* scratch, int64_t tile) {
  const int64_t rows = f->rows, cols = f->cols;
  for (int64_t r = 0; r < rows; r += tile) {
    const int64_t count = r + tile < rows ? tile : rows - r;
    frozen_dequantize_range(f, (size_t)(r * cols), (size_t)(count * cols), scratch);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)cols, (int)count, 1.0f, dy + r, (int)rows, scratch, (int)cols, r == 0 ? 0.0f : 1.0f, out, (int)cols);
  }
}

// frozenMatmul(handle, input, out, m, transposed):
//   transposed false: out [m, rows] = input [m, cols] · Wᵀ (the forward);
//   transposed true:  out [m, cols] = input [m, rows] · W  (the input gradient).
napi_value frozen_matmul(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  frozen_t* f;
  float *x, *out;
  size_t x_len, out_len;
  int64_t m;
  bool backward;
  if (!args_of(env, info, 5, argv) || !frozen_of(env, argv[0], &f) || !arg_f32(env, argv[1], false, &x, &x_len) ||
      !arg_f32(env, argv[2], false, &out, &out_len) || !arg_size(env, argv[3], &m) || !arg_bool(env, argv[4], &backward)) {
    return fail(env, "blas addon: frozenMatmul(handle, input, out, m, transposed)");
  }
  const int64_t rows = f->rows, cols = f->cols;
  const int64_t in_width = backward ? rows : cols, out_width = backward ? cols : rows;
  if (x_len != (size_t)(m * in_width) || out_len != (size_t)(m * out_width)) {
    return fail(env, "blas addon: frozenMatmul: input or output size does not match the weight");
  }
  if (m == 0 || out_len == 0) return NULL;
  if (rows == 0 || cols == 0) {
    memset(out, 0, 4 * out_len);
    return NULL;
  }
  if (f->mode == STORE_F32) {
    const float* w = (const float*)f->values;
    if (backward) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)cols, (int)rows, 1.0f, x, (int)rows, w, (int)cols, 0.0f, out, (int)cols);
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)rows, (int)cols, 1.0f, x, (int)cols, w, (int)cols, 0.0f, out, (int)rows);
    return NULL;
  }
  // Per tile, a tiling that writes out once repacks the input (m × its width floats) and one that adds
  // into out reads and writes it (2 × m × out's width): the latter where that is less, i.e. for dy·W
  // through a weight more than twice as tall as wide, and for x·Wᵀ through one more than twice as wide.
  // Below SMALL_M rows (generation's one-token steps) that traffic is negligible and whole-row tiles,
  // dequantized in long runs, are faster.
  const bool by_columns = m >= SMALL_M && (backward ? rows <= 2 * cols : cols > 2 * rows);
  const int64_t tile = by_columns ? tile_of(rows, cols) : tile_of(cols, rows);
  float* scratch = malloc(4 * (size_t)(tile * (by_columns ? rows : cols)));
  if (!scratch) return fail(env, "blas addon: frozenMatmul: out of memory for a tile");
  if (backward) (by_columns ? backward_column_tiles : backward_row_tiles)(f, x, out, m, scratch, tile);
  else (by_columns ? forward_column_tiles : forward_row_tiles)(f, x, out, m, scratch, tile);
  free(scratch);
  return NULL;
}
