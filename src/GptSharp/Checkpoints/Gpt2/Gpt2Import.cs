using System.Buffers;
using System.Text.RegularExpressions;
using GptSharp.Model;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Formats.SafeTensors;

namespace GptSharp.Checkpoints.Gpt2;

/// <summary>
/// The book's <c>load_weights_into_gpt</c>: OpenAI GPT-2 weights (Hugging Face names without the
/// <c>transformer.</c> prefix: <c>wte.weight</c>, <c>h.N.attn.c_attn.weight</c>, ...) into the book's model.
/// Conv1D weights are stored [in, out] and transposed into nn.Linear's [out, in]; <c>c_attn</c> is split into
/// query, key and value; the output head is tied to <c>wte</c> (unless an <c>lm_head.weight</c> is stored).
/// A Conv1D weight may carry TensorFlow's leading 1 ([1, in, out]), so a TF-checkpoint source can reuse this
/// by presenting its tensors under these names.
/// </summary>
internal static partial class Gpt2Import
{
    /// <summary>True when the file looks like a Hugging Face GPT-2 state dict (with or without <c>transformer.</c>).</summary>
    public static bool IsGpt2Names(ITensorSource source) =>
        source.Find("wte.weight") is not null || source.Find("transformer.wte.weight") is not null;

    /// <summary>True for the attention-mask buffers Hugging Face files may carry (<c>h.N.attn.bias</c>, <c>h.N.attn.masked_bias</c>).</summary>
    public static bool IsMaskBuffer(string canonicalName) => MaskBuffer().IsMatch(canonicalName);

    /// <summary>Builds a model from a Hugging Face GPT-2 safetensors file (config.json beside it, else inferred from shapes).</summary>
    public static GptModel LoadHuggingFace(string path, GptConfig? config = null, bool quantize = false)
    {
        using var file = SafeTensorsFile.Open(path);
        config ??= ModelFile.ConfigBeside(path) ?? InferConfig(file);
        return NewModel(config, file, quantize);
    }

    /// <summary>A new model of <paramref name="config"/> holding the GPT-2 weights of <paramref name="source"/>, once the config is checked against its tensors.</summary>
    public static GptModel NewModel(GptConfig config, ITensorSource source, bool quantize = false)
    {
        StateDictLoader.CheckConfigFitsFile(config, source);
        return StateDictLoader.NewModel(config, model => LoadInto(model, source), quantize);
    }

    /// <summary>The config implied by GPT-2 tensor shapes (qkv_bias true; heads from the width, 64 per head).</summary>
    public static GptConfig InferConfig(ITensorSource source)
    {
        string prefix = Prefix(source);
        var wte = source.Find(prefix + "wte.weight") ?? throw new InvalidDataException($"{source.FilePath}: no 'wte.weight': not a GPT-2 file.");
        var wpe = source.Find(prefix + "wpe.weight") ?? throw new InvalidDataException($"{source.FilePath}: no 'wpe.weight': not a GPT-2 file.");
        int layers = StateDictLoader.CountBlocks(source.Tensors.Select(t => t.Name), Layer(), source.FilePath);
        if (wte.Shape.Length != 2 || wpe.Shape.Length != 2)
            throw new InvalidDataException($"{source.FilePath}: embeddings must be 2-D, got wte {wte.ShapeString} and wpe {wpe.ShapeString}.");
        return StateDictLoader.ValidateInferred(new GptConfig
        {
            VocabSize = wte.Shape[0],
            ContextLength = wpe.Shape[0],
            EmbeddingDim = wte.Shape[^1],
            Heads = StateDictLoader.GuessHeads(wte.Shape[^1], source.FilePath),
            Layers = layers,
            QkvBias = true,
        }, source.FilePath);
    }

    /// <summary>
    /// Loads GPT-2-named tensors into <paramref name="model"/>, checking every name and shape first. A model without
    /// <c>qkv_bias</c> (a folder GptSharp exported from the book's model says so in its config.json) takes a c_attn.bias
    /// of zeros only: anything else would change its outputs.
    /// </summary>
    public static void LoadInto(GptModel model, ITensorSource source)
    {
        var config = model.Config;
        string prefix = Prefix(source);
        var expected = new Dictionary<string, int[]>(StringComparer.Ordinal);
        foreach (var tensor in Gpt2WeightMap.Tensors(config)) expected[Gpt2NameScheme.HuggingFace.NameOf(tensor)] = tensor.Shape;
        bool hasLmHead = source.Find("lm_head.weight") is not null;
        if (hasLmHead) expected["lm_head.weight"] = [config.VocabSize, config.EmbeddingDim];

        // Every check before any read: no unexpected or missing tensor, every shape right.
        foreach (var t in source.Tensors)
        {
            string name = t.Name == "lm_head.weight" ? t.Name : Canonical(t.Name, prefix);
            if (!expected.ContainsKey(name) && !IsMaskBuffer(name))
                throw new InvalidDataException($"{source.FilePath}: unexpected tensor '{t.Name}' {t.ShapeString}: not a weight of a GPT-2 model with {config.Layers} layers.");
        }
        foreach (var (name, shape) in expected)
        {
            string stored = name == "lm_head.weight" ? name : prefix + name;
            var t = source.Find(stored) ?? throw new InvalidDataException($"{source.FilePath}: missing tensor '{stored}' (expected shape [{string.Join(", ", shape)}]).");
            // TensorFlow stores Conv1D weights as [1, in, out]; the book squeezes the leading 1.
            var s = t.Shape.Length == shape.Length + 1 && t.Shape[0] == 1 ? t.Shape[1..] : t.Shape;
            StateDictLoader.CheckShape(source.FilePath, stored, s, shape);
        }

        if (!config.QkvBias)
            foreach (var tensor in Gpt2WeightMap.Tensors(config).Where(t => t.IsQkv && t.Kind == Gpt2TensorKind.Bias))
            {
                string stored = prefix + Gpt2NameScheme.HuggingFace.NameOf(tensor);
                var values = new float[tensor.Shape[0]];
                source.ReadInto(stored, values);
                if (values.AsSpan().ContainsAnyExcept(0f))
                    throw new InvalidDataException($"{source.FilePath}: '{stored}' is not zero but the config says qkv_bias = false (a model without query/key/value biases).");
            }

        Gpt2WeightMap.LoadWeightsIntoGpt(model, new WholeTensorReader(source, prefix), Gpt2NameScheme.HuggingFace, tieHead: !hasLmHead);
        if (hasLmHead)
        {
            source.ReadInto("lm_head.weight", model.OutHead.Value.Span);
            model.WeightLoaded(model.OutHead);
        }
    }

    /// <summary>Reads a Conv1D weight whole (the sources here read tensors whole) and hands it over as one chunk of rows.</summary>
    private sealed class WholeTensorReader(ITensorSource source, string prefix) : IGpt2TensorReader
    {
        public void ReadInto(string name, Span<float> destination) => source.ReadInto(prefix + name, destination);

        public void ReadRows(string name, int rowLength, Gpt2RowsConsumer consume)
        {
            int length = checked((int)source.Find(prefix + name)!.ElementCount);
            float[] buffer = ArrayPool<float>.Shared.Rent(length);
            try
            {
                var rows = buffer.AsSpan(0, length);
                source.ReadInto(prefix + name, rows);
                consume(0, rows);
            }
            finally
            {
                ArrayPool<float>.Shared.Return(buffer);
            }
        }
    }

    private static string Prefix(ITensorSource source) => source.Find("transformer.wte.weight") is not null ? "transformer." : "";

    private static string Canonical(string name, string prefix) =>
        prefix.Length > 0 && name.StartsWith(prefix, StringComparison.Ordinal) ? name[prefix.Length..] : name;

    [GeneratedRegex(@"^h\.\d+\.attn\.(bias|masked_bias)$")]
    private static partial Regex MaskBuffer();

    [GeneratedRegex(@"^(?:transformer\.)?h\.(\d+)\.")]
    private static partial Regex Layer();
}
