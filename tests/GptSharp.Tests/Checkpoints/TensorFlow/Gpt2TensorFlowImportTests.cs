using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Pretrained;
using GptSharp.Formats.TensorFlow;
using GptSharp.Randomness;
using GptSharp.Data;
using GptSharp.Checkpoints.Gpt2;

namespace GptSharp.Tests.Checkpoints.TensorFlow;

public class Gpt2TensorFlowImportTests
{
    private static readonly GptConfig Tiny = new() { VocabSize = 50, ContextLength = 8, EmbeddingDim = 8, Heads = 2, Layers = 2, QkvBias = true };

    [Fact]
    public void RealGpt2IndexMapsOntoGpt2SmallWithNothingMissingOrExtra()
    {
        string dir = FixturePaths.Get("tf", "gpt2-124M");
        var config = Gpt2TensorFlowImport.ReadConfig(dir);
        Assert.Equal(GptConfig.Gpt2Small with { QkvBias = true }, config);
        Assert.Equal(1024, config.ContextLength);
        Assert.EndsWith("model.ckpt", Gpt2TensorFlowImport.FindPrefix(dir));

        using var bundle = TensorBundleReader.Open(Gpt2TensorFlowImport.FindPrefix(dir));
        var expected = Gpt2TensorFlowImport.ExpectedTensors(config);
        Assert.Equal(148, expected.Count);
        Assert.Equal(expected.Keys, bundle.Entries.Select(e => e.Name)); // same sorted order as the index
        foreach (var e in bundle.Entries)
        {
            Assert.Equal(expected[e.Name], e.Shape);
            Assert.Equal(TfDataType.Float, e.DType);
        }
        Gpt2TensorFlowImport.CheckTensors(bundle, config);

        // The checkpoint's parameters are the book's model minus the tied head.
        long checkpointElements = bundle.Entries.Sum(e => e.ElementCount);
        Assert.Equal(config.ParameterCount - (long)config.VocabSize * config.EmbeddingDim, checkpointElements);

        // Only the 497 MB shard is absent: reported before any model is allocated.
        var ex = Assert.Throws<FileNotFoundException>(() => Gpt2TensorFlowImport.Load(dir));
        Assert.Contains("model.ckpt.data-00000-of-00001", ex.Message);
    }

    [Fact]
    public void InspectReadsTheRealIndexWithoutTheDataShard()
    {
        var info = GptSharp.Checkpoints.ModelFileInfo.Read(FixturePaths.Get("tf", "gpt2-124M"));
        Assert.Equal("OpenAI GPT-2 TensorFlow checkpoint", info.Format);
        Assert.Equal(148, info.Tensors.Count);
        Assert.Equal(124_439_808L, info.ParameterCount); // GPT-2 small's official count (tied head counted once)
        Assert.Equal(GptConfig.Gpt2Small with { QkvBias = true }, info.Config);
        Assert.Equal("497,759,232", info.Metadata["data bytes"]);
    }

    [Theory]
    [InlineData(262144, false, 4 << 20)] // TensorFlow's defaults: one uncompressed block
    [InlineData(64, true, 100)]         // many Snappy blocks; one source row per transpose chunk
    [InlineData(200, false, 1000)]      // chunks of 10 rows: not a multiple of the transpose block
    public void SyntheticCheckpointLoadsTheSourceWeightsExactly(int blockSize, bool snappy, int scratchBytes)
    {
        using var source = new GptModel(Tiny, new FastRandom(7));
        source.OutHead.Value.CopyFrom(source.TokenEmbedding.Value); // GPT-2 ties the head
        string dir = WriteOpenAiCheckpoint(source, blockSize, snappy);
        try
        {
            using var bundle = TensorBundleReader.Open(Gpt2TensorFlowImport.FindPrefix(dir));
            Assert.Equal(Gpt2TensorFlowImport.ExpectedTensors(Tiny).Keys, bundle.Entries.Select(e => e.Name));
            using var loaded = new GptModel(Gpt2TensorFlowImport.ReadConfig(dir));
            Assert.Equal(Tiny, loaded.Config);
            Gpt2TensorFlowImport.LoadWeightsIntoGpt(loaded, bundle, scratchBytes);
            AssertSameWeights(source, loaded);

            using var viaLoad = Gpt2TensorFlowImport.Load(dir);
            AssertSameWeights(source, viaLoad);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void LoadedCheckpointGivesTheLogitsOfTheSameWeightsLoadedDirectly()
    {
        var config = Tiny with { VocabSize = 64, ContextLength = 16, EmbeddingDim = 16, Heads = 4, Layers = 3 };
        using var source = new GptModel(config, new FastRandom(11));
        source.OutHead.Value.CopyFrom(source.TokenEmbedding.Value);
        string dir = WriteOpenAiCheckpoint(source, 512, true);
        try
        {
            using var loaded = Gpt2TensorFlowImport.Load(dir);
            int[] ids = [3, 17, 42, 0, 63, 8, 8, 21, 5, 60, 1, 2];
            var batch = new TokenBatch([.. ids, .. ids.Reverse()], 2, ids.Length);
            source.Eval();
            loaded.Eval();
            using (source.NoGrad())
            using (loaded.NoGrad())
            {
                var expected = source.Forward(batch).ToArray();
                var actual = loaded.Forward(batch).ToArray();
                Assert.Equal(2 * ids.Length * config.VocabSize, actual.Length);
                Assert.Equal(expected, actual);
                Assert.Contains(actual, v => v != 0f);
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void ShapeMismatchAndMissingTensorsAreClearErrors()
    {
        using var source = new GptModel(Tiny, new FastRandom(1));
        string dir = WriteOpenAiCheckpoint(source, 262144, false);
        try
        {
            File.WriteAllText(Path.Combine(dir, "hparams.json"), """{"n_vocab": 50, "n_ctx": 16, "n_embd": 8, "n_head": 2, "n_layer": 2}""");
            var ex = Assert.Throws<InvalidDataException>(() => Gpt2TensorFlowImport.Load(dir));
            Assert.Contains("model.ckpt.index", ex.Message);
            Assert.Contains("shape mismatch for tensor 'model/wpe'. Left: [16, 8] (from hparams.json), Right: [8, 8] (checkpoint)", ex.Message);

            File.WriteAllText(Path.Combine(dir, "hparams.json"), """{"n_vocab": 50, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 3}""");
            ex = Assert.Throws<InvalidDataException>(() => Gpt2TensorFlowImport.Load(dir));
            Assert.Contains("tensor 'model/h2/attn/c_attn/b' is missing", ex.Message);

            File.WriteAllText(Path.Combine(dir, "hparams.json"), """{"n_vocab": 50, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 1}""");
            ex = Assert.Throws<InvalidDataException>(() => Gpt2TensorFlowImport.Load(dir));
            Assert.Contains("unexpected tensor 'model/h1/attn/c_attn/b'", ex.Message);

            File.WriteAllText(Path.Combine(dir, "hparams.json"), """{"n_vocab": 50, "n_ctx": 8, "n_embd": 8}""");
            ex = Assert.Throws<InvalidDataException>(() => Gpt2TensorFlowImport.Load(dir));
            Assert.Contains("hparams.json: config has no 'n_head'", ex.Message);

            File.WriteAllText(Path.Combine(dir, "hparams.json"), """{"n_vocab": 50, "n_ctx": 8, "n_embd": 8, "n_head": 3, "n_layer": 2}""");
            ex = Assert.Throws<InvalidDataException>(() => Gpt2TensorFlowImport.Load(dir));
            Assert.Contains("divisible", ex.Message);

            File.WriteAllText(Path.Combine(dir, "hparams.json"), """{"n_vocab": 50, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 2}""");
            string data = Path.Combine(dir, "model.ckpt.data-00000-of-00001");
            var bytes = File.ReadAllBytes(data);
            bytes[bytes.Length / 2] ^= 0x20;
            File.WriteAllBytes(data, bytes);
            ex = Assert.Throws<InvalidDataException>(() => Gpt2TensorFlowImport.Load(dir));
            Assert.Contains("checksum mismatch in tensor", ex.Message);

            File.WriteAllBytes(data, bytes[..(bytes.Length - 4)]);
            ex = Assert.Throws<InvalidDataException>(() => Gpt2TensorFlowImport.Load(dir));
            Assert.Contains("truncated data shard", ex.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void CheckpointFileNamesThePrefix()
    {
        using var source = new GptModel(Tiny, new FastRandom(3));
        string dir = WriteOpenAiCheckpoint(source, 262144, false, prefixName: "other.ckpt");
        try
        {
            File.WriteAllText(Path.Combine(dir, "checkpoint"), "model_checkpoint_path: \"other.ckpt\"\nall_model_checkpoint_paths: \"other.ckpt\"\n");
            Assert.Equal(Path.Combine(dir, "other.ckpt"), Gpt2TensorFlowImport.FindPrefix(dir));
            // An absolute path from the machine that wrote it falls back to the default name.
            File.WriteAllText(Path.Combine(dir, "checkpoint"), "model_checkpoint_path: \"/elsewhere/other.ckpt\"\n");
            Assert.Equal(Path.Combine(dir, "model.ckpt"), Gpt2TensorFlowImport.FindPrefix(dir));
            File.WriteAllText(Path.Combine(dir, "checkpoint"), "model_checkpoint_path: \"other.ckpt\"\n");
            using var model = Gpt2TensorFlowImport.Load(dir);
            Assert.Equal(source.TokenEmbedding.Value.ToArray(), model.TokenEmbedding.Value.ToArray());
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    internal static void AssertSameWeights(GptModel expected, GptModel actual)
    {
        var a = expected.StateDict();
        var b = actual.StateDict();
        Assert.Equal(a.Keys, b.Keys);
        foreach (var (name, tensor) in a)
        {
            Assert.True(tensor.SameShape(b[name]), name);
            Assert.True(tensor.Span.SequenceEqual(b[name].Span), $"{name} differs");
        }
    }

    /// <summary>Writes <paramref name="model"/> as OpenAI's GPT-2 checkpoint folder (names, Conv1D [1, in, out] layout, fused c_attn).</summary>
    internal static string WriteOpenAiCheckpoint(GptModel model, int blockSize, bool snappy, string prefixName = "model.ckpt")
    {
        var c = model.Config;
        int e = c.EmbeddingDim;
        var tensors = new Dictionary<string, (long[], float[])>
        {
            ["model/wte"] = ([c.VocabSize, e], model.TokenEmbedding.Value.ToArray()),
            ["model/wpe"] = ([c.ContextLength, e], model.PositionEmbedding.Value.ToArray()),
            ["model/ln_f/g"] = ([e], model.FinalNorm.Scale.Value.ToArray()),
            ["model/ln_f/b"] = ([e], model.FinalNorm.Shift.Value.ToArray()),
        };
        for (int i = 0; i < c.Layers; i++)
        {
            var b = model.Blocks[i];
            string p = $"model/h{i}/";
            var w = new float[e * 3 * e];
            var parts = new[] { b.Query, b.Key, b.Value };
            for (int part = 0; part < 3; part++)
                for (int o = 0; o < e; o++)
                    for (int inp = 0; inp < e; inp++)
                        w[inp * 3 * e + part * e + o] = parts[part].Weight.Value[o, inp];
            tensors[p + "attn/c_attn/w"] = ([1, e, 3 * e], w);
            tensors[p + "attn/c_attn/b"] = ([3 * e], [.. b.Query.Bias!.Value.ToArray(), .. b.Key.Bias!.Value.ToArray(), .. b.Value.Bias!.Value.ToArray()]);
            tensors[p + "attn/c_proj/w"] = ([1, e, e], Transpose(b.OutProj.Weight.Value));
            tensors[p + "attn/c_proj/b"] = ([e], b.OutProj.Bias!.Value.ToArray());
            tensors[p + "mlp/c_fc/w"] = ([1, e, c.HiddenDim], Transpose(b.FeedForwardIn.Weight.Value));
            tensors[p + "mlp/c_fc/b"] = ([c.HiddenDim], b.FeedForwardIn.Bias!.Value.ToArray());
            tensors[p + "mlp/c_proj/w"] = ([1, c.HiddenDim, e], Transpose(b.FeedForwardOut.Weight.Value));
            tensors[p + "mlp/c_proj/b"] = ([e], b.FeedForwardOut.Bias!.Value.ToArray());
            tensors[p + "ln_1/g"] = ([e], b.Norm1.Scale.Value.ToArray());
            tensors[p + "ln_1/b"] = ([e], b.Norm1.Shift.Value.ToArray());
            tensors[p + "ln_2/g"] = ([e], b.Norm2.Scale.Value.ToArray());
            tensors[p + "ln_2/b"] = ([e], b.Norm2.Shift.Value.ToArray());
        }
        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-gpt2-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        TfBundleWriter.Write(Path.Combine(dir, prefixName), tensors, blockSize, snappy);
        File.WriteAllText(Path.Combine(dir, "hparams.json"),
            $"{{\"n_vocab\": {c.VocabSize}, \"n_ctx\": {c.ContextLength}, \"n_embd\": {e}, \"n_head\": {c.Heads}, \"n_layer\": {c.Layers}}}\n");
        return dir;
    }

    /// <summary>nn.Linear [out, in] → Conv1D [in, out].</summary>
    private static float[] Transpose(Tensor weight)
    {
        int rows = weight.Size(0), cols = weight.Size(1);
        var t = new float[rows * cols];
        for (int r = 0; r < rows; r++)
            for (int col = 0; col < cols; col++)
                t[col * rows + r] = weight[r, col];
        return t;
    }
}
