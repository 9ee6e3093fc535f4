using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using GptSharp.Model;

namespace GptSharp.Checkpoints;

/// <summary>
/// <see cref="GptConfig"/> as JSON: the book's config dictionary keys (<c>vocab_size, context_length, emb_dim,
/// n_heads, n_layers, drop_rate, qkv_bias</c>), and reading Hugging Face GPT-2 <c>config.json</c> files.
/// </summary>
public static class ConfigJson
{
    /// <summary>The book's <c>GPT_CONFIG_124M</c>-style dictionary.</summary>
    public static string ToBookJson(GptConfig config, bool indented = false)
    {
        var node = new JsonObject
        {
            ["vocab_size"] = config.VocabSize,
            ["context_length"] = config.ContextLength,
            ["emb_dim"] = config.EmbeddingDim,
            ["n_heads"] = config.Heads,
            ["n_layers"] = config.Layers,
            // Through decimal so 0.1f is written as 0.1, not 0.10000000149011612.
            ["drop_rate"] = double.Parse(config.DropRate.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture),
            ["qkv_bias"] = config.QkvBias,
        };
        return node.ToJsonString(new JsonSerializerOptions { WriteIndented = indented });
    }

    /// <summary>
    /// Reads a config in the book's keys or Hugging Face GPT-2's (<c>n_embd, n_layer, n_head, n_positions, vocab_size</c>;
    /// those imply <c>qkv_bias = true</c>), at the top level or in a <c>"model"</c> section (a run directory's config.json).
    /// <paramref name="source"/> names the file in error messages.
    /// </summary>
    public static GptConfig Parse(string json, string source)
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
