using GptSharp.Model;
using static GptSharp.Tests.Checkpoints.CheckpointTestHelpers;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Formats.SafeTensors;
using GptSharp.Formats.PyTorch;

namespace GptSharp.Tests.Checkpoints;

public class ModelStoreTests
{
    private static readonly GptConfig PthConfig = new() { VocabSize = 64, ContextLength = 16, EmbeddingDim = 32, Heads = 4, Layers = 2, DropRate = 0f };

    [Fact]
    public void LoadsEveryFormatAndDetectsHuggingFaceNames()
    {
        using var book = GptModel.Load(FixturePaths.Get("reference", "tiny-qkvbias", "weights.safetensors"));
        using var hf = GptModel.Load(FixturePaths.Get("reference", "tiny-qkvbias-hf", "model.safetensors"));
        AssertSameParameters(book, hf);
        using var pth = ModelStore.Open(FixturePaths.Get("pth", "model_and_optimizer.pth"), new LoadOptions { Config = PthConfig });
        Assert.NotNull(pth.Optimizer);
        Assert.Equal(2, pth.Optimizer!.StepCount);
    }

    [Fact]
    public void RunDirectoryPrefersTheFinalModelThenTheCheckpoint()
    {
        using var dir = new TempDir();
        using var final = RandomModel(Tiny, 1);
        using var midway = RandomModel(Tiny, 2);
        using var optimizer = new AdamW(midway.Parameters());
        TrainingCheckpointFile.Save(dir.File(TrainingCheckpointFile.FileNameFor(1)), midway, optimizer, """{"epoch":0}""");
        using (var fromCheckpoint = ModelStore.Open(dir.Path))
        {
            AssertSameParameters(midway, fromCheckpoint.Model);
            Assert.Equal("""{"epoch":0}""", fromCheckpoint.TrainerStateJson);
        }
        final.Save(dir.File(ModelStore.ModelFileName));
        using var fromModel = GptModel.Load(dir.Path);
        AssertSameParameters(final, fromModel);
    }

    [Fact]
    public void ConvertBetweenAllFormatsPreservesWeights()
    {
        using var dir = new TempDir();
        using var model = RandomModel(Tiny with { QkvBias = true });
        model.Save(dir.File("a.safetensors"));
        string current = dir.File("a.safetensors");
        foreach (var (name, to) in new[] { ("b.pth", (string?)null), ("checkpoint.safetensors", null), ("c.pth", null), ("d.bin", "checkpoint"), ("e.safetensors", "safetensors") })
        {
            string next = dir.File(name);
            using (var loaded = ModelStore.Open(current, new LoadOptions { Config = model.Config }))
                ModelConverter.Write(loaded, next, ModelConverter.ResolveFormat(next, to));
            current = next;
        }
        using var back = GptModel.Load(current);
        Assert.Equal(model.Config, back.Config);
        AssertSameParameters(model, back);
        Assert.Throws<ArgumentException>(() => ModelConverter.ResolveFormat("x.onnx", null));
        Assert.Throws<ArgumentException>(() => ModelConverter.ResolveFormat("x.pth", "tflite"));
    }

    [Fact]
    public void HuggingFacePytorchModelBinLoads()
    {
        using var dir = new TempDir();
        using var book = GptModel.Load(FixturePaths.Get("reference", "tiny-qkvbias", "weights.safetensors"));
        // pytorch_model.bin = a torch.save of the HF state dict: same names as the safetensors twin.
        var tensors = new List<GptSharp.Tensors.Tensor>();
        var dict = new PyDict(ordered: true);
        using (var hf = SafeTensorsFile.Open(FixturePaths.Get("reference", "tiny-qkvbias-hf", "model.safetensors")))
            foreach (var t in hf.Tensors)
            {
                var tensor = GptSharp.Tensors.Tensor.FromArray(hf.ReadFloats(t.Name), t.Shape);
                tensors.Add(tensor);
                dict.Set(t.Name, tensor);
            }
        string path = dir.File("pytorch_model.bin");
        PthModelFile.Write(path, dict);
        foreach (var t in tensors) t.Dispose();
        File.Copy(FixturePaths.Get("reference", "tiny-qkvbias-hf", "config.json"), dir.File("config.json"));
        using var loaded = ModelStore.Open(path);
        Assert.Contains("Hugging Face", loaded.Format);
        AssertSameParameters(book, loaded.Model);
    }

    [Fact]
    public void MissingOrUnknownSpecsGiveClearErrors()
    {
        using var dir = new TempDir();
        Assert.Contains("no such file", Assert.Throws<FileNotFoundException>(() => GptModel.Load(dir.File("nope.safetensors"))).Message);
        Assert.Contains("neither", Assert.Throws<FileNotFoundException>(() => GptModel.Load(dir.Path)).Message);
        File.WriteAllText(dir.File("notes.txt"), "hello world, not a model");
        Assert.Throws<InvalidDataException>(() => GptModel.Load(dir.File("notes.txt")));
    }
}
