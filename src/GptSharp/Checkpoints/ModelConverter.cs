using GptSharp.Model;

namespace GptSharp.Checkpoints;

/// <summary>The file formats <c>gptsharp convert</c> writes.</summary>
public enum ModelFileFormat
{
    /// <summary>The model file: safetensors, book names, config in the metadata.</summary>
    SafeTensors,

    /// <summary>PyTorch <c>torch.save</c>: the state dict, or the book's model + optimizer dict when there is an optimizer.</summary>
    Pth,

    /// <summary>A GptSharp training checkpoint (model + AdamW + trainer state).</summary>
    Checkpoint,

    /// <summary>GGUF of architecture gpt2, for llama.cpp and the tools built on it (written by <see cref="ModelFile.Export"/>).</summary>
    Gguf,

    /// <summary>A Hugging Face GPT-2 folder (written by <see cref="ModelFile.Export"/>).</summary>
    HuggingFace,

    /// <summary>A Hugging Face GPT-2 folder with <c>onnx/model.onnx</c> (written by <see cref="ModelFile.Export"/>).</summary>
    Onnx,
}

/// <summary>What <see cref="ModelConverter.Convert"/> did: the input's format, the output's, the tensors and parameters
/// written, and notes for the user (what was dropped or defaulted).</summary>
public sealed record ConversionResult(string InputFormat, ModelFileFormat OutputFormat, int Tensors, long Parameters, IReadOnlyList<string> Notes);

/// <summary>Converts between the model formats (<c>gptsharp convert IN OUT [--to ...]</c>).</summary>
public static class ModelConverter
{
    /// <summary>
    /// The output format: <paramref name="to"/> (safetensors, pth, checkpoint, hf, onnx) when given, else from
    /// <paramref name="outputPath"/> (<c>.pth</c>/<c>.pt</c> → pth; <c>checkpoint.safetensors</c> → checkpoint;
    /// <c>checkpoint-&lt;steps&gt;.safetensors</c> → model file; an existing directory, or a new path without an
    /// extension or ending in a separator → Hugging Face folder).
    /// </summary>
    public static ModelFileFormat ResolveFormat(string outputPath, string? to)
    {
        if (!string.IsNullOrEmpty(to))
            return to.ToLowerInvariant() switch
            {
                "safetensors" => ModelFileFormat.SafeTensors,
                "pth" or "pt" or "torch" => ModelFileFormat.Pth,
                "checkpoint" => ModelFileFormat.Checkpoint,
                "gguf" => ModelFileFormat.Gguf,
                "hf" or "huggingface" => ModelFileFormat.HuggingFace,
                "onnx" => ModelFileFormat.Onnx,
                _ => throw new ArgumentException($"ModelFileFormat: unknown format '{to}' (expected safetensors, pth, checkpoint, gguf, hf or onnx)."),
            };
        if (Directory.Exists(outputPath) || Path.EndsInDirectorySeparator(outputPath) || !Path.HasExtension(outputPath))
            return ModelFileFormat.HuggingFace;
        string name = Path.GetFileName(outputPath);
        string ext = Path.GetExtension(outputPath).ToLowerInvariant();
        if (ext is ".pth" or ".pt") return ModelFileFormat.Pth;
        if (ext == ".gguf") return ModelFileFormat.Gguf;
        if (name.Equals("checkpoint.safetensors", StringComparison.OrdinalIgnoreCase) || TrainingCheckpointFile.IsCheckpointFileName(name))
            return ModelFileFormat.Checkpoint;
        if (ext == ".safetensors") return ModelFileFormat.SafeTensors;
        throw new ArgumentException($"{outputPath}: cannot tell the output format from the extension; name the ModelFileFormat: safetensors|pth|checkpoint|gguf|hf|onnx.");
    }

    /// <summary>
    /// Reads the model <paramref name="input"/> names (anything <c>GptModel.Load</c> takes, with its optimizer and trainer state
    /// when it has them) and writes it to <paramref name="output"/> as <paramref name="format"/>.
    /// <paramref name="load"/>'s <see cref="LoadOptions.Quantization"/> Int8 writes an int8 model file (safetensors only).
    /// </summary>
    public static ConversionResult Convert(string input, string output, ModelFileFormat format, LoadOptions? load = null, ExportDType dtype = ExportDType.Float32)
    {
        load ??= new LoadOptions();
        bool int8 = load.Quantization == WeightQuantization.Int8;
        if (int8 && format != ModelFileFormat.SafeTensors)
            throw new ArgumentException("LoadOptions.Quantization int8 writes a GptSharp model file (.safetensors); .pth files, training checkpoints, Hugging Face folders and ONNX hold float32 weights.");
        using var loaded = ModelStore.Open(input, load with { Quantization = WeightQuantization.None });
        if (int8) loaded.Model.QuantizeInt8();
        var notes = Write(loaded, output, format, dtype);
        return new ConversionResult(loaded.Format, format, loaded.Model.Parameters().Count, loaded.Model.ParameterCount, notes);
    }

    /// <summary>
    /// Writes <paramref name="loaded"/> as <paramref name="format"/>. Returns notes for the user (what was dropped or defaulted).
    /// A checkpoint written from a file without an optimizer gets a fresh AdamW with the book's settings (lr 4e-4, weight decay 0.1).
    /// </summary>
    /// <param name="dtype">The weight matrices' type in an exported format (GGUF); GptSharp's own formats are float32 (or int8 when quantized).</param>
    internal static IReadOnlyList<string> Write(LoadedModel loaded, string outputPath, ModelFileFormat format, ExportDType dtype = ExportDType.Float32)
    {
        var notes = new List<string>();
        if (dtype != ExportDType.Float32 && format is ModelFileFormat.SafeTensors or ModelFileFormat.Pth or ModelFileFormat.Checkpoint)
            throw new ArgumentException($"{outputPath}: ExportDType applies to exported formats (gguf); {format.ToString().ToLowerInvariant()} files hold float32 (use LoadOptions.Quantization Int8 for an int8 model file).");
        if (format == ModelFileFormat.Gguf)
        {
            if (loaded.Optimizer is not null) notes.Add("the optimizer state has no place in a GGUF file and was left out");
            if (loaded.Model.IsQuantized) notes.Add("the int8 weights were dequantized (and requantized for q8_0): GGUF's types are ggml's");
            loaded.Model.Export(outputPath, new ExportOptions(format) { DType = dtype });
            return notes;
        }
        if (loaded.Model.IsQuantized && format != ModelFileFormat.SafeTensors)
            throw new ArgumentException($"{outputPath}: the model has int8 weights, which only a GptSharp model file (.safetensors) holds; .pth files, training checkpoints, Hugging Face folders and ONNX are float32.");
        switch (format)
        {
            case ModelFileFormat.SafeTensors:
                if (loaded.Optimizer is not null) notes.Add("the optimizer state is not part of a model file and was left out");
                loaded.Model.Save(outputPath);
                break;
            case ModelFileFormat.Pth:
                if (loaded.Optimizer is not null) PthModelFile.Save(loaded.Model, loaded.Optimizer, outputPath);
                else PthModelFile.SaveModel(loaded.Model, outputPath);
                if (loaded.TrainerStateJson is not null) notes.Add("the trainer state has no place in a .pth file and was left out");
                break;
            case ModelFileFormat.Checkpoint:
                if (loaded.Optimizer is not null)
                {
                    // A run's checkpoint keeps its run configuration and generator state: the copy still resumes.
                    TrainingCheckpointFile.Save(outputPath, loaded.Model, loaded.Optimizer, loaded.TrainerStateJson ?? "{}", TrainingCheckpointFile.CallerMetadata(loaded.CheckpointMetadata));
                }
                else
                {
                    using var fresh = new AdamW(loaded.Model.Parameters(), lr: 4e-4f, weightDecay: 0.1f);
                    TrainingCheckpointFile.Save(outputPath, loaded.Model, fresh, "{}");
                    notes.Add("the input has no optimizer state: the checkpoint holds a fresh AdamW (lr 0.0004, weight_decay 0.1)");
                }
                break;
            case ModelFileFormat.HuggingFace or ModelFileFormat.Onnx:
                if (loaded.Optimizer is not null) notes.Add("the optimizer state has no place in a Hugging Face folder and was left out");
                loaded.Model.Export(outputPath, new ExportOptions(format));
                break;
        }
        return notes;
    }
}
