namespace GptSharp.Tensors;

/// <summary>
/// General matrix multiply over row-major float32 matrices, BLAS-style:
/// C[m,n] = (accumulate ? C : 0) + op(A)[m,k] · op(B)[k,n] (+ bias[n] on every row),
/// where op(X) is X or Xᵀ. Leading dimensions (lda, ldb, ldc) are the row strides, so a view of
/// a wider matrix (one attention head's columns) needs no copy.
/// The three forms a transformer needs:
/// Linear forward y = x·Wᵀ + b is (false, true); dx = dy·W is (false, false); dW += dyᵀ·x is (true, false).
/// </summary>
/// <remarks>REFERENCE IMPLEMENTATION (scalar). The engine issue replaces the body with the packed, blocked SIMD kernel.</remarks>
public static unsafe class Gemm
{
    /// <param name="parallel">Split the work across <see cref="Workers"/>; pass false when the caller already parallelizes (per attention head).</param>
    public static void MatMul(
        bool transposeA, bool transposeB, int m, int n, int k,
        float* a, int lda, float* b, int ldb, float* c, int ldc,
        bool accumulate = false, float* bias = null, bool parallel = true)
    {
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                float sum = 0f;
                for (int p = 0; p < k; p++)
                {
                    float av = transposeA ? a[(long)p * lda + i] : a[(long)i * lda + p];
                    float bv = transposeB ? b[(long)j * ldb + p] : b[(long)p * ldb + j];
                    sum += av * bv;
                }
                if (bias != null) sum += bias[j];
                float* dst = c + (long)i * ldc + j;
                *dst = accumulate ? *dst + sum : sum;
            }
        }
    }
}
