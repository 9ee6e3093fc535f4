using System.Text.Json;
using System.Text.Json.Serialization;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Checkpoints;
using GptSharp.Formats;

namespace GptSharp.Training;

/// <summary>
/// The checkpoint <c>gptsharp train --resume</c> continues from bit-identically: a <see cref="TrainingCheckpoint"/>
/// (the model's parameters under the book's names, AdamW's moments, step and hyper-parameters, atomic writes) whose
/// trainer state is this loop's <see cref="TrainerState"/> (epoch, step, tokens seen, data-order position, metrics,
/// samples), plus the run configuration and the global random generator's complete state in the metadata.
/// </summary>
public static class TrainingRunCheckpoint
{
    public const string FileName = TrainingCheckpoint.FileName;
    private const string RunConfigKey = "run_config";
    private const string RngKindKey = "rng_kind";
    private const string RngStateKey = "rng_state";

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        TypeInfoResolver = TrainingJsonContext.Default,
    };

    /// <summary>What a checkpoint holds besides the tensors.</summary>
    public sealed record Contents(string Path, RunConfig Config, TrainerState State, string RngKind, byte[] RngState);

    public static void Save(string path, RunConfig config, GptModel model, AdamW optimizer, IRandomGenerator generator, TrainerState state)
    {
        if (config.Model != model.Config) throw new ArgumentException("The run configuration does not describe this model.");
        TrainingCheckpoint.Save(path, model, optimizer, JsonSerializer.Serialize(state, TrainingJsonContext.TypeInfo<TrainerState>(Json)), new Dictionary<string, string>
        {
            [RunConfigKey] = config.ToJson(),
            [RngKindKey] = generator.Kind,
            [RngStateKey] = Convert.ToBase64String(generator.GetState()),
        });
    }

    /// <summary>The checkpoint file of a run directory, or the file itself.</summary>
    public static string Resolve(string runDirectoryOrFile)
    {
        if (Directory.Exists(runDirectoryOrFile))
        {
            string file = System.IO.Path.Combine(runDirectoryOrFile, FileName);
            if (!File.Exists(file)) throw new FileNotFoundException($"--resume: '{runDirectoryOrFile}' has no {FileName} (was the run stopped before its first checkpoint?).");
            return file;
        }
        if (!File.Exists(runDirectoryOrFile)) throw new FileNotFoundException($"--resume: '{runDirectoryOrFile}' is neither a run directory nor a checkpoint file.");
        return runDirectoryOrFile;
    }

    /// <summary>Reads the metadata of a checkpoint (not the tensors).</summary>
    public static Contents ReadContents(string path)
    {
        IReadOnlyDictionary<string, string> metadata;
        try
        {
            metadata = TrainingCheckpoint.ReadMetadata(path);
        }
        catch (InvalidDataException) when (IsModelFile(path))
        {
            throw new InvalidDataException($"{path}: a model file, not a training checkpoint; --resume needs {FileName} from a run directory.");
        }
        string Get(string key) => metadata.TryGetValue(key, out var v) ? v
            : throw new InvalidDataException($"{path}: not a checkpoint of `gptsharp train` (no '{key}' in its metadata).");
        try
        {
            var config = RunConfig.FromJson(Get(RunConfigKey), path);
            var state = JsonSerializer.Deserialize(Get(TrainingCheckpoint.TrainerStateKey), TrainingJsonContext.TypeInfo<TrainerState>(Json))
                ?? throw new InvalidDataException($"{path}: empty trainer state.");
            return new Contents(path, config, state, Get(RngKindKey), Convert.FromBase64String(Get(RngStateKey)));
        }
        catch (Exception e) when (e is JsonException or FormatException)
        {
            throw new InvalidDataException($"{path}: corrupt training-checkpoint metadata ({e.Message}).");
        }
    }

    private static bool IsModelFile(string path)
    {
        try
        {
            using var file = SafeTensorsFile.Open(path);
            return file.Metadata.TryGetValue(ModelCheckpoint.KindKey, out var kind) && kind != TrainingCheckpoint.Kind;
        }
        catch (InvalidDataException)
        {
            return false;
        }
    }

    /// <summary>
    /// Restores a run: the model and its AdamW optimizer with moments and step count (<see cref="TrainingCheckpoint.Load"/>),
    /// the global generator (its state restored, also set as the model's dropout stream) and the trainer state.
    /// </summary>
    public static (GptModel Model, AdamW Optimizer, IRandomGenerator Generator, Contents Contents) Load(string path)
    {
        var contents = ReadContents(path);
        if (!RandomGenerators.Kinds.Contains(contents.RngKind))
            throw new InvalidDataException($"{path}: unknown random generator kind '{contents.RngKind}'.");
        var generator = RandomGenerators.Create(contents.RngKind, 0);
        generator.SetState(contents.RngState);
        var (model, optimizer, _) = TrainingCheckpoint.Load(path);
        if (model.Config != contents.Config.Model)
        {
            optimizer.Dispose();
            model.Dispose();
            throw new InvalidDataException($"{path}: the model's config differs from the run configuration's.");
        }
        model.DropoutGenerator = generator;
        return (model, optimizer, generator, contents);
    }
}
