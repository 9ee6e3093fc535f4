using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using GptSharp.Model;
using GptSharp.Formats;
using GptSharp.Formats.SafeTensors;

namespace GptSharp.Checkpoints;

/// <summary>
/// The file format of a training checkpoint (the public API is <c>GptSharp.Training.TrainingCheckpoint</c>): one
/// safetensors file (atomic, durable writes) with the model's parameters under the book's names, AdamW's moments as
/// <c>optimizer.exp_avg.&lt;name&gt;</c> and <c>optimizer.exp_avg_sq.&lt;name&gt;</c>, and in <c>__metadata__</c> the
/// config, the optimizer's step and hyper-parameters (<c>optimizer</c>, JSON), the training loop's state
/// (<c>trainer_state</c>, JSON) and the caller's own entries (run configuration, random-generator state).
/// In a run directory the checkpoints are <c>checkpoint-&lt;steps done, 8 digits&gt;.safetensors</c>; the newest one that
/// opens as a complete checkpoint is the one to resume (<see cref="Latest"/>).
/// </summary>
internal static partial class TrainingCheckpointFile
{
    /// <summary>The value of <c>__metadata__["gptsharp"]</c> marking a training checkpoint.</summary>
    public const string Kind = "training";

    /// <summary>A checkpoint's name in a run directory: <c>checkpoint-00000042.safetensors</c> after 42 optimizer steps.</summary>
    public static string FileNameFor(long stepsDone) => string.Create(CultureInfo.InvariantCulture, $"checkpoint-{stepsDone:D8}.safetensors");

    [GeneratedRegex(@"^checkpoint-([0-9]{8,19})\.safetensors$")]
    private static partial Regex CheckpointName();

    /// <summary>True for a name <see cref="FileNameFor"/> gives.</summary>
    public static bool IsCheckpointFileName(string fileName) => CheckpointName().IsMatch(fileName);

    /// <summary>The checkpoints of a run directory, newest (most steps) first, complete or not.</summary>
    public static IReadOnlyList<string> List(string runDirectory) =>
        Directory.Exists(runDirectory)
            ? Directory.EnumerateFiles(runDirectory, "checkpoint-*.safetensors")
                .Select(p => (Path: p, Match: CheckpointName().Match(Path.GetFileName(p))))
                .Where(x => x.Match.Success)
                .OrderByDescending(x => long.Parse(x.Match.Groups[1].Value, CultureInfo.InvariantCulture))
                .Select(x => x.Path).ToList()
            : [];

    /// <summary>
    /// The newest checkpoint of a run directory that opens as a complete training checkpoint (its header parses and the
    /// file holds exactly the bytes the header describes), or null when there is none. Newer files that fail are skipped.
    /// </summary>
    public static string? Latest(string runDirectory)
    {
        foreach (var path in List(runDirectory))
        {
            try
            {
                using var file = SafeTensorsFile.Open(path);
                if (IsTrainingCheckpoint(file)) return path;
            }
            catch (Exception e) when (e is InvalidDataException or IOException) { }
        }
        return null;
    }

    /// <summary>The checkpoint a run directory resumes from (its <see cref="Latest"/>), or the file itself.</summary>
    public static string Resolve(string runDirectoryOrFile)
    {
        if (Directory.Exists(runDirectoryOrFile))
            return Latest(runDirectoryOrFile) ?? throw new FileNotFoundException(
                $"{runDirectoryOrFile}: the run directory has no complete checkpoint-<steps>.safetensors (was the run stopped before its first checkpoint?); to start a new run from its weights use RunConfig.InitFrom.");
        if (!File.Exists(runDirectoryOrFile)) throw new FileNotFoundException($"{runDirectoryOrFile}: neither a run directory nor a training checkpoint file.", runDirectoryOrFile);
        return runDirectoryOrFile;
    }

    public const string OptimizerKey = "optimizer";
    public const string TrainerStateKey = "trainer_state";
    public const string ExpAvgPrefix = "optimizer.exp_avg.";
    public const string ExpAvgSqPrefix = "optimizer.exp_avg_sq.";

    /// <summary>
    /// Saves model, optimizer and trainer state to <paramref name="path"/> atomically and durably (the previous file survives a
    /// failed write). <paramref name="extraMetadata"/> adds the caller's own string entries to <c>__metadata__</c>
    /// (the run configuration and random-generator state); they cannot replace this class's keys.
    /// </summary>
    public static void Save(string path, GptModel model, AdamW optimizer, string trainerStateJson, IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        var parameters = model.Parameters();
        if (optimizer.Parameters.Count != parameters.Count || optimizer.Parameters.Where((p, i) => !ReferenceEquals(p, parameters[i])).Any())
            throw new ArgumentException("The optimizer must hold the model's parameters, in the model's order.");
        try
        {
            using var _ = JsonDocument.Parse(trainerStateJson);
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"trainer state is not valid JSON: {e.Message}");
        }
        var entries = ModelFile.Entries(model)
            .Concat(parameters.Select((p, i) => SafeTensorsEntry.Float32(ExpAvgPrefix + p.Name, optimizer.ExpAvg[i])))
            .Concat(parameters.Select((p, i) => SafeTensorsEntry.Float32(ExpAvgSqPrefix + p.Name, optimizer.ExpAvgSq[i])));
        var metadata = ModelFile.Metadata(model.Config, Kind);
        metadata[OptimizerKey] = OptimizerJson(optimizer);
        metadata[TrainerStateKey] = trainerStateJson;
        foreach (var (key, value) in extraMetadata ?? new Dictionary<string, string>())
            if (!metadata.TryAdd(key, value)) throw new ArgumentException($"Extra checkpoint metadata cannot replace '{key}'.");
        SafeTensorsWriter.Write(path, entries, metadata);
    }

    /// <summary>Loads a checkpoint (or a run directory's latest) into a new model and optimizer, and returns its whole <c>__metadata__</c>.</summary>
    public static (GptModel Model, AdamW Optimizer, IReadOnlyDictionary<string, string> Metadata) Load(string runDirectoryOrFile)
    {
        string path = Resolve(runDirectoryOrFile);
        using var file = OpenCheckpoint(path);
        var model = new GptModel(ModelFile.ConfigFor(file));
        AdamW? optimizer = null;
        try
        {
            StateDictLoader.LoadInto(model, new ModelPart(file));
            optimizer = CreateOptimizer(file, model);
            ReadInto(file, model, optimizer, loadModel: false);
            return (model, optimizer, new Dictionary<string, string>(file.Metadata));
        }
        catch
        {
            optimizer?.Dispose();
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads a checkpoint into an existing model and optimizer (same config and hyper-parameters), restoring the
    /// weights, moments, step count and learning rate; returns the trainer state.
    /// </summary>
    public static string LoadInto(string runDirectoryOrFile, GptModel model, AdamW optimizer)
    {
        string path = Resolve(runDirectoryOrFile);
        using var file = OpenCheckpoint(path);
        var config = ModelFile.ConfigFor(file);
        if (config != model.Config)
            throw new InvalidDataException($"{path}: the checkpoint's config {config.ToJson()} differs from the model's {model.Config.ToJson()}.");
        var o = ParseOptimizer(file);
        if (o.Beta1 != optimizer.Beta1 || o.Beta2 != optimizer.Beta2 || o.Eps != optimizer.Eps || o.WeightDecay != optimizer.WeightDecay)
            throw new InvalidDataException($"{path}: the checkpoint's AdamW (betas ({o.Beta1}, {o.Beta2}), eps {o.Eps}, weight_decay {o.WeightDecay}) differs from this optimizer's (betas ({optimizer.Beta1}, {optimizer.Beta2}), eps {optimizer.Eps}, weight_decay {optimizer.WeightDecay}).");
        return ReadInto(file, model, optimizer, loadModel: true);
    }

    /// <summary>
    /// The entries of <paramref name="metadata"/> that a caller added (<c>extraMetadata</c> of <see cref="Save"/>), without
    /// this format's own keys; empty for null.
    /// </summary>
    public static Dictionary<string, string> CallerMetadata(IReadOnlyDictionary<string, string>? metadata)
    {
        var own = ModelFile.Metadata(new GptConfig(), Kind).Keys.Append(OptimizerKey).Append(TrainerStateKey).ToHashSet(StringComparer.Ordinal);
        return (metadata ?? new Dictionary<string, string>()).Where(kv => !own.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
    }

    /// <summary>The <c>__metadata__</c> of a training checkpoint (header only, no tensor is read).</summary>
    public static IReadOnlyDictionary<string, string> ReadMetadata(string runDirectoryOrFile)
    {
        using var file = OpenCheckpoint(Resolve(runDirectoryOrFile));
        return new Dictionary<string, string>(file.Metadata);
    }

    /// <summary>True when <paramref name="file"/> is a training checkpoint (by its metadata).</summary>
    public static bool IsTrainingCheckpoint(SafeTensorsFile file) =>
        file.Metadata.TryGetValue(ModelFile.KindKey, out var kind) && kind == Kind;

    /// <summary>The model tensors of a checkpoint (optimizer tensors hidden), for loaders that only want the model.</summary>
    public static ITensorSource ModelTensors(SafeTensorsFile file) => new ModelPart(file);

    private static SafeTensorsFile OpenCheckpoint(string path)
    {
        var file = SafeTensorsFile.Open(path);
        if (!IsTrainingCheckpoint(file))
        {
            file.Dispose();
            throw new InvalidDataException($"{path}: not a GptSharp training checkpoint (no __metadata__ \"{ModelFile.KindKey}\": \"{Kind}\").");
        }
        return file;
    }

    private static string ReadInto(SafeTensorsFile file, GptModel model, AdamW optimizer, bool loadModel)
    {
        var parameters = model.Parameters();
        // Check everything before reading anything.
        var known = new HashSet<string>(parameters.SelectMany(p => new[] { p.Name, ExpAvgPrefix + p.Name, ExpAvgSqPrefix + p.Name }), StringComparer.Ordinal);
        foreach (var t in file.Tensors)
            if (!known.Contains(t.Name))
                throw new InvalidDataException($"{file.FilePath}: unexpected tensor '{t.Name}' {t.ShapeString}.");
        foreach (var p in parameters)
            foreach (var name in new[] { ExpAvgPrefix + p.Name, ExpAvgSqPrefix + p.Name })
            {
                var t = file.Find(name) ?? throw new InvalidDataException($"{file.FilePath}: missing tensor '{name}' (expected shape {p.Value.ShapeString}).");
                StateDictLoader.CheckShape(file.FilePath, name, t.Shape, p.Value.ShapeArray);
            }
        var o = ParseOptimizer(file);
        if (loadModel) StateDictLoader.LoadInto(model, new ModelPart(file));
        for (int i = 0; i < parameters.Count; i++)
        {
            file.ReadInto(ExpAvgPrefix + parameters[i].Name, optimizer.ExpAvg[i].Span);
            file.ReadInto(ExpAvgSqPrefix + parameters[i].Name, optimizer.ExpAvgSq[i].Span);
        }
        optimizer.StepCount = o.Step;
        optimizer.LearningRate = o.LearningRate;
        return file.Metadata.TryGetValue(TrainerStateKey, out var state) ? state : "{}";
    }

    private static AdamW CreateOptimizer(SafeTensorsFile file, GptModel model)
    {
        var o = ParseOptimizer(file);
        return new AdamW(model.Parameters(), o.LearningRate, o.WeightDecay, o.Beta1, o.Beta2, o.Eps);
    }

    private sealed record OptimizerState(float LearningRate, float WeightDecay, float Beta1, float Beta2, float Eps, long Step);

    /// <summary>The optimizer's scalars: <c>step, learning_rate, weight_decay, beta1, beta2, eps</c>.</summary>
    private static string OptimizerJson(AdamW optimizer) => new JsonObject
    {
        ["step"] = optimizer.StepCount,
        // Shortest round-trip decimals: parsing them back gives the same float bits.
        ["learning_rate"] = Exact(optimizer.LearningRate),
        ["weight_decay"] = Exact(optimizer.WeightDecay),
        ["beta1"] = Exact(optimizer.Beta1),
        ["beta2"] = Exact(optimizer.Beta2),
        ["eps"] = Exact(optimizer.Eps),
    }.ToJsonString();

    private static double Exact(float f) => double.Parse(f.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);

    private static OptimizerState ParseOptimizer(SafeTensorsFile file)
    {
        if (!file.Metadata.TryGetValue(OptimizerKey, out var json))
            throw new InvalidDataException($"{file.FilePath}: training checkpoint has no '{OptimizerKey}' metadata.");
        try
        {
            var o = JsonNode.Parse(json)!.AsObject();
            float F(string key) => (float)(o[key] ?? throw new InvalidDataException($"{file.FilePath}: '{OptimizerKey}' metadata has no '{key}'.")).GetValue<double>();
            return new OptimizerState(F("learning_rate"), F("weight_decay"), F("beta1"), F("beta2"), F("eps"), o["step"]!.GetValue<long>());
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException or FormatException)
        {
            throw new InvalidDataException($"{file.FilePath}: invalid '{OptimizerKey}' metadata ({e.Message}).");
        }
    }

    /// <summary>The checkpoint's model tensors only (names without the optimizer prefixes).</summary>
    private sealed class ModelPart(SafeTensorsFile file) : ITensorSource
    {
        private readonly List<StoredTensor> _tensors = file.Tensors.Where(t => !t.Name.StartsWith("optimizer.", StringComparison.Ordinal)).ToList();

        public string FilePath => file.FilePath;
        public IReadOnlyList<StoredTensor> Tensors => _tensors;
        public StoredTensor? Find(string name) => name.StartsWith("optimizer.", StringComparison.Ordinal) ? null : file.Find(name);
        public void ReadInto(string name, Span<float> destination) => file.ReadInto(name, destination);
        public void Dispose() { }
    }
}
