using GptSharp.Generation;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Tests.Generation;

/// <summary>The book's section 5.3 toy example: next-token logits over a nine-word vocabulary.</summary>
public class SamplingTests
{
    // closer, every, effort, forward, inches, moves, pizza, toward, you
    internal static readonly float[] BookLogits = [4.51f, 0.89f, -1.90f, 6.75f, 1.63f, -1.62f, -1.89f, 6.28f, 1.79f];

    [Fact]
    public void ArgmaxOfTheBooksLogitsIsForward()
    {
        Assert.Equal(3, Sampling.Argmax(BookLogits));
    }

    [Fact]
    public void ArgmaxTakesTheFirstOfEqualMaxima()
    {
        Assert.Equal(1, Sampling.Argmax([0f, 2f, 2f, -1f]));
    }

    [Fact]
    public void TopThreeThenSoftmaxGivesTheBooksProbabilities()
    {
        var logits = BookLogits.ToArray();
        Sampling.TopK(logits, 3);
        Assert.Equal([4.51f, float.NegativeInfinity, float.NegativeInfinity, 6.75f, float.NegativeInfinity,
            float.NegativeInfinity, float.NegativeInfinity, 6.28f, float.NegativeInfinity], logits);
        Sampling.Softmax(logits, logits);
        float[] book = [0.0615f, 0, 0, 0.5775f, 0, 0, 0, 0.3610f, 0];
        for (int i = 0; i < book.Length; i++) Assert.Equal(book[i], logits[i], 4);
    }

    [Fact]
    public void TopKKeepsTiesWithTheKthValue()
    {
        float[] logits = [1f, 3f, 2f, 2f, 0f];
        Sampling.TopK(logits, 2);
        Assert.Equal([float.NegativeInfinity, 3f, 2f, 2f, float.NegativeInfinity], logits);
    }

    [Fact]
    public void KthLargestMatchesSorting()
    {
        var random = new FastRandom(7);
        var values = new float[1000];
        random.Normal(values, 0, 1);
        var sorted = values.OrderByDescending(v => v).ToArray();
        var heap = new float[1000];
        foreach (int k in new[] { 1, 2, 25, 999, 1000 })
            Assert.Equal(sorted[k - 1], Sampling.KthLargest(values, k, heap));
    }

    [Theory]
    [InlineData(1f, new[] { 0.060907f, 0.001631f, 0.0001f, 0.57212f, 0.003419f, 0.000133f, 0.000101f, 0.357576f, 0.004012f })]
    [InlineData(0.1f, new[] { 0f, 0f, 0f, 0.990987f, 0f, 0f, 0f, 0.009013f, 0f })]
    [InlineData(5f, new[] { 0.154648f, 0.074975f, 0.042912f, 0.242052f, 0.086934f, 0.045384f, 0.042998f, 0.220336f, 0.089761f })]
    public void TemperatureScaledSoftmaxMatchesFigure514(float temperature, float[] expected)
    {
        // softmax_with_temperature(next_token_logits, T) for the book's temperatures 1, 0.1 and 5 (figure 5.14).
        var p = BookLogits.ToArray();
        Sampling.ApplyTemperature(p, temperature);
        Sampling.Softmax(p, p);
        for (int i = 0; i < p.Length; i++) Assert.Equal(expected[i], p[i], 5);
        Assert.Equal(1f, p.Sum(), 5);
    }

    [Theory]
    [InlineData(1e-45f)]
    [InlineData(1e-40f)]
    [InlineData(3e-39f)]
    [InlineData(1e-38f)]
    public void ATemperatureTooSmallForFloat32IsItsGreedyLimit(float temperature)
    {
        // Plain logits / T overflows to ±∞ here and the softmax becomes NaN; the limit puts all mass on the argmax.
        foreach (float[] logits in (float[][])[BookLogits.ToArray(), [-1f, -2f, -3f, -0.5f], [0f, -7f, float.NegativeInfinity, -1e-3f], [3f, 5f, 5f, 1f]])
        {
            var p = logits.ToArray();
            Sampling.ApplyTemperature(p, temperature);
            Sampling.Softmax(p, p);
            float max = logits.Max();
            int ties = logits.Count(l => l == max);
            for (int i = 0; i < p.Length; i++) Assert.Equal(logits[i] == max ? 1f / ties : 0f, p[i]);
        }
        // Where the division does not overflow, it is PyTorch's logits / T exactly.
        var exact = BookLogits.ToArray();
        Sampling.ApplyTemperature(exact, 0.3f);
        Assert.Equal(BookLogits.ToArray().Select(l => l / 0.3f), exact);
    }

    [Fact]
    public void LowTemperatureSharpensAndHighTemperatureFlattens()
    {
        float[] Probabilities(float t)
        {
            var p = BookLogits.ToArray();
            Sampling.ApplyTemperature(p, t);
            Sampling.Softmax(p, p);
            return p;
        }
        static double Entropy(float[] p) => -p.Where(v => v > 0).Sum(v => v * Math.Log(v));
        var cold = Probabilities(0.1f);
        var normal = Probabilities(1f);
        var hot = Probabilities(5f);
        Assert.True(cold[3] > normal[3] && normal[3] > hot[3]);
        Assert.True(Entropy(cold) < Entropy(normal) && Entropy(normal) < Entropy(hot));
        // Every token gets some mass at T = 5 ("pizza" included), almost none at T = 0.1.
        Assert.True(hot[6] > 0.04f);
        Assert.True(cold[6] < 1e-20f);
    }

    [Fact]
    public void ThousandSeededDrawsFollowTheSoftmax()
    {
        var probabilities = BookLogits.ToArray();
        Sampling.Softmax(probabilities, probabilities);
        var counts = SampleStats.CountDraws(probabilities, 1000, new FastRandom(123));
        Assert.Equal(1000, counts.Sum());

        // Pearson's chi-squared over the three likely tokens and the rest pooled (expected counts ≥ 5).
        int[] groups = [0, 3, 7];
        double rest = 1 - groups.Sum(g => (double)probabilities[g]);
        double chi2 = groups.Sum(g => Square(counts[g] - 1000.0 * probabilities[g]) / (1000.0 * probabilities[g]))
            + Square(counts.Sum() - groups.Sum(g => counts[g]) - 1000.0 * rest) / (1000.0 * rest);
        Assert.True(chi2 < 16.27, $"chi² = {chi2:F2} ≥ 16.27 (3 degrees of freedom, p = 0.001); counts {string.Join(",", counts)}");
        // And no token is ever drawn with a probability of (almost) zero after top-k.
        var masked = BookLogits.ToArray();
        Sampling.TopK(masked, 3);
        Sampling.Softmax(masked, masked);
        var maskedCounts = SampleStats.CountDraws(masked, 1000, new FastRandom(5));
        Assert.Equal(1000, maskedCounts[0] + maskedCounts[3] + maskedCounts[7]);
    }

    private static double Square(double x) => x * x;
}

/// <summary>Exercise 5.1: the book's <c>print_sampled_tokens</c> with PyTorch's generator.</summary>
public class BookSampleCountTests
{
    [Theory]
    // Recorded with Debian's PyTorch 1.13: torch.manual_seed(123); 1,000 × torch.multinomial(softmax(logits / T), 1); bincount.
    // At T = 1 these are the book's printed counts (73 × closer, 582 × forward, 2 × inches, 343 × toward).
    [InlineData(1f, new[] { 73, 0, 0, 582, 2, 0, 0, 343, 0 })]
    [InlineData(0.1f, new[] { 0, 0, 0, 985, 0, 0, 0, 15, 0 })]
    [InlineData(5f, new[] { 165, 75, 42, 239, 71, 46, 32, 227, 103 })]
    public void TorchGeneratorReproducesPrintSampledTokens(float temperature, int[] expected)
    {
        var probabilities = SampleStats.Probabilities(SampleStats.BookNextTokenLogits.ToArray(), temperature);
        var counts = SampleStats.CountDraws(probabilities, 1000, new TorchGenerator(123));
        Assert.Equal(expected, counts);
    }
}
