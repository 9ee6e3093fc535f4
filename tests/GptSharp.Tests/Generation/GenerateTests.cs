using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;

using GptSharp.Tests.Model;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Tests.Generation;

/// <summary>The book's generate functions against the fixtures, and the KV cache against the book's loop.</summary>
public class GenerateTests
{
    [Theory]
    [InlineData("tiny-noqkvbias")]
    [InlineData("tiny-qkvbias")]
    public void GenerateTextSimpleReproducesTheFixtureIds(string name)
    {
        var fixture = new ReferenceFixture(name);
        using var model = fixture.CreateModel();
        model.Train();
        int seq = fixture.Inputs.SequenceLength;
        var expected = fixture.Io.Ints("generated");
        var prompt = TokenBatch.FromSequence(fixture.Inputs.Ids.AsSpan(0, seq));
        var generated = BookGeneration.GenerateTextSimple(model, prompt, expected.Length - seq, fixture.Config.ContextLength);
        Assert.Equal(expected, generated.Ids);
        Assert.True(model.IsTraining); // generation ran in eval mode and gave the caller's mode back
    }

    /// <summary>A small random model whose context (12) is outgrown by the tests.</summary>
    private static GptModel RandomModel(int vocab = 50, int layers = 2) =>
        new(new GptConfig { VocabSize = vocab, ContextLength = 12, EmbeddingDim = 32, Heads = 4, Layers = layers, DropRate = 0.1f, QkvBias = true },
            new FastRandom(42));

    [Theory]
    [InlineData(1, 12)]  // a context size equal to the model's
    [InlineData(2, 12)]  // batched
    [InlineData(1, 7)]   // the book's context_size smaller than the model's
    public void CachedAndUncachedGreedyIdsAreIdenticalAcrossTheSlidingWindow(int batch, int contextSize)
    {
        using var model = RandomModel();
        model.Train(); // generation must switch to eval mode itself (dropout 0.1 would change the ids)
        var prompt = new TokenBatch([.. Enumerable.Range(0, batch * 5).Select(i => (i * 7 + 3) % 50)], batch, 5);
        const int newTokens = 20; // 5 + 20 > 12: the window slides for the last 13 tokens

        var book = BookGeneration.Generate(model, prompt, newTokens, contextSize);
        using var cached = new TextGenerator(model, new GenerationOptions { ContextSize = contextSize });
        using var uncached = new TextGenerator(model, new GenerationOptions { ContextSize = contextSize, UseCache = false });
        var fast = cached.Generate(prompt, newTokens);
        Assert.Equal(book.Ids, fast.Ids);
        Assert.Equal(book.Ids, uncached.Generate(prompt, newTokens).Ids);
        Assert.Equal(5 + newTokens, fast.SequenceLength);
        // A second call reuses the cache object but must not reuse its content.
        Assert.Equal(book.Ids, cached.Generate(prompt, newTokens).Ids);
        Assert.True(model.IsTraining);
    }

    [Fact]
    public void CachedAndUncachedSamplingDrawTheSameTokensFromTheSameSeed()
    {
        using var model = RandomModel();
        var prompt = TokenBatch.FromSequence([1, 2, 3, 4]);
        var book = BookGeneration.Generate(model, prompt, 16, 12, temperature: 1.4f, topK: 25, generator: new TorchGenerator(123));
        using var cached = new TextGenerator(model, new GenerationOptions { Temperature = 1.4f, TopK = 25 }, new TorchGenerator(123));
        Assert.Equal(book.Ids, cached.Generate(prompt, 16).Ids);
        // Sampling is not greedy: a different seed gives a different continuation.
        var other = BookGeneration.Generate(model, prompt, 16, 12, temperature: 1.4f, topK: 25, generator: new TorchGenerator(7));
        Assert.NotEqual(book.Ids, other.Ids);
    }

    [Fact]
    public void EachRowStopsAtEosAndFinishedRowsArePadded()
    {
        using var model = RandomModel();
        var prompt = new TokenBatch([1, 2, 3, 10, 11, 12], 2, 3);
        var free = BookGeneration.Generate(model, prompt, 10, 12);
        int eos = free[0, 3 + 2]; // row 0's third new token
        int firstInRow0 = Enumerable.Range(3, 10).First(i => free[0, i] == eos);
        int firstInRow1 = Enumerable.Range(3, 10).FirstOrDefault(i => free[1, i] == eos, -1);

        var stopped = BookGeneration.Generate(model, prompt, 10, 12, eosId: eos);
        using var generator = new TextGenerator(model, new GenerationOptions { EosId = eos });
        var streamed = new List<(int Row, int Token)>();
        var fast = generator.Generate(prompt, 10, (row, token) => streamed.Add((row, token)));
        Assert.Equal(stopped.Ids, fast.Ids);
        for (int i = 3; i < stopped.SequenceLength; i++)
        {
            // Row 0 continues as without EOS until it produces it, then holds the EOS id.
            Assert.Equal(i < firstInRow0 ? free[0, i] : eos, stopped[0, i]);
            if (firstInRow1 < 0 || i < firstInRow1) Assert.Equal(free[1, i], stopped[1, i]);
        }
        // Streaming reports every real token, never the EOS or the padding.
        Assert.DoesNotContain(streamed, t => t.Token == eos);
        Assert.Equal(firstInRow0 - 3, streamed.Count(t => t.Row == 0));

        // A single row: the book's break, the EOS is not appended.
        var single = BookGeneration.Generate(model, TokenBatch.FromSequence([1, 2, 3]), 10, 12, eosId: eos);
        Assert.Equal(firstInRow0, single.SequenceLength);
        Assert.DoesNotContain(eos, single.Ids.Skip(3));
        using var singleGenerator = new TextGenerator(model, new GenerationOptions { EosId = eos });
        Assert.Equal(single.Ids, singleGenerator.Generate(TokenBatch.FromSequence([1, 2, 3]), 10).Ids);
        Assert.Equal(StopReason.EndOfSequence, singleGenerator.LastStopReason);
    }

    [Fact]
    public async Task StreamYieldsTheTokensOfGenerate()
    {
        using var model = RandomModel();
        using var generator = new TextGenerator(model);
        var all = generator.Generate(TokenBatch.FromSequence([5, 6, 7]), 15);
        Assert.Equal(all.Ids.Skip(3), generator.Stream([5, 6, 7], 15).ToList());
        var asyncTokens = new List<int>();
        await foreach (int token in generator.StreamAsync([5, 6, 7], 15)) asyncTokens.Add(token);
        Assert.Equal(all.Ids.Skip(3), asyncTokens);
    }
}
