using GptSharp.Checkpoints;
using GptSharp.Data;
using GptSharp.Formats.Gguf;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tests.Checkpoints;
using GptSharp.Tokenization;
using LLama.Native;
using Xunit.Abstractions;
using GptSharp.Randomness;

namespace GptSharp.Tests.Interop;

/// <summary>
/// The real consumer of our GGUF files: llama.cpp (through LLamaSharp 0.30) loads what <c>model.Export</c> writes and
/// must run the same model, and GptSharp must read what llama.cpp's own quantizer writes. The model is a small one
/// trained here on the bundled verdict (full GPT-2 vocabulary, untied head, no qkv bias: the book's differences from
/// OpenAI's GPT-2), so that greedy choices are decided by real margins, not by ties between random logits.
/// </summary>
public sealed class LlamaCppTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private const int Context = 64;

    private static void SkipUnlessLoadable() =>
        Skip.If(LlamaCpp.Unavailable is not null, $"skipped: llama.cpp (LLamaSharp.Backend.Cpu 0.30) cannot load on this machine: {LlamaCpp.Unavailable}");

    private static readonly Lazy<(GptModel Model, int[] Tokens)> s_trained = new(Train);

    /// <summary>The passage the model learns by heart (the verdict's first tokens): greedy decoding from its start is decided by wide margins.</summary>
    private const int Memorized = 320;

    /// <summary>emb 64, 4 heads, 2 layers, context 64, trained 100 AdamW steps on the verdict's first <see cref="Memorized"/> tokens.</summary>
    private static (GptModel, int[]) Train()
    {
        var config = new GptConfig { VocabSize = Gpt2Tokenizer.VocabSize, ContextLength = Context, EmbeddingDim = 64, Heads = 4, Layers = 2, DropRate = 0f };
        var model = new GptModel(config, new FastRandom(27));
        int[] tokens = Gpt2Tokenizer.Instance.Encode(TextCorpus.TheVerdict());
        using var optimizer = new AdamW(model.Parameters(), lr: 5e-3f, weightDecay: 0.1f);
        var rng = new Random(5);
        const int batch = 4;
        var inputs = new int[batch * Context];
        var targets = new int[batch * Context];
        for (int step = 0; step < 100; step++)
        {
            for (int b = 0; b < batch; b++)
            {
                int at = rng.Next(Memorized - Context - 1);
                tokens.AsSpan(at, Context).CopyTo(inputs.AsSpan(b * Context));
                tokens.AsSpan(at + 1, Context).CopyTo(targets.AsSpan(b * Context));
            }
            optimizer.ZeroGrad();
            Losses.CrossEntropy(model.Forward(new TokenBatch(inputs, batch, Context)), new TokenBatch(targets, batch, Context)).Backward();
            optimizer.Step();
        }
        model.Eval();
        return (model, tokens);
    }

    private string Export(GptModel model, ExportDType dtype, string name)
    {
        string path = _dir.File(name);
        model.Export(path, new ExportOptions(ModelFileFormat.Gguf) { DType = dtype });
        return path;
    }

    /// <summary>GptSharp's greedy decoding through its KV cache (what <c>gptsharp generate</c> runs), with each step's top-2 margin.</summary>
    private static (int[] Ids, float MinMargin) Greedy(GptModel model, int[] prompt, int newTokens)
    {
        using var cache = new KvCache(model);
        var ids = new List<int>();
        float minMargin = float.MaxValue;
        var logits = model.Prefill(cache, prompt).Span.ToArray();
        for (int step = 0; step < newTokens; step++)
        {
            int next = LlamaCpp.ArgMax(logits);
            float best = logits[next];
            logits[next] = float.MinValue;
            minMargin = Math.Min(minMargin, best - logits.Max());
            ids.Add(next);
            logits = model.DecodeNext(cache, next).Span.ToArray();
        }
        return ([.. ids], minMargin);
    }

    private static float[] Logits(GptModel model, int[] ids)
    {
        using (model.NoGrad()) return model.Forward(new TokenBatch(ids, 1, ids.Length)).ToArray();
    }

    private const int NewTokens = 40;

    [SkippableFact]
    public void Float32GreedyIdsAndLogitsMatchLlamaCpp()
    {
        SkipUnlessLoadable();
        var (model, tokens) = s_trained.Value;
        string gguf = Export(model, ExportDType.Float32, "f32.gguf");
        int[] prompt = tokens[..8];
        var (ours, margin) = Greedy(model, prompt, NewTokens);
        using var llama = new LlamaCpp.Session(gguf, Context);
        int[] theirs = llama.Greedy(prompt, NewTokens);
        output.WriteLine($"GptSharp: {Gpt2Tokenizer.Instance.Decode(ours)}");
        output.WriteLine($"llama.cpp: {Gpt2Tokenizer.Instance.Decode(theirs)}");
        output.WriteLine($"smallest top-2 margin of GptSharp's choices: {margin:0.0000}");
        Assert.Equal(ours, theirs);

        // Every position's logits over a full context window.
        int[] window = tokens[100..(100 + Context)];
        llama.Reset();
        var theirLogits = llama.Decode(window, 0, all: true);
        var ourLogits = Logits(model, window);
        int vocab = model.Config.VocabSize;
        double maxDiff = 0, maxAbs = 0;
        for (int t = 0; t < Context; t++)
            for (int v = 0; v < vocab; v++)
            {
                maxDiff = Math.Max(maxDiff, Math.Abs(ourLogits[t * vocab + v] - theirLogits[t][v]));
                maxAbs = Math.Max(maxAbs, Math.Abs(ourLogits[t * vocab + v]));
            }
        output.WriteLine($"largest logit difference over {Context} positions: {maxDiff:0.000000} (largest |logit| {maxAbs:0.00})");
        // llama.cpp's GELU reads an fp16 table and its matmuls sum in another order: ~1e-3 relative, not exact.
        Assert.True(maxDiff < 2e-3 * Math.Max(1, maxAbs), $"logits differ by {maxDiff}");
    }

    [SkippableFact]
    public void Float16GreedyIdsMatchLlamaCpp()
    {
        SkipUnlessLoadable();
        var (model, tokens) = s_trained.Value;
        string gguf = Export(model, ExportDType.Float16, "f16.gguf");
        int[] prompt = tokens[..8];
        // Both engines run the fp16-rounded weights: GptSharp reads them back from the same file.
        using var rounded = GptModel.Load(gguf);
        var (ours, margin) = Greedy(rounded, prompt, NewTokens);
        using var llama = new LlamaCpp.Session(gguf, Context);
        int[] theirs = llama.Greedy(prompt, NewTokens);
        output.WriteLine($"smallest top-2 margin: {margin:0.0000}; same ids as the float32 model: {ours.SequenceEqual(Greedy(model, prompt, NewTokens).Ids)}");
        Assert.Equal(ours, theirs);
    }

    /// <summary>exp(mean negative log-likelihood) of each next token over non-overlapping windows.</summary>
    private static double Perplexity(Func<int[], float[][]> logitsOf, int[] tokens, int windows, int vocab)
    {
        double nll = 0;
        int count = 0;
        for (int w = 0; w < windows; w++)
        {
            int[] ids = tokens[(w * Context)..((w + 1) * Context + 1)];
            var logits = logitsOf(ids[..Context]);
            for (int t = 0; t < Context; t++)
            {
                var row = logits[t];
                double max = row.Max(), sum = 0;
                foreach (float x in row) sum += Math.Exp(x - max);
                nll += max + Math.Log(sum) - row[ids[t + 1]];
                count++;
            }
        }
        return Math.Exp(nll / count);
    }

    private static float[][] Rows(float[] flat, int vocab) => Enumerable.Range(0, flat.Length / vocab).Select(t => flat.AsSpan(t * vocab, vocab).ToArray()).ToArray();

    [SkippableFact]
    public void Q8_0PerplexityIsWithinOnePercentOfFloat32()
    {
        SkipUnlessLoadable();
        var (model, tokens) = s_trained.Value;
        int vocab = model.Config.VocabSize, windows = 12;
        string f32 = Export(model, ExportDType.Float32, "f32.gguf"), q8 = Export(model, ExportDType.Q8_0, "q8.gguf");
        double llamaF32, llamaQ8;
        using (var llama = new LlamaCpp.Session(f32, Context))
            llamaF32 = Perplexity(ids => { llama.Reset(); return llama.Decode(ids, 0, all: true); }, tokens, windows, vocab);
        using (var llama = new LlamaCpp.Session(q8, Context))
            llamaQ8 = Perplexity(ids => { llama.Reset(); return llama.Decode(ids, 0, all: true); }, tokens, windows, vocab);
        double ours = Perplexity(ids => Rows(Logits(model, ids), vocab), tokens, windows, vocab);
        using var int8 = GptModel.Load(q8, new LoadOptions { Quantization = WeightQuantization.Int8 });
        double oursQ8 = Perplexity(ids => Rows(Logits(int8, ids), vocab), tokens, windows, vocab);
        output.WriteLine($"perplexity over {windows * Context} tokens: llama.cpp f32 {llamaF32:0.0000}, q8_0 {llamaQ8:0.0000}; GptSharp f32 {ours:0.0000}, int8 from the q8_0 file {oursQ8:0.0000}");
        Assert.InRange(llamaQ8 / llamaF32, 0.99, 1.01);
        Assert.InRange(ours / llamaF32, 0.999, 1.001);
        Assert.InRange(oursQ8 / llamaQ8, 0.99, 1.01);
    }

    public static TheoryData<LLamaFtype, double> LlamaQuantizations => new()
    {
        // (type, largest |GptSharp − llama.cpp| logit difference allowed on the same file, relative to the logits' range)
        { LLamaFtype.MOSTLY_Q8_0, 0.01 },
        { LLamaFtype.MOSTLY_Q4_0, 0.03 },
        { LLamaFtype.MOSTLY_Q5_1, 0.03 },
        { LLamaFtype.MOSTLY_Q4_K_M, 0.03 },
        { LLamaFtype.MOSTLY_Q6_K, 0.02 },
    };

    /// <summary>
    /// llama.cpp's own quantizer writes the file; GptSharp dequantizes it and must compute what llama.cpp computes from
    /// it (llama.cpp also rounds the activations to 8 bits for quantized matmuls: hence a tolerance), close to float32.
    /// Width 256 so that the k-quants (blocks of 256) apply to every matrix.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(LlamaQuantizations))]
    public void LlamaCppQuantizedFilesLoadWithLogitsCloseToFloat32(LLamaFtype type, double tolerance)
    {
        SkipUnlessLoadable();
        var config = new GptConfig { VocabSize = Gpt2Tokenizer.VocabSize, ContextLength = 32, EmbeddingDim = 256, Heads = 4, Layers = 1, DropRate = 0f };
        using var model = new GptModel(config, new FastRandom(31));
        model.Eval();
        string f32 = Export(model, ExportDType.Float32, "random.gguf");
        string quantized = _dir.File($"{type}.gguf");
        LlamaCpp.Quantize(f32, quantized, type);
        using (var file = GgufFile.Open(quantized))
            output.WriteLine($"{type}: {string.Join(", ", file.Tensors.GroupBy(t => GgmlTypes.Name(t.Type)).Select(g => $"{g.Count()} {g.Key}"))}");

        int[] ids = Gpt2Tokenizer.Instance.Encode("Every effort moves you forward, said the painter to")[..10];
        using var ours = GptModel.Load(quantized);
        float[] oursLogits = Logits(ours, ids), exact = Logits(model, ids);
        float[][] theirs;
        using (var llama = new LlamaCpp.Session(quantized, 32)) theirs = llama.Decode(ids, 0, all: true);
        int vocab = config.VocabSize;
        double diff = 0, range = exact.Max() - exact.Min(), error = 0, norm = 0;
        for (int t = 0; t < ids.Length; t++)
            for (int v = 0; v < vocab; v++)
            {
                float o = oursLogits[t * vocab + v];
                diff = Math.Max(diff, Math.Abs(o - theirs[t][v]));
                error += (o - exact[t * vocab + v]) * (double)(o - exact[t * vocab + v]);
                norm += exact[t * vocab + v] * (double)exact[t * vocab + v];
            }
        double relative = Math.Sqrt(error / norm);
        output.WriteLine($"{type}: largest |GptSharp − llama.cpp| {diff:0.00000} (logit range {range:0.000}); GptSharp vs float32: relative RMS error {relative:0.0000}");
        Assert.True(diff <= tolerance * range, $"{type}: GptSharp and llama.cpp differ by {diff} on the same file");
        Assert.True(relative < (type == LLamaFtype.MOSTLY_Q8_0 ? 0.01 : 0.1), $"{type}: {relative} from float32");
    }
}
