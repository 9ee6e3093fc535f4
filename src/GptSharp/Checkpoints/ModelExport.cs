using GptSharp.Formats.Onnx;
using GptSharp.Model;
using GptSharp.Checkpoints.Gpt2;

namespace GptSharp.Checkpoints;

/// <summary>How the weight matrices are stored in an exported file.</summary>
public enum ExportDType
{
    /// <summary>float32: the model exactly.</summary>
    Float32,

    /// <summary>IEEE half precision (<c>f16</c>): half the size, each weight rounded to 11 significant bits (GGUF only).</summary>
    Float16,

    /// <summary>llama.cpp's <c>q8_0</c>: blocks of 32 int8 values with one fp16 scale (GGUF only).</summary>
    Q8_0,
}

/// <summary>What <see cref="ModelFile.Export"/> writes: the format (<see cref="ModelFileFormat.Gguf"/>,
/// <see cref="ModelFileFormat.HuggingFace"/> or <see cref="ModelFileFormat.Onnx"/>), and the type of the weight matrices.</summary>
public sealed record ExportOptions(ModelFileFormat Format)
{
    /// <summary>The weight matrices' type (embeddings and linear weights; vectors and position embeddings stay float32).</summary>
    public ExportDType DType { get; init; } = ExportDType.Float32;
}

// The one way to write a model for another engine: model.Export(path, new ExportOptions(ModelFileFormat.Gguf)), beside
// model.Save(path) (GptSharp's own files). See docs/interop.md for what each format keeps.
public static partial class ModelFile
{
    /// <summary>Where <see cref="ModelFileFormat.Onnx"/> puts the graph inside the folder: <c>onnx/model.onnx</c>.</summary>
    public const string OnnxDirectory = "onnx", OnnxFileName = "model.onnx";

    /// <summary>The formats <see cref="Export"/> writes, for messages.</summary>
    internal const string ExportFormats = "gguf, hf or onnx";

    /// <summary>Writes <paramref name="model"/> to <paramref name="path"/> in <paramref name="options"/>' format: a file for GGUF
    /// (atomically), a folder (created when missing) for Hugging Face and ONNX.</summary>
    public static void Export(this GptModel model, string path, ExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.DType != ExportDType.Float32 && options.Format != ModelFileFormat.Gguf)
            throw new ArgumentException($"{path}: {options.DType} weights are written to GGUF only; {options.Format} holds float32.");
        switch (options.Format)
        {
            case ModelFileFormat.Gguf:
                GgufModel.Write(model, path, options.DType);
                break;
            case ModelFileFormat.HuggingFace:
                HuggingFaceFolder.Write(model, path);
                break;
            case ModelFileFormat.Onnx:
                // transformers.js and Optimum look for the graph in onnx/ beside the folder's config and tokenizer.
                HuggingFaceFolder.Write(model, path);
                Directory.CreateDirectory(Path.Combine(path, OnnxDirectory));
                Gpt2OnnxDecoder.Write(model, Path.Combine(path, OnnxDirectory, OnnxFileName));
                break;
            default:
                throw new ArgumentException($"{path}: export writes {ExportFormats}; {options.Format} files are written by model.Save or gptsharp convert.");
        }
    }
}
