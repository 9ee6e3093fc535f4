using System.Numerics.Tensors;
using GptSharp.Tensors;
using Path = GptSharp.Tensors.Gemm.KernelPath;
using GptSharp.Layers;
using GptSharp.Randomness;

namespace GptSharp.Tests.Tensors;

/// <summary>
/// The fused causal attention (no [seq, seq] matrix kept) against a double-precision definition at a context longer
/// than a few tiles, on every vector path; against the unfused algorithm it replaced (full weights, float dropout mask);
/// its tile product on every path; and the bit-mask dropout against the float mask drawn from the same stream.
/// </summary>
public unsafe class FusedAttentionTests
{
    private static float[] RandomArray(int seed, int length)
    {
        var random = new Random(seed);
        var a = new float[length];
        for (int i = 0; i < length; i++) a[i] = (float)(random.NextDouble() * 2 - 1);
        return a;
    }

    /// <summary>The float mask of <see cref="Kernels.DropoutMask"/> from bits: scale where kept, 0 where dropped.</summary>
    private static float[] FloatMask(uint[] bits, int rows, int seq, float scale)
    {
        int words = Kernels.DropoutBitWords(seq);
        var mask = new float[rows * seq];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < seq; j++)
                mask[r * seq + j] = ((bits[r * words + (j >> 5)] >> (j & 31)) & 1) != 0 ? scale : 0f;
        return mask;
    }

    [Theory]
    [InlineData("torch")]
    [InlineData("fast")]
    public void BitMaskHoldsTheFloatMaskDrawnFromTheSameStream(string kind)
    {
        const int rows = 7, seq = 45; // rows that do not end on a word
        const double p = 0.1;
        var bitsGenerator = RandomGenerators.Create(kind, 123);
        var floatGenerator = RandomGenerators.Create(kind, 123);
        var bits = new uint[rows * Kernels.DropoutBitWords(seq)];
        var mask = new float[rows * seq];
        fixed (uint* b = bits) Kernels.DropoutMaskBits(b, rows, seq, p, bitsGenerator);
        fixed (float* m = mask) Kernels.DropoutMask(m, mask.Length, p, floatGenerator);
        Assert.Equal(mask, FloatMask(bits, rows, seq, Kernels.DropoutScale(p)));
        Assert.Contains(0f, mask);
        // Both consumed the stream alike: the next draws agree.
        Assert.Equal(floatGenerator.RandomInt64(), bitsGenerator.RandomInt64());
    }

    [Theory]
    [InlineData(nameof(Path.Scalar))]
    [InlineData(nameof(Path.Vector256))]
    [InlineData(nameof(Path.Vector512))] // Vector512 runs in software where the CPU lacks AVX-512: the expansion is checked everywhere
    public void BitMaskProductEqualsTheFloatMaskProductBitForBit(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        const float scale = 1f / 0.9f;
        var bits = new uint[3];
        var random = new Random(9);
        for (int i = 0; i < bits.Length; i++) bits[i] = (uint)random.NextInt64(0, 1L << 32);
        var mask = FloatMask(bits, 1, 96, scale);
        foreach (int length in new[] { 1, 7, 8, 15, 16, 17, 33, 64, 96 })
        {
            var row = RandomArray(length, length);
            var expected = new float[length];
            TensorPrimitives.Multiply(row, mask.AsSpan(0, length), expected);
            fixed (float* r = row)
            fixed (uint* b = bits)
                Kernels.ApplyDropoutBits(path, r, b, length, scale);
            Assert.Equal(expected, row);
        }
    }

    [Theory]
    [MemberData(nameof(GemmTests.Paths), MemberType = typeof(GemmTests))]
    public void LongContextMatchesTheDoublePrecisionDefinition(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        const int batch = 1, seq = 300, c = 48, heads = 3;
        foreach (bool dropout in new[] { false, true })
        {
            var (q, k, v, dContext) = (RandomArray(1, seq * c), RandomArray(2, seq * c), RandomArray(3, seq * c), RandomArray(4, seq * c));
            int headRows = batch * heads * seq;
            var bits = new uint[headRows * Kernels.DropoutBitWords(seq)];
            const double p = 0.2;
            fixed (uint* b = bits) Kernels.DropoutMaskBits(b, headRows, seq, p, new FastRandom(7));
            float scale = Kernels.DropoutScale(p);
            float[] mask = dropout ? FloatMask(bits, headRows, seq, scale) : [.. Enumerable.Repeat(1f, headRows * seq)];
            var (context, dq, dk, dv) = Fused(path, q, k, v, dContext, dropout ? bits : null, scale, batch, seq, c, heads);
            var (eContext, eDq, eDk, eDv) = Definition(q, k, v, dContext, mask, seq, c, heads);
            AssertClose("context", eContext, context);
            AssertClose("dQuery", eDq, dq);
            AssertClose("dKey", eDk, dk);
            AssertClose("dValue", eDv, dv);
        }
    }

    public static IEnumerable<object[]> PathsAndShapes()
    {
        foreach (var path in GemmTests.Paths())
        {
            yield return [path[0], 2, 256, 64, 4]; // the book's context: every tile full, head dim 16
            yield return [path[0], 1, 300, 48, 3]; // a short last tile
            yield return [path[0], 2, 20, 32, 2];  // one tile shorter than 32
            yield return [path[0], 1, 70, 130, 2]; // head dim 65: every column tail of the tile products
        }
    }

    [Theory]
    [MemberData(nameof(PathsAndShapes))]
    public void MatchesTheUnfusedKernel(string pathName, int batch, int seq, int c, int heads)
    {
        var path = Enum.Parse<Path>(pathName);
        foreach (bool dropout in new[] { false, true })
        {
            int n = batch * seq * c, headRows = batch * heads * seq;
            var (q, k, v, dContext) = (RandomArray(11, n), RandomArray(12, n), RandomArray(13, n), RandomArray(14, n));
            var bits = new uint[headRows * Kernels.DropoutBitWords(seq)];
            fixed (uint* b = bits) Kernels.DropoutMaskBits(b, headRows, seq, 0.1, new FastRandom(3));
            float scale = Kernels.DropoutScale(0.1);
            var fused = Fused(path, q, k, v, dContext, dropout ? bits : null, scale, batch, seq, c, heads);
            var unfused = Unfused(q, k, v, dContext, dropout ? FloatMask(bits, headRows, seq, scale) : null, batch, seq, c, heads);
            AssertClose("context", unfused.Context, fused.Context);
            AssertClose("dQuery", unfused.DQuery, fused.DQuery);
            AssertClose("dKey", unfused.DKey, fused.DKey);
            AssertClose("dValue", unfused.DValue, fused.DValue);
        }
    }

    /// <summary>
    /// The one tile product behind every attention product, on every path (Vector512 too: where the CPU lacks AVX-512
    /// its vectors run in software, so the 4 × 32 and 1 × 32 tiles are checked on every machine), against a
    /// double-precision product: rows that leave 1-row tiles, columns that leave a 16-wide, an 8-wide and a scalar tail,
    /// A read through either stride (a transposed tile), accumulating or not, strided B and C.
    /// </summary>
    [Theory]
    [InlineData(nameof(Path.Scalar))]
    [InlineData(nameof(Path.Vector256))]
    [InlineData(nameof(Path.Vector512))]
    public void TileProductMatchesTheDoubleProduct(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        foreach (var (m, n, k) in new[] { (32, 32, 64), (7, 64, 32), (5, 63, 9), (1, 1, 1), (9, 57, 33), (3, 8, 5) })
            foreach (bool transposed in new[] { false, true })
                foreach (bool accumulate in new[] { false, true })
                {
                    int lda = transposed ? m + 3 : k + 2, ldb = n + 5, ldc = n + 7;
                    var a = RandomArray(m * 100 + n, (transposed ? k : m) * lda);
                    var b = RandomArray(n * 100 + k, k * ldb);
                    var c = RandomArray(k * 100 + m, m * ldc);
                    var expected = new double[m * ldc];
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < ldc; j++)
                        {
                            double sum = accumulate || j >= n ? c[i * ldc + j] : 0;
                            if (j < n)
                                for (int p = 0; p < k; p++) sum += (double)a[transposed ? p * lda + i : i * lda + p] * b[p * ldb + j];
                            expected[i * ldc + j] = sum;
                        }
                    fixed (float* pa = a, pb = b, pc = c)
                        Kernels.TileProduct(path, pa, transposed ? 1 : lda, transposed ? lda : 1, pb, ldb, pc, ldc, m, n, k, accumulate);
                    for (int i = 0; i < expected.Length; i++)
                        Assert.True(Math.Abs(expected[i] - c[i]) <= 1e-5 * (1 + Math.Abs(expected[i])) * Math.Sqrt(k),
                            $"{pathName} {m}x{n}x{k} transposed {transposed} accumulate {accumulate} [{i}]: {expected[i]} vs {c[i]}");
                }
    }

    [Fact]
    public void FastExpIsWithinTwoUlpOfExp()
    {
        var random = new Random(5);
        var xs = new float[4096];
        for (int i = 0; i < xs.Length; i++) xs[i] = (float)(random.NextDouble() * 170 - 87); // the whole normal range
        xs[0] = 0; xs[1] = -1e-9f; xs[2] = 1e-9f; xs[3] = -87.3f; xs[4] = 88.3f; xs[5] = -0.5f * MathF.Log(2); xs[6] = 0.5f * MathF.Log(2);
        fixed (float* px = xs)
            for (int i = 0; i < xs.Length; i += 8)
            {
                var e = Kernels.FastExp(System.Runtime.Intrinsics.Vector256.Load(px + i));
                for (int lane = 0; lane < 8; lane++)
                {
                    double expected = Math.Exp(xs[i + lane]);
                    Assert.True(Math.Abs(e[lane] - expected) <= 2 * 1.2e-7 * expected, $"exp({xs[i + lane]}) = {expected}, got {e[lane]}");
                }
            }
        // Masked scores (−∞ after the max is subtracted) come out as the smallest normal's order, never NaN.
        var masked = Kernels.FastExp(System.Runtime.Intrinsics.Vector256.Create(float.NegativeInfinity));
        Assert.True(masked[0] >= 0 && masked[0] < 1e-37f);
    }

    [Fact]
    public void CachedPrefillOfALongPromptMatchesTheTrainingKernel()
    {
        // Prefill of 300 tokens after 0 and after 40 cached positions: the same attention as the full-sequence kernel.
        const int seq = 300, c = 48, heads = 3, capacity = 320;
        var (q, k, v) = (RandomArray(21, seq * c), RandomArray(22, seq * c), RandomArray(23, seq * c));
        var expected = new float[seq * c];
        fixed (float* pq = q, pk = k, pv = v, pe = expected)
            Kernels.AttentionForward(pe, null, null, 0f, pq, pk, pv, 1, seq, c, heads);
        var keyCache = new float[capacity * c];
        var valueCache = new float[capacity * c];
        k.CopyTo(keyCache, 0);
        v.CopyTo(valueCache, 0);
        foreach (int past in new[] { 0, 40 })
        {
            int fresh = seq - past;
            var context = new float[fresh * c];
            fixed (float* pq = q, pk = keyCache, pv = valueCache, pc = context)
                Kernels.AttentionForwardCached(pc, pq + past * c, pk, pv, 1, fresh, past, capacity, c, heads);
            AssertClose($"past {past}", expected.AsSpan(past * c).ToArray(), context, 1e-5);
        }
    }

    private static (float[] Context, float[] DQuery, float[] DKey, float[] DValue) Fused(Path path, float[] q, float[] k, float[] v,
        float[] dContext, uint[]? bits, float scale, int batch, int seq, int c, int heads)
    {
        int n = batch * seq * c, headRows = batch * heads * seq;
        var (context, dq, dk, dv) = (new float[n], new float[n], new float[n], new float[n]);
        var stats = new float[2 * headRows];
        var dots = new float[headRows];
        fixed (float* pq = q, pk = k, pv = v, pd = dContext, pc = context, pdq = dq, pdk = dk, pdv = dv, ps = stats, pdots = dots)
        fixed (uint* pb = bits)
        {
            Kernels.AttentionForward(path, pc, ps, pb, scale, pq, pk, pv, batch, seq, c, heads);
            Kernels.AttentionBackward(path, pdq, pdk, pdv, pdots, pd, ps, pb, scale, pq, pk, pv, pc, batch, seq, c, heads);
        }
        return (context, dq, dk, dv);
    }

    /// <summary>Causal attention with a float dropout mask, in double, one batch row: forward and backward by definition.</summary>
    private static (float[], float[], float[], float[]) Definition(float[] q, float[] k, float[] v, float[] dContext, float[] mask,
        int seq, int c, int heads)
    {
        int hd = c / heads;
        double scale = 1 / Math.Sqrt(hd);
        var (context, dq, dk, dv) = (new float[seq * c], new double[seq * c], new double[seq * c], new double[seq * c]);
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < seq; i++)
            {
                var w = new double[i + 1];
                double max = double.NegativeInfinity, sum = 0;
                for (int j = 0; j <= i; j++)
                {
                    double s = 0;
                    for (int d = 0; d < hd; d++) s += (double)q[i * c + h * hd + d] * k[j * c + h * hd + d];
                    w[j] = s * scale;
                    max = Math.Max(max, w[j]);
                }
                for (int j = 0; j <= i; j++) sum += w[j] = Math.Exp(w[j] - max);
                for (int j = 0; j <= i; j++) w[j] /= sum;
                var dw = new double[i + 1];
                double dot = 0;
                for (int j = 0; j <= i; j++)
                {
                    double m = mask[(h * seq + i) * seq + j];
                    double g = 0;
                    for (int d = 0; d < hd; d++)
                    {
                        context[i * c + h * hd + d] += (float)(w[j] * m * v[j * c + h * hd + d]);
                        g += (double)dContext[i * c + h * hd + d] * v[j * c + h * hd + d];
                        dv[j * c + h * hd + d] += w[j] * m * dContext[i * c + h * hd + d];
                    }
                    dw[j] = g * m;
                    dot += w[j] * dw[j];
                }
                for (int j = 0; j <= i; j++)
                {
                    double ds = w[j] * (dw[j] - dot) * scale;
                    for (int d = 0; d < hd; d++)
                    {
                        dq[i * c + h * hd + d] += ds * k[j * c + h * hd + d];
                        dk[j * c + h * hd + d] += ds * q[i * c + h * hd + d];
                    }
                }
            }
        return (context, [.. dq.Select(x => (float)x)], [.. dk.Select(x => (float)x)], [.. dv.Select(x => (float)x)]);
    }

    /// <summary>The kernel the fused one replaced, one (batch, head, block) at a time: [seq, seq] weights and float mask.</summary>
    private static (float[] Context, float[] DQuery, float[] DKey, float[] DValue) Unfused(float[] q, float[] k, float[] v,
        float[] dContext, float[]? mask, int batch, int seq, int c, int heads)
    {
        const int block = 32;
        int t = seq, hd = c / heads, n = batch * seq * c, blocks = (t + block - 1) / block;
        float invSqrt = 1f / MathF.Sqrt(hd);
        var (context, dq, dk, dv) = (new float[n], new float[n], new float[n], new float[n]);
        var weights = new float[batch * heads * t * t];
        var used = new float[weights.Length];
        var dWeights = new float[weights.Length];
        fixed (float* pq = q, pk = k, pv = v, pd = dContext, pc = context, pdq = dq, pdk = dk, pdv = dv)
        fixed (float* pw = weights, pu = used, pdw = dWeights, pm = mask)
            for (int bh = 0; bh < batch * heads; bh++)
            {
                int b = bh / heads, h = bh % heads;
                long headOffset = (long)b * t * c + (long)h * hd, weightOffset = (long)bh * t * t;
                float* w = pw + weightOffset, u = mask != null ? pu + weightOffset : w, dw = pdw + weightOffset;
                for (int blockIndex = 0; blockIndex < blocks; blockIndex++)
                {
                    int i0 = blockIndex * block, rows = Math.Min(block, t - i0), visible = i0 + rows;
                    Gemm.MatMul(false, true, rows, visible, hd, pq + headOffset + (long)i0 * c, c, pk + headOffset, c, w + (long)i0 * t, t, parallel: false);
                    for (int i = i0; i < visible; i++)
                    {
                        var row = new Span<float>(w + (long)i * t, i + 1);
                        TensorPrimitives.Multiply(row, invSqrt, row);
                        float max = TensorPrimitives.Max(row);
                        TensorPrimitives.Subtract(row, max, row);
                        TensorPrimitives.Exp(row, row);
                        float sum = TensorPrimitives.Sum(row);
                        TensorPrimitives.Multiply(row, 1f / sum, row);
                        new Span<float>(w + (long)i * t + i + 1, t - i - 1).Clear();
                    }
                    if (mask != null)
                        TensorPrimitives.Multiply(new ReadOnlySpan<float>(w + (long)i0 * t, rows * t),
                            new ReadOnlySpan<float>(pm + weightOffset + (long)i0 * t, rows * t), new Span<float>(u + (long)i0 * t, rows * t));
                    Gemm.MatMul(false, false, rows, hd, visible, u + (long)i0 * t, t, pv + headOffset, c, pc + headOffset + (long)i0 * c, c, parallel: false);
                }
                for (int blockIndex = 0; blockIndex < blocks; blockIndex++)
                {
                    int j0 = blockIndex * block, rows = Math.Min(block, t - j0);
                    Gemm.MatMul(true, false, rows, hd, t - j0, u + (long)j0 * t + j0, t, pd + headOffset + (long)j0 * c, c,
                        pdv + headOffset + (long)j0 * c, c, parallel: false);
                }
                for (int blockIndex = 0; blockIndex < blocks; blockIndex++)
                {
                    int i0 = blockIndex * block, rows = Math.Min(block, t - i0), visible = i0 + rows;
                    Gemm.MatMul(false, true, rows, visible, hd, pd + headOffset + (long)i0 * c, c, pv + headOffset, c, dw + (long)i0 * t, t, parallel: false);
                    for (int i = i0; i < visible; i++)
                    {
                        var wRow = new ReadOnlySpan<float>(w + (long)i * t, i + 1);
                        var dRow = new Span<float>(dw + (long)i * t, i + 1);
                        if (mask != null) TensorPrimitives.Multiply(dRow, new ReadOnlySpan<float>(pm + weightOffset + (long)i * t, i + 1), dRow);
                        float dot = TensorPrimitives.Dot(wRow, dRow);
                        TensorPrimitives.Subtract(dRow, dot, dRow);
                        TensorPrimitives.Multiply(dRow, wRow, dRow);
                        TensorPrimitives.Multiply(dRow, invSqrt, dRow);
                        new Span<float>(dw + (long)i * t + i + 1, t - i - 1).Clear();
                    }
                }
                for (int blockIndex = 0; blockIndex < blocks; blockIndex++)
                {
                    int i0 = blockIndex * block, rows = Math.Min(block, t - i0), visible = i0 + rows;
                    Gemm.MatMul(false, false, rows, hd, visible, dw + (long)i0 * t, t, pk + headOffset, c, pdq + headOffset + (long)i0 * c, c, parallel: false);
                    Gemm.MatMul(true, false, rows, hd, t - i0, dw + (long)i0 * t + i0, t, pq + headOffset + (long)i0 * c, c,
                        pdk + headOffset + (long)i0 * c, c, parallel: false);
                }
            }
        return (context, dq, dk, dv);
    }

    private static void AssertClose(string name, float[] expected, float[] actual, double tolerance = 2e-5)
    {
        double scale = expected.Max(x => Math.Abs(x));
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance * Math.Max(scale, 1e-3),
                $"{name}[{i}]: expected {expected[i]}, got {actual[i]} (scale {scale})");
    }
}
