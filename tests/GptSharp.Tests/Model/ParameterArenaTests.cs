using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Tests.Model;

/// <summary>
/// The parameter arena: a model's parameters are views, back to back in <c>state_dict</c> order, into one allocation of
/// weights and one of gradients; AdamW and ZeroGrad run over it; parameters from elsewhere are packed into one keeping
/// their values; quantizing to int8 frees the float32 arena at once.
/// </summary>
public sealed unsafe class ParameterArenaTests
{
    private static readonly GptConfig Tiny = new() { VocabSize = 50, ContextLength = 8, EmbeddingDim = 32, Heads = 2, Layers = 2, QkvBias = true };

    [Fact]
    public void ModelParametersAreViewsBackToBackInStateDictOrder()
    {
        using var model = new GptModel(Tiny, new FastRandom(3));
        var arena = ParameterArena.Of(model.Parameters());
        Assert.Equal(model.ParameterCount, arena.Length);
        Assert.Equal(0, (long)arena.Weights.Data % Tensor.Alignment);
        Assert.Equal(0, (long)arena.Grads.Data % Tensor.Alignment);
        long offset = 0;
        foreach (var p in model.Parameters())
        {
            Assert.Same(arena, p.Arena);
            Assert.Equal(offset, p.Offset);
            Assert.True(p.Value.Data == arena.Weights.Data + offset, p.Name);
            Assert.True(p.Grad.Data == arena.Grads.Data + offset, p.Name);
            offset += p.Length;
        }
        // The initial values are still PyTorch's: LayerNorm scales are ones, the last parameter (out_head) is not zero.
        Assert.All(model.FinalNorm.Scale.Value.ToArray(), v => Assert.Equal(1f, v));
        Assert.Contains(model.OutHead.Value.ToArray(), v => v != 0);

        using var optimizer = new AdamW(model.Parameters());
        Assert.Same(arena, optimizer.Arena);
        arena.GradSpan.Fill(2f);
        optimizer.ZeroGrad();
        Assert.All(model.Parameters(), p => Assert.All(p.Grad.ToArray(), g => Assert.Equal(0f, g)));
    }

    [Fact]
    public void AdamWPacksParametersOfTheirOwnKeepingValuesAndGradients()
    {
        using var a = new Parameter("a", 3, 5);
        using var b = new Parameter("b", 7);
        for (int i = 0; i < a.Length; i++) { a.Value[i] = i; a.Grad[i] = -i; }
        for (int i = 0; i < b.Length; i++) { b.Value[i] = 100 + i; b.Grad[i] = 0.5f * i; }
        Assert.NotSame(a.Arena, b.Arena);

        using var optimizer = new AdamW([b, a], lr: 0.1f, weightDecay: 0f);
        Assert.Same(a.Arena, b.Arena);
        Assert.Equal(0, b.Offset);
        Assert.Equal(7, a.Offset);
        Assert.Equal(Enumerable.Range(0, 15).Select(i => (float)i), a.Value.ToArray());
        Assert.Equal(Enumerable.Range(0, 15).Select(i => (float)-i), a.Grad.ToArray());
        Assert.Equal(Enumerable.Range(0, 7).Select(i => 100f + i), b.Value.ToArray());
        Assert.Equal(Enumerable.Range(0, 7).Select(i => 0.5f * i), b.Grad.ToArray());

        // The first step moves every weight with a non-zero gradient by lr against its sign (Adam's m / √v = ±1).
        optimizer.Step();
        Assert.Equal(1 + 0.1f, a.Value[1], 5); // gradient -1: up
        Assert.Equal(101 - 0.1f, b.Value[1], 5);
        Assert.Equal(0f, a.Value[0]);
        Assert.Equal(-1f, optimizer.ExpAvg[1][1] / 0.1f, 5);
    }

    [Fact]
    public void AnOptimizerWhoseParametersMovedRefusesToStep()
    {
        var a = new Parameter("a", 4);
        using var b = new Parameter("b", 4);
        using var first = new AdamW([a, b]);
        using var second = new AdamW([b]);
        Assert.Throws<InvalidOperationException>(first.Step);
        second.Step();
        a.Dispose();
    }

    [Fact]
    public void QuantizingFreesTheFloatArenaAtOnceAndKeepsTheOtherWeights()
    {
        using var model = new GptModel(Tiny, new FastRandom(5));
        var before = ParameterArena.Of(model.Parameters());
        var kept = model.Parameters().Where(p => !model.LinearWeights().Contains(p)).ToList();
        var values = kept.Select(p => p.Value.ToArray()).ToList();

        model.QuantizeInt8();

        Assert.True(before.Weights.IsDisposed);
        Assert.True(before.Grads.IsDisposed);
        var after = ParameterArena.Of(kept);
        Assert.Equal(kept.Sum(p => p.Length), after.Length);
        for (int i = 0; i < kept.Count; i++) Assert.Equal(values[i], kept[i].Value.ToArray());
        Assert.All(model.LinearWeights(), p => Assert.Null(p.Arena));
    }
}
