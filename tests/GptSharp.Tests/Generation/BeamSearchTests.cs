using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Tests.Generation;

public class BeamSearchTests
{
    private const int Vocab = 6;

    private static GptModel TinyModel() =>
        new(new GptConfig { VocabSize = Vocab, ContextLength = 8, EmbeddingDim = 16, Heads = 2, Layers = 2, DropRate = 0f }, new FastRandom(3));

    /// <summary>log P(continuation | prompt) by the book's full forward pass, one prefix at a time (no cache, no beam logic).</summary>
    private static double LogProbability(GptModel model, int[] sequence, int promptLength)
    {
        double total = 0;
        var logProbabilities = new float[Vocab];
        for (int t = promptLength; t < sequence.Length; t++)
        {
            using (model.NoGrad())
            {
                var logits = model.Forward(TokenBatch.FromSequence(sequence.AsSpan(0, t)));
                Sampling.LogSoftmax(logits.Span.Slice((t - 1) * Vocab, Vocab), logProbabilities);
            }
            total += logProbabilities[sequence[t]];
        }
        return total;
    }

    [Fact]
    public void WideBeamFindsTheMostProbableContinuation()
    {
        using var model = TinyModel();
        int[] prompt = [1, 4];
        const int steps = 3;
        // Exhaustive search over all 6³ continuations.
        double best = double.NegativeInfinity;
        int[] bestSequence = [];
        for (int code = 0; code < Vocab * Vocab * Vocab; code++)
        {
            int[] sequence = [.. prompt, code % Vocab, code / Vocab % Vocab, code / (Vocab * Vocab)];
            double lp = LogProbability(model, sequence, prompt.Length);
            if (lp > best) { best = lp; bestSequence = sequence; }
        }
        // With Vocab² beams nothing is ever pruned before the last step: beam search is exact.
        using var beams = new TextGenerator(model, new GenerationOptions { NumBeams = Vocab * Vocab });
        Assert.Equal(bestSequence, beams.Generate(TokenBatch.FromSequence(prompt), steps).Ids);

        // A narrow beam never does worse than greedy here, and greedy is what one beam would do.
        using var greedy = new TextGenerator(model);
        var greedyIds = greedy.Generate(TokenBatch.FromSequence(prompt), steps).Ids;
        using var narrow = new TextGenerator(model, new GenerationOptions { NumBeams = 2 });
        var narrowIds = narrow.Generate(TokenBatch.FromSequence(prompt), steps).Ids;
        Assert.True(LogProbability(model, narrowIds, 2) >= LogProbability(model, greedyIds, 2) - 1e-6);
        Assert.True(LogProbability(model, narrowIds, 2) <= best + 1e-6);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void CachedAndUncachedBeamSearchAgreeAcrossTheSlidingWindow(bool earlyStopping)
    {
        using var model = TinyModel();
        int[] prompt = [2, 3, 5];
        var options = new GenerationOptions { NumBeams = 3, EosId = 0, EarlyStopping = earlyStopping, LengthPenalty = 0.5f };
        using var cached = new TextGenerator(model, options);
        using var uncached = new TextGenerator(model, options with { UseCache = false });
        var a = cached.Generate(TokenBatch.FromSequence(prompt), 10); // 3 + 10 > context 8
        var b = uncached.Generate(TokenBatch.FromSequence(prompt), 10);
        Assert.Equal(b.Ids, a.Ids);
        Assert.DoesNotContain(0, a.Ids.Skip(3)); // the EOS id is never part of the answer
    }

    [Fact]
    public void LengthPenaltyTradesOffShortAgainstLongHypotheses()
    {
        using var model = TinyModel();
        int[] prompt = [1, 2];
        // The token greedy decoding would pick first ends a hypothesis after one token.
        using var greedy = new TextGenerator(model);
        int eos = greedy.Generate(TokenBatch.FromSequence(prompt), 1)[0, 2];
        var options = new GenerationOptions { NumBeams = 4, EosId = eos, EarlyStopping = true };
        using var shortFavoured = new TextGenerator(model, options with { LengthPenalty = -2f });
        using var longFavoured = new TextGenerator(model, options with { LengthPenalty = 4f });
        var s = shortFavoured.Generate(TokenBatch.FromSequence(prompt), 6);
        var l = longFavoured.Generate(TokenBatch.FromSequence(prompt), 6);
        Assert.True(s.SequenceLength <= l.SequenceLength);
        Assert.Equal(2, s.SequenceLength); // the one-token hypothesis "EOS" wins: the prompt alone comes back
    }
}
