using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using GptSharp.Model;
using GptSharp.Checkpoints;
using GptSharp.Data;

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

    /// <summary>The validation set (same forms as <see cref="Data"/>); null: the last 10 % of <see cref="Data"/> (<see cref="TrainRatio"/>).</summary>
    public string? ValidationData { get; init; }

    /// <summary>Which Parquet column and JSON Lines field hold the text.</summary>
    public CorpusReadOptions Read { get; init; } = new();
    public int BatchSize { get; init; } = 2;
    public int Stride { get; init; } = 256;
    public double TrainRatio { get; init; } = 0.9;
    public double LearningRate { get; init; } = 4e-4;
    public double WeightDecay { get; init; } = 0.1;
    public ulong Seed { get; init; } = 123;

    /// <summary>"torch" (PyTorch's generator, the book's numbers) or "fast".</summary>
    public string Rng { get; init; } = "torch";

    /// <summary>
    /// Weights the run starts from instead of a random initialization (<c>--init-from</c>: a GPT-2 size name, an OpenAI
    /// folder, a .pth or .safetensors file, a run directory); null for a new model. <see cref="Model"/> must describe them,
    /// except that its context length may be shorter (the positional table is cut to it).
    /// </summary>
    public string? InitFrom { get; init; }

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        TypeInfoResolver = TrainingJsonContext.Default,
    };

    public string ToJson()
    {
        var node = new JsonObject
        {
            ["model"] = JsonNode.Parse(Model.ToJson()),
            ["training"] = JsonSerializer.SerializeToNode(Training, TrainingJsonContext.TypeInfo<TrainingOptions>(Json)),
            ["data"] = Data,
            ["batch_size"] = BatchSize,
            ["stride"] = Stride,
            ["train_ratio"] = TrainRatio,
            ["learning_rate"] = LearningRate,
            ["weight_decay"] = WeightDecay,
            ["seed"] = Seed,
            ["rng"] = Rng,
        };
        if (InitFrom is not null) node["init_from"] = InitFrom;
        if (ValidationData is not null) node["validation_data"] = ValidationData;
        if (Read.TextColumn != new CorpusReadOptions().TextColumn) node["text_column"] = Read.TextColumn;
        if (Read.TextField != new CorpusReadOptions().TextField) node["text_field"] = Read.TextField;
        return node.ToJsonString(Json);
    }

    public static RunConfig FromJson(string json, string source)
    {
        try
        {
            var node = JsonNode.Parse(json)?.AsObject() ?? throw new InvalidDataException($"{source}: empty run configuration.");
            return new RunConfig
            {
                Model = GptConfig.FromJson((node["model"] ?? throw new InvalidDataException($"{source}: no \"model\" section.")).ToJsonString(), source),
                Training = node["training"].Deserialize(TrainingJsonContext.TypeInfo<TrainingOptions>(Json)) ?? throw new InvalidDataException($"{source}: no \"training\" section."),
                Data = (string?)node["data"] ?? "",
                BatchSize = (int?)node["batch_size"] ?? 2,
                Stride = (int?)node["stride"] ?? 256,
                TrainRatio = (double?)node["train_ratio"] ?? 0.9,
                LearningRate = (double?)node["learning_rate"] ?? 4e-4,
                WeightDecay = (double?)node["weight_decay"] ?? 0.1,
                Seed = (ulong?)node["seed"] ?? 123,
                Rng = (string?)node["rng"] ?? "torch",
                InitFrom = (string?)node["init_from"],
                ValidationData = (string?)node["validation_data"],
                Read = new CorpusReadOptions
                {
                    TextColumn = (string?)node["text_column"] ?? new CorpusReadOptions().TextColumn,
                    TextField = (string?)node["text_field"] ?? new CorpusReadOptions().TextField,
                },
            };
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException)
        {
            throw new InvalidDataException($"{source}: not a valid run configuration ({e.Message}).");
        }
    }
}
