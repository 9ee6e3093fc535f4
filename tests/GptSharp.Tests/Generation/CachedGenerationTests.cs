using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;

using GptSharp.Tests.Model;
using GptSharp.Data;

namespace GptSharp.Tests.Generation;

/// <summary>Generation through the model's KV cache (<c>GptModel.Prefill/Step</c>) against the PyTorch fixtures.</summary>
public class CachedGenerationTests
{
    [Theory]
    [InlineData("tiny-noqkvbias")] // ctx 16: 12 prompt tokens + 8 new slide the window past the context
    [InlineData("tiny-qkvbias")]
    public void CachedGreedyDecodingReproducesTheFixtureIds(string name)
    {
        var fixture = new ReferenceFixture(name);
        using var model = fixture.CreateModel();
        int seq = fixture.Inputs.SequenceLength;
        var prompt = TokenBatch.FromSequence(fixture.Inputs.Ids.AsSpan(0, seq));
        var expected = fixture.Io.Ints("generated");

        using var generator = new TextGenerator(model, new GenerationOptions { UseCache = true });
        var generated = generator.Generate(prompt, expected.Length - seq);
        Assert.Equal(expected, generated.Ids);
        Assert.Equal(StopReason.MaxNewTokens, generator.LastStopReason);
    }

    [Fact]
    public void NoSlideStopsAtTheContextLength()
    {
        var fixture = new ReferenceFixture("tiny-noqkvbias"); // ctx 16
        using var model = fixture.CreateModel();
        var prompt = TokenBatch.FromSequence(fixture.Inputs.Ids.AsSpan(0, 12));
        using var generator = new TextGenerator(model, new GenerationOptions { Slide = false });
        var generated = generator.Generate(prompt, 8);
        Assert.Equal(16, generated.SequenceLength);
        Assert.Equal(StopReason.ContextFull, generator.LastStopReason);
        // The first 4 new tokens are those of the sliding run (the window has not slid yet).
        Assert.Equal(fixture.Io.Ints("generated").AsSpan(0, 16).ToArray(), generated.Ids);

        var tooLong = TokenBatch.FromSequence(new int[17]);
        var error = Assert.Throws<ArgumentException>(() => generator.Generate(tooLong, 1));
        Assert.Contains("more than the context length 16", error.Message);
    }

    [Fact]
    public unsafe void ReorderMovesTheCacheRowsWithTheBeams()
    {
        var fixture = new ReferenceFixture("tiny-qkvbias");
        using var model = fixture.CreateModel();
        int seq = fixture.Inputs.SequenceLength, vocab = fixture.Config.VocabSize;
        var inputs = fixture.Inputs.Ids;
        using var cache = new KvCache(model, 2);
        var prompt = new int[2 * 6];
        inputs.AsSpan(0, 6).CopyTo(prompt);
        inputs.AsSpan(seq, 6).CopyTo(prompt.AsSpan(6));
        model.Prefill(cache, new TokenBatch(prompt, 2, 6));
        using var rows = new KvCacheRows();
        rows.Reorder(cache, [1, 1]);
        var logits = model.DecodeNext(cache, [inputs[seq + 6], inputs[seq + 6]]);
        // Both rows now continue row 1 of the fixture: their logits are the fixture's at [1, 6].
        var expected = fixture.Io.Floats("logits").AsSpan((seq + 6) * vocab, vocab);
        for (int row = 0; row < 2; row++)
            for (int v = 0; v < vocab; v++) Assert.Equal(expected[v], logits[row, v], 1e-4f);
    }

    [Fact]
    public void GreedyStepsAllocateNothingAfterWarmUp()
    {
        var fixture = new ReferenceFixture("tiny-qkvbias");
        using var model = fixture.CreateModel();
        using var generator = new TextGenerator(model);
        var prompt = TokenBatch.FromSequence([1, 2, 3]);
        generator.Generate(prompt, 4); // warm-up: the cache and the activations are allocated here
        using var tokens = generator.Stream([1, 2, 3], 18).GetEnumerator();
        for (int i = 0; i < 3; i++) Assert.True(tokens.MoveNext());
        // 3 + 18 ≤ 24: no re-prefill.
        Allocations.AssertStepsAllocateNothing(() => Assert.True(tokens.MoveNext()), stepsPerWindow: 5);
    }
}
