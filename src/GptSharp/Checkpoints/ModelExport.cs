using GptSharp.Formats.Onnx;
using GptSharp.Model;
using GptSharp.Pretrained;

namespace GptSharp.Checkpoints;

/// <summary>The formats other tools read that <see cref="ModelExport.Export"/> writes.</summary>
public enum ExportFormat
{
    /// <summary>A Hugging Face GPT-2 folder: config.json, generation_config.json, model.safetensors, tokenizer files (transformers' <c>from_pretrained(dir)</c>).</summary>
    HuggingFace,

    /// <summary>The Hugging Face folder plus <c>onnx/model.onnx</c>: the decoder with past key/values in Optimum's layout (ONNX Runtime, transformers.js).</summary>
    Onnx,
}

/// <summary>How <see cref="ModelExport.Export"/> writes a model.</summary>
public sealed record ExportOptions
{
    public ExportFormat Format { get; init; } = ExportFormat.HuggingFace;
}

/// <summary>
/// The one way to write a model for other tools, beside <c>model.Save</c> (GptSharp's own file): see docs/interop.md for
/// what each format keeps and what the tools do with it.
/// </summary>
public static class ModelExport
{
    /// <summary>Where <see cref="ExportFormat.Onnx"/> puts the graph inside the folder: <c>onnx/model.onnx</c>.</summary>
    public const string OnnxDirectory = "onnx", OnnxFileName = "model.onnx";

    /// <summary>Writes <paramref name="model"/> to <paramref name="path"/> (a folder, created when missing) as <paramref name="options"/> says.</summary>
    public static void Export(this GptModel model, string path, ExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        switch (options.Format)
        {
            case ExportFormat.HuggingFace:
                HuggingFaceFolder.Write(model, path);
                break;
            case ExportFormat.Onnx:
                // transformers.js and Optimum look for the graph in onnx/ beside the folder's config and tokenizer.
                HuggingFaceFolder.Write(model, path);
                Directory.CreateDirectory(Path.Combine(path, OnnxDirectory));
                Gpt2OnnxDecoder.Write(model, Path.Combine(path, OnnxDirectory, OnnxFileName));
                break;
            default:
                throw new ArgumentException($"export format {options.Format} is not supported.");
        }
    }
}
