using GptSharp.Generation;
using GptSharp.Tensors;

namespace GptSharp.Tests.Generation;

/// <summary>The KV-cache forward pass against the PyTorch fixtures: prefill and one-token steps give the same logits.</summary>
public class KvCacheTests
{
    [Theory]
    [InlineData("tiny-noqkvbias")]
    [InlineData("tiny-qkvbias")]
    public void PrefillThenStepsReproduceTheFixtureLogitsAtEveryPosition(string name)
    {
        var fixture = ReferenceFixture.Load(name);
        using var model = fixture.CreateModel();
        int[] shape = fixture.Shape("inputs");
        int batch = shape[0], seq = shape[1], vocab = fixture.Config.VocabSize;
        var inputs = fixture.Ints("inputs");
        var expected = fixture.Floats("logits");

        using var cache = new KvCache(model, batch, fixture.Config.ContextLength);
        const int prefix = 5;
        var prompt = new int[batch * prefix];
        for (int b = 0; b < batch; b++) inputs.AsSpan(b * seq, prefix).CopyTo(prompt.AsSpan(b * prefix));
        cache.Prefill(prompt, batch, prefix);
        var next = new int[batch];
        for (int t = prefix - 1; t < seq; t++)
        {
            if (t >= prefix)
            {
                for (int b = 0; b < batch; b++) next[b] = inputs[b * seq + t];
                cache.Step(next);
            }
            Assert.Equal(t + 1, cache.Length);
            for (int b = 0; b < batch; b++)
            {
                var actual = cache.LogitsRow(b);
                var reference = expected.AsSpan(((b * seq) + t) * vocab, vocab);
                float worst = 0;
                for (int v = 0; v < vocab; v++) worst = Math.Max(worst, Math.Abs(actual[v] - reference[v]));
                Assert.True(worst <= 1e-4f, $"{name} row {b} position {t}: max |Δlogit| = {worst}");
            }
        }
    }

    [Theory]
    [InlineData("tiny-noqkvbias")] // ctx 16: 12 prompt tokens + 8 new slide the window past the context
    [InlineData("tiny-qkvbias")]
    public void CachedGreedyDecodingReproducesTheFixtureIds(string name)
    {
        var fixture = ReferenceFixture.Load(name);
        using var model = fixture.CreateModel();
        int seq = fixture.Shape("inputs")[1];
        var prompt = TokenBatch.FromSequence(fixture.Ints("inputs").AsSpan(0, seq));
        var expected = fixture.Ints("generated");

        using var generator = new TextGenerator(model, new GenerationOptions { UseCache = true });
        var generated = generator.Generate(prompt, expected.Length - seq);
        Assert.Equal(expected, generated.Ids);
        Assert.Equal(StopReason.MaxNewTokens, generator.LastStopReason);
    }

    [Fact]
    public void NoSlideStopsAtTheContextLength()
    {
        var fixture = ReferenceFixture.Load("tiny-noqkvbias"); // ctx 16
        using var model = fixture.CreateModel();
        var prompt = TokenBatch.FromSequence(fixture.Ints("inputs").AsSpan(0, 12));
        using var generator = new TextGenerator(model, new GenerationOptions { Slide = false });
        var generated = generator.Generate(prompt, 8);
        Assert.Equal(16, generated.SequenceLength);
        Assert.Equal(StopReason.ContextFull, generator.LastStopReason);
        // The first 4 new tokens are those of the sliding run (the window has not slid yet).
        Assert.Equal(fixture.Ints("generated").AsSpan(0, 16).ToArray(), generated.Ids);

        var tooLong = TokenBatch.FromSequence(new int[17]);
        var error = Assert.Throws<ArgumentException>(() => generator.Generate(tooLong, 1));
        Assert.Contains("more than the context length 16", error.Message);
    }

    [Fact]
    public void ReorderRowsMovesTheCacheWithTheBeam()
    {
        var fixture = ReferenceFixture.Load("tiny-qkvbias");
        using var model = fixture.CreateModel();
        int seq = fixture.Shape("inputs")[1], vocab = fixture.Config.VocabSize;
        var inputs = fixture.Ints("inputs");
        using var cache = new KvCache(model, 2, fixture.Config.ContextLength);
        var prompt = new int[2 * 6];
        inputs.AsSpan(0, 6).CopyTo(prompt);
        inputs.AsSpan(seq, 6).CopyTo(prompt.AsSpan(6));
        cache.Prefill(prompt, 2, 6);
        cache.ReorderRows([1, 1]);
        cache.Step([inputs[seq + 6], inputs[seq + 6]]);
        var expected = fixture.Floats("logits").AsSpan((seq + 6) * vocab, vocab);
        for (int row = 0; row < 2; row++)
            for (int v = 0; v < vocab; v++) Assert.Equal(expected[v], cache.LogitsRow(row)[v], 1e-4f);
    }

    [Fact]
    public void StepsAllocateNothingAfterWarmUp()
    {
        var fixture = ReferenceFixture.Load("tiny-qkvbias");
        using var model = fixture.CreateModel();
        using var cache = new KvCache(model, 1, fixture.Config.ContextLength);
        cache.Prefill([1, 2, 3], 1, 3);
        cache.Step([4]);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10; i++) cache.Step([5 + i]);
        Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
    }

    [Fact]
    public void BadInputsAreClearErrors()
    {
        var fixture = ReferenceFixture.Load("tiny-qkvbias");
        using var model = fixture.CreateModel();
        using var cache = new KvCache(model, 1, 4);
        Assert.Throws<InvalidOperationException>(() => cache.Step([1]));
        Assert.Contains("outside the vocabulary", Assert.Throws<ArgumentException>(() => cache.Prefill([1000], 1, 1)).Message);
        cache.Prefill([1, 2, 3, 4], 1, 4);
        Assert.True(cache.IsFull);
        Assert.Throws<InvalidOperationException>(() => cache.Step([1]));
        Assert.Throws<ArgumentException>(() => new KvCache(model, 1, fixture.Config.ContextLength + 1));
    }
}
