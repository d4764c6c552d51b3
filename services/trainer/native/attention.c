// Fused multi-head attention for training, forward and backward, on the wasm heap. Heads are read
// and written by strides: q, k and v are [batch*length, rowStride] matrices (separate, or one fused
// qkv) with head h of each at a column offset, and the context is written as [batch*length,
// heads*headSize], so no head split/merge transposes are needed either way. Per (batch, head):
// scores by one sgemm, scale, key mask or causal mask, softmax and dropout in one pass over the
// rows, the context by a second sgemm; the probabilities are kept for the backward.
//
// The (batch, head) pairs run on threads the call starts and joins before it returns, so no thread
// outlives a call (OpenMP's pool did, and crashed the process when a sandbox worker_thread was ended
// mid-kernel: see services/trainer/README.md). Their small products run single-threaded in OpenBLAS
// meanwhile: OpenBLAS splitting a 256×256×64 product over its own threads costs more than it saves.
// Under the causal mask, rows go in blocks of CAUSAL_BLOCK and each block's products stop at the
// block's last visible key: the masked upper triangle (almost half of the work) is never computed.
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "napi-args.h"

#define CAUSAL_BLOCK 64
#define MAX_THREADS 64

typedef struct {
  int64_t batch, heads, length, head_size, row_stride, offsets[3];
} Layout;

// Everything one (batch, head) pair of either direction reads and writes.
typedef struct {
  Layout in, out;
  float scale;
  bool causal;
  const float *q, *k, *v, *mask, *keep, *dc;
  float *probs, *context, *dq, *dk, *dv;
} Job;

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

// Rows per block: the causal products stop at each block's last row; without a causal mask one block.
static int64_t block_rows(const Job* job) {
  return job->causal ? CAUSAL_BLOCK : job->in.length;
}

// Row softmax of rows [r0, r1) of t×t scores (already scaled, columns below `cols` computed) with an
// additive key mask or a causal mask, in place; the columns it does not cover become zero.
VECTOR_CLONES static void softmax_rows(float* s, int64_t t, int64_t r0, int64_t r1, int64_t cols, const float* key_mask, bool causal) {
  for (int64_t i = r0; i < r1; i++) {
    float* row = s + i * t;
    const int64_t visible = causal ? i + 1 : cols;
    if (key_mask) for (int64_t j = 0; j < visible; j++) row[j] += key_mask[j];
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

// out = p∘keep over rows [r0, r1) and columns [0, cols) of t×t matrices.
VECTOR_CLONES static void drop_rows(const float* p, const float* keep, int64_t t, int64_t r0, int64_t r1, int64_t cols, float* out) {
  for (int64_t i = r0; i < r1; i++)
    for (int64_t j = 0; j < cols; j++) out[i * t + j] = p[i * t + j] * keep[i * t + j];
}

// dS = P∘(dP∘keep − rowsum(dP∘keep∘P))·scale over rows [r0, r1) and columns [0, cols), in place in dP.
VECTOR_CLONES static void score_grads(float* ds, const float* p, const float* keep, int64_t t, int64_t r0, int64_t r1, int64_t cols, float scale) {
  for (int64_t i = r0; i < r1; i++) {
    float* row = ds + i * t;
    const float* prow = p + i * t;
    if (keep) for (int64_t j = 0; j < cols; j++) row[j] *= keep[i * t + j];
    float dot = 0.0f;
    for (int64_t j = 0; j < cols; j++) dot += row[j] * prow[j];
    for (int64_t j = 0; j < cols; j++) row[j] = prow[j] * (row[j] - dot) * scale;
  }
}

// Scratch: t×t floats for the dropped-out probabilities.
static void forward_pair(const Job* job, int64_t pair, float* dropped) {
  const Layout* l = &job->in;
  const int64_t h = l->heads, t = l->length, d = l->head_size, rs = l->row_stride, hd = h * d, bi = pair / h, hi = pair % h;
  const int64_t row0 = bi * t * rs, block = block_rows(job);
  float* s = job->probs + pair * t * t;
  const float* kp = job->keep ? job->keep + pair * t * t : NULL;
  const float* q = job->q + row0 + l->offsets[0] + hi * d;
  const float* k = job->k + row0 + l->offsets[1] + hi * d;
  const float* v = job->v + row0 + l->offsets[2] + hi * d;
  for (int64_t r0 = 0; r0 < t; r0 += block) {
    const int64_t r1 = r0 + block < t ? r0 + block : t, rows = r1 - r0, cols = job->causal ? r1 : t;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)d, job->scale, q + r0 * rs, (int)rs, k, (int)rs, 0.0f, s + r0 * t, (int)t);
    softmax_rows(s, t, r0, r1, cols, job->mask ? job->mask + bi * t : NULL, job->causal);
    const float* weights = s;
    if (kp) {
      drop_rows(s, kp, t, r0, r1, cols, dropped);
      weights = dropped;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)d, (int)cols, 1.0f, weights + r0 * t, (int)t, v, (int)rs, 0.0f,
                job->context + (bi * t + r0) * hd + hi * d, (int)hd);
  }
}

// dV = (P∘keep)ᵀ·dC; dP = (dC·Vᵀ)∘keep; dS = P∘(dP − rowsum(dP∘P))·scale; dQ = dS·K; dK = dSᵀ·Q. Row
// blocks go last to first: the last block reaches every key, so its dK and dV products overwrite and
// the earlier ones add. Scratch: 2·t×t floats (dS and the dropped-out probabilities).
static void backward_pair(const Job* job, int64_t pair, float* scratch) {
  const Layout *l = &job->in, *o = &job->out;
  const int64_t h = l->heads, t = l->length, d = l->head_size, rs = l->row_stride, os = o->row_stride, hd = h * d, bi = pair / h, hi = pair % h;
  const int64_t row0 = bi * t * rs, out0 = bi * t * os, block = block_rows(job);
  float *ds = scratch, *dropped = scratch + t * t;
  const float* p = job->probs + pair * t * t;
  const float* kp = job->keep ? job->keep + pair * t * t : NULL;
  const float* dc = job->dc + bi * t * hd + hi * d;
  const float* q = job->q + row0 + l->offsets[0] + hi * d;
  const float* k = job->k + row0 + l->offsets[1] + hi * d;
  const float* v = job->v + row0 + l->offsets[2] + hi * d;
  float* dq = job->dq + out0 + o->offsets[0] + hi * d;
  float* dk = job->dk + out0 + o->offsets[1] + hi * d;
  float* dv = job->dv + out0 + o->offsets[2] + hi * d;
  const int64_t last = (t - 1) / block * block;
  for (int64_t r0 = last; r0 >= 0; r0 -= block) {
    const int64_t r1 = r0 + block < t ? r0 + block : t, rows = r1 - r0, cols = job->causal ? r1 : t;
    const float beta = r0 == last ? 0.0f : 1.0f;
    const float* weights = p;
    if (kp) {
      drop_rows(p, kp, t, r0, r1, cols, dropped);
      weights = dropped;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)cols, (int)d, (int)rows, 1.0f, weights + r0 * t, (int)t, dc + r0 * hd, (int)hd, beta, dv, (int)os);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)d, 1.0f, dc + r0 * hd, (int)hd, v, (int)rs, 0.0f, ds + r0 * t, (int)t);
    score_grads(ds, p, kp, t, r0, r1, cols, job->scale);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)d, (int)cols, 1.0f, ds + r0 * t, (int)t, k, (int)rs, 0.0f, dq + r0 * os, (int)os);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)cols, (int)d, (int)rows, 1.0f, ds + r0 * t, (int)t, q + r0 * rs, (int)rs, beta, dk, (int)os);
  }
}

typedef struct {
  const Job* job;
  void (*run)(const Job*, int64_t, float*);
  int64_t pairs;
  size_t scratch;
  atomic_llong next;
} Pairs;

// Takes pairs until none is left; a thread without scratch memory takes none (the others do its share).
static void* take_pairs(void* arg) {
  Pairs* work = arg;
  float* scratch = malloc(work->scratch * sizeof(float));
  if (!scratch) return NULL;
  for (int64_t pair; (pair = atomic_fetch_add(&work->next, 1)) < work->pairs;) work->run(work->job, pair, scratch);
  free(scratch);
  return NULL;
}

// Runs every pair on up to OpenBLAS's thread count of threads (this one included), all joined before
// it returns; 0 when no thread could get its scratch memory.
static int run_pairs(const Job* job, void (*run)(const Job*, int64_t, float*), size_t scratch) {
  // OpenBLAS's own count, read once before any call lowers it (a compare-exchange: sandbox threads may
  // load the addon and call in at once).
  static atomic_int budget;
  int unset = 0;
  atomic_compare_exchange_strong(&budget, &unset, openblas_get_num_threads());
  const int64_t pairs = job->in.batch * job->in.heads;
  int64_t threads = atomic_load(&budget);
  if (threads > pairs) threads = pairs;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  Pairs work = {.job = job, .run = run, .pairs = pairs, .scratch = scratch};
  atomic_init(&work.next, 0);
  pthread_t started[MAX_THREADS];
  int count = 0;
  if (threads > 1) openblas_set_num_threads(1);
  for (int64_t i = 1; i < threads; i++)
    if (pthread_create(&started[count], NULL, take_pairs, &work) == 0) count++;
  take_pairs(&work);
  for (int i = 0; i < count; i++) pthread_join(started[i], NULL);
  if (threads > 1) openblas_set_num_threads(atomic_load(&budget));
  return atomic_load(&work.next) >= pairs;
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
  const Job job = {.in = l, .scale = (float)scale, .causal = causal, .q = q, .k = k, .v = v, .mask = mask, .keep = keep, .probs = probs, .context = context};
  if (!run_pairs(&job, forward_pair, keep ? square : 1)) napi_throw_error(env, NULL, "blas addon: attentionForward is out of memory");
  return NULL;
}

// attentionBackward(q, k, v, offsets, rowStride, batch, heads, length, headSize, scale, probs, keep, dContext, dq, dk, dv, outOffsets, outStride)
// dq, dk and dv may be one array (a fused dqkv) with the heads of each at outOffsets. The causal mask
// is read off probs (zero above the diagonal); the row blocks need to know it: pass causal = true.
napi_value attention_backward(napi_env env, napi_callback_info info) {
  static const char* usage =
      "blas addon: attentionBackward(q, k, v, offsets, rowStride, batch, heads, length, headSize, scale, probs, keep|null, dContext, dq, dk, dv, outOffsets, outStride, causal)";
  napi_value argv[19];
  float *q, *k, *v, *probs, *keep, *dc, *dq, *dk, *dv;
  size_t q_len, k_len, v_len, probs_len, keep_len, dc_len, dq_len, dk_len, dv_len;
  Layout l, out;
  double scale;
  bool causal;
  if (!args_of(env, info, 19, argv) || !arg_f32(env, argv[0], false, &q, &q_len) || !arg_f32(env, argv[1], false, &k, &k_len) ||
      !arg_f32(env, argv[2], false, &v, &v_len) || !read_layout(env, argv + 3, &l) || !arg_number(env, argv[9], &scale) ||
      !arg_f32(env, argv[10], false, &probs, &probs_len) || !arg_f32(env, argv[11], true, &keep, &keep_len) ||
      !arg_f32(env, argv[12], false, &dc, &dc_len) || !arg_f32(env, argv[13], false, &dq, &dq_len) || !arg_f32(env, argv[14], false, &dk, &dk_len) ||
      !arg_f32(env, argv[15], false, &dv, &dv_len) || !arg_bool(env, argv[18], &causal)) {
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
  const Job job = {.in = l, .out = out, .scale = (float)scale, .causal = causal, .q = q, .k = k, .v = v, .keep = keep, .dc = dc, .probs = probs, .dq = dq, .dk = dk, .dv = dv};
  if (!run_pairs(&job, backward_pair, 2 * square)) napi_throw_error(env, NULL, "blas addon: attentionBackward is out of memory");
  return NULL;
}
