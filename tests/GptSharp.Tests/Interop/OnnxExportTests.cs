using GptSharp.Checkpoints;
using GptSharp.Formats.Onnx;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tests.Checkpoints;
using GptSharp.Tests.Model;
using Microsoft.ML.OnnxRuntime;
using GptSharp.Data;

namespace GptSharp.Tests.Interop;

/// <summary>
/// The exported decoder run by the real consumer, ONNX Runtime: logits equal GptSharp's within 1e-4, and a greedy loop
/// that feeds present.N.* back as past_key_values.N.* one token at a time picks GptSharp's tokens.
/// </summary>
public class OnnxExportTests
{
    private const float Tolerance = 1e-4f;

    /// <summary>Null when ONNX Runtime's native library loads here, else why not (the test is then a visible skip).</summary>
    private static readonly Lazy<string?> s_unavailable = new(() =>
    {
        try
        {
            using var options = new SessionOptions();
            return null;
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or EntryPointNotFoundException or BadImageFormatException)
        {
            return $"skipped: ONNX Runtime's native library (Microsoft.ML.OnnxRuntime) did not load: {e.GetBaseException().Message}";
        }
    });

    private static void SkipUnlessOnnxRuntime() => Skip.If(s_unavailable.Value is not null, s_unavailable.Value);

    /// <summary>Runs the decoder on <paramref name="ids"/> [batch, seq] after <paramref name="past"/> (null: nothing cached yet).</summary>
    private sealed class Decoder(string path, GptConfig config) : IDisposable
    {
        private readonly InferenceSession _session = new(path);

        public (float[] Logits, List<(float[] Key, float[] Value)> Present, int Total) Run(long[] ids, int batch, long[] mask, long[] positions,
            List<(float[] Key, float[] Value)>? past, int pastLength)
        {
            int seq = ids.Length / batch, h = config.Heads, d = config.HeadDim;
            var names = new List<string> { "input_ids", "attention_mask", "position_ids" };
            var values = new List<OrtValue>
            {
                OrtValue.CreateTensorValueFromMemory(ids, [batch, seq]),
                OrtValue.CreateTensorValueFromMemory(mask, [batch, pastLength + seq]),
                OrtValue.CreateTensorValueFromMemory(positions, [batch, seq]),
            };
            for (int i = 0; i < config.Layers; i++)
            {
                names.Add($"past_key_values.{i}.key");
                values.Add(OrtValue.CreateTensorValueFromMemory(past?[i].Key ?? [], [batch, h, pastLength, d]));
                names.Add($"past_key_values.{i}.value");
                values.Add(OrtValue.CreateTensorValueFromMemory(past?[i].Value ?? [], [batch, h, pastLength, d]));
            }
            var outputNames = new List<string> { "logits" };
            for (int i = 0; i < config.Layers; i++) outputNames.AddRange([$"present.{i}.key", $"present.{i}.value"]);
            try
            {
                using var runOptions = new RunOptions();
                using var outputs = _session.Run(runOptions, names, values, outputNames);
                var logitsShape = outputs[0].GetTensorTypeAndShape().Shape;
                Assert.Equal([batch, seq, config.VocabSize], logitsShape);
                var present = new List<(float[], float[])>();
                for (int i = 0; i < config.Layers; i++)
                {
                    Assert.Equal([batch, h, pastLength + seq, d], outputs[1 + 2 * i].GetTensorTypeAndShape().Shape);
                    present.Add((outputs[1 + 2 * i].GetTensorDataAsSpan<float>().ToArray(), outputs[2 + 2 * i].GetTensorDataAsSpan<float>().ToArray()));
                }
                return (outputs[0].GetTensorDataAsSpan<float>().ToArray(), present, pastLength + seq);
            }
            finally
            {
                foreach (var v in values) v.Dispose();
            }
        }

        public void Dispose() => _session.Dispose();
    }

    private static string Export(GptModel model, TempDir dir)
    {
        model.Export(dir.Path, new ExportOptions(ModelFileFormat.Onnx));
        return Path.Combine(dir.Path, "onnx", "model.onnx");
    }

    private static float[] GptSharpLogits(GptModel model, TokenBatch ids)
    {
        model.Eval();
        using (model.NoGrad()) return model.Forward(ids).ToArray();
    }

    private static long[] Ones(int n) => Enumerable.Repeat(1L, n).ToArray();

    private static long[] Positions(int batch, int from, int count) =>
        Enumerable.Range(0, batch).SelectMany(_ => Enumerable.Range(from, count).Select(p => (long)p)).ToArray();

    [SkippableTheory]
    [InlineData("tiny-noqkvbias")]
    [InlineData("tiny-qkvbias")]
    public void PromptLogitsMatchGptSharp(string fixture)
    {
        SkipUnlessOnnxRuntime();
        var reference = new ReferenceFixture(fixture);
        using var model = reference.CreateModel();
        model.OutHead.Value.Span[5] -= 0.5f; // an untied head, as the book trains it
        using var dir = new TempDir();
        using var decoder = new Decoder(Export(model, dir), model.Config);
        var inputs = reference.Inputs; // a whole batch: [2, 12] or [3, 20]
        var expected = GptSharpLogits(model, inputs);
        int b = inputs.BatchSize, t = inputs.SequenceLength;
        var (logits, _, _) = decoder.Run(inputs.Ids.Select(i => (long)i).ToArray(), b, Ones(b * t), Positions(b, 0, t), null, 0);
        Assert.True(ReferenceFixture.MaxAbsDiff(expected, logits) < Tolerance, $"max |Δ| = {ReferenceFixture.MaxAbsDiff(expected, logits)}");
        Assert.True(ReferenceFixture.MaxAbs(expected) > 0.1f); // not a trivially small output

        // The same prompt in two pieces (a multi-token step on top of a past) gives the same last logits.
        int first = t / 2;
        var firstIds = new long[b * first];
        var secondIds = new long[b * (t - first)];
        for (int r = 0; r < b; r++)
            for (int p = 0; p < t; p++)
                if (p < first) firstIds[r * first + p] = inputs[r, p];
                else secondIds[r * (t - first) + p - first] = inputs[r, p];
        var (_, present, _) = decoder.Run(firstIds, b, Ones(b * first), Positions(b, 0, first), null, 0);
        var (rest, _, _) = decoder.Run(secondIds, b, Ones(b * t), Positions(b, first, t - first), present, first);
        int v = model.Config.VocabSize;
        for (int r = 0; r < b; r++)
            Assert.True(ReferenceFixture.MaxAbsDiff(expected.AsSpan((r * t + first) * v, (t - first) * v), rest.AsSpan(r * (t - first) * v, (t - first) * v)) < Tolerance);
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void GreedyLoopThroughPresentAndPastPicksGptSharpsTokens(bool qkvBias)
    {
        SkipUnlessOnnxRuntime();
        // Context 48 leaves room for a 6-token prompt and 30 new tokens without sliding the window.
        var config = new GptConfig { VocabSize = 1000, ContextLength = 48, EmbeddingDim = 48, Heads = 3, Layers = 3, DropRate = 0f, QkvBias = qkvBias };
        using var model = CheckpointTestHelpers.RandomModel(config, seed: 27);
        // Larger weights than the initializer's so the greedy path moves between tokens instead of repeating one.
        foreach (var p in model.Parameters()) foreach (ref float w in p.Value.Span) w *= 8f;
        int[] prompt = [5, 17, 300, 42, 999, 0];
        const int newTokens = 30;
        var expected = BookGeneration.GenerateTextSimple(model, TokenBatch.FromSequence(prompt), newTokens, config.ContextLength).Row(0)[prompt.Length..].ToArray();
        Assert.True(expected.Distinct().Count() > 3, $"degenerate greedy path: {string.Join(",", expected)}");

        using var dir = new TempDir();
        using var decoder = new Decoder(Export(model, dir), config);
        var generated = new List<int>();
        var (logits, past, total) = decoder.Run(prompt.Select(i => (long)i).ToArray(), 1, Ones(prompt.Length), Positions(1, 0, prompt.Length), null, 0);
        int next = ArgMax(logits.AsSpan(logits.Length - config.VocabSize));
        for (int step = 0; step < newTokens; step++)
        {
            generated.Add(next);
            if (step == newTokens - 1) break;
            (logits, past, total) = decoder.Run([next], 1, Ones(total + 1), [total], past, total);
            next = ArgMax(logits);
        }
        Assert.Equal(expected, generated);
    }

    [SkippableFact]
    public void LeftPaddedRowMatchesTheUnpaddedRow()
    {
        SkipUnlessOnnxRuntime();
        var reference = new ReferenceFixture("tiny-qkvbias");
        using var model = reference.CreateModel();
        using var dir = new TempDir();
        using var decoder = new Decoder(Export(model, dir), model.Config);
        int[] row = reference.Inputs.Row(0)[..10].ToArray();
        const int pad = 3;
        int t = row.Length + pad;
        // Row 0: three pads then the prompt (mask 0 over the pads, positions counted from the first real token); row 1: the prompt and three more.
        long[] ids = [.. Enumerable.Repeat(0L, pad), .. row.Select(i => (long)i), .. row.Select(i => (long)i), 1, 2, 3];
        long[] mask = [.. Enumerable.Repeat(0L, pad), .. Ones(row.Length), .. Ones(t)];
        long[] positions = [.. Enumerable.Repeat(1L, pad), .. Enumerable.Range(0, row.Length).Select(p => (long)p), .. Enumerable.Range(0, t).Select(p => (long)p)];
        var (logits, _, _) = decoder.Run(ids, 2, mask, positions, null, 0);
        var expected = GptSharpLogits(model, TokenBatch.FromSequence(row));
        int v = model.Config.VocabSize;
        Assert.True(ReferenceFixture.MaxAbsDiff(expected, logits.AsSpan(pad * v, row.Length * v)) < Tolerance);
        Assert.True(ReferenceFixture.MaxAbsDiff(expected, logits.AsSpan(t * v, row.Length * v)) < Tolerance);
    }

    [SkippableFact]
    public void ExternalDataFileIsReadByOnnxRuntime()
    {
        SkipUnlessOnnxRuntime();
        var reference = new ReferenceFixture("tiny-noqkvbias");
        using var model = reference.CreateModel();
        using var dir = new TempDir();
        string path = dir.File("model.onnx");
        Gpt2OnnxDecoder.Write(model, path, externalDataThreshold: 0);
        Assert.True(File.Exists(path + "_data"));
        Assert.True(new FileInfo(path).Length < 64 << 10, "the weights should be in model.onnx_data");
        using var decoder = new Decoder(path, model.Config);
        var inputs = reference.Inputs;
        int b = inputs.BatchSize, t = inputs.SequenceLength;
        var (logits, _, _) = decoder.Run(inputs.Ids.Select(i => (long)i).ToArray(), b, Ones(b * t), Positions(b, 0, t), null, 0);
        Assert.True(ReferenceFixture.MaxAbsDiff(GptSharpLogits(model, inputs), logits) < Tolerance);
    }

    [SkippableFact]
    public void GraphDeclaresOptimumsInterface()
    {
        SkipUnlessOnnxRuntime();
        using var model = new ReferenceFixture("tiny-noqkvbias").CreateModel();
        using var dir = new TempDir();
        using var session = new InferenceSession(Export(model, dir));
        Assert.Equal(["input_ids", "attention_mask", "position_ids", "past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"],
            session.InputNames);
        Assert.Equal(["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"], session.OutputNames);
        Assert.Equal([-1, 4, -1, 8], session.InputMetadata["past_key_values.1.value"].Dimensions);
        Assert.Equal(["batch_size", "", "past_sequence_length", ""], session.InputMetadata["past_key_values.1.value"].SymbolicDimensions);
        Assert.Equal(typeof(long), session.InputMetadata["position_ids"].ElementType);
        Assert.Equal([-1, -1, 1000], session.OutputMetadata["logits"].Dimensions);
        Assert.True(File.Exists(Path.Combine(dir.Path, "config.json")), "the ONNX folder is the Hugging Face folder plus onnx/");
    }

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}
