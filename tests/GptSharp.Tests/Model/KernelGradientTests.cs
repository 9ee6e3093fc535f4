using GptSharp.Tensors;
using GptSharp.Layers;
using GptSharp.Randomness;

namespace GptSharp.Tests.Model;

/// <summary>
/// Every kernel's backward against central finite differences of its forward, on tiny shapes.
/// The scalar checked is L = Σ output·R for a fixed random R, so dOutput = R.
/// </summary>
public unsafe class KernelGradientTests
{
    private const float Step = 1e-2f;

    private static Tensor Random(int seed, float scale, params int[] shape)
    {
        var t = new Tensor(shape);
        var rng = new Random(seed);
        var s = t.Span;
        for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return t;
    }

    private static double Dot(Tensor a, Tensor b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += (double)a[i] * b[i];
        return sum;
    }

    /// <summary>Compares <paramref name="analytic"/> with (L(x+h) − L(x−h)) / 2h for every element of <paramref name="x"/>.</summary>
    private static void Check(string name, Tensor x, Tensor analytic, Func<double> loss, double tolerance = 2e-3)
    {
        double worst = 0;
        for (int i = 0; i < x.Length; i++)
        {
            float saved = x[i];
            x[i] = saved + Step;
            double plus = loss();
            x[i] = saved - Step;
            double minus = loss();
            x[i] = saved;
            double numeric = (plus - minus) / (2 * Step);
            double error = Math.Abs(numeric - analytic[i]) / Math.Max(1.0, Math.Abs(numeric));
            worst = Math.Max(worst, error);
            Assert.True(error <= tolerance, $"{name}[{i}]: backward {analytic[i]}, finite difference {numeric}");
        }
        Assert.True(worst <= tolerance);
    }

    [Theory]
    [InlineData(7)]
    [InlineData(37)] // vector body and scalar tail
    public void LayerNormBackwardMatchesFiniteDifferences(int c)
    {
        const int rows = 3;
        using var x = Random(1, 2f, rows, c);
        using var scale = Random(2, 1.5f, c);
        using var shift = Random(3, 1f, c);
        using var r = Random(4, 1f, rows, c);
        using var y = new Tensor(rows, c);
        using var mean = new Tensor(rows);
        using var rstd = new Tensor(rows);
        double Loss()
        {
            Kernels.LayerNormForward(y.Data, mean.Data, rstd.Data, x.Data, scale.Data, shift.Data, rows, c);
            return Dot(y, r);
        }
        Loss();
        using var dx = new Tensor(rows, c);
        using var dScale = new Tensor(c);
        using var dShift = new Tensor(c);
        Kernels.LayerNormBackward(dx.Data, dScale.Data, dShift.Data, r.Data, x.Data, scale.Data, mean.Data, rstd.Data, rows, c);
        Check("dInput", x, dx, Loss);
        Check("dScale", scale, dScale, Loss);
        Check("dShift", shift, dShift, Loss);
    }

    [Fact]
    public void LayerNormUsesBiasedVarianceAndEps()
    {
        using var x = Tensor.FromArray([1f, 2f, 3f, 4f], 1, 4);
        using var scale = Tensor.FromArray([1f, 1f, 1f, 1f], 4);
        using var shift = new Tensor(4);
        using var y = new Tensor(1, 4);
        Kernels.LayerNormForward(y.Data, null, null, x.Data, scale.Data, shift.Data, 1, 4);
        // mean 2.5, biased variance 1.25
        double s = 1 / Math.Sqrt(1.25 + 1e-5);
        Assert.Equal(-1.5 * s, y[0], 5);
        Assert.Equal(1.5 * s, y[3], 5);
    }

    [Fact]
    public void GeluMatchesTheBookAndItsBackwardMatchesFiniteDifferences()
    {
        using var x = Random(5, 4f, 37);
        x[0] = 30f; // saturated: tanh must give exactly 1, not NaN
        x[1] = -30f;
        using var y = new Tensor(37);
        using var r = Random(6, 1f, 37);
        Kernels.GeluForward(y.Data, x.Data, 37);
        for (int i = 0; i < 37; i++)
        {
            double xi = x[i];
            double expected = 0.5 * xi * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (xi + 0.044715 * xi * xi * xi)));
            Assert.True(Math.Abs(expected - y[i]) <= 1e-6 * Math.Max(1, Math.Abs(expected)), $"GELU({xi}) = {y[i]}, expected {expected}");
        }
        double Loss()
        {
            Kernels.GeluForward(y.Data, x.Data, 37);
            return Dot(y, r);
        }
        using var dx = new Tensor(37);
        Kernels.GeluBackward(dx.Data, x.Data, r.Data, 37);
        Check("dInput", x, dx, Loss);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LinearBackwardMatchesFiniteDifferences(bool bias)
    {
        const int rows = 4, inF = 5, outF = 3;
        using var x = Random(7, 1f, rows, inF);
        using var w = Random(8, 1f, outF, inF);
        using var b = Random(9, 1f, outF);
        using var r = Random(10, 1f, rows, outF);
        using var y = new Tensor(rows, outF);
        double Loss()
        {
            Kernels.LinearForward(y.Data, x.Data, w.Data, bias ? b.Data : null, rows, inF, outF);
            return Dot(y, r);
        }
        using var dx = Random(11, 1f, rows, inF);
        using var dw = new Tensor(outF, inF);
        using var db = new Tensor(outF);
        Kernels.LinearBackward(dx.Data, dw.Data, bias ? db.Data : null, r.Data, x.Data, w.Data, rows, inF, outF, accumulateInput: false);
        Check("dInput", x, dx, Loss);
        Check("dWeight", w, dw, Loss);
        if (bias) Check("dBias", b, db, Loss);
    }

    [Theory]
    [InlineData(false, 2, 5, 6)]
    [InlineData(true, 2, 5, 6)]
    [InlineData(true, 1, 70, 4)] // longer than the kernel's causal block of query rows
    public void AttentionBackwardMatchesFiniteDifferences(bool dropout, int batch, int seq, int c)
    {
        const int heads = 2;
        using var q = Random(12, 1f, batch, seq, c);
        using var k = Random(13, 1f, batch, seq, c);
        using var v = Random(14, 1f, batch, seq, c);
        using var r = Random(15, 1f, batch, seq, c);
        using var ctx = new Tensor(batch, seq, c);
        using var stats = new Tensor(batch, heads, seq, 2);
        using var dots = new Tensor(batch, heads, seq);
        int headRows = batch * heads * seq, words = Kernels.DropoutBitWords(seq);
        var bits = new uint[headRows * words];
        const double p = 0.3;
        fixed (uint* b = bits) Kernels.DropoutMaskBits(b, headRows, seq, p, new FastRandom(3));
        float scale = Kernels.DropoutScale(p);
        fixed (uint* bitData = bits)
        {
            uint* mask = dropout ? bitData : null;
            double Loss()
            {
                Kernels.AttentionForward(ctx.Data, stats.Data, mask, scale, q.Data, k.Data, v.Data, batch, seq, c, heads);
                return Dot(ctx, r);
            }
            Loss();
            // Causal: row i puts no weight on later positions (moving value j > i changes nothing).
            using var dq = new Tensor(batch, seq, c);
            using var dk = new Tensor(batch, seq, c);
            using var dv = new Tensor(batch, seq, c);
            Kernels.AttentionBackward(dq.Data, dk.Data, dv.Data, dots.Data, r.Data, stats.Data, mask, scale,
                q.Data, k.Data, v.Data, ctx.Data, batch, seq, c, heads);
            Check("dQuery", q, dq, Loss);
            Check("dKey", k, dk, Loss);
            Check("dValue", v, dv, Loss);
        }
    }

    [Fact]
    public void SoftmaxCrossEntropyMatchesDefinitionAndFiniteDifferences()
    {
        const int rows = 4, vocab = 9;
        using var logits = Random(16, 3f, rows, vocab);
        using var dLogits = new Tensor(rows, vocab);
        int[] targets = [2, -100, 8, 0];
        float* losses = stackalloc float[rows];
        double Loss()
        {
            fixed (int* t = targets) return Kernels.SoftmaxCrossEntropyForward(null, losses, logits.Data, t, rows, vocab, -100);
        }
        double expected = 0;
        foreach (int row in new[] { 0, 2, 3 })
        {
            double max = double.NegativeInfinity, sum = 0;
            for (int j = 0; j < vocab; j++) max = Math.Max(max, logits[row, j]);
            for (int j = 0; j < vocab; j++) sum += Math.Exp(logits[row, j] - max);
            expected += Math.Log(sum) + max - logits[row, targets[row]];
        }
        Assert.Equal(expected / 3, Loss(), 5);
        fixed (int* t = targets) Kernels.SoftmaxCrossEntropyForward(dLogits.Data, losses, logits.Data, t, rows, vocab, -100);
        Check("dLogits", logits, dLogits, Loss);
        for (int j = 0; j < vocab; j++) Assert.Equal(0f, dLogits[1, j]);
    }

    [Fact]
    public void AllTargetsIgnoredGivesNaNLikePyTorch()
    {
        using var logits = Random(17, 1f, 2, 3);
        int[] targets = [-100, -100];
        float* losses = stackalloc float[2];
        fixed (int* t = targets) Assert.True(float.IsNaN(Kernels.SoftmaxCrossEntropyForward(null, losses, logits.Data, t, 2, 3, -100)));
    }

    [Fact]
    public void EmbeddingBackwardScatterAddsRepeatedIds()
    {
        const int batch = 2, seq = 3, c = 4, vocab = 5;
        using var tok = Random(18, 1f, vocab, c);
        using var pos = Random(19, 1f, seq, c);
        using var r = Random(20, 1f, batch, seq, c);
        using var y = new Tensor(batch, seq, c);
        int[] ids = [1, 3, 1, 4, 1, 0];
        double Loss()
        {
            fixed (int* p = ids) Kernels.EmbeddingForward(y.Data, p, tok.Data, pos.Data, batch, seq, c);
            return Dot(y, r);
        }
        Loss();
        Assert.Equal(tok[3, 2] + pos[1, 2], y[0, 1, 2]);
        using var dTok = new Tensor(vocab, c);
        using var dPos = new Tensor(seq, c);
        fixed (int* p = ids) Kernels.EmbeddingBackward(dTok.Data, dPos.Data, r.Data, p, batch, seq, c);
        Check("dToken", tok, dTok, Loss);
        Check("dPosition", pos, dPos, Loss);
    }

    [Fact]
    public void ResidualAndDropoutBackwardMatchFiniteDifferences()
    {
        const int n = 11;
        using var a = Random(21, 1f, n);
        using var b = Random(22, 1f, n);
        using var r = Random(23, 1f, n);
        using var mask = new Tensor(n);
        Kernels.DropoutMask(mask.Data, n, 0.5, new FastRandom(1));
        using var y = new Tensor(n);
        double Loss()
        {
            Kernels.ResidualForward(y.Data, a.Data, b.Data, n);
            Kernels.DropoutForward(y.Data, y.Data, mask.Data, n);
            return Dot(y, r);
        }
        using var dy = new Tensor(n);
        Kernels.DropoutBackward(dy.Data, r.Data, mask.Data, n);
        using var da = new Tensor(n);
        using var db = new Tensor(n);
        Kernels.ResidualBackward(da.Data, db.Data, dy.Data, n);
        Check("dA", a, da, Loss);
        Check("dB", b, db, Loss);
    }
}
