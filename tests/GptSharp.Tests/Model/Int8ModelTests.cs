using GptSharp.Checkpoints;
using GptSharp.Data;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;
using Xunit.Abstractions;
using GptSharp.Randomness;

namespace GptSharp.Tests.Model;

/// <summary>
/// A model with int8 linear weights: the same layers as float32 on the dequantized weights (Forward, Prefill/Step,
/// every generation feature), the int8 file round trip, streaming quantization at load, refusal to train, and the
/// accuracy bars (validation perplexity within 1 % of float32, greedy next token equal on ≥ 98 % of positions).
/// </summary>
public sealed class Int8ModelTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("gptsharp-int8-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_directory, recursive: true); } catch (IOException) { }
    }

    /// <summary>A float32 copy of <paramref name="quantized"/> whose linear weights are its dequantized int8 weights.</summary>
    private static GptModel DequantizedTwin(GptModel quantized, GptModel original)
    {
        var twin = new GptModel(original.Config);
        foreach (var (source, target) in original.Parameters().Zip(twin.Parameters()))
        {
            var q = quantized.Parameters().First(p => p.Name == source.Name);
            if (q.Int8 is { } matrix)
            {
                using var restored = matrix.Dequantize();
                target.Value.CopyFrom(restored);
            }
            else target.Value.CopyFrom(source.Value);
        }
        twin.Eval();
        return twin;
    }

    private static float[] ForwardLogits(GptModel model, TokenBatch ids)
    {
        using (model.NoGrad()) return model.Forward(ids).Span.ToArray();
    }

    [Theory]
    [InlineData("tiny-noqkvbias")]
    [InlineData("tiny-qkvbias")] // emb 48: every in-feature count has a short last block of 16
    public void LayersMatchFloat32OnTheDequantizedWeights(string name)
    {
        // Exact twins need float32 activations; the integer decode path rounds the inputs to int16 (its accuracy: below).
        Int8Kernels.Int8IntegerDecodeOnThisThread = false;
        try { LayersMatchFloat32(name); }
        finally { Int8Kernels.Int8IntegerDecodeOnThisThread = null; }
    }

    private static void LayersMatchFloat32(string name)
    {
        var fixture = new ReferenceFixture(name);
        using var original = fixture.CreateModel();
        using var quantized = fixture.CreateModel();
        quantized.QuantizeInt8();
        Assert.True(quantized.IsQuantized);
        Assert.All(quantized.LinearWeights(), p => Assert.NotNull(p.Int8));
        Assert.Null(quantized.TokenEmbedding.Int8);
        using var twin = DequantizedTwin(quantized, original);

        // Forward (prefill kernel: 2-3 rows × seq) against the float GEMM on the same weights.
        var expected = ForwardLogits(twin, fixture.Inputs);
        var actual = ForwardLogits(quantized, fixture.Inputs);
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 2e-4f);

        // Prefill then single-token steps (decode kernel) for a batch of rows.
        int batch = fixture.Inputs.BatchSize, seq = fixture.Inputs.SequenceLength, vocab = fixture.Config.VocabSize;
        using var twinCache = new KvCache(twin, batch);
        using var cache = new KvCache(quantized, batch);
        var prompt = new int[batch * 4];
        for (int b = 0; b < batch; b++) fixture.Inputs.Ids.AsSpan(b * seq, 4).CopyTo(prompt.AsSpan(b * 4));
        var promptBatch = new TokenBatch(prompt, batch, 4);
        AssertClose(twin.Prefill(twinCache, promptBatch), quantized.Prefill(cache, promptBatch));
        var next = new int[batch];
        for (int step = 4; step < seq; step++)
        {
            for (int b = 0; b < batch; b++) next[b] = fixture.Inputs.Ids[b * seq + step];
            AssertClose(twin.DecodeNext(twinCache, next), quantized.DecodeNext(cache, next));
        }
        Assert.Equal(batch * vocab, cache.Logits.Length);
    }

    private static void AssertClose(Tensor expected, Tensor actual)
    {
        for (long i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 2e-4f);
    }

    [Fact]
    public void EveryGenerationModeGivesTheTwinsTokens()
    {
        Int8Kernels.Int8IntegerDecodeOnThisThread = false; // exact twins: float32 activations
        try { EveryGenerationMode(); }
        finally { Int8Kernels.Int8IntegerDecodeOnThisThread = null; }
    }

    private static void EveryGenerationMode()
    {
        var fixture = new ReferenceFixture("tiny-qkvbias");
        using var original = fixture.CreateModel();
        using var quantized = fixture.CreateModel();
        quantized.QuantizeInt8();
        using var twin = DequantizedTwin(quantized, original);
        var prompt = new TokenBatch(fixture.Inputs.Ids.AsSpan(0, 2 * 5).ToArray(), 2, 5);
        GenerationOptions[] modes =
        [
            new() { UseCache = true },
            new() { UseCache = false },
            new() { Temperature = 1.2f, TopK = 40 },
            new() { Temperature = 0.9f, TopP = 0.9f, RepetitionPenalty = 1.3f },
            new() { Temperature = 1f, MinP = 0.05f, FrequencyPenalty = 0.5f, PresencePenalty = 0.3f },
            new() { NumBeams = 3, LengthPenalty = 0.8f },
        ];
        foreach (var options in modes)
        {
            var ids = options.NumBeams > 1 ? TokenBatch.FromSequence(prompt.Ids.AsSpan(0, 5)) : prompt;
            using var a = new TextGenerator(twin, options, new FastRandom(5));
            using var b = new TextGenerator(quantized, options, new FastRandom(5));
            Assert.Equal(a.Generate(ids, 12).Ids, b.Generate(ids, 12).Ids);
        }
        using var streaming = new TextGenerator(quantized);
        using var reference = new TextGenerator(twin);
        Assert.Equal(reference.Stream([1, 2, 3], 10).ToArray(), streaming.Stream([1, 2, 3], 10).ToArray());
    }

    [Fact]
    public void Int8StepsAllocateNothingAfterWarmUp()
    {
        var fixture = new ReferenceFixture("tiny-qkvbias");
        using var model = fixture.CreateModel();
        model.QuantizeInt8();
        using var generator = new TextGenerator(model);
        generator.Generate(TokenBatch.FromSequence([1, 2, 3]), 4);
        using var tokens = generator.Stream([1, 2, 3], 18).GetEnumerator();
        for (int i = 0; i < 3; i++) Assert.True(tokens.MoveNext());
        Allocations.AssertStepsAllocateNothing(() => Assert.True(tokens.MoveNext()), stepsPerWindow: 5);
    }

    [Fact]
    public void AQuantizedModelRefusesToTrain()
    {
        var fixture = new ReferenceFixture("tiny-noqkvbias");
        using var model = fixture.CreateModel();
        model.QuantizeInt8();
        var error = Assert.Throws<InvalidOperationException>(() => model.Forward(fixture.Inputs));
        Assert.Contains("quantized to int8", error.Message);
        error = Assert.Throws<InvalidOperationException>(() => new AdamW(model.Parameters()));
        Assert.Contains("cannot be trained", error.Message);
        // Inference still works.
        Assert.Equal(fixture.Inputs.Ids.Length * fixture.Config.VocabSize, ForwardLogits(model, fixture.Inputs).Length);
    }

    [Fact]
    public void Int8FileRoundTripsAndStreamingLoadQuantizesAlike()
    {
        var fixture = new ReferenceFixture("tiny-qkvbias");
        string floatPath = Path.Combine(_directory, "model.safetensors"), int8Path = Path.Combine(_directory, "int8.safetensors");
        using (var original = fixture.CreateModel()) original.Save(floatPath);
        using var quantized = GptModel.Load(floatPath);
        quantized.QuantizeInt8();
        quantized.Save(int8Path);
        Assert.True(new FileInfo(int8Path).Length < new FileInfo(floatPath).Length / 2);

        using var loaded = GptModel.Load(int8Path);
        using var streamed = GptModel.Load(floatPath, new LoadOptions { Quantization = WeightQuantization.Int8 });
        foreach (var other in new[] { loaded, streamed })
        {
            Assert.True(other.IsQuantized);
            foreach (var (p, q) in quantized.LinearWeights().Zip(other.LinearWeights()))
            {
                Assert.Equal(p.Int8!.ValueSpan.ToArray(), q.Int8!.ValueSpan.ToArray());
                Assert.Equal(p.Int8.ScaleSpan.ToArray(), q.Int8.ScaleSpan.ToArray());
            }
            Assert.Equal(ForwardLogits(quantized, fixture.Inputs), ForwardLogits(other, fixture.Inputs));
        }

        var info = ModelFileInfo.Read(int8Path);
        Assert.Contains("int8", info.Format);
        Assert.Equal(quantized.ParameterCount, info.ParameterCount);
        Assert.Contains(info.Tensors, t => t.Name == "out_head.weight" && t.DType == GptSharp.Formats.TensorDType.I8);
        Assert.Contains(info.Tensors, t => t.Name == "out_head.weight_scale" && t.Shape.SequenceEqual(new[] { 1000, 2 }));
    }

    [Fact]
    public void GptTwoFilesQuantizeWhileLoading()
    {
        // The Hugging Face GPT-2 layout goes through the GPT-2 weight map (fused c_attn split three ways, tied head),
        // as OpenAI's TensorFlow folders do.
        string path = FixturePaths.Get("reference", "tiny-qkvbias-hf", "model.safetensors");
        using var plain = GptModel.Load(path);
        using var streamed = GptModel.Load(path, new LoadOptions { Quantization = WeightQuantization.Int8 });
        Assert.True(streamed.IsQuantized);
        plain.QuantizeInt8();
        foreach (var (p, q) in plain.LinearWeights().Zip(streamed.LinearWeights()))
        {
            Assert.NotNull(q.Int8);
            Assert.Equal(p.Int8!.ValueSpan.ToArray(), q.Int8.ValueSpan.ToArray());
        }
    }

    // ---------------------------------------------------------------- accuracy on The Verdict

    /// <summary>Mean next-token cross-entropy and the greedy (argmax) prediction at every position of stride-ctx windows.</summary>
    private static (double Loss, int[] Greedy) Evaluate(GptModel model, int[] tokens)
    {
        int ctx = model.Config.ContextLength, vocab = model.Config.VocabSize;
        int windows = (tokens.Length - 1) / ctx;
        double loss = 0;
        var greedy = new int[windows * ctx];
        using var noGrad = model.NoGrad();
        for (int w = 0; w < windows; w++)
        {
            var logits = model.Forward(TokenBatch.FromSequence(tokens.AsSpan(w * ctx, ctx))).Span;
            for (int t = 0; t < ctx; t++)
                loss += Score(logits.Slice(t * vocab, vocab), tokens[w * ctx + t + 1], out greedy[w * ctx + t]);
        }
        return (loss / (windows * ctx), greedy);
    }

    /// <summary>The cross-entropy of <paramref name="target"/> under one position's logits, and their argmax.</summary>
    private static double Score(ReadOnlySpan<float> row, int target, out int best)
    {
        best = 0;
        double max = double.NegativeInfinity, sum = 0;
        for (int v = 0; v < row.Length; v++) if (row[v] > max) { max = row[v]; best = v; }
        for (int v = 0; v < row.Length; v++) sum += Math.Exp(row[v] - max);
        return max + Math.Log(sum) - row[target];
    }

    /// <summary>
    /// <see cref="Evaluate"/> through the KV cache, one token at a time for four windows at once: the decode kernels
    /// (≤ 8 rows), where <see cref="Evaluate"/> exercises the prefill kernels.
    /// </summary>
    private static (double Loss, int[] Greedy) EvaluateStepwise(GptModel model, int[] tokens)
    {
        int ctx = model.Config.ContextLength, vocab = model.Config.VocabSize;
        int windows = (tokens.Length - 1) / ctx;
        double loss = 0;
        var greedy = new int[windows * ctx];
        using var noGrad = model.NoGrad();
        for (int first = 0; first < windows; first += 4)
        {
            int batch = Math.Min(4, windows - first);
            using var cache = new KvCache(model, batch);
            var next = new int[batch];
            for (int t = 0; t < ctx; t++)
            {
                for (int b = 0; b < batch; b++) next[b] = tokens[(first + b) * ctx + t];
                var logits = (t == 0 ? model.Prefill(cache, new TokenBatch(next.ToArray(), batch, 1)) : model.DecodeNext(cache, next)).Span;
                for (int b = 0; b < batch; b++)
                {
                    int position = (first + b) * ctx + t;
                    loss += Score(logits.Slice(b * vocab, vocab), tokens[position + 1], out greedy[position]);
                }
            }
        }
        return (loss / (windows * ctx), greedy);
    }

    /// <summary>
    /// The bars for the prefill kernels (<see cref="Evaluate"/>), and for both decode kernels through the KV cache: float32
    /// activations, and int16 activations with integer dot products (where the CPU has AVX-VNNI).
    /// </summary>
    private void AssertAccurate(string what, GptModel float32, GptModel int8, int[] validation)
    {
        var (floatLoss, floatGreedy) = Evaluate(float32, validation);
        var results = new List<(string Path, (double Loss, int[] Greedy) Result)> { ("prefill", Evaluate(int8, validation)) };
        foreach (bool integer in Int8Kernels.Int8IntegerDotSupported ? new[] { false, true } : new[] { false })
        {
            Int8Kernels.Int8IntegerDecodeOnThisThread = integer;
            try { results.Add((integer ? "decode, integer dot" : "decode, float32 activations", EvaluateStepwise(int8, validation))); }
            finally { Int8Kernels.Int8IntegerDecodeOnThisThread = null; }
        }
        foreach (var (path, (int8Loss, int8Greedy)) in results)
        {
            double floatPerplexity = Math.Exp(floatLoss), int8Perplexity = Math.Exp(int8Loss);
            double relative = Math.Abs(int8Perplexity - floatPerplexity) / floatPerplexity;
            double agreement = floatGreedy.Zip(int8Greedy).Count(p => p.First == p.Second) / (double)floatGreedy.Length;
            output.WriteLine($"{what}, {path}: perplexity float32 {floatPerplexity:F4}, int8 {int8Perplexity:F4} ({relative:P3}); greedy agreement {agreement:P2} of {floatGreedy.Length} positions");
        }
        foreach (var (path, (int8Loss, int8Greedy)) in results)
        {
            double relative = Math.Abs(Math.Exp(int8Loss) - Math.Exp(floatLoss)) / Math.Exp(floatLoss);
            double agreement = floatGreedy.Zip(int8Greedy).Count(p => p.First == p.Second) / (double)floatGreedy.Length;
            Assert.True(relative < 0.01, $"{what}, {path}: perplexity {Math.Exp(int8Loss)} vs {Math.Exp(floatLoss)}");
            Assert.True(agreement >= 0.98, $"{what}, {path}: greedy agreement {agreement:P2}");
        }
    }

    private static (int[] Train, int[] Validation) VerdictTokens()
    {
        var (train, validation) = TextCorpus.SplitTrainValidation(TextCorpus.TheVerdict(), 0.9);
        return (Gpt2Tokenizer.Instance.Encode(train), Gpt2Tokenizer.Instance.Encode(validation));
    }

    [Theory]
    [InlineData("tiny-noqkvbias")]
    [InlineData("tiny-qkvbias")]
    public void FixtureModelsKeepTheirPerplexityAndGreedyTokens(string name)
    {
        var fixture = new ReferenceFixture(name);
        // The fixtures have a 1000-token vocabulary: The Verdict's GPT-2 ids folded into it.
        var validation = VerdictTokens().Validation.Select(id => id % fixture.Config.VocabSize).ToArray();
        using var float32 = fixture.CreateModel();
        using var int8 = fixture.CreateModel();
        int8.QuantizeInt8();
        AssertAccurate(name, float32, int8, validation);
    }

    [Fact]
    public void ATrainedModelKeepsItsPerplexityAndGreedyTokens()
    {
        // A small model trained on The Verdict's training share, over its own vocabulary (the distinct GPT-2 ids
        // of the text, renumbered) so that it trains in seconds; evaluated on the validation share.
        var (train, validation) = VerdictTokens();
        var vocabulary = train.Concat(validation).Distinct().Order().Select((id, index) => (id, index)).ToDictionary(p => p.id, p => p.index);
        int[] Renumber(int[] ids) => ids.Select(id => vocabulary[id]).ToArray();
        train = Renumber(train);
        validation = Renumber(validation);
        var config = new GptConfig { VocabSize = vocabulary.Count, ContextLength = 32, EmbeddingDim = 64, Heads = 4, Layers = 2, DropRate = 0f };
        string path = Path.Combine(_directory, "trained.safetensors");
        using (var model = new GptModel(config, new FastRandom(42)))
        {
            using var optimizer = new AdamW(model.Parameters(), lr: 2e-3f, weightDecay: 0.1f);
            var random = new Random(1);
            const int batch = 8;
            var inputs = new int[batch * config.ContextLength];
            var targets = new int[inputs.Length];
            for (int step = 0; step < 150; step++)
            {
                for (int b = 0; b < batch; b++)
                {
                    int start = random.Next(train.Length - config.ContextLength - 1);
                    train.AsSpan(start, config.ContextLength).CopyTo(inputs.AsSpan(b * config.ContextLength));
                    train.AsSpan(start + 1, config.ContextLength).CopyTo(targets.AsSpan(b * config.ContextLength));
                }
                optimizer.ZeroGrad();
                Losses.CrossEntropy(model.Forward(new TokenBatch(inputs, batch, config.ContextLength)), new TokenBatch(targets, batch, config.ContextLength)).Backward();
                optimizer.Step();
            }
            model.Save(path);
        }
        using var float32 = GptModel.Load(path);
        using var int8 = GptModel.Load(path, new LoadOptions { Quantization = WeightQuantization.Int8 });
        AssertAccurate("trained on The Verdict", float32, int8, validation);
    }
}
