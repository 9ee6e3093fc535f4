using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.IO;
using static GptSharp.Tests.Checkpoints.CheckpointTestHelpers;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Formats.SafeTensors;
using GptSharp.Formats.PyTorch;

namespace GptSharp.Tests.Checkpoints;

public class ModelFileTests
{
    [Fact]
    public void SaveThenLoadGivesTheSameConfigAndWeights()
    {
        using var dir = new TempDir();
        var config = Tiny with { QkvBias = true, DropRate = 0.1f };
        using var model = RandomModel(config);
        string path = dir.File("model.safetensors");
        model.Save(path);
        using var loaded = GptModel.Load(path); // = GptModel.Load(path)
        Assert.Equal(config, loaded.Config);
        AssertSameParameters(model, loaded);

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal(model.Parameters().Select(p => p.Name), file.Tensors.Select(t => t.Name));
    }

    [Fact]
    public void SaveToAPthPathWritesTheBooksStateDictAndLoadsBack()
    {
        using var dir = new TempDir();
        var config = Tiny with { QkvBias = true };
        using var model = RandomModel(config);
        string path = dir.File("model.pth");
        model.Save(path);
        using (var pth = PthFile.Open(path)) Assert.NotNull(pth.StateDict().Find("trf_blocks.0.att.mask")); // the book's strict load_state_dict needs the buffers
        using var loaded = GptModel.Load(path, new LoadOptions { Config = config });
        Assert.Equal(config, loaded.Config);
        AssertSameParameters(model, loaded);

        model.QuantizeInt8();
        var e = Assert.Throws<ArgumentException>(() => model.Save(dir.File("int8.pth")));
        Assert.Contains("int8", e.Message);
        Assert.False(File.Exists(dir.File("int8.pth")));
    }

    [Fact]
    public void LoadsTheBookNamedReferenceFixtureWithConfigBesideIt()
    {
        using var model = ModelFile.Load(FixturePaths.Get("reference", "tiny-qkvbias", "weights.safetensors"));
        Assert.Equal(new GptConfig { VocabSize = 1000, ContextLength = 24, EmbeddingDim = 48, Heads = 3, Layers = 3, DropRate = 0f, QkvBias = true }, model.Config);
        using var file = SafeTensorsFile.Open(FixturePaths.Get("reference", "tiny-qkvbias", "weights.safetensors"));
        foreach (var p in model.Parameters())
            Assert.Equal(file.ReadFloats(p.Name), p.Value.ToArray());
    }

    [Fact]
    public void ShapeMismatchNamesTheTensorAndBothShapes()
    {
        using var dir = new TempDir();
        using var model = RandomModel(Tiny);
        string path = dir.File("m.safetensors");
        model.Save(path);
        using var other = new GptModel(Tiny with { VocabSize = 51 });
        var e = Assert.Throws<InvalidDataException>(() => other.LoadInto(path));
        Assert.Equal($"{path}: shape mismatch for 'tok_emb.weight': the file has [50, 16], the model expects [51, 16].", e.Message);
        Assert.All(other.TokenEmbedding.Value.ToArray(), v => Assert.Equal(0f, v)); // nothing loaded
    }

    [Fact]
    public void MissingAndUnexpectedTensorsAreNamed()
    {
        using var dir = new TempDir();
        using var model = RandomModel(Tiny);
        string missing = dir.File("missing.safetensors");
        SafeTensorsWriter.Write(missing, model.Parameters().Where(p => p.Name != "final_norm.shift").Select(p => SafeTensorsEntry.Float32(p.Name, p.Value)));
        var e = Assert.Throws<InvalidDataException>(() => model.LoadInto(missing));
        Assert.Contains("missing tensor 'final_norm.shift' (the model expects shape [16])", e.Message);

        using var extra = new Tensor(3);
        string unexpected = dir.File("unexpected.safetensors");
        SafeTensorsWriter.Write(unexpected, model.Parameters().Select(p => SafeTensorsEntry.Float32(p.Name, p.Value)).Append(SafeTensorsEntry.Float32("trf_blocks.0.att.W_query.bias", extra)));
        e = Assert.Throws<InvalidDataException>(() => model.LoadInto(unexpected));
        Assert.Contains("unexpected tensor 'trf_blocks.0.att.W_query.bias' [3]", e.Message);
    }

    [Fact]
    public void MaskBuffersAreSkipped()
    {
        using var dir = new TempDir();
        using var model = RandomModel(Tiny);
        using var mask = new Tensor(8, 8);
        string path = dir.File("with-mask.safetensors");
        SafeTensorsWriter.Write(path, model.Parameters().Select(p => SafeTensorsEntry.Float32(p.Name, p.Value)).Append(SafeTensorsEntry.Float32("trf_blocks.1.att.mask", mask)));
        using var loaded = new GptModel(Tiny);
        loaded.LoadInto(path);
        AssertSameParameters(model, loaded);
    }

    [Fact]
    public void ConfigIsInferredFromShapesWhenNoMetadata()
    {
        using var dir = new TempDir();
        var config = new GptConfig { VocabSize = 30, ContextLength = 6, EmbeddingDim = 64, Heads = 1, Layers = 3, QkvBias = true };
        using var model = RandomModel(config);
        string path = dir.File("plain.safetensors");
        SafeTensorsWriter.Write(path, model.Parameters().Select(p => SafeTensorsEntry.Float32(p.Name, p.Value)));
        using var loaded = ModelFile.Load(path);
        Assert.Equal(config with { DropRate = loaded.Config.DropRate }, loaded.Config);
        AssertSameParameters(model, loaded);
    }

    [Fact]
    public void FailedSaveLeavesThePreviousModelFile()
    {
        using var dir = new TempDir();
        string path = dir.File("model.safetensors");
        using var first = RandomModel(Tiny, seed: 1);
        first.Save(path);
        using var second = RandomModel(Tiny, seed: 2);
        AtomicFile.WrapStreamForTests.Value = s => new FailingStream(s, 5000);
        try
        {
            Assert.Throws<IOException>(() => second.Save(path));
        }
        finally
        {
            AtomicFile.WrapStreamForTests.Value = null;
        }
        using var loaded = ModelFile.Load(path);
        AssertSameParameters(first, loaded);
        Assert.Single(Directory.GetFiles(dir.Path));
    }
}

public class ConfigJsonTests
{
    [Fact]
    public void ReadsBookHuggingFaceAndRunDirectoryConfigs()
    {
        var book = new GptConfig { VocabSize = 100, ContextLength = 12, EmbeddingDim = 24, Heads = 3, Layers = 2, DropRate = 0.1f, QkvBias = true };
        string json = book.ToJson();
        Assert.Contains("\"drop_rate\":0.1,", json);
        Assert.Equal(book, GptConfig.FromJson(json, "c.json"));
        Assert.Equal(book, GptConfig.FromJson("{\"model\": " + json + ", \"training\": {\"epochs\": 10}}", "run/config.json"));
        var hf = GptConfig.FromJson(File.ReadAllText(FixturePaths.Get("reference", "tiny-qkvbias-hf", "config.json")), "hf.json");
        Assert.Equal(new GptConfig { VocabSize = 1000, ContextLength = 24, EmbeddingDim = 48, Heads = 3, Layers = 3, DropRate = 0f, QkvBias = true }, hf);
        Assert.Contains("neither", Assert.Throws<InvalidDataException>(() => GptConfig.FromJson("""{"x": 1}""", "bad.json")).Message);
        Assert.Contains("n_heads", Assert.Throws<InvalidDataException>(() => GptConfig.FromJson("""{"vocab_size":1,"context_length":1,"emb_dim":4}""", "bad.json")).Message);
        Assert.Contains("divisible", Assert.Throws<InvalidDataException>(() => GptConfig.FromJson("""{"vocab_size":1,"context_length":1,"emb_dim":4,"n_heads":3,"n_layers":1}""", "bad.json")).Message);
        Assert.Contains("not valid JSON", Assert.Throws<InvalidDataException>(() => GptConfig.FromJson("{", "bad.json")).Message);
    }
}
