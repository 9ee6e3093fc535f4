using System.Text.Json;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Formats.TensorFlow;

namespace GptSharp.Checkpoints.Gpt2;

/// <summary>
/// Loads OpenAI's GPT-2 TensorFlow checkpoints (<c>hparams.json</c> + <c>model.ckpt.*</c>) into a
/// <see cref="GptModel"/>, the book's <c>download_and_load_gpt2</c> + <c>load_weights_into_gpt</c>
/// (ch05 <c>gpt_download.py</c> / <c>gpt_generate.py</c>): c_attn split into query/key/value, Conv1D
/// weights [1, in, out] squeezed and transposed to nn.Linear's [out, in], out_head tied to wte.
/// Tensors are streamed from the data shard straight into the model's parameter buffers; the
/// transposed ones pass through one bounded scratch buffer, so no second copy of the weights exists.
/// </summary>
internal static class Gpt2TensorFlowImport
{
    /// <summary>Scratch size for transposing Conv1D weights chunk by chunk.</summary>
    private const int ScratchBytes = 4 << 20;

    /// <summary>True when <paramref name="directory"/> looks like an OpenAI GPT-2 model folder.</summary>
    public static bool IsOpenAiFolder(string directory) =>
        File.Exists(Path.Combine(directory, "hparams.json")) && File.Exists(Path.Combine(directory, "model.ckpt.index"));

    /// <summary>
    /// The book's config for these weights: <c>GPT_CONFIG_124M</c> updated with the sizes from
    /// <c>hparams.json</c>, <c>context_length = n_ctx</c> (1024) and <c>qkv_bias = True</c>.
    /// </summary>
    public static GptConfig ReadConfig(string modelDir)
    {
        string path = Path.Combine(modelDir, "hparams.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: hparams.json not found; is '{modelDir}' a GPT-2 model folder?", path);
        // The one config parser: it knows hparams.json's keys (n_vocab, n_ctx, n_embd, n_head, n_layer) beside Hugging
        // Face's and the book's, and validates the result.
        return GptConfig.FromFile(path);
    }

    /// <summary>The checkpoint prefix: <c>model_checkpoint_path</c> from the <c>checkpoint</c> file, else <c>model.ckpt</c>.</summary>
    public static string FindPrefix(string modelDir)
    {
        string state = Path.Combine(modelDir, "checkpoint");
        if (File.Exists(state))
        {
            foreach (string line in File.ReadLines(state))
            {
                const string key = "model_checkpoint_path:";
                string t = line.Trim();
                if (!t.StartsWith(key, StringComparison.Ordinal)) continue;
                string value = t[key.Length..].Trim().Trim('"');
                if (value.Length == 0) break;
                // The file may come from anywhere: it may only name a checkpoint inside this folder (TensorFlow writes a
                // relative name, or an absolute one on the machine that saved it). Anything else falls back to the default name.
                string folder = Path.GetFullPath(modelDir);
                string prefix = Path.GetFullPath(Path.IsPathRooted(value) ? value : Path.Combine(folder, value));
                if (Path.GetDirectoryName(prefix) != Path.TrimEndingDirectorySeparator(folder)) break;
                if (File.Exists(prefix + ".index")) return prefix;
                break; // a stale absolute path from another machine: fall back to the default name
            }
        }
        return Path.Combine(modelDir, "model.ckpt");
    }

    /// <summary>
    /// Every tensor name in an OpenAI GPT-2 checkpoint of <paramref name="config"/> with its shape,
    /// in the index's sorted order.
    /// </summary>
    public static SortedDictionary<string, long[]> ExpectedTensors(GptConfig config)
    {
        var expected = new SortedDictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var tensor in Gpt2WeightMap.Tensors(config))
        {
            // TensorFlow keeps Conv1D's kernel as [1, in, out].
            long[] shape = tensor.Shape.Select(d => (long)d).ToArray();
            expected[Gpt2NameScheme.TensorFlow.NameOf(tensor)] = tensor.Kind == Gpt2TensorKind.Conv1DWeight ? [1, .. shape] : shape;
        }
        return expected;
    }

    /// <summary>
    /// Checks that the bundle holds exactly the GPT-2 tensors of <paramref name="config"/>, as float32
    /// with the right shapes; throws a one-line error naming the index file and the first problem.
    /// </summary>
    public static void CheckTensors(TensorBundleReader bundle, GptConfig config)
    {
        var expected = ExpectedTensors(config);
        foreach (var entry in bundle.Entries)
        {
            if (!expected.TryGetValue(entry.Name, out var shape))
                throw new InvalidDataException($"{bundle.IndexPath}: unexpected tensor '{entry.Name}' {entry.ShapeString}: not part of a GPT-2 model with n_layer={config.Layers} (check hparams.json).");
            if (!shape.AsSpan().SequenceEqual(entry.Shape))
                throw new InvalidDataException($"{bundle.IndexPath}: shape mismatch for tensor '{entry.Name}'. Left: [{string.Join(", ", shape)}] (from hparams.json), Right: {entry.ShapeString} (checkpoint).");
            if (entry.DType != TfDataType.Float)
                throw new NotSupportedException($"{bundle.IndexPath}: tensor '{entry.Name}' has unsupported dtype {entry.DType}; GPT-2 weights must be float32.");
        }
        foreach (string name in expected.Keys)
            if (!bundle.TryGetEntry(name, out _))
                throw new InvalidDataException($"{bundle.IndexPath}: tensor '{name}' is missing from the checkpoint.");
    }

    /// <summary>
    /// Loads the GPT-2 model in <paramref name="modelDir"/> (hparams.json, checkpoint, model.ckpt.index/.data).
    /// <paramref name="config"/> overrides the one read from hparams.json (e.g. another drop rate); its sizes must match the checkpoint.
    /// </summary>
    public static GptModel Load(string modelDir, GptConfig? config = null, bool quantize = false)
    {
        config ??= ReadConfig(modelDir);
        using var bundle = TensorBundleReader.Open(FindPrefix(modelDir));
        // In double: the index alone bounds no entry's size (the data files do, checked later), so the sum could overflow a long.
        StateDictLoader.CheckConfigFitsFile(config, bundle.IndexPath, (long)Math.Min(bundle.Entries.Sum(e => (double)e.ElementCount), long.MaxValue / 2));
        CheckTensors(bundle, config);
        bundle.CheckDataFiles();
        return StateDictLoader.NewModel(config, model => LoadWeightsIntoGpt(model, bundle), quantize);
    }

    /// <summary>
    /// The book's <c>load_weights_into_gpt(gpt, params)</c>: copies every OpenAI tensor into its
    /// place in <paramref name="gpt"/> (which must have <c>qkv_bias</c> and the checkpoint's sizes).
    /// </summary>
    public static void LoadWeightsIntoGpt(GptModel gpt, TensorBundleReader bundle) => LoadWeightsIntoGpt(gpt, bundle, ScratchBytes);

    /// <summary><see cref="LoadWeightsIntoGpt(GptModel, TensorBundleReader)"/> with a chosen scratch size (tests use tiny ones to cross chunk boundaries).</summary>
    internal static void LoadWeightsIntoGpt(GptModel gpt, TensorBundleReader bundle, int scratchBytes)
    {
        var config = gpt.Config;
        if (!config.QkvBias)
            throw new ArgumentException("GPT-2 checkpoints have query/key/value biases: build the model with QkvBias = true.");
        CheckTensors(bundle, config);
        Gpt2WeightMap.LoadWeightsIntoGpt(gpt, new StreamingReader(bundle, scratchBytes), Gpt2NameScheme.TensorFlow, tieHead: true);
    }

    /// <summary>Streams tensors from the data shard; Conv1D weights pass through at most <paramref name="scratchBytes"/> of rows at a time.</summary>
    private sealed class StreamingReader(TensorBundleReader bundle, int scratchBytes) : IGpt2TensorReader
    {
        public void ReadInto(string name, Span<float> destination) => bundle.ReadFloat32(bundle.GetEntry(name), destination);

        public void ReadRows(string name, int rowLength, Gpt2RowsConsumer consume) =>
            bundle.ReadFloat32Rows(bundle.GetEntry(name), rowLength, scratchBytes, (firstRow, rows) => consume(firstRow, rows));
    }

}
