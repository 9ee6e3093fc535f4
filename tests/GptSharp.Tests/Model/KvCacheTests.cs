using System.Numerics.Tensors;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Tests.Model;

/// <summary>Prefill/Step over a KV cache give the same logits as a full forward pass.</summary>
public class KvCacheTests
{
    [Theory]
    [MemberData(nameof(ReferenceParityTests.Fixtures), MemberType = typeof(ReferenceParityTests))]
    public void GreedyDecodingWithTheCacheMatchesPyTorch(string name)
    {
        var f = new ReferenceFixture(name);
        using var model = f.CreateModel();
        model.Eval();
        var ids = f.Inputs.Row(0).ToArray().ToList();
        using var cache = new KvCache(model);
        var logits = model.Prefill(cache, ids.ToArray());
        for (int i = 0; i < 8; i++)
        {
            int next = TensorPrimitives.IndexOfMax(logits.Span);
            ids.Add(next);
            if (i == 7) break;
            if (cache.Length == cache.Capacity)
                logits = model.Prefill(cache, ids.Skip(ids.Count - f.Config.ContextLength).ToArray());
            else
                logits = model.DecodeNext(cache, next);
        }
        Assert.Equal(f.Io.Ints("generated"), ids.ToArray());
    }

    [Fact]
    public void StepLogitsEqualTheFullForwardForEveryRow()
    {
        var config = new GptConfig { VocabSize = 40, ContextLength = 10, EmbeddingDim = 16, Heads = 4, Layers = 2, QkvBias = true };
        using var model = new GptModel(config, new FastRandom(21));
        model.Eval();
        var rng = new Random(3);
        int[] all = Enumerable.Range(0, 2 * 9).Select(_ => rng.Next(40)).ToArray();
        using var cache = new KvCache(model, batchSize: 2);
        // Prefill 4 positions per row, then step the other 5 one by one.
        int[] prompt = [.. all[0..4], .. all[9..13]];
        var logits = model.Prefill(cache, new TokenBatch(prompt, 2, 4));
        for (int t = 4; t <= 9; t++)
        {
            int[] window = [.. all[0..t], .. all[9..(9 + t)]];
            float[] full;
            using (model.NoGrad()) full = model.Forward(new TokenBatch(window, 2, t)).ToArray();
            for (int b = 0; b < 2; b++)
            {
                var expected = full.AsSpan(((b * t) + t - 1) * 40, 40);
                var actual = logits.Span.Slice(b * 40, 40);
                Assert.True(ReferenceFixture.MaxAbsDiff(actual, expected) < 1e-4f, $"position {t - 1}, row {b}");
            }
            if (t < 9) logits = model.DecodeNext(cache, [all[t], all[9 + t]]);
        }
        Assert.Equal(9, cache.Length);
        model.DecodeNext(cache, [1, 2]);
        Assert.Throws<ArgumentException>(() => model.DecodeNext(cache, [1, 2]));
    }
}
