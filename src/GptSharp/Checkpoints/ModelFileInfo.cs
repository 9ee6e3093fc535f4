using GptSharp.Model;
using GptSharp.Formats;
using GptSharp.Pretrained;
using GptSharp.Formats.Gguf;
using GptSharp.Formats.SafeTensors;
using GptSharp.Formats.TensorFlow;
using GptSharp.Formats.PyTorch;
using GptSharp.Checkpoints.Gpt2;

namespace GptSharp.Checkpoints;

/// <summary>What <c>gptsharp inspect</c> shows about a file, read from its header/pickle only (no tensor data).</summary>
public sealed record ModelFileInfo(
    string Path,
    string Format,
    IReadOnlyList<StoredTensor> Tensors,
    IReadOnlyDictionary<string, string> Metadata,
    GptConfig? Config,
    string? ConfigNote,
    long ParameterCount,
    string? OptimizerSummary)
{
    /// <summary>Reads the description of a .safetensors or .pth file (a run directory: its model file, else its checkpoint; a Hugging Face folder: its weights).</summary>
    public static ModelFileInfo Read(string spec)
    {
        spec = Gpt2Models.TryResolveCached(spec) ?? spec;
        if (Directory.Exists(spec) && Gpt2TensorFlowImport.IsOpenAiFolder(spec)) return ReadTensorFlow(spec);
        string path = spec;
        if (HuggingFaceFolder.IsFolder(spec)) path = HuggingFaceFolder.WeightsPath(spec);
        else if (Directory.Exists(spec))
        {
            path = ModelStore.RunDirectoryWeights(spec) ?? System.IO.Path.Combine(spec, ModelStore.ModelFileName);
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"{spec}: no such file (expected a .safetensors, .pth or .gguf file or a run directory).", spec);
        using (var probe = File.OpenRead(path))
            if (probe.ReadByte() == 'P' && probe.ReadByte() == 'K') return ReadPth(path);
        if (ModelStore.IsGgufFile(path)) return ReadGguf(path);
        return ReadSafeTensors(path);
    }

    private static ModelFileInfo ReadSafeTensors(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        string format;
        GptConfig? config = null;
        string? note = null;
        string? optimizer = null;
        ITensorSource weights = file;
        if (TrainingCheckpointFile.IsTrainingCheckpoint(file))
        {
            format = "GptSharp training checkpoint (safetensors)";
            weights = TrainingCheckpointFile.ModelTensors(file);
            optimizer = file.Metadata.TryGetValue(TrainingCheckpointFile.OptimizerKey, out var o) ? o : null;
        }
        else if (Gpt2Import.IsGpt2Names(file)) format = "Hugging Face GPT-2 (safetensors)";
        else if (file.Metadata.TryGetValue(ModelFile.QuantizationKey, out var quantization) && quantization == ModelFile.Int8Quantization)
            format = "GptSharp model, int8 linear weights + float32 scale per 32 inputs (safetensors)";
        else if (file.Metadata.ContainsKey(ModelFile.ConfigKey)) format = "GptSharp model (safetensors)";
        else format = "safetensors";
        try
        {
            config = Gpt2Import.IsGpt2Names(file)
                ? ModelFile.ConfigBeside(path) ?? Gpt2Import.InferConfig(file)
                : ModelFile.ConfigFor(file);
        }
        catch (InvalidDataException e)
        {
            note = e.Message;
        }
        return new ModelFileInfo(path, format, file.Tensors, file.Metadata, config, note, CountParameters(weights), optimizer);
    }

    /// <summary>An OpenAI GPT-2 folder: the TF bundle index (tensor data is not read) and hparams.json.</summary>
    private static ModelFileInfo ReadTensorFlow(string dir)
    {
        using var bundle = TensorBundleReader.Open(Gpt2TensorFlowImport.FindPrefix(dir));
        var tensors = new List<StoredTensor>();
        var other = new List<string>();
        foreach (var e in bundle.Entries)
        {
            TensorDType? dtype = e.DType switch
            {
                TfDataType.Float => TensorDType.F32, TfDataType.Double => TensorDType.F64, TfDataType.Half => TensorDType.F16,
                TfDataType.BFloat16 => TensorDType.BF16, TfDataType.Int64 => TensorDType.I64, TfDataType.Int32 => TensorDType.I32,
                TfDataType.Int16 => TensorDType.I16, TfDataType.Int8 => TensorDType.I8, TfDataType.UInt8 => TensorDType.U8,
                TfDataType.Bool => TensorDType.Bool, TfDataType.UInt16 => TensorDType.U16, _ => null,
            };
            if (dtype is { } d && e.Shape.All(x => x <= int.MaxValue)) tensors.Add(new StoredTensor(e.Name, d, e.Shape.Select(x => checked((int)x)).ToArray()));
            else other.Add($"{e.Name} ({e.DType} {e.ShapeString})");
        }
        GptConfig? config = null;
        string? note = null;
        try
        {
            config = Gpt2TensorFlowImport.ReadConfig(dir);
        }
        catch (InvalidDataException e)
        {
            note = e.Message;
        }
        var metadata = new Dictionary<string, string>
        {
            ["index"] = bundle.IndexPath,
            ["shards"] = bundle.Header.NumShards.ToString(),
            // Sums in double: inspect reads the index alone (the data shard may be absent), which bounds no entry's size.
            ["data bytes"] = bundle.Entries.Sum(e => (double)e.Size).ToString("N0"),
        };
        if (other.Count > 0) metadata["other tensors"] = string.Join(", ", other);
        return new ModelFileInfo(dir, "OpenAI GPT-2 TensorFlow checkpoint", tensors, metadata, config, note, (long)Math.Min(tensors.Sum(t => (double)t.ElementCount), long.MaxValue), null);
    }

    /// <summary>
    /// A GGUF file: its tensors with shapes in PyTorch's order (ggml lists the row length first) and ggml type names,
    /// its scalar metadata (arrays shown by their length), and the config when it is a GPT-2 GptSharp can load.
    /// </summary>
    private static ModelFileInfo ReadGguf(string path)
    {
        using var file = GgufFile.Open(path);
        var tensors = new List<StoredTensor>();
        foreach (var t in file.Tensors)
        {
            TensorDType dtype = t.Type switch { GgmlType.F32 => TensorDType.F32, GgmlType.F16 => TensorDType.F16, GgmlType.BF16 => TensorDType.BF16, _ => TensorDType.U8 };
            int[] shape = t.Dims.Reverse().Select(d => (int)Math.Min(d, int.MaxValue)).ToArray();
            tensors.Add(new StoredTensor(t.Name, dtype, shape) { StorageType = dtype == TensorDType.U8 ? GgmlTypes.Name(t.Type) : null });
        }
        var metadata = new Dictionary<string, string> { ["gguf version"] = file.Version.ToString() };
        foreach (var (key, value) in file.Metadata)
        {
            if (key == GgufModel.ConfigKey) continue;
            metadata[key] = value switch
            {
                string[] a => $"[{a.Length} strings]",
                Array a => $"[{a.Length} values]",
                IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
                _ => value.ToString() ?? "",
            };
        }
        GptConfig? config = null;
        string? note = null;
        try
        {
            config = GgufModel.ConfigFor(file);
        }
        catch (InvalidDataException e)
        {
            note = e.Message;
        }
        return new ModelFileInfo(path, $"GGUF ({GgufFileType(file)})", tensors, metadata, config, note, file.Tensors.Sum(t => t.Elements), null);
    }

    private static string GgufFileType(GgufFile file)
    {
        var types = file.Tensors.GroupBy(t => t.Type).OrderByDescending(g => g.Sum(t => t.Elements)).Select(g => GgmlTypes.Name(g.Key));
        return string.Join(" + ", types);
    }

    private static ModelFileInfo ReadPth(string path)
    {
        using var file = PthFile.Open(path);
        var stateDict = file.StateDict();
        var osd = file.OptimizerStateDict();
        GptConfig? config = null;
        string? note = null;
        try
        {
            config = ModelFile.ConfigBeside(path)
                ?? (Gpt2Import.IsGpt2Names(stateDict) ? Gpt2Import.InferConfig(stateDict) : StateDictLoader.InferConfig(stateDict));
        }
        catch (InvalidDataException e)
        {
            note = e.Message;
        }
        string? optimizer = null;
        if (osd is not null)
        {
            int states = osd.TryGet("state", out var s) && s is PyDict sd ? sd.Items.Count : 0;
            string group = osd.TryGet("param_groups", out var g) && g is List<object?> { Count: > 0 } groups && groups[0] is PyDict g0
                ? string.Join(", ", g0.Items.Where(kv => kv.Key is string k && k != "params").Select(kv => $"{kv.Key}={Show(kv.Value)}"))
                : "";
            optimizer = $"optimizer_state_dict: {states} parameter states; {group}";
        }
        var metadata = new Dictionary<string, string> { ["records"] = string.Join(", ", file.RecordNames.Where(n => !n.Contains("/data/"))) };
        return new ModelFileInfo(path, osd is null ? "PyTorch .pth (state dict)" : "PyTorch .pth (model + optimizer)", stateDict.Tensors,
            metadata, config, note, CountParameters(stateDict), optimizer);
    }

    // Values come from the file: nesting and length are cut short (a DAG of shared tuples would otherwise print exponentially).
    private static string Show(object? v) => Show(v, 0);

    private static string Show(object? v, int depth) => v switch
    {
        null => "None",
        bool b => b ? "True" : "False",
        double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        PyTuple when depth >= 3 => "(...)",
        PyTuple t => "(" + string.Join(", ", t.Items.Take(8).Select(x => Show(x, depth + 1))) + (t.Count > 8 ? ", ..." : "") + ")",
        string s => s.Length <= 200 ? s : s[..200] + "...",
        long or System.Numerics.BigInteger => v.ToString()!,
        _ => PyDict.PyTypeName(v),
    };

    /// <summary>Elements of the weight tensors (the mask buffers of the book and of Hugging Face files are not parameters).</summary>
    // The scales of int8 weights are not parameters: an int8 file counts what its float32 original does.
    private static long CountParameters(ITensorSource source) => source.Tensors
        .Where(t => !StateDictLoader.IsMaskBuffer(t.Name) && !Gpt2Import.IsMaskBuffer(t.Name.StartsWith("transformer.", StringComparison.Ordinal) ? t.Name[12..] : t.Name))
        .Where(t => !(t.Name.EndsWith(".weight" + ModelFile.Int8ScaleSuffix, StringComparison.Ordinal) && source.Find(t.Name[..^ModelFile.Int8ScaleSuffix.Length])?.DType == TensorDType.I8))
        .Sum(t => t.ElementCount);
}
