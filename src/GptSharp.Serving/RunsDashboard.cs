using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Threading.Channels;
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
/// <remarks>
/// One watcher reads the files for every listener (not one per listener: eight open pages on a 100k-row
/// <c>metrics.csv</c> cost half a core that way), runs only while someone listens, and skips a metrics file whose
/// length and time are unchanged. A new listener gets the whole state first, then the same deltas as the others;
/// one that falls too far behind is disconnected (its <c>EventSource</c> reconnects and starts from the whole state).
/// </remarks>
internal sealed partial class RunsDashboard(string? runsDirectory, TimeSpan pollInterval)
{
    /// <summary>Polls a listener may fall behind by before it is dropped.</summary>
    private const int ListenerBacklog = 64;

    private readonly object _gate = new();
    private readonly List<Channel<byte[]>> _listeners = new();
    private readonly Dictionary<string, (long Length, DateTime Written, IReadOnlyList<string> Columns, IReadOnlyList<double[]> Rows)> _metricsCache = new();
    private Dictionary<string, RunSnapshot> _latest = new();
    private bool _watching;

    /// <summary>Polls of the runs folder so far, all listeners together (the test of the shared watcher counts them).</summary>
    internal long Polls;

    public void Map(IEndpointRouteBuilder app) => app.MapMethods("/runs/events", [HttpMethods.Get], StreamAsync);

    private async Task StreamAsync(HttpContext context)
    {
        if (runsDirectory is null)
            throw new ApiException(404, "no runs directory: start the server with --runs DIR to watch training runs.", null, "no_runs_directory");
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        var token = context.RequestAborted;
        var channel = Channel.CreateBounded<byte[]>(new BoundedChannelOptions(ListenerBacklog) { SingleReader = true, SingleWriter = true });
        byte[] initial;
        lock (_gate)
        {
            initial = Message(_latest.Values.Select(run => Update(null, run)));
            _listeners.Add(channel);
            if (!_watching)
            {
                _watching = true;
                _ = Task.Run(WatchAsync);
            }
        }
        try
        {
            await context.Response.Body.WriteAsync(initial, token);
            await context.Response.Body.FlushAsync(token);
            await foreach (byte[] message in channel.Reader.ReadAllAsync(token))
            {
                await context.Response.Body.WriteAsync(message, token);
                await context.Response.Body.FlushAsync(token);
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested) { }
        finally
        {
            lock (_gate) _listeners.Remove(channel);
        }
    }

    /// <summary>The one poll loop: reads the runs, sends what changed to every listener, stops when nobody listens.</summary>
    private async Task WatchAsync()
    {
        while (true)
        {
            RunSnapshot[] runs;
            // The folder vanishing or turning unreadable mid-poll must not end the one watcher every listener depends on.
            try { runs = ReadRuns(runsDirectory!, _metricsCache).ToArray(); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { runs = _latest.Values.ToArray(); }
            Interlocked.Increment(ref Polls);
            lock (_gate)
            {
                var updates = runs.Select(run => Update(_latest.GetValueOrDefault(run.Name), run)).ToList();
                _latest = runs.ToDictionary(run => run.Name);
                byte[] message = Message(updates);
                foreach (var listener in _listeners)
                    if (!listener.Writer.TryWrite(message)) listener.Writer.TryComplete();
                if (_listeners.Count == 0) { _watching = false; return; }
            }
            await Task.Delay(pollInterval).ConfigureAwait(false);
        }
    }

    /// <summary>One poll's events: each run that changed, then a comment line that keeps proxies from closing an idle stream.</summary>
    private static byte[] Message(IEnumerable<byte[]?> updates)
    {
        var buffer = new MemoryStream();
        foreach (byte[]? update in updates)
        {
            if (update is null) continue;
            buffer.Write("event: run\ndata: "u8);
            buffer.Write(update);
            buffer.Write("\n\n"u8);
        }
        buffer.Write(": poll\n\n"u8);
        return buffer.ToArray();
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
    internal static IEnumerable<RunSnapshot> ReadRuns(string directory,
        Dictionary<string, (long Length, DateTime Written, IReadOnlyList<string> Columns, IReadOnlyList<double[]> Rows)>? metricsCache = null)
    {
        if (!Directory.Exists(directory)) yield break;
        var folders = IsRun(directory) ? [directory] : Directory.GetDirectories(directory).Where(IsRun).Order(StringComparer.Ordinal).ToArray();
        foreach (string folder in folders)
        {
            RunSnapshot? snapshot = null;
            try { snapshot = ReadRun(folder, metricsCache); }
            catch (IOException) { } // Caught mid-rename: the next poll reads it.
            catch (UnauthorizedAccessException) { }
            if (snapshot is not null) yield return snapshot;
        }
    }

    private static bool IsRun(string folder) =>
        File.Exists(Path.Combine(folder, RunDirectory.MetricsFile)) || File.Exists(Path.Combine(folder, RunDirectory.ConfigFile));

    internal static RunSnapshot ReadRun(string folder,
        Dictionary<string, (long Length, DateTime Written, IReadOnlyList<string> Columns, IReadOnlyList<double[]> Rows)>? metricsCache = null)
    {
        var run = new RunDirectory(folder);
        string? config = ReadText(run.File(RunDirectory.ConfigFile));
        string samples = ReadText(run.File(RunDirectory.SamplesFile)) ?? "";
        var (columns, rows) = Metrics(run.File(RunDirectory.MetricsFile), metricsCache);
        return new RunSnapshot(Path.GetFileName(Path.TrimEndingDirectorySeparator(folder)), State(run), config, samples, columns, rows);
    }

    /// <summary>The columns and rows of a metrics file, parsed again only when its length or time changed.</summary>
    private static (IReadOnlyList<string> Columns, IReadOnlyList<double[]> Rows) Metrics(string path,
        Dictionary<string, (long Length, DateTime Written, IReadOnlyList<string> Columns, IReadOnlyList<double[]> Rows)>? cache)
    {
        var file = new FileInfo(path);
        if (!file.Exists) return ([], []);
        if (cache is not null && cache.TryGetValue(path, out var cached) && cached.Length == file.Length && cached.Written == file.LastWriteTimeUtc)
            return (cached.Columns, cached.Rows);
        string csv = File.ReadAllText(path);
        var (columns, rows) = (MetricsColumns(csv), ParseMetrics(csv));
        if (cache is not null) cache[path] = (file.Length, file.LastWriteTimeUtc, columns, rows);
        return (columns, rows);
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
