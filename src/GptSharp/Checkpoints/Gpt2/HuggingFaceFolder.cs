using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.IO;
using GptSharp.Tokenization;
using GptSharp.Formats.SafeTensors;
using GptSharp.Layers;

namespace GptSharp.Checkpoints.Gpt2;

/// <summary>
/// A Hugging Face GPT-2 folder, what <c>GPT2LMHeadModel.save_pretrained</c> + <c>GPT2TokenizerFast.save_pretrained</c>
/// write: <c>config.json</c>, <c>generation_config.json</c>, <c>model.safetensors</c> (Hugging Face names, Conv1D
/// weights [in, out], c_attn = query|key|value) and the tokenizer files. The reverse of <see cref="Gpt2Import"/>
/// through the same <see cref="Gpt2WeightMap"/>. Where the book's model is not OpenAI's GPT-2 the folder says so in
/// the keys transformers reads: an untied head is <c>lm_head.weight</c> with <c>tie_word_embeddings: false</c>; a model
/// without query/key/value biases gets a zero <c>c_attn.bias</c> (GPT-2's Conv1D always adds one, and adding zero is
/// exact) and <c>"qkv_bias": false</c>, which transformers ignores and <see cref="GptConfig.FromFile"/> reads back, so the
/// round trip gives the same parameters.
/// </summary>
internal static class HuggingFaceFolder
{
    public const string ConfigFile = "config.json";
    public const string GenerationConfigFile = "generation_config.json";
    public const string WeightsFile = "model.safetensors";
    public const string PyTorchWeightsFile = "pytorch_model.bin";

    /// <summary>True for a folder holding a GPT-2 <c>config.json</c> (Hugging Face or OpenAI keys, not a run's) and its weights.</summary>
    public static bool IsFolder(string directory)
    {
        if (!Directory.Exists(directory)) return false;
        string config = Path.Combine(directory, ConfigFile);
        if (!File.Exists(config) || !(File.Exists(Path.Combine(directory, WeightsFile)) || File.Exists(Path.Combine(directory, PyTorchWeightsFile))))
            return false;
        // A run directory has a config.json too (its model under "model"): only a GPT-2 config's top-level keys count.
        // Parsing is bounded by the size check; a file that is not JSON is left for the other formats to report.
        if (new FileInfo(config).Length > 1 << 20) return false;
        try
        {
            return JsonNode.Parse(File.ReadAllText(config)) is JsonObject o
                && (o["model_type"]?.GetValueKind() == JsonValueKind.String && (string?)o["model_type"] == "gpt2" || o.ContainsKey("n_embd"));
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>The weights file of a folder (<c>model.safetensors</c> before <c>pytorch_model.bin</c>).</summary>
    public static string WeightsPath(string directory)
    {
        string safetensors = Path.Combine(directory, WeightsFile);
        return File.Exists(safetensors) ? safetensors : Path.Combine(directory, PyTorchWeightsFile);
    }

    /// <summary>
    /// Writes the folder (created when missing). Each file is written atomically, <c>config.json</c> last, so a folder
    /// interrupted half-way is never taken for a complete one.
    /// </summary>
    public static void Write(GptModel model, string directory)
    {
        if (model.IsQuantized)
            throw new ArgumentException($"{directory}: the model has int8 weights; a Hugging Face folder holds float32 (load the float32 model, without LoadOptions.Quantization).");
        Directory.CreateDirectory(directory);
        var config = model.Config;
        bool tied = model.IsOutHeadTiedToTokenEmbedding();
        TokenizerFiles.Write(directory, config.ContextLength);
        WriteWeights(model, Path.Combine(directory, WeightsFile), tied);
        WriteJson(Path.Combine(directory, GenerationConfigFile), new JsonObject
        {
            ["bos_token_id"] = Gpt2Tokenizer.EndOfTextId,
            ["eos_token_id"] = Gpt2Tokenizer.EndOfTextId,
        });
        WriteJson(Path.Combine(directory, ConfigFile), Config(config, tied));
    }

    /// <summary>
    /// GPT2Config's keys for <paramref name="config"/>. <c>n_ctx</c> beside <c>n_positions</c> for older readers;
    /// GELU in its tanh form is transformers' <c>gelu_new</c>; LayerNorm's epsilon is the book's 1e-5.
    /// </summary>
    public static JsonObject Config(GptConfig config, bool tiedHead)
    {
        double drop = double.Parse(config.DropRate.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
        return new JsonObject
        {
            ["architectures"] = new JsonArray("GPT2LMHeadModel"),
            ["model_type"] = "gpt2",
            ["vocab_size"] = config.VocabSize,
            ["n_positions"] = config.ContextLength,
            ["n_ctx"] = config.ContextLength,
            ["n_embd"] = config.EmbeddingDim,
            ["n_layer"] = config.Layers,
            ["n_head"] = config.Heads,
            ["n_inner"] = null,
            ["activation_function"] = "gelu_new",
            ["layer_norm_epsilon"] = double.Parse(Kernels.LayerNormEps.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture),
            ["resid_pdrop"] = drop,
            ["embd_pdrop"] = drop,
            ["attn_pdrop"] = drop,
            ["initializer_range"] = 0.02,
            ["scale_attn_weights"] = true,
            ["tie_word_embeddings"] = tiedHead,
            ["qkv_bias"] = config.QkvBias,
            ["bos_token_id"] = Gpt2Tokenizer.EndOfTextId,
            ["eos_token_id"] = Gpt2Tokenizer.EndOfTextId,
            ["use_cache"] = true,
            ["torch_dtype"] = "float32",
        };
    }

    /// <summary>The weights as Hugging Face's state dict: <c>transformer.</c> names (as save_pretrained writes them) and <c>lm_head.weight</c> when untied.</summary>
    private static void WriteWeights(GptModel model, string path, bool tied)
    {
        var entries = new List<SafeTensorsEntry>();
        foreach (var tensor in Gpt2WeightMap.Tensors(model.Config))
        {
            string name = "transformer." + Gpt2NameScheme.HuggingFace.NameOf(tensor);
            var targets = tensor.Targets(model);
            if (tensor.Kind == Gpt2TensorKind.Conv1DWeight)
                entries.Add(SafeTensorsEntry.Float32(name, tensor.Shape, values => Conv1DLayout.Transpose(targets, values)));
            else if (targets.Length == 1)
                entries.Add(SafeTensorsEntry.Float32(name, targets[0].Value));
            else
                entries.Add(SafeTensorsEntry.Float32(name, tensor.Shape, values => Conv1DLayout.JoinBiases(targets, values)));
        }
        if (!tied) entries.Add(SafeTensorsEntry.Float32("lm_head.weight", model.OutHead.Value));
        SafeTensorsWriter.Write(path, entries, new Dictionary<string, string> { ["format"] = "pt" });
    }

    private static void WriteJson(string path, JsonNode node) =>
        AtomicFile.Write(path, stream =>
        {
            using var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            node.WriteTo(writer);
        });
}
