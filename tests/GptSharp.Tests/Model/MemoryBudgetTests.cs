using GptSharp.Layers;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Training;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Tests.Model;

/// <summary>
/// <see cref="MemoryBudget.TrainingBytes"/> against what a training step really allocates (parameters, gradients and
/// AdamW moments, plus every activation buffer), so the estimate follows the buffers when they change. Peak RSS of the
/// full-size model is measured by bench <c>train-step-quick</c>, which prints the estimate beside it.
/// </summary>
public class MemoryBudgetTests
{
    [Theory]
    [InlineData(64, 2)]   // 128 rows: one head chunk
    [InlineData(96, 12)]  // 1,152 rows: chunks and the head gradient's running sum
    public void TrainingEstimateMatchesTheBuffersOfAStep(int context, int batch)
    {
        var config = new GptConfig { VocabSize = 3000, ContextLength = context, EmbeddingDim = 48, Heads = 4, Layers = 3, DropRate = 0.1f };
        using var model = new GptModel(config, new FastRandom(1));
        using var optimizer = new AdamW(model.Parameters(), lr: 1e-3f, weightDecay: 0.1f);
        var rng = new Random(2);
        var ids = new TokenBatch([.. Enumerable.Range(0, batch * context).Select(_ => rng.Next(config.VocabSize))], batch, context);
        optimizer.ZeroGrad();
        Pretraining.CalcLossBatch(ids, ids, model).Backward();
        optimizer.Step();
        long parameters = model.Parameters().Sum(p => p.Length);
        // The activations plus the attention backward's per-head copies (the calling thread's scratch).
        double actual = 4.0 * 4 * parameters + model.ActivationBytes
                        + Kernels.AttentionBackwardScratchBytes(batch, context, config.EmbeddingDim, config.Heads);
        double estimate = MemoryBudget.TrainingBytes(config, batch);
        Assert.InRange(estimate / actual, 0.97, 1.05);
    }

    [Fact]
    public void GptTwoContextFitsInAGigabytePerSequenceAboveTheWeights()
    {
        // The bar at GPT-2's own context: ≤ 1 GB per 1024-token sequence above weights, gradients and moments.
        var config = GptConfig.Book124M with { ContextLength = 1024 };
        double fixedBytes = 16.0 * MemoryBudget.ParameterCountEstimate(config);
        double perSequence = (MemoryBudget.TrainingBytes(config, 8) - fixedBytes) / 8;
        Assert.True(perSequence < 1.0e9, $"{perSequence / 1e9:F2} GB per sequence");
    }
}
