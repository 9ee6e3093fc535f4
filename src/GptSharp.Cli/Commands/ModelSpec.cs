using GptSharp.Checkpoints;
using GptSharp.Checkpoints.Gpt2Download;
using GptSharp.Checkpoints.TensorFlow;
using GptSharp.Model;

namespace GptSharp.Cli.Commands;

/// <summary>
/// Resolves <c>--model</c>: a GPT-2 size name (gpt2-small|gpt2-medium|gpt2-large|gpt2-xl or 124M..1558M, from the
/// download cache), an OpenAI checkpoint directory (hparams.json + model.ckpt.*), a run directory (its model
/// file), or a model file (.safetensors with book or Hugging Face names, or the book's .pth).
/// </summary>
internal static class ModelSpec
{
    public const string Help = "A run directory, a model file (.safetensors or .pth), an OpenAI GPT-2 checkpoint directory, " +
        "or gpt2-small|gpt2-medium|gpt2-large|gpt2-xl (downloaded with `gptsharp download`).";

    // Model files a run directory may hold, most final first.
    private static readonly string[] RunDirectoryModelFiles = ["model.safetensors", "final.safetensors", "checkpoint.safetensors", "model.pth"];

    public static GptModel Load(string spec)
    {
        if (string.IsNullOrWhiteSpace(spec)) throw new ArgumentException("--model is empty: " + Help);
        if (File.Exists(spec)) return LoadFile(spec);
        if (Directory.Exists(spec)) return LoadDirectory(spec);
        if (Gpt2Models.TryFind(spec) is { } size)
        {
            string directory = Gpt2Models.CacheDirectory(size);
            if (!Gpt2Models.IsComplete(size, directory))
                throw new FileNotFoundException($"--model {spec}: the GPT-2 {size.Name} files are not in {directory}; run `gptsharp download {size.Alias}` first.");
            return Gpt2Checkpoint.Load(directory);
        }
        throw new FileNotFoundException($"--model {spec}: no such file or directory, and not a GPT-2 size. Expected {Help}");
    }

    private static GptModel LoadDirectory(string directory)
    {
        if (File.Exists(Path.Combine(directory, "hparams.json"))) return Gpt2Checkpoint.Load(directory);
        foreach (string name in RunDirectoryModelFiles)
        {
            string path = Path.Combine(directory, name);
            if (File.Exists(path)) return LoadFile(path);
        }
        var candidates = Directory.GetFiles(directory, "*.safetensors");
        if (candidates.Length == 1) return LoadFile(candidates[0]);
        throw new FileNotFoundException(candidates.Length == 0
            ? $"--model {directory}: the directory holds no model file (.safetensors, model.pth) nor an OpenAI checkpoint (hparams.json)."
            : $"--model {directory}: several .safetensors files; name one of them.");
    }

    private static GptModel LoadFile(string path)
    {
        switch (Path.GetExtension(path).ToLowerInvariant())
        {
            case ".pth":
            case ".pt":
                return PthCheckpoint.LoadModel(path);
            case ".safetensors":
                bool huggingFace;
                using (var file = SafeTensorsFile.Open(path)) huggingFace = Gpt2Import.IsGpt2Names(file);
                return huggingFace ? Gpt2Import.LoadHuggingFace(path) : ModelCheckpoint.Load(path);
            default:
                throw new ArgumentException($"--model {path}: unknown model file type '{Path.GetExtension(path)}' (expected .safetensors or .pth).");
        }
    }
}
