using System.Text.RegularExpressions;

namespace GptSharp.Cli;

/// <summary>
/// The one table from the library's names (the properties and parameters its messages name, e.g.
/// <c>TrainingOptions.Epochs must be positive</c>) to the command-line flags that set them, so a CLI user reads
/// <c>--epochs must be positive</c>. Every error line (<see cref="CliErrors"/>) and every line a training run prints pass through it.
/// </summary>
internal static partial class CliFlags
{
    /// <summary>Library name → flag. A plain lower-case parameter name is keyed with the word after it (<c>stride must</c>).</summary>
    public static IReadOnlyDictionary<string, string> Table { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        // train: the run, its options and the model's shape
        ["RunConfig.Data"] = "--data",
        ["RunConfig.ValidationData"] = "--val-data",
        ["RunConfig.InitFrom"] = "--init-from",
        ["RunConfig.BatchSize"] = "--batch-size",
        ["RunConfig.LearningRate"] = "--lr",
        ["RunConfig.Rng"] = "--rng",
        ["TrainingRun.Resume"] = "--resume",
        ["TrainingOptions.Epochs"] = "--epochs",
        ["TrainingOptions.MaxSteps"] = "--max-steps",
        ["TrainingOptions.EvalFreq"] = "--eval-freq",
        ["TrainingOptions.EvalIter"] = "--eval-iter",
        ["TrainingOptions.WarmupSteps"] = "--warmup-steps",
        ["TrainingOptions.MinLr"] = "--min-lr",
        ["TrainingOptions.GradClip"] = "--grad-clip",
        ["TrainingOptions.GradAccum"] = "--grad-accum",
        ["TrainingOptions.StartContext"] = "--start-context",
        ["TrainingOptions.EvalTaskEvery"] = "--eval-task-every",
        ["TrainingOptions.EvalTask"] = "--eval-task",
        ["TrainingRunOptions.SaveEverySteps"] = "--save-every",
        ["TrainingRunOptions.SaveEveryMinutes"] = "--save-every-minutes",
        ["TrainingRunOptions.KeepLast"] = "--keep-last",
        ["TrainingRunOptions.Epochs"] = "--epochs",
        ["TrainingRunOptions.MaxSteps"] = "--max-steps",
        ["GptConfig.ContextLength"] = "--context-length",
        ["GptConfig.EmbeddingDim"] = "--emb-dim",
        ["GptConfig.Layers"] = "--layers",
        ["DistributedTraining mode"] = "--distributed",
        // data (train, prepare)
        ["batchSize"] = "--batch-size",
        ["contextLength"] = "--context-length",
        ["stride must"] = "--stride must",
        ["CorpusReadOptions.TextColumn"] = "--text-column",
        ["CorpusReadOptions.TextField"] = "--text-field",
        ["PreparationOptions.ShardTokens"] = "--shard-tokens",
        // generate, repl, sample-stats
        ["GenerationOptions.Temperature"] = "--temperature",
        ["GenerationOptions.TopK"] = "--top-k",
        ["GenerationOptions.TopP"] = "--top-p",
        ["GenerationOptions.MinP"] = "--min-p",
        ["GenerationOptions.RepetitionPenalty"] = "--repetition-penalty",
        ["GenerationOptions.FrequencyPenalty"] = "--frequency-penalty",
        ["GenerationOptions.PresencePenalty"] = "--presence-penalty",
        ["GenerationOptions.EosId"] = "--eos",
        ["GenerationOptions.NumBeams"] = "--num-beams",
        ["GenerationOptions.LengthPenalty"] = "--length-penalty",
        ["maxNewTokens"] = "--max-new-tokens",
        ["draws must"] = "--draws must",
        // serve (the batch scheduler)
        ["maxBatchSize"] = "--max-batch",
        ["maxQueueLength"] = "--max-queue",
        // eval
        ["BenchmarkOptions.BatchSize"] = "--batch-size",
        ["limit must"] = "--limit must",
        // models: load, convert, download
        ["LoadOptions.Quantization"] = "--quantize",
        ["ModelFileFormat"] = "--to",
        ["ExportDType"] = "--dtype",
        ["Gpt2Downloader.BaseUrl"] = "--base-url",
    };

    // Longest names first, so that TrainingOptions.EvalTaskEvery is not read as TrainingOptions.EvalTask + "Every". A plain
    // lower-case name ("stride must") is an English word too: it counts only where a message begins.
    private static readonly Regex Names = new(
        @"(?<![\w.-])(" + Alternatives(k => !IsPlainWord(k)) + @")(?![\w])|^(" + Alternatives(IsPlainWord) + @")(?![\w])",
        RegexOptions.CultureInvariant);

    private static bool IsPlainWord(string name) => name.All(c => char.IsLower(c) || c == ' ');

    private static string Alternatives(Func<string, bool> which) =>
        string.Join("|", Table.Keys.Where(which).OrderByDescending(k => k.Length).Select(Regex.Escape));

    /// <summary><paramref name="text"/> with every library name of <see cref="Table"/> replaced by its flag.</summary>
    public static string Map(string text) => Names.Replace(text, m => Table[m.Value]);
}
