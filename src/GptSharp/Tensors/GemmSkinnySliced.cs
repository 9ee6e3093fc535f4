using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GptSharp.Tensors;

internal static unsafe partial class Gemm
{
    /// <summary>
    /// Depth (floats of k) of the slices the skinny kernel cuts k into for two or more rows (a batched decoding step);
    /// 0 runs whole rows (<see cref="Dot4"/> over all of k for every weight row). A switch so a benchmark can A/B it in
    /// one process.
    /// </summary>
    /// <remarks>
    /// Why: with whole rows every weight row's dot products re-read all the rows of A, 8 × k floats: 24 KB at k = 768
    /// (L1-sized, but evicted by the weight stream), 96 KB at k = 3072 (the MLP's second projection: from L2 for every
    /// weight row). That cache traffic did not overlap the weight stream, so an 8-row step cost about twice a one-row
    /// step although both read the weights once. Sliced, the rows' slice (8 × 256 floats = 8 KB) stays in L1 while
    /// <see cref="SkinnyBlockColumns"/> weight rows pass over it, and the two accumulators of every (row, column) wait
    /// in a small per-thread buffer between slices. Every accumulator receives the same fused multiply-adds in the same
    /// order as in <see cref="Dot"/> (slices are whole multiples of the two-vector step), and the one-vector remainder,
    /// the lane sum and the scalar tail follow the last slice: a row's result is bit for bit its one-row product.
    /// </remarks>
    internal static int SkinnyDepth = 256;

    /// <summary>Weight rows (columns of C) that share one slice of the rows of A in <see cref="SkinnySliced"/>.</summary>
    internal static int SkinnyBlockColumns = 16;

    /// <summary>Whether a transposed-B skinny product of <paramref name="m"/> rows goes through <see cref="SkinnySliced"/>.</summary>
    private static bool UseSliced(KernelPath path, int m, int k)
        => m > 1 && path != KernelPath.Scalar && SkinnyDepth > 0 && k > 2 * VectorWidth(path);

    private static int VectorWidth(KernelPath path) => path == KernelPath.Vector512 ? 16 : 8;

    /// <summary>Columns [j0, j1) of C = rows · Bᵀ for 2 ≤ m ≤ <see cref="SkinnyRows"/> rows of A (contiguous over k, <paramref name="rowStride"/> apart), k sliced.</summary>
    private static void SkinnySliced(ref Job job, float* rows, long rowStride, int j0, int j1)
    {
        KernelPath path = job.Path;
        int m = job.M, k = job.K, w = VectorWidth(path);
        int step = 2 * w;
        int depth = Math.Max(step, SkinnyDepth / step * step);
        int kPairs = k / step * step; // the part of k the two-accumulator loop covers
        int blockColumns = Math.Max(1, SkinnyBlockColumns);
        int perColumn = m * 2 * w; // floats of accumulators per column of C
        float* acc = Scratch.Accumulators((long)blockColumns * perColumn);
        for (int jb = j0; jb < j1; jb += blockColumns)
        {
            int columns = Math.Min(blockColumns, j1 - jb);
            new Span<float>(acc, columns * perColumn).Clear();
            for (int p0 = 0; p0 < kPairs; p0 += depth)
            {
                int p1 = Math.Min(kPairs, p0 + depth);
                for (int c = 0; c < columns; c++)
                {
                    float* brow = job.B + (long)(jb + c) * job.Ldb;
                    float* columnAcc = acc + c * perColumn;
                    int i = 0;
                    for (; i + 4 <= m; i += 4)
                    {
                        if (path == KernelPath.Vector512) Slice4Vector512(rows + i * rowStride, rowStride, brow, p0, p1, columnAcc + i * 2 * w);
                        else Slice4Vector256(rows + i * rowStride, rowStride, brow, p0, p1, columnAcc + i * 2 * w);
                    }
                    for (; i < m; i++)
                    {
                        if (path == KernelPath.Vector512) Slice1Vector512(rows + i * rowStride, brow, p0, p1, columnAcc + i * 2 * w);
                        else Slice1Vector256(rows + i * rowStride, brow, p0, p1, columnAcc + i * 2 * w);
                    }
                }
            }
            for (int c = 0; c < columns; c++)
            {
                int j = jb + c;
                float* brow = job.B + (long)j * job.Ldb;
                for (int i = 0; i < m; i++)
                {
                    float sum = FinishDot(path, rows + i * rowStride, brow, kPairs, k, acc + c * perColumn + i * 2 * w);
                    Store(job.C + (long)i * job.Ldc + j, sum, job.Accumulate, job.Bias, j);
                }
            }
        }
    }

    /// <summary>The end of <see cref="Dot"/> from its two accumulators at <paramref name="acc"/> (after the pairs up to
    /// <paramref name="p"/>): the one-vector remainder, the lane sum, the scalar tail in order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float FinishDot(KernelPath path, float* x, float* y, int p, int k, float* acc)
    {
        float sum;
        if (path == KernelPath.Vector512)
        {
            const int w = 16;
            Vector512<float> a = Vector512.Load(acc), b = Vector512.Load(acc + w);
            for (; p + w <= k; p += w) a = Avx512F.FusedMultiplyAdd(Vector512.Load(x + p), Vector512.Load(y + p), a);
            sum = Vector512.Sum(a + b);
        }
        else
        {
            const int w = 8;
            Vector256<float> a = Vector256.Load(acc), b = Vector256.Load(acc + w);
            for (; p + w <= k; p += w) a = Fma.MultiplyAdd(Vector256.Load(x + p), Vector256.Load(y + p), a);
            sum = Vector256.Sum(a + b);
        }
        for (; p < k; p++) sum += x[p] * y[p];
        return sum;
    }

    // The slice kernels: elements [p0, p1) (whole two-vector steps) of four rows (or one) against one weight row, into
    // the rows' two accumulators each (a row's pair at acc + r·2w: the even vectors', then the odd vectors').

    private static void Slice4Vector256(float* x0, long stride, float* y, int p0, int p1, float* acc)
    {
        const int w = 8;
        float* x1 = x0 + stride, x2 = x0 + 2 * stride, x3 = x0 + 3 * stride;
        Vector256<float> a0 = Vector256.Load(acc), b0 = Vector256.Load(acc + w), a1 = Vector256.Load(acc + 2 * w), b1 = Vector256.Load(acc + 3 * w);
        Vector256<float> a2 = Vector256.Load(acc + 4 * w), b2 = Vector256.Load(acc + 5 * w), a3 = Vector256.Load(acc + 6 * w), b3 = Vector256.Load(acc + 7 * w);
        for (int i = p0; i < p1; i += 2 * w)
        {
            var y0 = Vector256.Load(y + i);
            var y1 = Vector256.Load(y + i + w);
            a0 = Fma.MultiplyAdd(Vector256.Load(x0 + i), y0, a0);
            b0 = Fma.MultiplyAdd(Vector256.Load(x0 + i + w), y1, b0);
            a1 = Fma.MultiplyAdd(Vector256.Load(x1 + i), y0, a1);
            b1 = Fma.MultiplyAdd(Vector256.Load(x1 + i + w), y1, b1);
            a2 = Fma.MultiplyAdd(Vector256.Load(x2 + i), y0, a2);
            b2 = Fma.MultiplyAdd(Vector256.Load(x2 + i + w), y1, b2);
            a3 = Fma.MultiplyAdd(Vector256.Load(x3 + i), y0, a3);
            b3 = Fma.MultiplyAdd(Vector256.Load(x3 + i + w), y1, b3);
        }
        Vector256.Store(a0, acc); Vector256.Store(b0, acc + w); Vector256.Store(a1, acc + 2 * w); Vector256.Store(b1, acc + 3 * w);
        Vector256.Store(a2, acc + 4 * w); Vector256.Store(b2, acc + 5 * w); Vector256.Store(a3, acc + 6 * w); Vector256.Store(b3, acc + 7 * w);
    }

    private static void Slice1Vector256(float* x, float* y, int p0, int p1, float* acc)
    {
        const int w = 8;
        Vector256<float> a = Vector256.Load(acc), b = Vector256.Load(acc + w);
        for (int i = p0; i < p1; i += 2 * w)
        {
            a = Fma.MultiplyAdd(Vector256.Load(x + i), Vector256.Load(y + i), a);
            b = Fma.MultiplyAdd(Vector256.Load(x + i + w), Vector256.Load(y + i + w), b);
        }
        Vector256.Store(a, acc); Vector256.Store(b, acc + w);
    }

    private static void Slice4Vector512(float* x0, long stride, float* y, int p0, int p1, float* acc)
    {
        const int w = 16;
        float* x1 = x0 + stride, x2 = x0 + 2 * stride, x3 = x0 + 3 * stride;
        Vector512<float> a0 = Vector512.Load(acc), b0 = Vector512.Load(acc + w), a1 = Vector512.Load(acc + 2 * w), b1 = Vector512.Load(acc + 3 * w);
        Vector512<float> a2 = Vector512.Load(acc + 4 * w), b2 = Vector512.Load(acc + 5 * w), a3 = Vector512.Load(acc + 6 * w), b3 = Vector512.Load(acc + 7 * w);
        for (int i = p0; i < p1; i += 2 * w)
        {
            var y0 = Vector512.Load(y + i);
            var y1 = Vector512.Load(y + i + w);
            a0 = Avx512F.FusedMultiplyAdd(Vector512.Load(x0 + i), y0, a0);
            b0 = Avx512F.FusedMultiplyAdd(Vector512.Load(x0 + i + w), y1, b0);
            a1 = Avx512F.FusedMultiplyAdd(Vector512.Load(x1 + i), y0, a1);
            b1 = Avx512F.FusedMultiplyAdd(Vector512.Load(x1 + i + w), y1, b1);
            a2 = Avx512F.FusedMultiplyAdd(Vector512.Load(x2 + i), y0, a2);
            b2 = Avx512F.FusedMultiplyAdd(Vector512.Load(x2 + i + w), y1, b2);
            a3 = Avx512F.FusedMultiplyAdd(Vector512.Load(x3 + i), y0, a3);
            b3 = Avx512F.FusedMultiplyAdd(Vector512.Load(x3 + i + w), y1, b3);
        }
        Vector512.Store(a0, acc); Vector512.Store(b0, acc + w); Vector512.Store(a1, acc + 2 * w); Vector512.Store(b1, acc + 3 * w);
        Vector512.Store(a2, acc + 4 * w); Vector512.Store(b2, acc + 5 * w); Vector512.Store(a3, acc + 6 * w); Vector512.Store(b3, acc + 7 * w);
    }

    private static void Slice1Vector512(float* x, float* y, int p0, int p1, float* acc)
    {
        const int w = 16;
        Vector512<float> a = Vector512.Load(acc), b = Vector512.Load(acc + w);
        for (int i = p0; i < p1; i += 2 * w)
        {
            a = Avx512F.FusedMultiplyAdd(Vector512.Load(x + i), Vector512.Load(y + i), a);
            b = Avx512F.FusedMultiplyAdd(Vector512.Load(x + i + w), Vector512.Load(y + i + w), b);
        }
        Vector512.Store(a, acc); Vector512.Store(b, acc + w);
    }
}
