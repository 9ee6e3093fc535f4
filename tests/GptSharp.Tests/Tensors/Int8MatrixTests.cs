using System.Runtime.Intrinsics.X86;
using GptSharp.Tensors;
using Path = GptSharp.Tensors.Gemm.KernelPath;

namespace GptSharp.Tests.Tensors;

/// <summary>
/// Int8 quantization: the per-block error bound (|w − q·s| ≤ s/2, s = max|w|/127) on random and adversarial blocks,
/// and the int8 linear kernels (decode and prefill, every path) against the float32 GEMM on the dequantized weights.
/// </summary>
public unsafe class Int8MatrixTests
{
    public static IEnumerable<object[]> VectorPaths()
    {
        if (Fma.IsSupported && Avx2.IsSupported) yield return new object[] { nameof(Path.Vector256) };
        if (Avx512F.IsSupported) yield return new object[] { nameof(Path.Vector512) };
    }

    public static IEnumerable<object[]> Paths()
    {
        yield return new object[] { nameof(Path.Scalar) };
        if (Fma.IsSupported && Avx2.IsSupported) yield return new object[] { nameof(Path.Vector256) };
        if (Avx512F.IsSupported) yield return new object[] { nameof(Path.Vector512) };
    }

    private static void CheckBlock(float[] block)
    {
        var values = new sbyte[block.Length];
        float scale = Int8Matrix.QuantizeBlock(block, values);
        float maxAbs = block.Length == 0 ? 0 : block.Max(MathF.Abs);
        Assert.True(scale >= 0 && (double)scale * 127 <= maxAbs, $"scale {scale} for max |w| {maxAbs}");
        // A zero scale only for blocks so tiny (below 127 × the smallest subnormal) that no positive float scale exists.
        Assert.True(maxAbs == 0 || scale > 0 || maxAbs < 128 * float.Epsilon);
        for (int i = 0; i < block.Length; i++)
        {
            Assert.InRange(values[i], (sbyte)-127, (sbyte)127);
            double error = Math.Abs(block[i] - (double)(values[i] * scale));
            // Half a step, plus the rounding of the float scale (relative 2^-24 over 127 steps).
            double bound = scale > 0 ? scale * 0.5 * (1 + 1e-5) : maxAbs;
            Assert.True(error <= bound, $"w={block[i]} q={values[i]} s={scale}: error {error}");
            Assert.True(float.IsFinite(values[i] * scale));
        }
    }

    [Fact]
    public void RandomBlocksStayWithinHalfAStep()
    {
        var random = new Random(7);
        for (int trial = 0; trial < 2000; trial++)
        {
            int length = trial % 40 == 0 ? 1 + random.Next(31) : 32;
            double magnitude = Math.Pow(10, random.Next(-30, 30));
            var block = new float[length];
            for (int i = 0; i < length; i++) block[i] = (float)((random.NextDouble() * 2 - 1) * magnitude);
            CheckBlock(block);
        }
    }

    [Fact]
    public void AllZerosGiveZeroScaleAndExactZeros()
    {
        var values = new sbyte[32];
        values.AsSpan().Fill(5);
        Assert.Equal(0f, Int8Matrix.QuantizeBlock(new float[32], values));
        Assert.All(values, v => Assert.Equal(0, v));
    }

    [Fact]
    public void OneOutlierSetsTheScaleAndTheRestRoundToIt()
    {
        var block = new float[32];
        for (int i = 0; i < 32; i++) block[i] = 0.001f * (i - 16);
        block[13] = 1000f;
        CheckBlock(block);
        var values = new sbyte[32];
        float scale = Int8Matrix.QuantizeBlock(block, values);
        Assert.Equal(127, values[13]);
        Assert.Equal(1000f / 127, scale, 1e-3f);
        // The small weights are below half a step: they round to zero, an error the bound allows.
        Assert.Equal(0, values[0]);
    }

    [Fact]
    public void PlusMinusMaxAreExactAndNeverOverflow()
    {
        foreach (float max in new[] { 1f, 127f, 3.3e-3f, 1e38f, float.MaxValue, 1e-40f, float.Epsilon })
        {
            var block = new float[32];
            block[0] = max;
            block[31] = -max;
            block[5] = max / 2;
            CheckBlock(block);
            var values = new sbyte[32];
            float scale = Int8Matrix.QuantizeBlock(block, values);
            if (scale > 0)
            {
                Assert.Equal(127, values[0]);
                Assert.Equal(-127, values[31]);
            }
        }
    }

    [Fact]
    public void NonFiniteWeightsAreRefused()
    {
        var block = new float[32];
        block[3] = float.NaN;
        Assert.Throws<ArgumentException>(() => Int8Matrix.QuantizeBlock(block, new sbyte[32]));
        block[3] = float.PositiveInfinity;
        Assert.Throws<ArgumentException>(() => Int8Matrix.QuantizeBlock(block, new sbyte[32]));
    }

    [Fact]
    public void MatrixQuantizeMatchesBlockQuantizeAndDequantizes()
    {
        var random = new Random(3);
        const int rows = 5, columns = 70; // a last block of 6 columns
        var weights = RandomArray(random, rows * columns);
        fixed (float* w = weights)
        {
            using var matrix = Int8Matrix.Quantize(w, rows, columns);
            Assert.Equal(3, matrix.BlocksPerRow);
            using var restored = matrix.Dequantize();
            for (int r = 0; r < rows; r++)
                for (int b = 0; b < 3; b++)
                {
                    int first = b * 32, width = Math.Min(32, columns - first);
                    var values = new sbyte[width];
                    float scale = Int8Matrix.QuantizeBlock(weights.AsSpan(r * columns + first, width), values);
                    Assert.Equal(scale, matrix.Scales[r * 3 + b]);
                    for (int i = 0; i < width; i++)
                    {
                        Assert.Equal(values[i], matrix.Values[r * columns + first + i]);
                        Assert.Equal(values[i] * scale, restored[r, first + i]);
                    }
                }
        }
    }

    /// <summary>Quantizes one input row as the integer decode path does; checks q in ±32767 and |x − q·s| ≤ s/2 per element.</summary>
    private static (short[] Values, float[] Scales) QuantizeActivations(float[] row)
    {
        int blocks = (row.Length + 31) / 32;
        var values = new short[blocks * 32];
        var scales = new float[blocks];
        fixed (float* x = row, s = scales)
        fixed (short* v = values)
            Int8Kernels.QuantizeActivationRow(x, row.Length, v, s);
        for (int p = 0; p < values.Length; p++)
        {
            float scale = scales[p / 32];
            Assert.InRange(values[p], (short)-32767, (short)32767);
            if (p >= row.Length) { Assert.Equal(0, values[p]); continue; } // padding of a short last block
            if (float.IsNaN(scale)) continue;
            double error = Math.Abs(row[p] - (double)values[p] * scale);
            // Half a step, plus the float rounding of x · (32767 / max) (≤ 32767 · 2^-23 of a step: 0.004).
            Assert.True(error <= Math.Max(scale * 0.505, 1e-30), $"x={row[p]} q={values[p]} s={scale}: error {error}");
        }
        return (values, scales);
    }

    [SkippableFact]
    public void ActivationsQuantizePerBlockWithinHalfAStep()
    {
        Skip.IfNot(Int8Kernels.Int8IntegerDotSupported, "skipped: this CPU has no AVX2/FMA (the integer decode path is not used here)");
        var random = new Random(5);
        foreach (int length in new[] { 32, 768, 70, 5 })
        {
            var row = RandomArray(random, length);
            row[length / 2] = 40f; // an outlier only widens its own block
            var (values, scales) = QuantizeActivations(row);
            Assert.Equal(32767, values[length / 2]);
            if (length > 64) Assert.True(scales[^1] < 1f / 30000, $"a block without the outlier keeps a fine step: {scales[^1]}");
        }
        var zeros = QuantizeActivations(new float[64]);
        Assert.All(zeros.Values, v => Assert.Equal(0, v));
        Assert.All(zeros.Scales, s => Assert.Equal(0f, s));
        var tiny = Enumerable.Repeat(1e-38f, 32).ToArray();
        Assert.All(QuantizeActivations(tiny).Values, v => Assert.Equal(0, v));
        var withNaN = RandomArray(random, 64);
        withNaN[40] = float.NaN;
        var nan = QuantizeActivations(withNaN);
        Assert.True(float.IsNaN(nan.Scales[1]), "a NaN input makes its block's scale NaN, so the output is NaN as in float32");
        Assert.False(float.IsNaN(nan.Scales[0]));
    }

    [SkippableTheory]
    [MemberData(nameof(VectorPaths))]
    public void IntegerDecodeIsTheExactIntegerProductScaled(string pathName)
    {
        Skip.IfNot(Int8Kernels.Int8IntegerDotSupported, "skipped: this CPU has no AVX2/FMA (the integer decode path is not used here)");
        var path = Enum.Parse<Path>(pathName);
        var random = new Random(13);
        // Out-features not a multiple of 4 (the last rows one by one), in-features with a short last block, up to 8 rows.
        foreach (var (rows, k, n) in new[] { (1, 32, 1), (1, 768, 301), (2, 96, 65), (3, 70, 33), (5, 33, 17), (8, 256, 130), (1, 5, 7), (4, 3072, 12) })
            foreach (bool withBias in new[] { false, true })
            {
                var input = RandomArray(random, rows * k);
                var weights = RandomArray(random, n * k);
                var bias = RandomArray(random, n);
                var actual = new float[rows * n];
                fixed (float* x = input, w = weights, b = bias, a = actual)
                {
                    using var matrix = Int8Matrix.Quantize(w, n, k);
                    using var dequantized = matrix.Dequantize();
                    Int8Kernels.LinearForwardInt8(path, a, x, matrix, withBias ? b : null, rows, integerDot: true);
                    if (AvxVnni.IsSupported)
                    {
                        // VPDPWSSD and AVX2's VPMADDWD + VPADDD sum the same exact integers: the same floats.
                        var avx2 = new float[rows * n];
                        Int8Kernels.Int8IntegerVnni = false;
                        try { fixed (float* v = avx2) Int8Kernels.LinearForwardInt8(path, v, x, matrix, withBias ? b : null, rows, integerDot: true); }
                        finally { Int8Kernels.Int8IntegerVnni = true; }
                        Assert.Equal(actual, avx2);
                    }
                    for (int i = 0; i < rows; i++)
                    {
                        var (values, scales) = QuantizeActivations(input[(i * k)..((i + 1) * k)]);
                        for (int j = 0; j < n; j++)
                        {
                            // Reference: the integer block dots, scaled in double; and the bound against the float input.
                            double exact = withBias ? b[j] : 0, reference = exact, bound = 0;
                            for (int block = 0; block * 32 < k; block++)
                            {
                                long dot = 0;
                                double weightAbs = 0;
                                for (int p = block * 32; p < Math.Min(k, block * 32 + 32); p++)
                                {
                                    dot += values[p] * matrix.Values[(long)j * k + p];
                                    reference += (double)x[i * k + p] * dequantized[j, p];
                                    weightAbs += Math.Abs(dequantized[j, p]);
                                }
                                exact += (double)dot * matrix.Scales[(long)j * matrix.BlocksPerRow + block] * scales[block];
                                bound += scales[block] * 0.5 * weightAbs;
                            }
                            float got = a[i * n + j];
                            Assert.True(Math.Abs(got - exact) <= 1e-5 * (1 + k / 32.0) * (1 + Math.Abs(exact)), $"{pathName} rows={rows} in={k} out={n} [{i},{j}]: {got} vs exact {exact}");
                            Assert.True(Math.Abs(got - reference) <= bound * 1.01 + 1e-5 * (1 + Math.Abs(reference)), $"[{i},{j}]: {got} vs float input {reference}, bound {bound}");
                        }
                    }
                }
            }
    }

    [SkippableFact]
    public void DecodeDefaultsToTheIntegerPathAndCanBeSwitchedPerThread()
    {
        Skip.IfNot(Int8Kernels.Int8IntegerDotSupported, "skipped: this CPU has no AVX2/FMA");
        var random = new Random(17);
        const int k = 96, n = 40;
        var input = RandomArray(random, k);
        var weights = RandomArray(random, n * k);
        var byDefault = new float[n];
        var integer = new float[n];
        var dequantize = new float[n];
        var switched = new float[n];
        fixed (float* x = input, w = weights, d = byDefault, i = integer, q = dequantize, s = switched)
        {
            using var matrix = Int8Matrix.Quantize(w, n, k);
            Int8Kernels.LinearForwardInt8(d, x, matrix, null, 1);
            Int8Kernels.LinearForwardInt8(Gemm.BestPath, i, x, matrix, null, 1, integerDot: true);
            Int8Kernels.LinearForwardInt8(Gemm.BestPath, q, x, matrix, null, 1, integerDot: false);
            Int8Kernels.Int8IntegerDecodeOnThisThread = false;
            try { Int8Kernels.LinearForwardInt8(s, x, matrix, null, 1); }
            finally { Int8Kernels.Int8IntegerDecodeOnThisThread = null; }
        }
        Assert.Equal(integer, byDefault);
        Assert.Equal(dequantize, switched);
        Assert.NotEqual(integer, dequantize); // the two paths differ by the inputs' rounding (and the order of the sums)
    }

    // (rows, in, out): decode (1..8 rows) and prefill (9+ rows, several panels), in-features with and without a short last block.
    private static readonly (int Rows, int In, int Out)[] Shapes =
    {
        (1, 32, 1), (1, 768, 300), (2, 96, 65), (3, 70, 33), (5, 33, 17), (7, 64, 130), (8, 256, 129), (1, 5, 3),
        (9, 64, 40), (20, 70, 33), (40, 96, 200),
        // Prefill shapes across the GEMM's k slices (KC), its NC panels and its edge tiles, blocks not a multiple of 16.
        (9, 1100, 70), (13, 40, 4200), (30, 3072, 20), (12, 200, 35),
    };

    [Theory]
    [MemberData(nameof(Paths))]
    public void LinearMatchesFloatGemmOnDequantizedWeights(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        var random = new Random(11);
        foreach (var (rows, k, n) in Shapes)
            foreach (bool withBias in new[] { false, true })
            {
                var input = RandomArray(random, rows * k);
                var weights = RandomArray(random, n * k);
                var bias = RandomArray(random, n);
                var expected = new float[rows * n];
                var actual = new float[rows * n];
                fixed (float* x = input, w = weights, b = bias, e = expected, a = actual)
                {
                    using var matrix = Int8Matrix.Quantize(w, n, k);
                    using var dequantized = matrix.Dequantize();
                    // Reference: the double-precision product on the dequantized weights.
                    for (int i = 0; i < rows; i++)
                        for (int j = 0; j < n; j++)
                        {
                            double sum = withBias ? b[j] : 0;
                            for (int p = 0; p < k; p++) sum += (double)x[i * k + p] * dequantized[j, p];
                            e[i * n + j] = (float)sum;
                        }
                    Int8Kernels.LinearForwardInt8(path, a, x, matrix, withBias ? b : null, rows, integerDot: false);
                    if (rows > Int8Kernels.Int8DecodeRows)
                    {
                        // Prefill dequantizes each sliver as the GEMM packs it: the float32 GEMM's result on the
                        // dequantized weights, bit for bit (same micro-kernel, same order of the sums).
                        var floatGemm = new float[rows * n];
                        fixed (float* f = floatGemm)
                            Gemm.MatMul(path, false, true, rows, n, k, x, k, dequantized.Data, k, f, n, accumulate: false, bias: withBias ? b : null, parallel: true);
                        Assert.Equal(floatGemm, actual);
                    }
                }
                for (int i = 0; i < expected.Length; i++)
                    Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5f * (1 + k / 32f) * (1 + Math.Abs(expected[i])),
                        $"{pathName} rows={rows} in={k} out={n} bias={withBias} [{i}]: {actual[i]} vs {expected[i]}");
            }
    }

    private static float[] RandomArray(Random random, int length)
    {
        var values = new float[length];
        for (int i = 0; i < length; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        return values;
    }
}
