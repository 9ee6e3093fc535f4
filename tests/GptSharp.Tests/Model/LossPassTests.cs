using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Training;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Tests.Model;

/// <summary>
/// The loss pass (<c>GptModel.ForwardLoss</c>: the output head, softmax and cross-entropy over chunks of rows, the logits
/// never whole) against <c>Forward</c> + <c>Losses.CrossEntropy</c>: the same loss and every gradient, with and without
/// dropout, ignored targets, chunks that split the rows unevenly; bit for bit when the rows are one chunk.
/// </summary>
public class LossPassTests
{
    private static readonly GptConfig Tiny = new()
    {
        VocabSize = 97, ContextLength = 24, EmbeddingDim = 16, Heads = 2, Layers = 2, DropRate = 0.1f, QkvBias = true,
    };

    private static TokenBatch Batch(int seed, int batch, int seq, int vocab, bool ignoreSome = false)
    {
        var rng = new Random(seed);
        var ids = Enumerable.Range(0, batch * seq).Select(_ => rng.Next(vocab)).ToArray();
        if (ignoreSome) for (int i = 0; i < ids.Length; i += 5) ids[i] = -100;
        return new TokenBatch(ids, batch, seq);
    }

    private static (float Loss, float[][] Grads) Run(GptModel model, Func<Loss> loss)
    {
        foreach (var p in model.Parameters()) p.Grad.Span.Clear();
        model.DropoutGenerator = new FastRandom(42);
        var l = loss();
        l.Backward();
        return (l.Value, [.. model.Parameters().Select(p => p.Grad.ToArray())]);
    }

    [Theory]
    [InlineData(7, false, false)]   // 60 rows in chunks of 7: eight full, one of 4
    [InlineData(7, true, true)]
    [InlineData(512, true, false)]  // one chunk: the unchunked arithmetic
    public void MatchesForwardAndCrossEntropy(int chunkRows, bool dropout, bool ignoreSome)
    {
        using var model = new GptModel(Tiny with { DropRate = dropout ? 0.1f : 0f }, new FastRandom(5));
        var inputs = Batch(1, 3, 20, Tiny.VocabSize);
        var targets = Batch(2, 3, 20, Tiny.VocabSize, ignoreSome);
        var reference = Run(model, () => Losses.CrossEntropy(model.Forward(inputs), targets));
        model.HeadChunkRows = chunkRows;
        var lean = Run(model, () => Pretraining.CalcLossBatch(inputs, targets, model));
        bool oneChunk = chunkRows >= inputs.Count;
        if (oneChunk) Assert.Equal(reference.Loss, lean.Loss);
        else Assert.Equal(reference.Loss, lean.Loss, 5);
        for (int i = 0; i < reference.Grads.Length; i++)
        {
            if (oneChunk) Assert.Equal(reference.Grads[i], lean.Grads[i]);
            else
                for (int j = 0; j < reference.Grads[i].Length; j++)
                    Assert.True(Math.Abs(reference.Grads[i][j] - lean.Grads[i][j]) <= 1e-6 + 1e-4 * Math.Abs(reference.Grads[i][j]),
                        $"{model.Parameters()[i].Name}[{j}]: {reference.Grads[i][j]} vs {lean.Grads[i][j]}");
        }
    }

    [Fact]
    public void InferenceLossMatchesAndKeepsNoLogits()
    {
        using var model = new GptModel(Tiny, new FastRandom(6));
        model.Eval();
        var inputs = Batch(3, 2, 24, Tiny.VocabSize);
        var targets = Batch(4, 2, 24, Tiny.VocabSize);
        model.HeadChunkRows = 10;
        using (model.NoGrad())
        {
            float lean = Pretraining.CalcLossBatch(inputs, targets, model).Value;
            long bytes = model.ActivationBytes;
            float full = Losses.CrossEntropy(model.Forward(inputs), targets).Value;
            Assert.Equal(full, lean, 6);
            // Only a 10-row chunk of logits existed before Forward made the whole [48, vocab] logits.
            Assert.True(model.ActivationBytes - bytes >= 48L * Tiny.VocabSize * sizeof(float));
        }
    }

    [Fact]
    public void ALaterForwardInvalidatesTheLoss()
    {
        using var model = new GptModel(Tiny, new FastRandom(7));
        var inputs = Batch(5, 2, 8, Tiny.VocabSize);
        var loss = Pretraining.CalcLossBatch(inputs, inputs, model);
        model.Forward(inputs);
        var error = Assert.Throws<InvalidOperationException>(() => loss.Backward());
        Assert.Contains("overwritten", error.Message);
        var second = Pretraining.CalcLossBatch(inputs, inputs, model);
        second.Backward();
        Assert.Throws<InvalidOperationException>(() => second.Backward());
    }
}
