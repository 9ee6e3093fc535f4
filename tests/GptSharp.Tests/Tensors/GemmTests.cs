using System.Runtime.Intrinsics.X86;
using GptSharp.Tensors;
using Path = GptSharp.Tensors.Gemm.KernelPath;

namespace GptSharp.Tests.Tensors;

/// <summary>
/// Every GEMM form × accumulate × bias × kernel path against a double-precision naive product, on shapes that
/// hit every edge: single rows/columns, sizes that are not multiples of the micro-tile, k crossing the KC
/// slices, m crossing MC blocks, n crossing the NC panel, strided views, and the skinny (few rows) kernel.
/// </summary>
public unsafe class GemmTests
{
    public static IEnumerable<object[]> Paths()
    {
        yield return new object[] { nameof(Path.Scalar) };
        if (Fma.IsSupported && Avx2.IsSupported) yield return new object[] { nameof(Path.Vector256) };
        if (Avx512F.IsSupported) yield return new object[] { nameof(Path.Vector512) };
    }

    // (m, n, k): awkward sizes; the total work stays small so the whole class takes seconds.
    private static readonly (int M, int N, int K)[] Shapes =
    {
        (1, 1, 1), (1, 7, 33), (7, 1, 5), (3, 50257, 2), (2, 33, 769), (8, 32, 16), (9, 33, 17),
        (33, 7, 769), (17, 65, 300), (200, 20, 7), (12, 4100, 3), (50257, 2, 3), (40, 48, 64),
    };

    [Theory]
    [MemberData(nameof(Paths))]
    public void AllFormsMatchTheDoubleReference(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        var random = new Random(1234);
        foreach (var (m, n, k) in Shapes)
            foreach (bool transA in new[] { false, true })
                foreach (bool transB in new[] { false, true })
                    foreach (bool accumulate in new[] { false, true })
                        foreach (bool withBias in new[] { false, true })
                            Check(path, random, m, n, k, transA, transB, accumulate, withBias, padA: 0, padB: 0, padC: 0, parallel: false);
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void StridedViewsLeaveTheGapsUntouched(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        var random = new Random(99);
        foreach (var (m, n, k) in new[] { (9, 33, 17), (33, 70, 65), (2, 40, 50), (64, 64, 256) })
            foreach (bool transA in new[] { false, true })
                foreach (bool transB in new[] { false, true })
                    Check(path, random, m, n, k, transA, transB, accumulate: true, withBias: true, padA: 5, padB: 3, padC: 7, parallel: false);
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void ParallelSplitMatchesTheReference(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        var random = new Random(7);
        int saved = Workers.Count;
        try
        {
            foreach (int threads in new[] { 2, 3 })
            {
                Workers.Count = threads;
                foreach (var (m, n, k) in new[] { (129, 100, 97), (5, 3000, 400), (300, 40, 100) })
                    foreach (bool transA in new[] { false, true })
                        foreach (bool transB in new[] { false, true })
                            Check(path, random, m, n, k, transA, transB, accumulate: transA, withBias: !transA, padA: 1, padB: 0, padC: 2, parallel: true);
            }
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void SkinnyRowsComputedTogetherEqualEachRowAloneBitForBit(string pathName)
    {
        // A batched step puts one row per decoding sequence, and a riding prompt's rows, through the skinny kernel (rows
        // shared four at a time, or two rows by three weight rows): each row must come out exactly as the one-row
        // product of that row, so a sequence decoded beside others picks the tokens it picks alone. k covers the
        // two-vector loop, the one-vector remainder and the scalar tail, below and above the depth where ≤ 8 rows
        // switch to the tile kernel; n = 47 leaves two columns past the last tile.
        var path = Enum.Parse<Path>(pathName);
        var random = new Random(5);
        foreach (int k in new[] { 7, 24, 48, 57, 768, Gemm.SkinnyTileMinK + 15 })
        {
            int n = 47;
            float[] a = RandomArray(random, Gemm.RowExactRows * k), b = RandomArray(random, n * k), bias = RandomArray(random, n);
            for (int m = 1; m <= Gemm.RowExactRows; m++)
            {
                float[] together = new float[m * n], alone = new float[n];
                fixed (float* pa = a, pb = b, pt = together, pl = alone, pbias = bias)
                {
                    Gemm.MatMul(path, false, true, m, n, k, pa, k, pb, k, pt, n, accumulate: false, bias: pbias, parallel: false, rowExact: true);
                    for (int i = 0; i < m; i++)
                    {
                        Gemm.MatMul(path, false, true, 1, n, k, pa + i * k, k, pb, k, pl, n, accumulate: false, bias: pbias, parallel: false);
                        Assert.Equal(alone, together.AsSpan(i * n, n).ToArray());
                    }
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void ThreeSkinnyProductsInOneRunEqualThreeCallsBitForBit(string pathName)
    {
        // A decoding step's query, key and value in one pool run (Gemm.SkinnyLinear3): each output must be exactly
        // what its own MatMul gives, on one thread and split over 2 and 3 (chunks never straddle two matrices),
        // with and without biases, for every row count of the skinny kernel.
        var path = Enum.Parse<Path>(pathName);
        var random = new Random(17);
        int saved = Workers.Count;
        try
        {
            foreach (int threads in new[] { 1, 2, 3 })
            {
                Workers.Count = threads;
                foreach (var (n, k) in new[] { (45, 57), (768, 768), (200, 33) })
                    for (int m = 1; m <= Gemm.SkinnyRows; m += m < 2 ? 1 : 3)
                        foreach (bool withBias in new[] { false, true })
                        {
                            float[] a = RandomArray(random, m * k), b = RandomArray(random, 3 * n * k), bias = RandomArray(random, 3 * n);
                            float[] fused = new float[3 * m * n], separate = new float[3 * m * n];
                            fixed (float* pa = a, pb = b, pbias = bias, pf = fused, ps = separate)
                            {
                                float* bias0 = withBias ? pbias : null;
                                Gemm.SkinnyLinear3(path, m, n, k, pa, pb, pb + n * k, pb + 2 * n * k, bias0, withBias ? bias0 + n : null, withBias ? bias0 + 2 * n : null,
                                    pf, pf + m * n, pf + 2 * m * n);
                                for (int g = 0; g < 3; g++)
                                    Gemm.MatMul(path, false, true, m, n, k, pa, k, pb + g * n * k, k, ps + g * m * n, n, accumulate: false,
                                        bias: withBias ? bias0 + g * n : null, parallel: false);
                            }
                            Assert.True(separate.AsSpan().SequenceEqual(fused), $"m={m}, n={n}, k={k}, bias={withBias}, {threads} threads");
                            // And against the double reference, so that a wrong product in both cannot pass.
                            for (int g = 0; g < 3; g++)
                                for (int i = 0; i < m; i++)
                                    for (int j = 0; j < n; j += 7)
                                    {
                                        double sum = withBias ? bias[g * n + j] : 0;
                                        for (int p = 0; p < k; p++) sum += (double)a[i * k + p] * b[(g * n + j) * k + p];
                                        Assert.True(Math.Abs(fused[g * m * n + i * n + j] - sum) <= 1e-4 * (1 + Math.Abs(sum)) + 1e-5 * k, $"g={g} i={i} j={j}");
                                    }
                        }
            }
        }
        finally
        {
            Workers.Count = saved;
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void SkinnyKernelCoversEveryRowCountAndRemainder(string pathName)
    {
        // m = 1..SkinnyRows through the direct kernel (rows of A against each column of B, axpy rows for
        // untransposed B): n and k cover the vector blocks' remainders, with accumulate and bias, transposed
        // and untransposed A, contiguous and strided operands.
        var path = Enum.Parse<Path>(pathName);
        var random = new Random(31);
        for (int m = 1; m <= Gemm.SkinnyRows; m++)
            foreach (int n in new[] { 1, 2, 3, 4, 5, 7, 9, 67 })
                foreach (int k in new[] { 1, 15, 16, 17, 33 })
                    foreach (bool transB in new[] { false, true })
                        foreach (bool accumulate in new[] { false, true })
                            foreach (bool withBias in new[] { false, true })
                            {
                                int pad = (m + n) % 3;
                                Check(path, random, m, n, k, transA: (n & 1) == 0, transB, accumulate, withBias, padA: pad, padB: pad, padC: pad, parallel: false);
                            }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void SkinnyParallelSplitMatchesTheReference(string pathName)
    {
        // Few rows with B big enough to go parallel by bytes (one token's projection): column chunks over 2
        // and 3 threads, n not a multiple of the chunk width.
        var path = Enum.Parse<Path>(pathName);
        var random = new Random(8);
        int saved = Workers.Count;
        bool savedByBytes = Gemm.SkinnyParallelByBytes;
        try
        {
            Gemm.SkinnyParallelByBytes = true;
            foreach (int threads in new[] { 2, 3 })
            {
                Workers.Count = threads;
                foreach (int m in new[] { 1, 2, 7 })
                    foreach (var (n, k) in new[] { (771, 97), (517, 131) })
                    {
                        Assert.True(Gemm.WorthParallel(m, n, k));
                        foreach (bool transB in new[] { false, true })
                            Check(path, random, m, n, k, transA: false, transB, accumulate: m == 2, withBias: m != 2, padA: 1, padB: 2, padC: 3, parallel: true);
                    }
            }
        }
        finally
        {
            Workers.Count = saved;
            Gemm.SkinnyParallelByBytes = savedByBytes;
        }
    }

    [Fact]
    public void OneTokenProjectionsSplitEvenlyOverTheThreads()
    {
        // The output head at m = 1 (38 M multiply-adds) always goes parallel; a 768×768 weight only when the
        // decision is made on bytes (2.4 MB to read); a 64×64 one never.
        Assert.True(Gemm.WorthParallel(1, 50257, 768));
        Assert.False(Gemm.WorthParallel(1, 64, 64));
        foreach (int threads in new[] { 2, 4 })
            foreach (int n in new[] { 768, 3072, 50257 })
            {
                int width = Gemm.SkinnyChunkWidth(n, threads);
                int tasks = (n + width - 1) / width;
                Assert.True(width % 64 == 0, $"n={n}, threads={threads}: width {width}");
                Assert.True(tasks % threads == 0, $"n={n}, threads={threads}: {tasks} tasks of {width}");
                Assert.True(tasks >= 2 * threads, $"n={n}, threads={threads}: only {tasks} tasks");
            }
    }

    [Fact]
    public void PublicEntryPointUsesTheBestPath()
    {
        var random = new Random(5);
        // Through the public overload (whatever this CPU picks).
        const int m = 20, n = 37, k = 45;
        float[] a = RandomArray(random, m * k), b = RandomArray(random, n * k), bias = RandomArray(random, n);
        var c = new float[m * n];
        fixed (float* pa = a, pb = b, pc = c, pbias = bias)
            Gemm.MatMul(false, true, m, n, k, pa, k, pb, k, pc, n, bias: pbias);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = bias[j];
                for (int p = 0; p < k; p++) sum += (double)a[i * k + p] * b[j * k + p];
                Assert.True(Math.Abs(sum - c[i * n + j]) < 1e-4, $"C[{i},{j}] = {c[i * n + j]}, expected {sum}");
            }
    }

    [Fact]
    public void EmptyInnerDimensionGivesBiasOrKeepsC()
    {
        float[] c = { 1, 2, 3, 4 };
        float[] bias = { 10, 20 };
        fixed (float* pc = c, pbias = bias)
        {
            Gemm.MatMul(false, false, 2, 2, 0, null, 0, null, 2, pc, 2, accumulate: true, bias: pbias);
            Assert.Equal(new float[] { 11, 22, 13, 24 }, c);
            Gemm.MatMul(false, false, 2, 2, 0, null, 0, null, 2, pc, 2);
            Assert.Equal(new float[] { 0, 0, 0, 0 }, c);
        }
    }

    [Fact]
    public void BadLeadingDimensionsAreRejected()
    {
        nint p = (nint)System.Runtime.InteropServices.NativeMemory.AllocZeroed(64 * sizeof(float));
        try
        {
            Assert.Throws<ArgumentException>(() => Gemm.MatMul(false, false, 2, 4, 3, (float*)p, 2, (float*)p, 4, (float*)p, 4));
            Assert.Throws<ArgumentException>(() => Gemm.MatMul(false, false, 2, 4, 3, (float*)p, 3, (float*)p, 4, (float*)p, 3));
            Assert.Throws<ArgumentException>(() => Gemm.MatMul(false, false, -1, 4, 3, (float*)p, 3, (float*)p, 4, (float*)p, 4));
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.Free((void*)p);
        }
    }

    private static float[] RandomArray(Random random, int length)
    {
        var x = new float[length];
        for (int i = 0; i < length; i++) x[i] = (float)(random.NextDouble() * 2 - 1);
        return x;
    }

    private static void Check(Path path, Random random, int m, int n, int k, bool transA, bool transB,
        bool accumulate, bool withBias, int padA, int padB, int padC, bool parallel)
    {
        // Stored shapes: A is [m,k] or [k,m]; B is [k,n] or [n,k]; each row padded by padX unused floats.
        int aRows = transA ? k : m, aCols = transA ? m : k, lda = aCols + padA;
        int bRows = transB ? n : k, bCols = transB ? k : n, ldb = bCols + padB;
        int ldc = n + padC;
        float[] a = RandomArray(random, aRows * lda);
        float[] b = RandomArray(random, bRows * ldb);
        float[] c0 = RandomArray(random, m * ldc);
        float[] bias = withBias ? RandomArray(random, n) : Array.Empty<float>();
        float[] c = (float[])c0.Clone();

        fixed (float* pa = a, pb = b, pc = c, pbias = bias)
            Gemm.MatMul(path, transA, transB, m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate, withBias ? pbias : null, parallel);

        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double sum = 0, magnitude = 0;
                for (int p = 0; p < k; p++)
                {
                    double av = transA ? a[p * lda + i] : a[i * lda + p];
                    double bv = transB ? b[j * ldb + p] : b[p * ldb + j];
                    sum += av * bv;
                    magnitude += Math.Abs(av * bv);
                }
                if (withBias) { sum += bias[j]; magnitude += Math.Abs(bias[j]); }
                if (accumulate) { sum += c0[i * ldc + j]; magnitude += Math.Abs(c0[i * ldc + j]); }
                // float32 summation error grows with k: bound it by k·eps·Σ|terms| (plus a floor).
                double tolerance = (k + 2) * 1.2e-7 * magnitude + 1e-6;
                float actual = c[i * ldc + j];
                if (!(Math.Abs(actual - sum) <= tolerance))
                    Assert.Fail($"{path} transA={transA} transB={transB} m={m} n={n} k={k} acc={accumulate} bias={withBias}: " +
                                $"C[{i},{j}] = {actual}, expected {sum} (tolerance {tolerance:g3})");
            }
            for (int j = n; j < ldc; j++)
                if (c[i * ldc + j] != c0[i * ldc + j])
                    Assert.Fail($"{path} transA={transA} transB={transB} m={m} n={n} k={k}: the gap C[{i},{j}] was written.");
        }
    }
}
