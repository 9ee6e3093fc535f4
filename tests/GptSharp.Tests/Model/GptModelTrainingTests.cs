using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Layers;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Tests.Model;

/// <summary>Dropout, train/eval/no-grad modes, gradient accumulation, buffer reuse and allocation-free steps.</summary>
public class GptModelTrainingTests
{
    private static readonly GptConfig Tiny = new()
    {
        VocabSize = 50, ContextLength = 8, EmbeddingDim = 12, Heads = 3, Layers = 2, DropRate = 0.1f, QkvBias = true,
    };

    private static TokenBatch Batch(int seed, int batch, int seq, int vocab = 50)
    {
        var rng = new Random(seed);
        return new TokenBatch(Enumerable.Range(0, batch * seq).Select(_ => rng.Next(vocab)).ToArray(), batch, seq);
    }

    [Fact]
    public void DropRateZeroIsTheIdentityAndDrawsNothing()
    {
        var generator = new FastRandom(7);
        using var model = new GptModel(Tiny with { DropRate = 0f }, generator);
        var inputs = Batch(1, 2, 6);
        model.Eval();
        float[] eval = model.Forward(inputs).ToArray();
        byte[] state = generator.GetState();
        model.Train();
        float[] train = model.Forward(inputs).ToArray();
        Assert.Equal(eval, train);
        Assert.Equal(state, generator.GetState());
    }

    [Fact]
    public void EvalModeIsTheIdentityAndDrawsNothing()
    {
        var generator = new FastRandom(8);
        using var model = new GptModel(Tiny with { DropRate = 0.5f }, generator);
        using var plain = new GptModel(Tiny with { DropRate = 0f });
        for (int i = 0; i < model.Parameters().Count; i++) plain.Parameters()[i].Value.CopyFrom(model.Parameters()[i].Value);
        var inputs = Batch(2, 2, 6);
        model.Eval();
        byte[] state = generator.GetState();
        float[] eval = model.Forward(inputs).ToArray();
        Assert.Equal(state, generator.GetState());
        Assert.Equal(plain.Forward(inputs).ToArray(), eval);
        model.Train();
        Assert.NotEqual(eval, model.Forward(inputs).ToArray());
        Assert.NotEqual(state, generator.GetState());
    }

    [Fact]
    public unsafe void DropoutMaskKeepsOneMinusPAndRescales()
    {
        const int n = 200_000;
        using var mask = new Tensor(n);
        Kernels.DropoutMask(mask.Data, n, 0.1, new FastRandom(9));
        float scale = 1f / 0.9f;
        int kept = 0;
        foreach (float m in mask.Span)
        {
            if (m != 0) { Assert.Equal(scale, m); kept++; }
        }
        // Binomial(200000, 0.9): standard deviation 134, so ±1000 is over 7 sigma.
        Assert.InRange(kept, 0.9 * n - 1000, 0.9 * n + 1000);
        using var x = new Tensor(n);
        x.Span.Fill(2f);
        Kernels.DropoutForward(x.Data, x.Data, mask.Data, n);
        double mean = 0;
        foreach (float v in x.Span) mean += v;
        Assert.InRange(mean / n, 1.98, 2.02);
    }

    [Fact]
    public void TrainingModeGradientsMatchFiniteDifferencesWithTheSameMasks()
    {
        // Replaying the generator state replays the dropout masks, so the loss is a smooth function of the weights.
        var generator = new FastRandom(10);
        using var model = new GptModel(Tiny with { DropRate = 0.2f }, generator);
        var inputs = Batch(3, 2, 7);
        var targets = Batch(4, 2, 7);
        byte[] state = generator.GetState();
        double LossValue()
        {
            generator.SetState(state);
            return Losses.CrossEntropy(model.Forward(inputs), targets).Value;
        }
        generator.SetState(state);
        Losses.CrossEntropy(model.Forward(inputs), targets).Backward();
        var rng = new Random(5);
        const float h = 1e-2f;
        foreach (var p in model.Parameters())
        {
            for (int sample = 0; sample < 3; sample++)
            {
                int i = rng.Next((int)p.Length);
                float saved = p.Value[i];
                p.Value[i] = saved + h;
                double plus = LossValue();
                p.Value[i] = saved - h;
                double minus = LossValue();
                p.Value[i] = saved;
                double numeric = (plus - minus) / (2 * h);
                Assert.True(Math.Abs(numeric - p.Grad[i]) <= 2e-3 * Math.Max(1, Math.Abs(numeric)),
                    $"{p.Name}[{i}]: backward {p.Grad[i]}, finite difference {numeric}");
            }
        }
    }

    [Fact]
    public void GradientsAccumulateUntilZeroGrad()
    {
        using var model = new GptModel(Tiny, new FastRandom(11));
        model.Eval();
        var inputs = Batch(5, 2, 5);
        var targets = Batch(6, 2, 5);
        Losses.CrossEntropy(model.Forward(inputs), targets).Backward();
        float[] once = model.OutHead.Grad.ToArray();
        Losses.CrossEntropy(model.Forward(inputs), targets).Backward();
        float[] twice = model.OutHead.Grad.ToArray();
        for (int i = 0; i < once.Length; i++) Assert.Equal(2 * once[i], twice[i], 5);
        using var optimizer = new AdamW(model.Parameters());
        optimizer.ZeroGrad();
        Assert.All(model.OutHead.Grad.ToArray(), g => Assert.Equal(0f, g));
    }

    [Fact]
    public void BackwardTwiceOrUnderNoGradIsRefused()
    {
        using var model = new GptModel(Tiny, new FastRandom(12));
        var inputs = Batch(7, 1, 4);
        var loss = Losses.CrossEntropy(model.Forward(inputs), inputs);
        loss.Backward();
        Assert.Contains("second time", Assert.Throws<InvalidOperationException>(() => loss.Backward()).Message);
        using (model.NoGrad())
        {
            var inference = Losses.CrossEntropy(model.Forward(inputs), inputs);
            Assert.Contains("NoGrad", Assert.Throws<InvalidOperationException>(() => inference.Backward()).Message);
        }
        // A second forward pass overwrites the activations the first loss needs.
        var first = Losses.CrossEntropy(model.Forward(inputs), inputs);
        var second = Losses.CrossEntropy(model.Forward(inputs), inputs);
        Assert.Contains("later Forward", Assert.Throws<InvalidOperationException>(() => first.Backward()).Message);
        second.Backward();
    }

    [Fact]
    public void NoGradGivesTheSameLogitsWithLessMemory()
    {
        using var model = new GptModel(Tiny, new FastRandom(13));
        model.Eval();
        var inputs = Batch(8, 3, 8);
        float[] withGrad = model.Forward(inputs).ToArray();
        long trainingBytes = model.ActivationBytes;
        using (model.NoGrad()) Assert.Equal(withGrad, model.Forward(inputs).ToArray());
        Assert.True(model.ActivationBytes - trainingBytes < trainingBytes / 2);
    }

    [Fact]
    public void SmallerAndLargerBatchesReuseOrGrowTheBuffers()
    {
        using var model = new GptModel(Tiny, new FastRandom(14));
        model.Eval();
        var small = Batch(9, 1, 3);
        float[] alone = model.Forward(small).ToArray();
        var big = Batch(10, 2, 8);
        model.Forward(big);
        long bytes = model.ActivationBytes;
        var logits = model.Forward(small);
        Assert.Equal([1, 3, 50], logits.ShapeArray);
        Assert.Equal(alone, logits.ToArray());
        Assert.Equal(bytes, model.ActivationBytes);
        Assert.Throws<ArgumentException>(() => model.Forward(Batch(11, 1, 9)));
        Assert.Throws<ArgumentException>(() => model.Forward(new TokenBatch([0, 50], 1, 2)));
    }

    [Fact]
    public void TrainingStepAllocatesNothingAfterWarmUp()
    {
        using var model = new GptModel(Tiny with { EmbeddingDim = 48, Heads = 4 }, new FastRandom(15));
        model.Train();
        using var optimizer = new AdamW(model.Parameters());
        var inputs = Batch(12, 4, 8);
        var targets = Batch(13, 4, 8);
        void Step()
        {
            optimizer.ZeroGrad();
            var loss = Losses.CrossEntropy(model.Forward(inputs), targets);
            loss.Backward();
            optimizer.Step();
        }
        Step();
        Step();
        Allocations.AssertStepsAllocateNothing(Step, stepsPerWindow: 3);
    }
}

/// <summary>Results do not depend on the thread count: every parallel split keeps each sum's order.</summary>
/// <remarks>Changes <see cref="Workers.Count"/>, so it runs alone with the other tests that do (a concurrent
/// change would, for one, make another test's warm-up skip the parallel paths its measured steps take).</remarks>
[Collection(nameof(GptSharp.Tests.Tensors.WorkersTests))]
public class ThreadCountTests
{
    [Fact]
    public void TrainingStepsAreBitIdenticalOnOneAndTwoThreads()
    {
        float[][] Run(int threads)
        {
            int saved = Workers.Count;
            try
            {
                Workers.Count = threads;
                var config = new GptConfig { VocabSize = 300, ContextLength = 40, EmbeddingDim = 64, Heads = 4, Layers = 2, DropRate = 0.1f };
                using var model = new GptModel(config, new FastRandom(31));
                using var optimizer = new AdamW(model.Parameters());
                var rng = new Random(4);
                var inputs = new TokenBatch(Enumerable.Range(0, 4 * 40).Select(_ => rng.Next(300)).ToArray(), 4, 40);
                for (int step = 0; step < 2; step++)
                {
                    optimizer.ZeroGrad();
                    Losses.CrossEntropy(model.Forward(inputs), inputs).Backward();
                    optimizer.Step();
                }
                return model.Parameters().Select(p => p.Value.ToArray()).ToArray();
            }
            finally
            {
                Workers.Count = saved;
            }
        }
        var one = Run(1);
        var two = Run(2);
        for (int i = 0; i < one.Length; i++) Assert.Equal(one[i], two[i]);
    }
}
