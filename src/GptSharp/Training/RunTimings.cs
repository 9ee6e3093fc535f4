using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace GptSharp.Training;

/// <summary>
/// Where a training session's wall time goes, phase by phase. <see cref="Trainer"/> fills in the steps, evaluations,
/// samples and batch fetches; <see cref="TrainingRun"/> the rest (data set-up, initial losses, checkpoint, model and
/// report writes). Times are of this session only (a resumed run starts again from zero).
/// </summary>
internal sealed class RunTimings
{
    /// <summary>Forward, backward and AdamW of the optimizer steps (batch fetches excluded).</summary>
    public TimeSpan Steps { get; set; }

    /// <summary>The <c>evaluate_model</c> calls every <c>eval_freq</c> steps.</summary>
    public TimeSpan Evaluations { get; set; }

    /// <summary>The greedy samples after each epoch.</summary>
    public TimeSpan Samples { get; set; }

    /// <summary>The book's losses of the untrained model (section 5.1.3), on a new run.</summary>
    public TimeSpan InitialLosses { get; set; }

    /// <summary>Training checkpoints, the final model file and <c>best.safetensors</c>.</summary>
    public TimeSpan Checkpoints { get; set; }

    /// <summary>metrics.csv, samples.txt, the plots, report.html and config.json.</summary>
    public TimeSpan Reports { get; set; }

    /// <summary>Reading/encoding the data and building the loaders, plus every batch fetch of training.</summary>
    public TimeSpan DataLoading { get; set; }

    /// <summary>The whole session, from the start of <see cref="TrainingRun.Train"/> to its end.</summary>
    public TimeSpan Total { get; set; }

    /// <summary>Tokens trained on in this session.</summary>
    public long Tokens { get; set; }

    /// <summary>Training throughput of the steps alone.</summary>
    public double StepTokensPerSecond => Steps > TimeSpan.Zero ? Tokens / Steps.TotalSeconds : 0;

    /// <summary>Training throughput over the whole session (evaluations, samples and writes included).</summary>
    public double RunTokensPerSecond => Total > TimeSpan.Zero ? Tokens / Total.TotalSeconds : 0;

    /// <summary>The rest: process overheads, events, progress display.</summary>
    public TimeSpan Other => Total - Steps - Evaluations - Samples - InitialLosses - Checkpoints - Reports - DataLoading;

    /// <summary>One line per phase with its seconds and share of the total, then the two throughputs.</summary>
    public string Describe()
    {
        var text = new StringBuilder("Where the time went:\n");
        double total = Math.Max(Total.TotalSeconds, 1e-9);
        void Line(string name, TimeSpan t) =>
            text.Append(string.Create(CultureInfo.InvariantCulture, $"  {name,-16}{t.TotalSeconds,10:F2} s {100 * t.TotalSeconds / total,6:F1} %\n"));
        Line("training steps", Steps);
        Line("evaluations", Evaluations);
        Line("samples", Samples);
        Line("initial losses", InitialLosses);
        Line("checkpoints", Checkpoints);
        Line("metrics/plots", Reports);
        Line("data loading", DataLoading);
        Line("other", Other);
        Line("total", Total);
        text.Append(string.Create(CultureInfo.InvariantCulture,
            $"  tokens/s: {StepTokensPerSecond:F0} in the steps alone, {RunTokensPerSecond:F0} over the whole run ({Tokens:N0} tokens)"));
        return text.ToString();
    }

    /// <summary>The timings as JSON (seconds), as <c>timings.json</c> in the run directory holds them.</summary>
    public string ToJson() => JsonSerializer.Serialize(new Dictionary<string, double>
    {
        ["steps_s"] = Steps.TotalSeconds,
        ["evaluations_s"] = Evaluations.TotalSeconds,
        ["samples_s"] = Samples.TotalSeconds,
        ["initial_losses_s"] = InitialLosses.TotalSeconds,
        ["checkpoints_s"] = Checkpoints.TotalSeconds,
        ["reports_s"] = Reports.TotalSeconds,
        ["data_loading_s"] = DataLoading.TotalSeconds,
        ["other_s"] = Other.TotalSeconds,
        ["total_s"] = Total.TotalSeconds,
        ["tokens"] = Tokens,
        ["step_tokens_per_s"] = StepTokensPerSecond,
        ["run_tokens_per_s"] = RunTokensPerSecond,
    }, TrainingJsonContext.TypeInfo<Dictionary<string, double>>(TimingsJson));

    private static readonly JsonSerializerOptions TimingsJson = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        TypeInfoResolver = TrainingJsonContext.Default,
    };
}
