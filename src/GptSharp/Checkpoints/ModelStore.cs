using GptSharp.Model;
using GptSharp.Formats;
using GptSharp.Pretrained;
using GptSharp.Formats.Gguf;
using GptSharp.Formats.SafeTensors;
using GptSharp.Formats.PyTorch;
using GptSharp.Checkpoints.Gpt2;

namespace GptSharp.Checkpoints;

/// <summary>
/// A model read from any supported file, with the optimizer when the file has one; from a training checkpoint also its
/// whole <c>__metadata__</c> (<see cref="CheckpointMetadata"/>: trainer state, run configuration, generator state), so that
/// <c>convert</c> can write a checkpoint that still resumes.
/// </summary>
internal sealed record LoadedModel(GptModel Model, AdamW? Optimizer, IReadOnlyDictionary<string, string>? CheckpointMetadata, string Format) : IDisposable
{
    /// <summary>The training loop's state (JSON) when the file is a training checkpoint.</summary>
    public string? TrainerStateJson => CheckpointMetadata?.GetValueOrDefault(TrainingCheckpointFile.TrainerStateKey);

    /// <summary>Disposes the optimizer; the model is disposed too unless <paramref name="keepModel"/>.</summary>
    public void Dispose(bool keepModel)
    {
        Optimizer?.Dispose();
        if (!keepModel) Model.Dispose();
    }

    public void Dispose() => Dispose(keepModel: false);
}

/// <summary>
/// One place that turns a model "spec" into a <see cref="GptModel"/>: a GptSharp model file, a Hugging Face GPT-2
/// folder or <c>model.safetensors</c>, a PyTorch <c>.pth</c> (book or Hugging Face names), a training checkpoint, or a run
/// directory (the newer of its <see cref="ModelFileName"/> and its latest complete training checkpoint).
/// Formats are tried in the order of <see cref="Sources"/>; add a line there for a new one.
/// </summary>
internal static class ModelStore
{
    /// <summary>The final model's file name in a run directory (the training checkpoints are <c>checkpoint-&lt;steps&gt;.safetensors</c>).</summary>
    public const string ModelFileName = "model.safetensors";

    /// <summary>A format: what it is called, whether a spec is one, and how to load it.</summary>
    public sealed record Source(string Description, Func<string, bool> Matches, Func<string, LoadOptions, LoadedModel> Load);

    /// <summary>The formats, most specific first.</summary>
    public static IReadOnlyList<Source> Sources { get; } =
    [
        new("OpenAI GPT-2 folder (hparams.json + model.ckpt.index/.data)", Gpt2TensorFlowImport.IsOpenAiFolder, LoadTensorFlow),
        new("Hugging Face GPT-2 folder (config.json + model.safetensors or pytorch_model.bin)", HuggingFaceFolder.IsFolder, LoadHuggingFaceFolder),
        new("run directory (model.safetensors or checkpoint-<steps>.safetensors)", IsRunDirectory, LoadRunDirectory),
        new("GGUF of architecture gpt2 (llama.cpp)", IsGgufFile, LoadGguf),
        new("PyTorch .pth (zip)", IsZipFile, LoadPth),
        new("safetensors (GptSharp model, training checkpoint or Hugging Face GPT-2)", IsSafeTensorsFile, LoadSafeTensors),
    ];

    /// <summary>Loads just the model named by <paramref name="spec"/> (<c>GptModel.Load</c>).</summary>
    public static GptModel Load(string spec, LoadOptions options)
    {
        var loaded = Open(spec, options);
        loaded.Dispose(keepModel: true);
        // The formats that are read whole (training checkpoints, book-named .pth) are quantized here.
        if (options.Quantization == WeightQuantization.Int8) loaded.Model.QuantizeInt8();
        return loaded.Model;
    }

    /// <summary>Loads the model and, when the file has them, the optimizer and trainer state.</summary>
    public static LoadedModel Open(string spec, LoadOptions? options = null)
    {
        options ??= new LoadOptions();
        // gpt2-small|gpt2-medium|gpt2-large|gpt2-xl (124M, 355M, 774M, 1558M): OpenAI's weights in the download cache.
        spec = Gpt2Models.TryResolveCached(spec) ?? spec;
        if (!File.Exists(spec) && !Directory.Exists(spec))
            throw new FileNotFoundException($"{spec}: no such file or directory (expected a .safetensors, .pth or .gguf file, a training checkpoint, a run directory, "
                + "an OpenAI GPT-2 folder, or gpt2-small|gpt2-medium|gpt2-large|gpt2-xl).", spec);
        foreach (var source in Sources)
            if (source.Matches(spec))
                return source.Load(spec, options);
        throw new InvalidDataException($"{spec}: not a recognized model (supported: {string.Join("; ", Sources.Select(s => s.Description))}).");
    }

    private static bool Int8(LoadOptions options) => options.Quantization == WeightQuantization.Int8;

    private static LoadedModel LoadTensorFlow(string dir, LoadOptions options) =>
        new(Gpt2TensorFlowImport.Load(dir, options.Config, Int8(options)), null, null, "TensorFlow checkpoint (OpenAI GPT-2)");

    private static LoadedModel LoadHuggingFaceFolder(string dir, LoadOptions options)
    {
        string weights = HuggingFaceFolder.WeightsPath(dir);
        var loaded = weights.EndsWith(".safetensors", StringComparison.Ordinal) ? LoadSafeTensors(weights, options) : LoadPth(weights, options);
        return loaded with { Format = "Hugging Face GPT-2 folder" };
    }

    private static bool IsRunDirectory(string spec) => Directory.Exists(spec);

    private static LoadedModel LoadRunDirectory(string dir, LoadOptions options)
    {
        string? path = RunDirectoryWeights(dir);
        return path is not null ? LoadSafeTensors(path, options)
            : throw new FileNotFoundException($"{dir}: run directory has neither {ModelFileName} nor a complete checkpoint-<steps>.safetensors.");
    }

    /// <summary>
    /// The newest weights of a run directory: its latest complete checkpoint when that is newer than <see cref="ModelFileName"/>
    /// (a resumed run that has not finished again), else the model file; null when it has neither.
    /// </summary>
    internal static string? RunDirectoryWeights(string dir)
    {
        string model = Path.Combine(dir, ModelFileName);
        string? checkpoint = TrainingCheckpointFile.Latest(dir);
        if (!File.Exists(model)) return checkpoint;
        if (checkpoint is null) return model;
        return File.GetLastWriteTimeUtc(checkpoint) > File.GetLastWriteTimeUtc(model) ? checkpoint : model;
    }

    private static bool IsZipFile(string path)
    {
        if (!File.Exists(path)) return false;
        using var f = File.OpenRead(path);
        return f.ReadByte() == 'P' && f.ReadByte() == 'K';
    }

    private static bool IsSafeTensorsFile(string path) => File.Exists(path);

    // By magic, or by name so that a damaged .gguf gets the GGUF reader's message rather than the safetensors one.
    internal static bool IsGgufFile(string path) => GgufFile.HasMagic(path) || (File.Exists(path) && Path.GetExtension(path).Equals(".gguf", StringComparison.OrdinalIgnoreCase));

    private static LoadedModel LoadGguf(string path, LoadOptions options) => new(GgufModel.Load(path, options.Config, Int8(options)), null, null, "GGUF");

    private static LoadedModel LoadPth(string path, LoadOptions options)
    {
        var config = options.Config;
        using (var file = PthFile.Open(path))
        {
            var stateDict = file.StateDict();
            if (Gpt2Import.IsGpt2Names(stateDict))
            {
                // A Hugging Face pytorch_model.bin: the same names as its safetensors twin.
                config ??= ModelFile.ConfigBeside(path) ?? Gpt2Import.InferConfig(stateDict);
                var hf = Gpt2Import.NewModel(config, stateDict, Int8(options));
                return new LoadedModel(hf, null, null, "pth (Hugging Face GPT-2)");
            }
        }
        var (model, optimizer) = PthModelFile.Load(path, config);
        return new LoadedModel(model, optimizer, null, optimizer is null ? "pth (state dict)" : "pth (model + optimizer)");
    }

    private static LoadedModel LoadSafeTensors(string path, LoadOptions options)
    {
        var config = options.Config;
        using (var file = SafeTensorsFile.Open(path))
        {
            if (TrainingCheckpointFile.IsTrainingCheckpoint(file))
            {
                if (config is not null && config != ModelFile.ConfigFor(file))
                    throw new ArgumentException($"{path}: a training checkpoint carries its own config; don't pass another.");
            }
            else if (Gpt2Import.IsGpt2Names(file))
            {
                file.Dispose();
                return new LoadedModel(Gpt2Import.LoadHuggingFace(path, config, Int8(options)), null, null, "safetensors (Hugging Face GPT-2)");
            }
            else
            {
                config ??= file.Metadata.ContainsKey(ModelFile.ConfigKey) ? null : ModelFile.ConfigBeside(path);
                var model = config is null ? ModelFile.Load(file, Int8(options)) : StateDictLoader.Load(config, file, Int8(options));
                return new LoadedModel(model, null, null, "safetensors (model)");
            }
        }
        var (m, optimizer, metadata) = TrainingCheckpointFile.Load(path);
        return new LoadedModel(m, optimizer, metadata, "training checkpoint");
    }
}
