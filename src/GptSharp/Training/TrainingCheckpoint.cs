using System.Text.Json;
using System.Text.Json.Serialization;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Formats.SafeTensors;
using GptSharp.Randomness;

namespace GptSharp.Training;

/// <summary>
/// A training checkpoint: everything <c>gptsharp train --resume</c> needs to continue a run bit for bit: the model,
/// AdamW's moments and step, the trainer state (epoch, position in the epoch, global step, tokens seen, metrics and
/// samples so far), the run configuration and the random generator's complete state. One safetensors file
/// (atomic, durable writes); a run directory holds the last few as <c>checkpoint-&lt;steps&gt;.safetensors</c>.
/// <see cref="Save"/> writes one, <see cref="Load"/> reads one (or a run directory's newest complete one).
/// </summary>
public sealed class TrainingCheckpoint : IDisposable
{
    private const string RunConfigKey = "run_config";
    private const string RngKindKey = "rng_kind";
    private const string RngStateKey = "rng_state";

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        TypeInfoResolver = TrainingJsonContext.Default,
    };

    private TrainingCheckpoint(string path, RunConfig config, TrainerState state, GptModel model, AdamW optimizer, IRandomGenerator generator)
    {
        Path = path;
        Config = config;
        State = state;
        Model = model;
        Optimizer = optimizer;
        Generator = generator;
    }

    /// <summary>The file it was read from.</summary>
    public string Path { get; }
    public RunConfig Config { get; }
    public TrainerState State { get; }
    public GptModel Model { get; }
    public AdamW Optimizer { get; }

    /// <summary>The run's random generator with its state restored, also the model's dropout stream.</summary>
    public IRandomGenerator Generator { get; }

    /// <summary>The file name of the checkpoint taken after <paramref name="stepsDone"/> optimizer steps.</summary>
    public static string FileNameFor(long stepsDone) => TrainingCheckpointFile.FileNameFor(stepsDone);

    /// <summary>The newest complete checkpoint of a run directory, or null when it has none.</summary>
    public static string? Latest(string runDirectory) => TrainingCheckpointFile.Latest(runDirectory);

    /// <summary>Writes a checkpoint atomically and durably: a crash during the write leaves the earlier files as they were.</summary>
    public static void Save(string path, RunConfig config, GptModel model, AdamW optimizer, IRandomGenerator generator, TrainerState state)
    {
        if (config.Model != model.Config) throw new ArgumentException("The run configuration does not describe this model.");
        TrainingCheckpointFile.Save(path, model, optimizer, JsonSerializer.Serialize(state, TrainingJsonContext.TypeInfo<TrainerState>(Json)), new Dictionary<string, string>
        {
            [RunConfigKey] = config.ToJson(),
            [RngKindKey] = generator.Kind,
            [RngStateKey] = Convert.ToBase64String(generator.GetState()),
        });
    }

    /// <summary>
    /// Reads a checkpoint file, or the newest complete checkpoint of a run directory, into a new model, optimizer and
    /// generator. The caller owns them (<see cref="Dispose"/> releases the model and optimizer).
    /// </summary>
    public static TrainingCheckpoint Load(string runDirectoryOrFile)
    {
        string path = TrainingCheckpointFile.Resolve(runDirectoryOrFile);
        var (config, state, rngKind, rngState) = ReadContents(path);
        if (!RandomGenerators.Kinds.Contains(rngKind))
            throw new InvalidDataException($"{path}: unknown random generator kind '{rngKind}'.");
        var generator = RandomGenerators.Create(rngKind, 0);
        generator.SetState(rngState);
        var (model, optimizer, _) = TrainingCheckpointFile.Load(path);
        if (model.Config != config.Model)
        {
            optimizer.Dispose();
            model.Dispose();
            throw new InvalidDataException($"{path}: the model's config differs from the run configuration's.");
        }
        model.DropoutGenerator = generator;
        return new TrainingCheckpoint(path, config, state, model, optimizer, generator);
    }

    /// <summary>The run configuration, trainer state and generator state of a checkpoint (its header only, no tensor is read).</summary>
    internal static (RunConfig Config, TrainerState State, string RngKind, byte[] RngState) ReadContents(string path)
    {
        IReadOnlyDictionary<string, string> metadata;
        try
        {
            metadata = TrainingCheckpointFile.ReadMetadata(path);
        }
        catch (InvalidDataException) when (IsWeightsOnly(path))
        {
            throw new InvalidDataException($"{path}: model weights only, not a training checkpoint: TrainingRun.Resume continues a run from its checkpoint; to start a new run from these weights use RunConfig.InitFrom {path}.");
        }
        string Get(string key) => metadata.TryGetValue(key, out var v) ? v
            : throw new InvalidDataException($"{path}: not a checkpoint of `gptsharp train` (no '{key}' in its metadata; to start a new run from its weights use RunConfig.InitFrom).");
        try
        {
            var config = RunConfig.FromJson(Get(RunConfigKey), path);
            var state = JsonSerializer.Deserialize(Get(TrainingCheckpointFile.TrainerStateKey), TrainingJsonContext.TypeInfo<TrainerState>(Json))
                ?? throw new InvalidDataException($"{path}: empty trainer state.");
            return (config, state, Get(RngKindKey), Convert.FromBase64String(Get(RngStateKey)));
        }
        catch (Exception e) when (e is JsonException or FormatException)
        {
            throw new InvalidDataException($"{path}: corrupt training-checkpoint metadata ({e.Message}).");
        }
    }

    /// <summary>True for a file that holds a model but no training state: a model .safetensors or any .pth.</summary>
    private static bool IsWeightsOnly(string path)
    {
        try
        {
            using (var probe = File.OpenRead(path))
                if (probe.ReadByte() == 'P' && probe.ReadByte() == 'K') return true;
            using var file = SafeTensorsFile.Open(path);
            return !TrainingCheckpointFile.IsTrainingCheckpoint(file);
        }
        catch (InvalidDataException)
        {
            return false;
        }
    }

    public void Dispose()
    {
        Optimizer.Dispose();
        Model.Dispose();
    }
}
