using GptSharp.Model;
using GptSharp.Formats;
using GptSharp.Formats.SafeTensors;

namespace GptSharp.Checkpoints;

/// <summary>
/// The model file: safetensors with the book's parameter names (so any safetensors tool can read it) and
/// the configuration in <c>__metadata__["config"]</c> as the book's config dictionary. The book's
/// <c>torch.save(model.state_dict(), "model.pth")</c> / <c>model.load_state_dict(torch.load(...))</c>. The one public
/// door of each task on model files: <c>model.Save(path)</c>, <c>GptModel.Load(spec, options)</c>,
/// <c>GptConfig.FromCheckpoint(spec)</c> and <c>model.Export(path, options)</c> (GGUF, Hugging Face, ONNX).
/// </summary>
public static partial class ModelFile
{
    /// <summary>Metadata key holding the book-style config JSON.</summary>
    public const string ConfigKey = "config";

    /// <summary>Metadata key saying what the file is: <see cref="ModelKind"/> or <see cref="TrainingCheckpointFile.Kind"/>.</summary>
    public const string KindKey = "gptsharp";

    public const string ModelKind = "model";

    /// <summary>Metadata key of a quantized model file: <see cref="Int8Quantization"/> (see docs/int8.md).</summary>
    public const string QuantizationKey = "quantization";

    /// <summary>Linear weights stored as I8 [out, in] with F32 scales [out, ⌈in / 32⌉] in <c>&lt;name&gt;</c><see cref="Int8ScaleSuffix"/>.</summary>
    public const string Int8Quantization = "int8-block32";

    /// <summary>Suffix of the scales tensor of an int8 weight: <c>trf_blocks.0.att.W_query.weight_scale</c>.</summary>
    public const string Int8ScaleSuffix = "_scale";

    /// <summary>
    /// Writes the model's parameters and config to <paramref name="path"/> (atomically): a GptSharp safetensors model
    /// file, or, for a <c>.pth</c>/<c>.pt</c> path, the book's <c>torch.save(model.state_dict(), path)</c> that
    /// <c>torch.load</c> and the book's <c>load_state_dict</c> read.
    /// </summary>
    /// <remarks>A quantized model is written as int8 (see <see cref="Int8Quantization"/>) and loads back quantized; .pth is float32 only.</remarks>
    public static void Save(this GptModel model, string path)
    {
        if (Path.GetExtension(path).ToLowerInvariant() is ".pth" or ".pt")
        {
            if (model.IsQuantized)
                throw new ArgumentException($"{path}: the model has int8 weights, which only a GptSharp model file (.safetensors) holds; .pth files are float32.");
            PthModelFile.SaveModel(model, path);
            return;
        }
        var metadata = Metadata(model.Config, ModelKind);
        if (model.IsQuantized) metadata[QuantizationKey] = Int8Quantization;
        SafeTensorsWriter.Write(path, Entries(model), metadata);
    }

    /// <summary>Builds a model from a model file: config from its metadata (or a config.json beside it, or the shapes).</summary>
    internal static GptModel Load(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        return Load(file);
    }

    /// <summary>Builds a model from an open safetensors file with book names.</summary>
    internal static GptModel Load(SafeTensorsFile file, bool quantize = false) => StateDictLoader.Load(ConfigFor(file), file, quantize);

    /// <summary>Loads a model file's weights into an existing model (shapes must match).</summary>
    internal static void LoadInto(this GptModel model, string path)
    {
        using var file = SafeTensorsFile.Open(path);
        StateDictLoader.LoadInto(model, file);
    }

    /// <summary>The parameters as safetensors entries, in the book's order (written from their buffers).</summary>
    internal static IEnumerable<SafeTensorsEntry> Entries(GptModel model)
    {
        foreach (var p in model.Parameters())
        {
            if (p.Int8 is { } q)
            {
                yield return SafeTensorsEntry.Int8(p.Name, q);
                yield return SafeTensorsEntry.Float32(p.Name + Int8ScaleSuffix, q.ScalesView());
            }
            else
            {
                yield return SafeTensorsEntry.Float32(p.Name, p.Value);
            }
        }
    }

    internal static Dictionary<string, string> Metadata(GptConfig config, string kind) => new()
    {
        // "pt" is what Hugging Face tools expect of a PyTorch-style state dict.
        ["format"] = "pt",
        [KindKey] = kind,
        [ConfigKey] = config.ToJson(),
    };

    /// <summary>The config from the file's metadata, else a config.json next to it, else inferred from the shapes.</summary>
    internal static GptConfig ConfigFor(SafeTensorsFile file)
    {
        var config = file.Metadata.TryGetValue(ConfigKey, out var json) ? GptConfig.FromJson(json, file.FilePath)
            : ConfigBeside(file.FilePath) ?? StateDictLoader.InferConfig(file);
        // Metadata is only text: checked against the tensors before anyone builds a model from it.
        StateDictLoader.CheckConfigFitsFile(config, file);
        return config;
    }

    /// <summary>A <c>config.json</c> in the same directory as <paramref name="path"/>, if there is one.</summary>
    public static GptConfig? ConfigBeside(string path)
    {
        string configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "config.json");
        return File.Exists(configPath) ? GptConfig.FromFile(configPath) : null;
    }
}

/// <summary>How <c>GptModel.Load</c> builds a model.</summary>
public sealed record LoadOptions
{
    /// <summary>The config when the file cannot tell (a <c>.pth</c> without a config.json beside it); a training checkpoint refuses another.</summary>
    public GptConfig? Config { get; init; }

    /// <summary>
    /// <see cref="WeightQuantization.Int8"/>: the linear weights become int8 as they are read, each tensor quantized and its
    /// float32 copy freed before the next is read, so peak memory stays near the int8 model's size (training checkpoints and
    /// book-named .pth files are quantized once loaded whole); inference only. A file saved from a quantized model loads as
    /// int8 either way.
    /// </summary>
    public WeightQuantization Quantization { get; init; }
}

// The one public way to load a model: GptModel.Load(spec, options), a static extension (C# 14): a run directory, a GptSharp
// or Hugging Face .safetensors, a .pth (the book's or Hugging Face's), a .gguf, a training checkpoint, an OpenAI GPT-2
// folder, or gpt2-small ... gpt2-xl; and GptConfig.FromCheckpoint(spec), the config of the same without reading a tensor.
public static partial class ModelFile
{
    extension(GptModel)
    {
        /// <summary>Builds the model <paramref name="spec"/> names, as <paramref name="options"/> say (see <see cref="LoadOptions"/>).</summary>
        public static GptModel Load(string spec, LoadOptions? options = null) => ModelStore.Load(spec, options ?? new LoadOptions());
    }

    extension(GptConfig)
    {
        /// <summary>
        /// The config of the weights <paramref name="spec"/> names (anything <c>GptModel.Load</c> takes), read from the file's
        /// header, metadata or config.json (no tensor is read): what a run that starts from those weights must use.
        /// </summary>
        public static GptConfig FromCheckpoint(string spec) =>
            ModelFileInfo.Read(spec) is { Config: GptConfig config } ? config
                : throw new InvalidDataException($"{spec}: cannot tell the model's configuration from the file (put a config.json with the book's keys next to it).");
    }
}
