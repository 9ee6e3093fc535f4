using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using GptSharp.Model;

namespace GptSharp.Training;

/// <summary>
/// Everything that defines a training run, written to <c>config.json</c> in the run directory and read
/// back by <c>--resume</c>. The model section uses the book's dictionary keys (<c>GPT_CONFIG_124M</c>).
/// </summary>
public sealed record RunConfig
{
    public required GptConfig Model { get; init; }
    public required TrainingOptions Training { get; init; }

    /// <summary>Where the text came from: a path, a glob, or the bundled The Verdict.</summary>
    public string Data { get; init; } = "";
    public int BatchSize { get; init; } = 2;
    public int Stride { get; init; } = 256;
    public double TrainRatio { get; init; } = 0.9;
    public double LearningRate { get; init; } = 4e-4;
    public double WeightDecay { get; init; } = 0.1;
    public ulong Seed { get; init; } = 123;

    /// <summary>"torch" (PyTorch's generator, the book's numbers) or "fast".</summary>
    public string Rng { get; init; } = "torch";

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson()
    {
        var node = new JsonObject
        {
            ["model"] = ModelConfigJson.ToNode(Model),
            ["training"] = JsonSerializer.SerializeToNode(Training, Json),
            ["data"] = Data,
            ["batch_size"] = BatchSize,
            ["stride"] = Stride,
            ["train_ratio"] = TrainRatio,
            ["learning_rate"] = LearningRate,
            ["weight_decay"] = WeightDecay,
            ["seed"] = Seed,
            ["rng"] = Rng,
        };
        return node.ToJsonString(Json);
    }

    public static RunConfig FromJson(string json, string source)
    {
        try
        {
            var node = JsonNode.Parse(json)?.AsObject() ?? throw new InvalidDataException($"{source}: empty run configuration.");
            return new RunConfig
            {
                Model = ModelConfigJson.FromNode(node["model"] ?? throw new InvalidDataException($"{source}: no \"model\" section."), source),
                Training = node["training"].Deserialize<TrainingOptions>(Json) ?? throw new InvalidDataException($"{source}: no \"training\" section."),
                Data = (string?)node["data"] ?? "",
                BatchSize = (int?)node["batch_size"] ?? 2,
                Stride = (int?)node["stride"] ?? 256,
                TrainRatio = (double?)node["train_ratio"] ?? 0.9,
                LearningRate = (double?)node["learning_rate"] ?? 4e-4,
                WeightDecay = (double?)node["weight_decay"] ?? 0.1,
                Seed = (ulong?)node["seed"] ?? 123,
                Rng = (string?)node["rng"] ?? "torch",
            };
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException)
        {
            throw new InvalidDataException($"{source}: not a valid run configuration ({e.Message}).");
        }
    }
}

/// <summary>A <see cref="GptConfig"/> as the book's JSON-like dictionary: <c>vocab_size</c>, <c>context_length</c>, <c>emb_dim</c>, <c>n_heads</c>, <c>n_layers</c>, <c>drop_rate</c>, <c>qkv_bias</c>.</summary>
public static class ModelConfigJson
{
    public static JsonObject ToNode(GptConfig c) => new()
    {
        ["vocab_size"] = c.VocabSize,
        ["context_length"] = c.ContextLength,
        ["emb_dim"] = c.EmbeddingDim,
        ["n_heads"] = c.Heads,
        ["n_layers"] = c.Layers,
        ["drop_rate"] = c.DropRate,
        ["qkv_bias"] = c.QkvBias,
    };

    /// <summary>Reads the book's keys; keys left out keep the values of <paramref name="basis"/> (default: the book's 124M).</summary>
    public static GptConfig FromNode(JsonNode node, string source, GptConfig? basis = null)
    {
        var o = node as JsonObject ?? throw new InvalidDataException($"{source}: the model configuration must be a JSON object.");
        var known = new HashSet<string> { "vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias" };
        foreach (var (key, _) in o)
            if (!known.Contains(key))
                throw new InvalidDataException($"{source}: unknown model configuration key \"{key}\" (expected {string.Join(", ", known)}).");
        var c = basis ?? GptConfig.Book124M;
        try
        {
            return (c with
            {
                VocabSize = (int?)o["vocab_size"] ?? c.VocabSize,
                ContextLength = (int?)o["context_length"] ?? c.ContextLength,
                EmbeddingDim = (int?)o["emb_dim"] ?? c.EmbeddingDim,
                Heads = (int?)o["n_heads"] ?? c.Heads,
                Layers = (int?)o["n_layers"] ?? c.Layers,
                DropRate = (float?)o["drop_rate"] ?? c.DropRate,
                QkvBias = (bool?)o["qkv_bias"] ?? c.QkvBias,
            }).Validate();
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        {
            throw new InvalidDataException($"{source}: a model configuration value has the wrong type ({e.Message}).");
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{source}: {e.Message}");
        }
    }

    /// <summary>A preset name (<see cref="GptConfig.FromPresetName"/>) or a JSON file with the book's keys.</summary>
    public static GptConfig FromPresetOrFile(string value)
    {
        if (GptConfig.FromPresetName(value) is GptConfig preset) return preset;
        if (!File.Exists(value))
            throw new ArgumentException($"--config: '{value}' is neither a preset ({string.Join(", ", GptConfig.PresetNames)}) nor a JSON file.");
        try
        {
            var node = JsonNode.Parse(File.ReadAllText(value)) ?? throw new InvalidDataException($"{value}: empty file.");
            // Accept a bare model dictionary or a run's config.json.
            if (node is JsonObject o && o["model"] is JsonNode model) node = model;
            return FromNode(node, value);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{value}: not valid JSON ({e.Message}).");
        }
    }
}
