using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Tests.Tensors;

/// <summary>
/// <see cref="TorchGenerator"/> against values recorded with Debian's PyTorch 1.13.1
/// (Fixtures/torch-rng/record.py): every float compared bit for bit.
/// </summary>
public class TorchGeneratorTests
{
    private static readonly Lazy<JsonElement> Expected = new(() =>
        JsonDocument.Parse(File.ReadAllText(FixturePaths.Get("torch-rng", "expected.json"))).RootElement);

    private static JsonElement E(string name) => Expected.Value.GetProperty(name);

    private static float[] Floats(JsonElement array) => array.EnumerateArray().Select(v => (float)v.GetDouble()).ToArray();

    private static void AssertBitEqual(float[] expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"element {i}: expected {expected[i]:R}, got {actual[i]:R}");
    }

    /// <summary>first/last values, sum and SHA-256 of the little-endian float32 bytes, as record.py's summary().</summary>
    private static void AssertSummary(JsonElement summary, ReadOnlySpan<float> actual)
    {
        Assert.Equal(summary.GetProperty("count").GetInt32(), actual.Length);
        AssertBitEqual(Floats(summary.GetProperty("first")), actual[..8]);
        AssertBitEqual(Floats(summary.GetProperty("last")), actual[^8..]);
        string sha = Convert.ToHexStringLower(SHA256.HashData(MemoryMarshal.AsBytes(actual)));
        Assert.Equal(summary.GetProperty("sha256").GetString(), sha);
    }

    private static float[] Rand(TorchGenerator g, int n)
    {
        var values = new float[n];
        g.Uniform(values, 0, 1);
        return values;
    }

    private static float[] Randn(TorchGenerator g, int n)
    {
        var values = new float[n];
        g.Normal(values, 0, 1);
        return values;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(16)]
    [InlineData(100)]
    public void RandMatchesTorch(int n)
    {
        AssertBitEqual(Floats(E("rand").GetProperty(n.ToString())), Rand(new TorchGenerator(123), n));
    }

    [Theory]
    [InlineData("uniform_bounds", 123)]
    [InlineData("uniform_wide", 7)]
    public void UniformWithBoundsMatchesTorch(string name, ulong seed)
    {
        var e = E(name);
        var expected = Floats(e.GetProperty("values"));
        var actual = new float[expected.Length];
        new TorchGenerator(seed).Uniform(actual, e.GetProperty("from").GetDouble(), e.GetProperty("to").GetDouble());
        AssertBitEqual(expected, actual);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(7)]
    [InlineData(15)]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(31)]
    [InlineData(32)]
    [InlineData(100)]
    [InlineData(1000)]
    public void RandnMatchesTorchOnBothPaths(int n)
    {
        AssertBitEqual(Floats(E("randn").GetProperty(n.ToString())), Randn(new TorchGenerator(123), n));
    }

    [Fact]
    public void LargeRandnMatchesTorchBitForBit()
    {
        var e = E("randn_large");
        AssertSummary(e, Randn(new TorchGenerator(123), e.GetProperty("count").GetInt32()));
    }

    [Fact]
    public void NormalWithMeanAndStdMatchesTorch()
    {
        var e = E("normal_mean_std");
        var g = new TorchGenerator(e.GetProperty("seed").GetUInt64());
        double mean = e.GetProperty("mean").GetDouble(), std = e.GetProperty("std").GetDouble();
        var big = new float[e.GetProperty("values").GetArrayLength()];
        g.Normal(big, mean, std);
        AssertBitEqual(Floats(e.GetProperty("values")), big);
        var small = new float[e.GetProperty("small").GetArrayLength()];
        g.Normal(small, mean, std);
        AssertBitEqual(Floats(e.GetProperty("small")), small);
    }

    [Fact]
    public void InterleavedDrawsKeepTheCachedNormalLikeTorch()
    {
        var g = new TorchGenerator(123);
        foreach (var step in E("interleaved").EnumerateArray())
        {
            int n = step.GetProperty("n").GetInt32();
            var actual = step.GetProperty("op").GetString() == "rand" ? Rand(g, n) : Randn(g, n);
            AssertBitEqual(Floats(step.GetProperty("values")), actual);
        }
    }

    [Fact]
    public void ManualSeedForgetsTheCachedNormal()
    {
        var g = new TorchGenerator(123);
        Randn(g, 1);
        g.ManualSeed(123);
        AssertBitEqual(Floats(E("reseed_clears_cache")), Randn(g, 2));
    }

    [Fact]
    public void RandomInt64MatchesTorch()
    {
        var g = new TorchGenerator(123);
        foreach (var v in E("random_int64").EnumerateArray()) Assert.Equal(v.GetInt64(), g.RandomInt64());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(9)]
    [InlineData(10)]
    [InlineData(100)]
    [InlineData(1000)]
    public void RandPermMatchesTorch(int n)
    {
        var actual = new int[n];
        new TorchGenerator(123).RandPerm(actual);
        Assert.Equal(E("randperm").GetProperty(n.ToString()).EnumerateArray().Select(v => v.GetInt32()), actual);
    }

    [Fact]
    public void RandPermOnAFreshGeneratorMatchesTorch()
    {
        // RandomSampler: g = torch.Generator(); g.manual_seed(seed); randperm(n, generator=g) each pass.
        var e = E("randperm_generator");
        var g = new TorchGenerator(123).NewGenerator(e.GetProperty("seed").GetUInt64());
        var perm = new int[9];
        g.RandPerm(perm);
        Assert.Equal(e.GetProperty("first").EnumerateArray().Select(v => v.GetInt32()), perm);
        g.RandPerm(perm);
        Assert.Equal(e.GetProperty("second").EnumerateArray().Select(v => v.GetInt32()), perm);
    }

    [Fact]
    public void LinearInitMatchesTorch()
    {
        // nn.Linear(768, 768): kaiming_uniform_(a=√5) → U(±1/√768) for the weight, then the bias.
        var g = new TorchGenerator(123);
        double bound = 1 / Math.Sqrt(768);
        double a = Math.Sqrt(5.0), weightBound = Math.Sqrt(3.0) * (Math.Sqrt(2.0 / (1 + a * a)) / Math.Sqrt(768));
        var weight = new float[768 * 768];
        var bias = new float[768];
        g.Uniform(weight, -weightBound, weightBound);
        g.Uniform(bias, -bound, bound);
        AssertSummary(E("linear_768").GetProperty("weight"), weight);
        AssertSummary(E("linear_768").GetProperty("bias"), bias);
    }

    [Fact]
    public void EmbeddingInitMatchesTorch()
    {
        var weight = new float[1000 * 768];
        new TorchGenerator(123).Normal(weight, 0, 1);
        AssertSummary(E("embedding_1000x768"), weight);
    }

    [Fact]
    public void DropoutMaskMatchesTorch()
    {
        // F.dropout on CPU: noise.bernoulli_(1 - p), noise /= (1 - p) in float, x * noise.
        var e = E("dropout");
        double p = e.GetProperty("p").GetDouble();
        var mask = new float[e.GetProperty("n").GetInt32()];
        new TorchGenerator(123).Bernoulli(mask, 1 - p);
        var zeros = Enumerable.Range(0, mask.Length).Where(i => mask[i] == 0f);
        Assert.Equal(e.GetProperty("zeros").EnumerateArray().Select(v => v.GetInt32()), zeros);
        Assert.Equal((float)e.GetProperty("kept_value").GetDouble(), 1f / (float)(1 - p));
    }

    [Fact]
    public void BernoulliMatchesTorch()
    {
        var e = E("bernoulli");
        var expected = Floats(e.GetProperty("values"));
        var actual = new float[expected.Length];
        new TorchGenerator(123).Bernoulli(actual, e.GetProperty("p").GetDouble());
        AssertBitEqual(expected, actual);
    }

    [Fact]
    public void DrawsAcrossMersenneTwisterBlocksMatchTorch()
    {
        // An odd number of 32-bit draws first, so 64-bit pairs straddle the 624-word blocks.
        var e = E("bernoulli_straddle");
        var g = new TorchGenerator(123);
        AssertBitEqual(Floats(e.GetProperty("rand_before")), Rand(g, 1));
        var first = new float[e.GetProperty("bernoulli").GetArrayLength()];
        g.Bernoulli(first, e.GetProperty("p").GetDouble());
        AssertBitEqual(Floats(e.GetProperty("bernoulli")), first);
        AssertBitEqual(Floats(e.GetProperty("rand_middle")), Rand(g, 3));
        var second = new float[e.GetProperty("bernoulli2").GetArrayLength()];
        g.Bernoulli(second, 0.9);
        AssertBitEqual(Floats(e.GetProperty("bernoulli2")), second);
        var uniform = new float[e.GetProperty("uniform_after").GetArrayLength()];
        g.Uniform(uniform, -2, 3);
        AssertBitEqual(Floats(e.GetProperty("uniform_after")), uniform);
    }

    [Fact]
    public void MultinomialMatchesTorch()
    {
        var e = E("multinomial");
        var g = new TorchGenerator(123);
        var probs = Floats(e.GetProperty("probs"));
        var topK = Floats(e.GetProperty("probs_topk"));
        Assert.Equal(e.GetProperty("draws").EnumerateArray().Select(v => v.GetInt32()),
            Enumerable.Range(0, 30).Select(_ => g.Multinomial(probs)).ToArray());
        Assert.Equal(e.GetProperty("draws_topk").EnumerateArray().Select(v => v.GetInt32()),
            Enumerable.Range(0, 30).Select(_ => g.Multinomial(topK)).ToArray());
        AssertBitEqual(Floats(e.GetProperty("after")), Rand(g, 3));
    }

    /// <summary>
    /// The multinomial draw that skips logarithms which cannot change the pick gives the pick (and leaves the stream where)
    /// the full computation does: every element's −log(1 − u), weight / q, first largest. Peaky and flat softmaxes of a
    /// GPT-2-sized vocabulary, masked (zero) weights, subnormal weights, exact ties, one-hot, odd lengths across the
    /// 624-word blocks.
    /// </summary>
    [Fact]
    public void MultinomialSkippingLogarithmsPicksAsTheFullComputation()
    {
        static int Full(TorchGenerator g, ReadOnlySpan<float> weights)
        {
            int best = -1;
            float bestValue = 0;
            for (int i = 0; i < weights.Length; i++)
            {
                double u = (g.NextUInt64() & ((1UL << 53) - 1)) * (1.0 / (1UL << 53));
                float ratio = weights[i] / (float)-Math.Log(1.0 - u);
                if (best < 0 || ratio > bestValue || (float.IsNaN(ratio) && !float.IsNaN(bestValue))) (best, bestValue) = (i, ratio);
            }
            return best;
        }
        var random = new Random(5);
        var cases = new List<float[]>();
        foreach (int n in new[] { 50257, 1, 2, 311, 623, 624, 625, 1249 })
            foreach (float temperature in new[] { 0.05f, 1f, 30f })
            {
                var logits = Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() * 8 - 4) / temperature).ToArray();
                var probabilities = new float[n];
                GptSharp.Generation.Sampling.Softmax(logits, probabilities);
                cases.Add(probabilities);
            }
        var masked = (float[])cases[1].Clone();
        for (int i = 0; i < masked.Length; i++) if (i % 7 != 3) masked[i] = 0;
        cases.Add(masked);
        cases.Add(Enumerable.Range(0, 3000).Select(i => i % 5 == 0 ? 1e-44f : 1e-40f).ToArray()); // subnormal only
        cases.Add(Enumerable.Range(0, 3000).Select(i => i % 3 == 0 ? 0.25f : 1e-42f).ToArray());
        cases.Add(Enumerable.Repeat(1f / 50257, 50257).ToArray());
        var oneHot = new float[5000];
        oneHot[4321] = 1;
        cases.Add(oneHot);
        foreach (ulong seed in new ulong[] { 1, 123, 987654321 })
        {
            var fast = new TorchGenerator(seed);
            var full = new TorchGenerator(seed);
            foreach (var weights in cases)
                for (int draw = 0; draw < 3; draw++)
                    Assert.Equal(Full(full, weights), fast.Multinomial(weights));
            Assert.Equal(full.NextUInt64(), fast.NextUInt64());
        }
    }

    [Fact]
    public void MultinomialRejectsInvalidWeights()
    {
        var g = new TorchGenerator(1);
        Assert.Throws<ArgumentException>(() => g.Multinomial(new float[] { 0, 0 }));
        Assert.Throws<ArgumentException>(() => g.Multinomial(new float[] { 1, -1 }));
        Assert.Throws<ArgumentException>(() => g.Multinomial(new float[] { 1, float.NaN }));
        Assert.Throws<ArgumentException>(() => g.Multinomial(new float[] { float.NaN, 1 }));
        Assert.Throws<ArgumentException>(() => g.Multinomial(new float[] { 1, float.PositiveInfinity }));
        Assert.Throws<ArgumentException>(() => g.Multinomial(new float[] { float.NegativeInfinity, 1 }));
        Assert.Equal(1, g.Multinomial(new float[] { -0f, 2 }));
    }

    [Fact]
    public void StateHasTorchsLayoutAndRoundTrips()
    {
        var e = E("state_after");
        var g = new TorchGenerator(123);
        Rand(g, e.GetProperty("rand").GetInt32());
        Randn(g, e.GetProperty("randn").GetInt32()); // leaves a cached normal
        byte[] state = g.GetState();
        Assert.Equal(e.GetProperty("hex").GetString(), Convert.ToHexStringLower(state));

        var restored = new TorchGenerator(999);
        restored.SetState(Convert.FromHexString(e.GetProperty("hex").GetString()!));
        AssertBitEqual(Floats(e.GetProperty("next")), Randn(restored, 4));
        AssertBitEqual(Floats(e.GetProperty("next")), Randn(g, 4));
    }

    [Fact]
    public void SetStateRejectsBadStates()
    {
        var g = new TorchGenerator(1);
        Assert.Throws<ArgumentException>(() => g.SetState(new byte[100]));
        Assert.Throws<ArgumentException>(() => g.SetState(new byte[TorchGenerator.StateByteCount])); // left = 0
        var state = g.GetState();
        state[8] = 10; state[9] = 0; state[16] = 0xF0; state[17] = 0x02; // left = 10, next = 752
        Assert.Throws<ArgumentException>(() => g.SetState(state));
    }
}

public class RandomGeneratorsTests
{
    [Fact]
    public void CreatesEachKindSeeded()
    {
        var torch = RandomGenerators.Create("torch", 123);
        Assert.Equal("torch", torch.Kind);
        var values = new float[5];
        torch.Uniform(values, 0, 1);
        Assert.Equal(0.29611194f, values[0]); // torch.manual_seed(123); torch.rand(1)
        Assert.Equal("fast", RandomGenerators.Create("fast", 123).Kind);
        var e = Assert.Throws<ArgumentException>(() => RandomGenerators.Create("mt", 1));
        Assert.Contains("RunConfig.Rng", e.Message);
    }
}
