using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using GptSharp.Training;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace GptSharp.Serving;

/// <summary>
/// The training runs under a folder (each a <see cref="RunDirectory"/>), pushed to <c>/runs</c> over server-sent
/// events: every poll sends, per run, only what changed since the last one (new metrics rows, new samples, the
/// state), so the page's loss and perplexity charts grow while <c>gptsharp train</c> writes.
/// </summary>
internal sealed partial class RunsDashboard(string? runsDirectory, TimeSpan pollInterval)
{
    public void Map(IEndpointRouteBuilder app) => app.MapGet("/runs/events", StreamAsync);

    private async Task StreamAsync(HttpContext context)
    {
        if (runsDirectory is null)
            throw new ApiException(404, "no runs directory: start the server with --runs DIR to watch training runs.", null, "no_runs_directory");
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        var sent = new Dictionary<string, RunSnapshot>();
        var token = context.RequestAborted;
        while (!token.IsCancellationRequested)
        {
            foreach (var run in ReadRuns(runsDirectory))
            {
                sent.TryGetValue(run.Name, out var previous);
                byte[]? update = Update(previous, run);
                sent[run.Name] = run;
                if (update is null) continue;
                await context.Response.Body.WriteAsync("event: run\ndata: "u8.ToArray(), token);
                await context.Response.Body.WriteAsync(update, token);
                await context.Response.Body.WriteAsync("\n\n"u8.ToArray(), token);
            }
            // A comment line keeps proxies from closing an idle stream and tells the page the poll ran.
            await context.Response.Body.WriteAsync(": poll\n\n"u8.ToArray(), token);
            await context.Response.Body.FlushAsync(token);
            try { await Task.Delay(pollInterval, token); }
            catch (OperationCanceledException) { break; }
        }
    }

    /// <summary>What one run's files say now: metrics.csv's column names and its rows (NaN for an empty cell).</summary>
    internal sealed record RunSnapshot(string Name, string State, string? Config, string Samples, IReadOnlyList<string> Columns, IReadOnlyList<double[]> Rows);

    /// <summary>The JSON of what changed between two snapshots of a run, or null when nothing did.</summary>
    private static byte[]? Update(RunSnapshot? previous, RunSnapshot run)
    {
        // A rewritten metrics file with fewer rows (a restart) or other columns (a benchmark's first scores) resends everything.
        bool reset = previous is null || run.Rows.Count < previous.Rows.Count || !previous.Columns.SequenceEqual(run.Columns);
        int from = reset ? 0 : previous!.Rows.Count;
        bool changed = reset || from < run.Rows.Count || previous!.State != run.State || previous.Samples != run.Samples || previous.Config != run.Config;
        if (!changed) return null;
        var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("name", run.Name);
            json.WriteString("state", run.State);
            json.WriteBoolean("reset", reset);
            if (reset || previous!.Config != run.Config) json.WriteString("config", run.Config);
            if (reset || previous!.Samples != run.Samples) json.WriteString("samples", run.Samples);
            if (reset)
            {
                json.WriteStartArray("columns");
                foreach (string column in run.Columns) json.WriteStringValue(column);
                json.WriteEndArray();
            }
            json.WriteStartArray("rows");
            for (int i = from; i < run.Rows.Count; i++)
            {
                json.WriteStartArray();
                // An empty cell (a benchmark not scored at that evaluation) or a diverged loss: JSON has no NaN.
                foreach (double v in run.Rows[i])
                    if (double.IsFinite(v)) json.WriteNumberValue(v);
                    else json.WriteNullValue();
                json.WriteEndArray();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>The runs in <paramref name="directory"/>: the folder itself if it is a run, else its sub-folders that are.</summary>
    internal static IEnumerable<RunSnapshot> ReadRuns(string directory)
    {
        if (!Directory.Exists(directory)) yield break;
        var folders = IsRun(directory) ? [directory] : Directory.GetDirectories(directory).Where(IsRun).Order(StringComparer.Ordinal).ToArray();
        foreach (string folder in folders)
        {
            RunSnapshot? snapshot = null;
            try { snapshot = ReadRun(folder); }
            catch (IOException) { } // Caught mid-rename: the next poll reads it.
            catch (UnauthorizedAccessException) { }
            if (snapshot is not null) yield return snapshot;
        }
    }

    private static bool IsRun(string folder) =>
        File.Exists(Path.Combine(folder, RunDirectory.MetricsFile)) || File.Exists(Path.Combine(folder, RunDirectory.ConfigFile));

    internal static RunSnapshot ReadRun(string folder)
    {
        var run = new RunDirectory(folder);
        string? config = ReadText(run.File(RunDirectory.ConfigFile));
        string samples = ReadText(run.File(RunDirectory.SamplesFile)) ?? "";
        string metrics = ReadText(run.File(RunDirectory.MetricsFile)) ?? "";
        return new RunSnapshot(Path.GetFileName(Path.TrimEndingDirectorySeparator(folder)), State(run), config, samples,
            MetricsColumns(metrics), ParseMetrics(metrics));
    }

    private static string? ReadText(string path) => File.Exists(path) ? File.ReadAllText(path) : null;

    /// <summary>The header of <c>metrics.csv</c> (step, epoch, tokens_seen, train_loss, val_loss, lr, tokens_per_s, then a benchmark's
    /// TASK_METRIC columns), once its line is complete.</summary>
    internal static IReadOnlyList<string> MetricsColumns(string csv)
    {
        int end = csv.IndexOf('\n');
        return end < 0 ? [] : csv[..end].TrimEnd('\r').Split(',');
    }

    /// <summary>
    /// Rows of <c>metrics.csv</c> (<see cref="MetricsColumns"/>); an empty cell (a benchmark not scored at that evaluation) is
    /// NaN; a last line without its newline is still being written and waits for the next poll.
    /// </summary>
    internal static IReadOnlyList<double[]> ParseMetrics(string csv)
    {
        var rows = new List<double[]>();
        int end = csv.LastIndexOf('\n');
        if (end < 0) return rows;
        foreach (string line in csv[..end].Split('\n').Skip(1))
        {
            string[] cells = line.TrimEnd('\r').Split(',');
            var values = new double[cells.Length];
            bool ok = cells.Length >= 5;
            for (int i = 0; i < cells.Length && ok; i++)
            {
                if (i >= 5 && cells[i].Length == 0) values[i] = double.NaN;
                else ok = double.TryParse(cells[i], NumberStyles.Float, CultureInfo.InvariantCulture, out values[i]);
            }
            if (ok) rows.Add(values);
        }
        return rows;
    }

    /// <summary>
    /// running / stopped / finished, from the status line the trainer writes into <c>report.html</c> at each
    /// evaluation ("in progress") and at the end ("completed", "stopped ..."), and from whether a live process still
    /// holds the run's lock (<see cref="RunDirectory.IsTrainingNow"/>): a killed run never writes its last status.
    /// </summary>
    private static string State(RunDirectory run)
    {
        string? report = ReadText(run.File(RunDirectory.ReportFile));
        var status = report is null ? null : StatusLine().Match(report);
        string text = status is { Success: true } ? WebUtility.HtmlDecode(status.Groups[1].Value) : "in progress";
        return text.StartsWith("completed", StringComparison.Ordinal) ? "finished"
            : text.StartsWith("stopped", StringComparison.Ordinal) ? "stopped"
            // "in progress" in the report, but no process holds the run: it was killed (SIGKILL, OOM, power cut).
            : run.IsTrainingNow ? "running"
            : "stopped";
    }

    [GeneratedRegex("<p>([^<]*?) — epoch")]
    private static partial Regex StatusLine();
}
