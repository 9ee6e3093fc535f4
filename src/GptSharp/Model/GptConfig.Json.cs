using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
namespace GptSharp.Model;

// The config as JSON: the book's config dictionary keys (vocab_size, context_length, emb_dim, n_heads, n_layers, drop_rate,
// qkv_bias), and reading Hugging Face GPT-2 config.json and OpenAI hparams.json files.
public sealed partial record GptConfig
{
    /// <summary>The book's <c>GPT_CONFIG_124M</c>-style dictionary (<c>{"vocab_size": 50257, "context_length": 256, ...}</c>).</summary>
    public string ToJson(bool indented = false)
    {
        var node = new JsonObject
        {
            ["vocab_size"] = VocabSize,
            ["context_length"] = ContextLength,
            ["emb_dim"] = EmbeddingDim,
            ["n_heads"] = Heads,
            ["n_layers"] = Layers,
            // Through decimal so 0.1f is written as 0.1, not 0.10000000149011612.
            ["drop_rate"] = double.Parse(DropRate.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture),
            ["qkv_bias"] = QkvBias,
        };
        return node.ToJsonString(new JsonSerializerOptions { WriteIndented = indented });
    }

    /// <summary>
    /// Reads a config file: the book's keys, Hugging Face GPT-2's <c>config.json</c> (<c>n_embd, n_layer, n_head, n_positions,
    /// vocab_size</c>; those imply <c>qkv_bias = true</c>), OpenAI's <c>hparams.json</c>, or a run directory's config.json (its
    /// <c>"model"</c> section).
    /// </summary>
    public static GptConfig FromFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such config file (expected JSON with the book's keys or GPT-2's).", path);
        return FromJson(File.ReadAllText(path), path);
    }

    /// <summary>
    /// <see cref="FromFile"/> on text: the one config parser (book keys, GPT-2's, or either in a <c>"model"</c> section).
    /// <paramref name="source"/> names the file in error messages.
    /// </summary>
    internal static GptConfig FromJson(string json, string source)
    {
        JsonObject o;
        try
        {
            if (JsonNode.Parse(json) is not JsonObject root) throw new InvalidDataException($"{source}: config is not a JSON object.");
            o = root;
            // A run directory's config.json holds the model's config in its "model" section.
            if (!o.ContainsKey("emb_dim") && !o.ContainsKey("n_embd") && o["model"] is JsonObject model) o = model;
            _ = o.Count; // JsonObject reads its properties lazily: a duplicate key throws ArgumentException here, not later
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException)
        {
            throw new InvalidDataException($"{source}: config is not valid JSON ({e.Message}).");
        }
        try
        {
            GptConfig config;
            if (o.ContainsKey("emb_dim"))
            {
                config = new GptConfig
                {
                    VocabSize = Int(o, "vocab_size", source),
                    ContextLength = Int(o, "context_length", source),
                    EmbeddingDim = Int(o, "emb_dim", source),
                    Heads = Int(o, "n_heads", source),
                    Layers = Int(o, "n_layers", source),
                    DropRate = o["drop_rate"] is { } d ? (float)d.GetValue<double>() : new GptConfig().DropRate,
                    QkvBias = o["qkv_bias"] is { } b && b.GetValue<bool>(),
                };
            }
            else if (o.ContainsKey("n_embd"))
            {
                // HF GPT2Config (and OpenAI's hparams.json: n_vocab, n_ctx). GPT-2's attention projections have biases; a
                // folder GptSharp exported from a model without them says "qkv_bias": false (its c_attn.bias is zero).
                config = new GptConfig
                {
                    VocabSize = o.ContainsKey("vocab_size") ? Int(o, "vocab_size", source) : Int(o, "n_vocab", source),
                    ContextLength = o.ContainsKey("n_positions") ? Int(o, "n_positions", source) : Int(o, "n_ctx", source),
                    EmbeddingDim = Int(o, "n_embd", source),
                    Heads = Int(o, "n_head", source),
                    Layers = Int(o, "n_layer", source),
                    DropRate = o["resid_pdrop"] is { } d ? (float)d.GetValue<double>() : new GptConfig().DropRate,
                    QkvBias = o["qkv_bias"] is not { } q || q.GetValue<bool>(),
                };
            }
            else
            {
                throw new InvalidDataException($"{source}: config has neither the book's keys (emb_dim, n_heads, ...) nor GPT-2's (n_embd, n_head, ...).");
            }
            return config.Validate();
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException)
        {
            throw new InvalidDataException($"{source}: invalid config: {e.Message}");
        }
    }

    private static int Int(JsonObject o, string key, string source) =>
        o[key] is { } v ? v.GetValue<int>() : throw new InvalidDataException($"{source}: config has no '{key}'.");
}
