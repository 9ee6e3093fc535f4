using GptSharp.Model;
using GptSharp.Tensors;
using Path = GptSharp.Tensors.Gemm.KernelPath;
using GptSharp.Layers;

namespace GptSharp.Tests.Tensors;

/// <summary>
/// The kernels written as ops of the one vector driver (<see cref="Simd"/>), on every width this CPU has (the scalar
/// path, Vector256, Vector512), against double-precision references, at lengths that leave every kind of tail.
/// </summary>
public unsafe class SimdKernelTests
{
    public static IEnumerable<object[]> Paths() => GemmTests.Paths();

    private static readonly int[] Lengths = [1, 7, 8, 15, 16, 31, 33, 64, 771, 4096 * 3 + 5];

    private static float[] Random(int n, int seed, double scale = 3)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)((r.NextDouble() * 2 - 1) * scale)).ToArray();
    }

    private static void Close(double expected, float actual, double tolerance, string what) =>
        Assert.True(Math.Abs(expected - actual) <= tolerance * (1 + Math.Abs(expected)), $"{what}: expected {expected}, got {actual}");

    [Theory]
    [MemberData(nameof(Paths))]
    public void GeluForwardAndBackwardMatchTheDoubleFormula(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        foreach (int n in Lengths)
        {
            var x = Random(n, n, 6);
            var dy = Random(n, n + 1);
            var y = new float[n];
            var dx = new float[n];
            fixed (float* px = x, pdy = dy, py = y, pdx = dx)
            {
                Kernels.GeluForward(path, py, px, n);
                Kernels.GeluBackward(path, pdx, px, pdy, n);
            }
            for (int i = 0; i < n; i++)
            {
                double xi = x[i], c = Math.Sqrt(2 / Math.PI), t = Math.Tanh(c * (xi + 0.044715 * xi * xi * xi));
                Close(0.5 * xi * (1 + t), y[i], 1e-5, $"gelu({xi}) n={n}");
                double grad = 0.5 * (1 + t) + 0.5 * xi * (1 - t * t) * c * (1 + 3 * 0.044715 * xi * xi);
                Close(grad * dy[i], dx[i], 1e-5, $"gelu'({xi}) n={n}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void ResidualSumIsExact(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        foreach (int n in Lengths)
        {
            var a = Random(n, 2 * n);
            var b = Random(n, 2 * n + 1);
            var sum = new float[n];
            fixed (float* pa = a, pb = b, ps = sum) Kernels.ResidualForward(path, ps, pa, pb, n);
            for (int i = 0; i < n; i++) Assert.Equal(a[i] + b[i], sum[i]);
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void LayerNormBackwardMatchesTheDoubleReference(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        foreach (int c in new[] { 1, 7, 16, 40, 768 + 9 })
        {
            const int rows = 3;
            var x = Random(rows * c, c);
            var dy = Random(rows * c, c + 1);
            var scale = Random(c, c + 2);
            var dx = Random(rows * c, c + 3); // accumulates into what is there
            var before = (float[])dx.Clone();
            var mean = new float[rows];
            var rstd = new float[rows];
            var dScale = new float[c];
            var dShift = new float[c];
            var y = new float[rows * c];
            var shift = new float[c];
            fixed (float* px = x, pdy = dy, ps = scale, pdx = dx, pm = mean, pr = rstd, pds = dScale, pdsh = dShift, py = y, psh = shift)
            {
                Kernels.LayerNormForward(py, pm, pr, px, ps, psh, rows, c);
                Kernels.LayerNormBackward(path, pdx, pds, pdsh, pdy, px, ps, pm, pr, rows, c);
            }
            for (int r = 0; r < rows; r++)
            {
                double gMean = 0, gnMean = 0;
                for (int i = 0; i < c; i++)
                {
                    double n = (x[r * c + i] - mean[r]) * (double)rstd[r], g = dy[r * c + i] * (double)scale[i];
                    gMean += g / c;
                    gnMean += g * n / c;
                }
                for (int i = 0; i < c; i++)
                {
                    double n = (x[r * c + i] - mean[r]) * (double)rstd[r], g = dy[r * c + i] * (double)scale[i];
                    Close(before[r * c + i] + (g - gMean - n * gnMean) * rstd[r], dx[r * c + i], 2e-4, $"dx[{r}, {i}] c={c}");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void DotProductMatchesTheDoubleSum(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        foreach (int n in Lengths)
        {
            var x = Random(n, 3 * n);
            var y = Random(n, 3 * n + 1);
            float dot;
            fixed (float* px = x, py = y) dot = Gemm.Dot(path, px, py, n);
            double expected = 0, magnitude = 0;
            for (int i = 0; i < n; i++)
            {
                expected += (double)x[i] * y[i];
                magnitude += Math.Abs((double)x[i] * y[i]);
            }
            Assert.True(Math.Abs(expected - dot) <= 1e-6 * (1 + magnitude), $"n={n}: {expected} vs {dot}");
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Int8RowDequantizationIsValueTimesItsBlocksScale(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        foreach (int columns in new[] { 1, 8, 31, 32, 40, 100, 768 })
        {
            var r = new Random(columns);
            var values = Enumerable.Range(0, columns).Select(_ => (sbyte)r.Next(-127, 128)).ToArray();
            var scales = Enumerable.Range(0, (columns + 31) / 32).Select(_ => (float)r.NextDouble()).ToArray();
            var row = new float[columns];
            fixed (sbyte* q = values)
            fixed (float* s = scales, d = row)
                Int8Kernels.DequantizeInt8Row(path, q, s, columns, d);
            for (int i = 0; i < columns; i++) Assert.Equal(values[i] * scales[i / 32], row[i]);
        }
    }

    [Fact]
    public void AdamWGivesTheSameBitsOnEveryWidth()
    {
        // Every path computes each element with the same float operations in the same order (no fused multiply-add).
        float[]? reference = null;
        foreach (var path in Paths().Select(p => Enum.Parse<Path>((string)p[0])))
        {
            using var a = new Parameter("a", 4096 * 5 + 13);
            using var b = new Parameter("b", 7);
            using var optimizer = new AdamW([a, b], lr: 1e-2f, weightDecay: 0.1f) { Path = path };
            for (int step = 0; step < 3; step++)
            {
                var g = Random((int)optimizer.Arena.Length, step);
                g.CopyTo(optimizer.Arena.GradSpan);
                optimizer.Step();
            }
            var weights = optimizer.Arena.WeightSpan.ToArray().Concat(optimizer.ExpAvgArena.ToArray()).Concat(optimizer.ExpAvgSqArena.ToArray()).ToArray();
            Assert.Contains(weights, w => w != 0);
            if (reference == null) reference = weights;
            else Assert.True(reference.AsSpan().SequenceEqual(weights), $"{path} differs from the scalar path");
            optimizer.ZeroGrad();
            Assert.All(optimizer.Arena.GradSpan.ToArray(), v => Assert.Equal(0f, v));
        }
    }
}
