using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using GptSharp.Checkpoints;
using GptSharp.Model;
using GptSharp.Tensors;

namespace GptSharp.Training;

/// <summary>
/// A training checkpoint that <c>gptsharp train --resume</c> continues from bit-identically: a safetensors file
/// with the model's parameters (book names), AdamW's <c>exp_avg</c>/<c>exp_avg_sq</c> per parameter
/// (<c>optimizer.exp_avg.&lt;name&gt;</c>), and in the metadata the optimizer's scalars, the run configuration,
/// the trainer state (epoch, step, tokens seen, data-order position, metrics, samples) and the global random
/// generator's complete state. Written atomically.
/// </summary>
public static class TrainingRunCheckpoint
{
    public const string FileName = "checkpoint.safetensors";
    public const string Kind = "training";
    private const string ExpAvgPrefix = "optimizer.exp_avg.";
    private const string ExpAvgSqPrefix = "optimizer.exp_avg_sq.";

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>The optimizer's scalar state (PyTorch's param-group hyper-parameters and <c>step</c>).</summary>
    public sealed record OptimizerScalars(long Step, float LearningRate, float WeightDecay, float Beta1, float Beta2, float Eps);

    /// <summary>What a checkpoint holds besides the tensors.</summary>
    public sealed record Contents(string Path, RunConfig Config, TrainerState State, OptimizerScalars Optimizer, string RngKind, byte[] RngState);

    public static void Save(string path, RunConfig config, GptModel model, AdamW optimizer, IRandomGenerator generator, TrainerState state)
    {
        var parameters = model.Parameters();
        if (optimizer.Parameters.Count != parameters.Count)
            throw new ArgumentException("The optimizer does not hold the model's parameters.");
        var entries = new List<SafeTensorsEntry>();
        foreach (var p in parameters) entries.Add(SafeTensorsEntry.Float32(p.Name, p.Value));
        for (int i = 0; i < parameters.Count; i++)
        {
            entries.Add(SafeTensorsEntry.Float32(ExpAvgPrefix + parameters[i].Name, optimizer.ExpAvg[i]));
            entries.Add(SafeTensorsEntry.Float32(ExpAvgSqPrefix + parameters[i].Name, optimizer.ExpAvgSq[i]));
        }
        var scalars = new OptimizerScalars(optimizer.StepCount, optimizer.LearningRate, optimizer.WeightDecay, optimizer.Beta1, optimizer.Beta2, optimizer.Eps);
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            [ModelCheckpoint.KindKey] = Kind,
            [ModelCheckpoint.ConfigKey] = ConfigJson.ToBookJson(config.Model),
            ["run_config"] = config.ToJson(),
            ["trainer_state"] = JsonSerializer.Serialize(state, Json),
            ["optimizer"] = JsonSerializer.Serialize(scalars, Json),
            ["rng_kind"] = generator.Kind,
            ["rng_state"] = Convert.ToBase64String(generator.GetState()),
        };
        SafeTensorsWriter.Write(path, entries, metadata);
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
        using var file = SafeTensorsFile.Open(path);
        return ReadContents(file);
    }

    private static Contents ReadContents(SafeTensorsFile file)
    {
        string path = file.FilePath;
        string Get(string key) => file.Metadata.TryGetValue(key, out var v) ? v
            : throw new InvalidDataException($"{path}: not a GptSharp training checkpoint (no '{key}' in its metadata).");
        if (Get(ModelCheckpoint.KindKey) != Kind)
            throw new InvalidDataException($"{path}: a model file, not a training checkpoint; --resume needs {FileName} from a run directory.");
        try
        {
            var config = RunConfig.FromJson(Get("run_config"), path);
            var state = JsonSerializer.Deserialize<TrainerState>(Get("trainer_state"), Json) ?? throw new InvalidDataException($"{path}: empty trainer state.");
            var optimizer = JsonSerializer.Deserialize<OptimizerScalars>(Get("optimizer"), Json) ?? throw new InvalidDataException($"{path}: empty optimizer state.");
            return new Contents(path, config, state, optimizer, Get("rng_kind"), Convert.FromBase64String(Get("rng_state")));
        }
        catch (Exception e) when (e is JsonException or FormatException)
        {
            throw new InvalidDataException($"{path}: corrupt training-checkpoint metadata ({e.Message}).");
        }
    }

    /// <summary>
    /// Restores a run: the model (built from the stored config), its AdamW optimizer with moments and step count,
    /// the global generator (its state restored, also set as the model's dropout stream) and the trainer state.
    /// </summary>
    public static (GptModel Model, AdamW Optimizer, IRandomGenerator Generator, Contents Contents) Load(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        var contents = ReadContents(file);
        IRandomGenerator generator = contents.RngKind switch
        {
            "torch" => new TorchGenerator(),
            "fast" => new FastRandom(),
            _ => throw new InvalidDataException($"{path}: unknown random generator kind '{contents.RngKind}'."),
        };
        generator.SetState(contents.RngState);
        var model = new GptModel(contents.Config.Model);
        AdamW? optimizer = null;
        try
        {
            var parameters = model.Parameters();
            foreach (var p in parameters) ReadExact(file, p.Name, p.Value);
            var o = contents.Optimizer;
            optimizer = new AdamW(parameters, o.LearningRate, o.WeightDecay, o.Beta1, o.Beta2, o.Eps) { StepCount = o.Step };
            for (int i = 0; i < parameters.Count; i++)
            {
                ReadExact(file, ExpAvgPrefix + parameters[i].Name, optimizer.ExpAvg[i]);
                ReadExact(file, ExpAvgSqPrefix + parameters[i].Name, optimizer.ExpAvgSq[i]);
            }
            model.DropoutGenerator = generator;
            return (model, optimizer, generator, contents);
        }
        catch
        {
            optimizer?.Dispose();
            model.Dispose();
            throw;
        }
    }

    private static void ReadExact(SafeTensorsFile file, string name, Tensor destination)
    {
        var stored = file.Find(name) ?? throw new InvalidDataException($"{file.FilePath}: tensor '{name}' is missing.");
        if (!stored.Shape.AsSpan().SequenceEqual(destination.Shape))
            throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture,
                $"{file.FilePath}: tensor '{name}' has shape [{string.Join(", ", stored.Shape)}], the model expects {destination.ShapeString}."));
        file.ReadInto(name, destination.Span);
    }
}
