// The singular value decomposition of a matrix given as a product B·A (B [m, k], A [k, n], k small),
// in float64, without forming the m×n matrix: thin QR of B and of Aᵀ, then a one-sided Jacobi SVD
// of the k×k core. Cost O((m + n)·k² + k³), so composing adapters on 768-wide layers stays cheap.

export interface Svd {
  /** [m, k] row-major: u[i * k + j] = U[i, j]. */
  u: Float64Array;
  s: Float64Array;
  /** [n, k] row-major: v[i * k + j] = V[i, j]; the matrix is U·diag(s)·Vᵀ. */
  v: Float64Array;
  k: number;
}

/** Q [rows, k] and R [k, k] of a thin QR by modified Gram-Schmidt, orthogonalised twice for accuracy. */
function thinQr(matrix: Float64Array, rows: number, k: number): { q: Float64Array; r: Float64Array } {
  const q = Float64Array.from(matrix);
  const r = new Float64Array(k * k);
  for (let j = 0; j < k; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < j; p++) {
        let dot = 0;
        for (let i = 0; i < rows; i++) dot += q[i * k + p] * q[i * k + j];
        r[p * k + j] += dot;
        for (let i = 0; i < rows; i++) q[i * k + j] -= dot * q[i * k + p];
      }
    }
    let norm = 0;
    for (let i = 0; i < rows; i++) norm += q[i * k + j] ** 2;
    norm = Math.sqrt(norm);
    r[j * k + j] = norm;
    // A column inside the span of the previous ones contributes nothing: its Q column stays zero.
    for (let i = 0; i < rows; i++) q[i * k + j] = norm > 1e-300 ? q[i * k + j] / norm : 0;
  }
  return { q, r };
}

/** SVD of a small square matrix by one-sided Jacobi rotations (Hestenes), singular values descending. */
function jacobiSvd(matrix: Float64Array, k: number): Svd {
  const work = Float64Array.from(matrix);
  const v = new Float64Array(k * k);
  for (let i = 0; i < k; i++) v[i * k + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < k - 1; p++) {
      for (let q = p + 1; q < k; q++) {
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        for (let i = 0; i < k; i++) {
          alpha += work[i * k + p] ** 2;
          beta += work[i * k + q] ** 2;
          gamma += work[i * k + p] * work[i * k + q];
        }
        if (Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (const target of [work, v]) {
          for (let i = 0; i < k; i++) {
            const left = target[i * k + p];
            const right = target[i * k + q];
            target[i * k + p] = c * left - s * right;
            target[i * k + q] = s * left + c * right;
          }
        }
      }
    }
    if (!rotated) break;
  }
  const norms = Array.from({ length: k }, (_, j) => Math.sqrt(Array.from({ length: k }, (_, i) => work[i * k + j] ** 2).reduce((a, b) => a + b, 0)));
  const order = norms.map((_, j) => j).sort((a, b) => norms[b] - norms[a]);
  const u = new Float64Array(k * k);
  const vSorted = new Float64Array(k * k);
  const s = new Float64Array(k);
  order.forEach((from, to) => {
    s[to] = norms[from];
    for (let i = 0; i < k; i++) {
      u[i * k + to] = norms[from] > 1e-300 ? work[i * k + from] / norms[from] : 0;
      vSorted[i * k + to] = v[i * k + from];
    }
  });
  return { u, s, v: vSorted, k };
}

/** The SVD of B·A with B [m, k] and A [k, n] (row-major float64): k singular triplets, descending. */
export function svdOfProduct(b: Float64Array, a: Float64Array, m: number, k: number, n: number): Svd {
  const aTransposed = new Float64Array(n * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) aTransposed[j * k + i] = a[i * n + j];
  const left = thinQr(b, m, k);
  const right = thinQr(aTransposed, n, k);
  // B·A = Q_B · (R_B · R_Aᵀ) · Q_Aᵀ: the core's SVD gives the whole one.
  const core = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) {
    let sum = 0;
    for (let p = 0; p < k; p++) sum += left.r[i * k + p] * right.r[j * k + p];
    core[i * k + j] = sum;
  }
  const small = jacobiSvd(core, k);
  const project = (q: Float64Array, rows: number, basis: Float64Array) => {
    const out = new Float64Array(rows * k);
    for (let i = 0; i < rows; i++) for (let j = 0; j < k; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += q[i * k + p] * basis[p * k + j];
      out[i * k + j] = sum;
    }
    return out;
  };
  return { u: project(left.q, m, small.u), s: small.s, v: project(right.q, n, small.v), k };
}
