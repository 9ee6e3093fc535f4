using System.Globalization;
using System.Net;
using System.Text;
using GptSharp.Evaluation;
using GptSharp.IO;
using GptSharp.Training.Plots;

namespace GptSharp.Training;

/// <summary>
/// The files of one training run: <c>config.json</c>, <c>metrics.csv</c>, <c>samples.txt</c>, <c>loss.svg</c>,
/// <c>perplexity.svg</c> and <c>report.html</c> (plus the model and checkpoint files the caller saves).
/// Every file is written atomically, so an interrupted run never leaves a half-written one.
/// </summary>
public sealed class RunDirectory
{
    public const string ConfigFile = "config.json";
    public const string MetricsFile = "metrics.csv";
    public const string SamplesFile = "samples.txt";
    public const string LossPlotFile = "loss.svg";
    public const string PerplexityPlotFile = "perplexity.svg";
    public const string TaskPlotFile = "benchmark.svg";
    public const string ReportFile = "report.html";
    public const string ModelFile = "model.safetensors";

    public RunDirectory(string path) : this(path, create: true) { }

    /// <param name="create">False for a rank of a data-parallel run other than 0, which writes nothing there.</param>
    internal RunDirectory(string path, bool create)
    {
        Path = System.IO.Path.GetFullPath(path);
        if (create) Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    /// <summary><c>runs/&lt;UTC timestamp&gt;</c>, made unique if a run started in the same second.</summary>
    public static string DefaultPath(DateTime utcNow)
    {
        string basePath = System.IO.Path.Combine("runs", utcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));
        string path = basePath;
        for (int i = 2; Directory.Exists(path); i++) path = $"{basePath}-{i}";
        return path;
    }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>Held open with an exclusive lock by the process training in the directory; the OS drops it when that process ends, even by SIGKILL.</summary>
    public const string LockFile = ".train.lock";

    /// <summary>
    /// Takes the directory for one training process: a second <c>gptsharp train</c> (or <c>--resume</c>) on the same
    /// directory would interleave its checkpoints with this one's, so it stops with one line instead. The lock is
    /// .NET's advisory file lock (flock on Unix), which a killed process cannot leave behind.
    /// </summary>
    internal IDisposable TakeForTraining()
    {
        // A reader checking IsTrainingNow holds a shared lock for an instant: try a few times before giving up.
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                return new FileStream(File(LockFile), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (attempt < 20 && System.IO.File.Exists(File(LockFile)))
            {
                Thread.Sleep(50);
            }
            catch (IOException e) when (System.IO.File.Exists(File(LockFile)))
            {
                throw new IOException($"{Path}: another process is training in this run directory (it holds {LockFile}); wait for it to finish or stop it, then resume.", e);
            }
        }
    }

    /// <summary>True while a live process trains in the directory (holds <see cref="LockFile"/>).</summary>
    public bool IsTrainingNow
    {
        get
        {
            string path = File(LockFile);
            if (!System.IO.File.Exists(path)) return false;
            try
            {
                using var probe = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                return false;
            }
            catch (IOException) when (System.IO.File.Exists(path))
            {
                return true;
            }
            catch (UnauthorizedAccessException)
            {
                return false;
            }
        }
    }

    private static void WriteText(string path, string contents) =>
        AtomicFile.Write(path, stream => stream.Write(new UTF8Encoding(false).GetBytes(contents)));

    public void WriteConfig(RunConfig config) => WriteText(File(ConfigFile), config.ToJson());

    /// <summary>
    /// Rewrites the metrics, samples, plots and report from the state so far (called at each evaluation and at the end).
    /// </summary>
    /// <param name="tokensPerEpoch">Tokens in one pass over the training loader, to place evaluations in epochs on the x axis.</param>
    public void WriteProgress(RunConfig config, TrainerState state, long tokensPerEpoch, string? status = null)
    {
        WriteText(File(MetricsFile), MetricsCsv(state));
        WriteText(File(SamplesFile), SamplesText(state));
        string loss = TrainingPlots.LossPlot(state.Evaluations, tokensPerEpoch).Render();
        string perplexity = TrainingPlots.PerplexityPlot(state.Evaluations, tokensPerEpoch).Render();
        WriteText(File(LossPlotFile), loss);
        WriteText(File(PerplexityPlotFile), perplexity);
        string? task = state.TaskEvaluations.Count > 0 ? TrainingPlots.TaskPlot(state.Evaluations, state.TaskEvaluations, tokensPerEpoch).Render() : null;
        if (task is not null) WriteText(File(TaskPlotFile), task);
        WriteText(File(ReportFile), ReportHtml(config, state, loss, perplexity, status, task));
    }

    /// <summary>
    /// The benchmark columns of metrics.csv and the report: <c>TASK_METRIC</c> (<c>hellaswag_acc</c>, <c>hellaswag_acc_norm</c>,
    /// <c>lambada_perplexity</c>...) in the order they first appear.
    /// </summary>
    public static IReadOnlyList<(string Task, string Metric)> TaskColumns(TrainerState state) =>
        state.TaskEvaluations.SelectMany(t => t.Metrics.Select(m => (t.Task, m.Name))).Distinct().ToList();

    /// <summary>
    /// One row per evaluation: <c>step,epoch,tokens_seen,train_loss,val_loss,lr,tokens_per_s</c>, then a column per benchmark
    /// metric (<see cref="TaskColumns"/>), empty in the rows of evaluations that did not score the benchmark.
    /// </summary>
    public static string MetricsCsv(TrainerState state)
    {
        var columns = TaskColumns(state);
        var csv = new StringBuilder("step,epoch,tokens_seen,train_loss,val_loss,lr,tokens_per_s");
        foreach (var (task, metric) in columns) csv.Append(',').Append(task).Append('_').Append(metric);
        csv.Append('\n');
        var byStep = TaskScoresByStep(state);
        foreach (var e in state.Evaluations)
        {
            csv.Append(string.Create(CultureInfo.InvariantCulture,
                $"{e.Step},{e.Epoch},{e.TokensSeen},{e.TrainLoss:R},{e.ValLoss:R},{e.LearningRate:G7},{e.TokensPerSecond:F1}"));
            foreach (var column in columns)
            {
                csv.Append(',');
                if (TaskScore(byStep, e.Step, column) is double v) csv.Append(v.ToString("R", CultureInfo.InvariantCulture));
            }
            csv.Append('\n');
        }
        return csv.ToString();
    }

    private static Dictionary<long, List<TaskEvaluationRecord>> TaskScoresByStep(TrainerState state) =>
        state.TaskEvaluations.GroupBy(t => t.Step).ToDictionary(g => g.Key, g => g.ToList());

    private static double? TaskScore(Dictionary<long, List<TaskEvaluationRecord>> byStep, long step, (string Task, string Metric) column) =>
        byStep.TryGetValue(step, out var scores)
            ? scores.Where(t => t.Task == column.Task).SelectMany(t => t.Metrics).Where(m => m.Name == column.Metric).Select(m => (double?)m.Value).LastOrDefault()
            : null;

    public static string SamplesText(TrainerState state)
    {
        var text = new StringBuilder();
        foreach (var s in state.Samples)
            text.Append(string.Create(CultureInfo.InvariantCulture, $"Ep {s.Epoch} (Step {s.Step:D6}): {s.Text}\n"));
        return text.ToString();
    }

    public static string ReportHtml(RunConfig config, TrainerState state, string lossSvg, string perplexitySvg, string? status, string? taskSvg = null)
    {
        static string H(string s) => WebUtility.HtmlEncode(s);
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>GptSharp training run</title>\n<style>\n");
        html.Append("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1340px;padding:0 1em;color:#222}\n");
        html.Append(".plots{display:flex;flex-wrap:wrap;gap:1em}table{border-collapse:collapse;font-size:13px}");
        html.Append("td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}");
        html.Append("pre{background:#f7f7f7;padding:1em;overflow:auto}li{margin:.4em 0;font-family:ui-monospace,monospace;font-size:13px}\n</style></head><body>\n");
        html.Append("<h1>GptSharp training run</h1>\n");
        var last = state.Evaluations.LastOrDefault();
        html.Append(string.Create(CultureInfo.InvariantCulture,
            $"<p>{H(status ?? "in progress")} — epoch {Math.Min(state.Epoch + 1, config.Training.Epochs)} of {config.Training.Epochs}, step {state.GlobalStep + 1}, {state.TokensSeen:N0} tokens seen, {state.ElapsedSeconds:F1} s"));
        if (last is not null)
            html.Append(string.Create(CultureInfo.InvariantCulture, $"; last evaluation: train loss {last.TrainLoss:F3}, val loss {last.ValLoss:F3} (perplexity {Math.Exp(last.ValLoss):F1})"));
        if (state.TaskEvaluations.LastOrDefault() is { } lastTask)
            html.Append("; ").Append(H(lastTask.Describe()));
        html.Append(".</p>\n<div class=\"plots\">\n").Append(lossSvg).Append(perplexitySvg).Append(taskSvg ?? "").Append("</div>\n");
        html.Append("<h2>Samples</h2>\n<ol>\n");
        foreach (var s in state.Samples)
            html.Append(string.Create(CultureInfo.InvariantCulture, $"<li>Ep {s.Epoch} (step {s.Step}): {H(s.Text)}</li>\n"));
        html.Append("</ol>\n<h2>Configuration</h2>\n<pre>").Append(H(config.ToJson())).Append("</pre>\n");
        var columns = TaskColumns(state);
        var byStep = TaskScoresByStep(state);
        html.Append("<h2>Metrics</h2>\n<table><tr><th>step</th><th>epoch</th><th>tokens seen</th><th>train loss</th><th>val loss</th><th>train ppl</th><th>val ppl</th><th>lr</th><th>tokens/s</th>");
        foreach (var (task, metric) in columns) html.Append("<th>").Append(H($"{task} {metric}")).Append("</th>");
        html.Append("</tr>\n");
        foreach (var e in state.Evaluations)
        {
            html.Append(string.Create(CultureInfo.InvariantCulture,
                $"<tr><td>{e.Step}</td><td>{e.Epoch}</td><td>{e.TokensSeen:N0}</td><td>{e.TrainLoss:F3}</td><td>{e.ValLoss:F3}</td><td>{Math.Exp(e.TrainLoss):F1}</td><td>{Math.Exp(e.ValLoss):F1}</td><td>{e.LearningRate:G4}</td><td>{e.TokensPerSecond:F0}</td>"));
            foreach (var column in columns)
                html.Append(string.Create(CultureInfo.InvariantCulture, $"<td>{TaskScore(byStep, e.Step, column)?.ToString("0.0000", CultureInfo.InvariantCulture)}</td>"));
            html.Append("</tr>\n");
        }
        html.Append("</table>\n</body></html>\n");
        return html.ToString();
    }
}

/// <summary>The book's <c>plot_losses</c> figure and its perplexity counterpart.</summary>
internal static class TrainingPlots
{
    /// <summary>matplotlib's first two default colors (C0, C1), as the book's figure uses.</summary>
    public const string TrainColor = "#1f77b4", ValidationColor = "#ff7f0e";

    /// <summary>matplotlib's <c>linestyle="-."</c>.</summary>
    public const string DashDot = "9.6,2.4,1.5,2.4";

    /// <summary>
    /// Training loss (solid) and validation loss (dash-dot) against epochs, with tokens seen on a second x axis on top,
    /// legend upper right. An evaluation's x is its tokens seen divided by the tokens of one epoch.
    /// </summary>
    public static SvgLineChart LossPlot(IReadOnlyList<EvaluationRecord> evaluations, long tokensPerEpoch) =>
        Plot(evaluations, tokensPerEpoch, "Loss", "Training and validation loss", logY: false, v => v);

    /// <summary>The same curves as perplexity (exp of the loss), on a logarithmic y axis.</summary>
    public static SvgLineChart PerplexityPlot(IReadOnlyList<EvaluationRecord> evaluations, long tokensPerEpoch) =>
        Plot(evaluations, tokensPerEpoch, "Perplexity", "Training and validation perplexity", logY: true, Math.Exp);

    /// <summary>matplotlib's C2..C4, for the benchmark's metrics.</summary>
    private static readonly string[] TaskColors = ["#2ca02c", "#d62728", "#9467bd", "#8c564b"];

    /// <summary>
    /// The benchmark's accuracies (every metric named <c>acc*</c>, as fractions) against epochs, at the evaluations that scored it,
    /// with tokens seen on top as in <see cref="LossPlot"/>.
    /// </summary>
    public static SvgLineChart TaskPlot(IReadOnlyList<EvaluationRecord> evaluations, IReadOnlyList<TaskEvaluationRecord> scores, long tokensPerEpoch)
    {
        double perEpoch = Math.Max(1, tokensPerEpoch);
        var tokensAt = evaluations.GroupBy(e => e.Step).ToDictionary(g => g.Key, g => g.Last().TokensSeen);
        var points = scores.Where(s => tokensAt.ContainsKey(s.Step)).ToList();
        var epochs = points.Select(s => tokensAt[s.Step] / perEpoch).ToArray();
        var chart = new SvgLineChart
        {
            Id = "benchmark",
            Title = "Benchmark accuracy",
            XLabel = "Epochs",
            YLabel = "Accuracy",
            IntegerXTicks = epochs.Length > 0 && epochs.Max() - epochs.Min() >= 2,
            TopAxis = ("Tokens seen", x => x * perEpoch),
        };
        var series = points.SelectMany(s => s.Metrics.Where(m => m.Name.StartsWith("acc", StringComparison.Ordinal)).Select(m => (s.Task, m.Name))).Distinct().ToList();
        for (int i = 0; i < series.Count; i++)
        {
            var (task, metric) = series[i];
            var values = points.Select(s => s.Task == task && s.Metrics.FirstOrDefault(m => m.Name == metric) is { Name: not null } m ? m.Value : double.NaN).ToArray();
            chart.Series.Add(new ChartSeries($"{task} {metric}", epochs, values, TaskColors[i % TaskColors.Length], i % 2 == 1 ? DashDot : null));
        }
        return chart;
    }

    private static SvgLineChart Plot(IReadOnlyList<EvaluationRecord> evaluations, long tokensPerEpoch, string yLabel, string title, bool logY, Func<double, double> transform)
    {
        double perEpoch = Math.Max(1, tokensPerEpoch);
        var epochs = evaluations.Select(e => e.TokensSeen / perEpoch).ToArray();
        var chart = new SvgLineChart
        {
            Id = logY ? "perplexity" : "loss",
            Title = title,
            XLabel = "Epochs",
            YLabel = yLabel,
            LogY = logY,
            IntegerXTicks = epochs.Length > 0 && epochs.Max() - epochs.Min() >= 2,
            TopAxis = ("Tokens seen", x => x * perEpoch),
        };
        chart.Series.Add(new ChartSeries(logY ? "Training perplexity" : "Training loss", epochs, evaluations.Select(e => transform(e.TrainLoss)).ToArray(), TrainColor));
        chart.Series.Add(new ChartSeries(logY ? "Validation perplexity" : "Validation loss", epochs, evaluations.Select(e => transform(e.ValLoss)).ToArray(), ValidationColor, DashDot));
        return chart;
    }
}
