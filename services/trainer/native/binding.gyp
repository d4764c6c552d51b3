{
  "targets": [
    {
      "target_name": "blas",
      "sources": ["blas.c", "attention.c", "norms.c", "quant.c", "quant-matmul.c"],
      "libraries": ["-lopenblas"],
      "cflags": ["-O3", "-std=c11", "-ffast-math"]
    }
  ]
}
