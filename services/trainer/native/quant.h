// The stored form of a frozen linear weight, shared by quant.c (creating and quantizing it) and
// quant-matmul.c (dequantizing tiles of it into BLAS products).
#ifndef QUANT_H
#define QUANT_H
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

enum { STORE_F32, STORE_BF16, STORE_F16, STORE_INT8, STORE_NF4 };

#define NF4_BLOCK 64
#define SCALE_BLOCK 256

// The 16 NormalFloat levels of QLoRA (Dettmers et al. 2023, appendix E; bitsandbytes' NF4 table).
extern const float NF4[16];

typedef struct {
  int mode;
  int64_t rows, cols;  // [out, in], as Hugging Face stores a linear weight
  void* values;        // F32/BF16/F16 as stored; int8 codes; NF4 codes, two per byte (low nibble first)
  float* scales;       // int8: one per row; NF4: one absmax per block (absent with double quantization)
  int8_t* scale_codes; // NF4 double quantization: block absmax − offset, 8-bit, per 256 blocks...
  float* scale_steps;  // ...times this step
  float scale_offset;  // the mean block absmax, subtracted before quantizing the scales
  size_t bytes;
} frozen_t;

float half_to_float(uint16_t h);

/** The live weight behind a handle from frozenCreate, or 0. */
int frozen_of(napi_env env, napi_value value, frozen_t** out);

/** Elements [start, start + count) of the row-major weight, as floats. */
void frozen_dequantize_range(const frozen_t* f, size_t start, size_t count, float* out);

#endif
