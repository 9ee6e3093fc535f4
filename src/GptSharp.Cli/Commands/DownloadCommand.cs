using System.CommandLine;
using Spectre.Console;
using GptSharp.Pretrained;

namespace GptSharp.Cli.Commands;

/// <summary>
/// <c>gptsharp download gpt2-small|gpt2-medium|gpt2-large|gpt2-xl|--all</c>: OpenAI's GPT-2 weights into
/// the cache (<c>$GPTSHARP_HOME/gpt2/&lt;size&gt;</c>), the book's <c>download_and_load_gpt2</c> download step.
/// </summary>
internal static class DownloadCommand
{
    public static Command Create()
    {
        var models = new Argument<string[]>("model")
        {
            Description = "gpt2-small, gpt2-medium, gpt2-large, gpt2-xl (or 124M, 355M, 774M, 1558M).",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var all = new Option<bool>("--all") { Description = "Download all four sizes (about 11 GB)." };
        var baseUrl = new Option<string>("--base-url")
        {
            Description = "Where the size folders are (a mirror of OpenAI's bucket).",
            DefaultValueFactory = _ => Gpt2Models.DefaultBaseUrl,
        };
        var command = new Command("download", $"Download OpenAI's GPT-2 weights into ${Gpt2Models.HomeVariable} (default ~/.cache/gptsharp)/gpt2/<size>. Interrupted downloads resume.")
        {
            models, all, baseUrl,
        };
        command.SetAction((parseResult, cancellationToken) => CliErrors.RunAsync(async () =>
        {
            var sizes = parseResult.GetValue(all)
                ? Gpt2Models.All.ToList()
                : (parseResult.GetValue(models) ?? []).Select(Gpt2Models.Find).Distinct().ToList();
            if (sizes.Count == 0)
                throw new ArgumentException("name a model to download (gpt2-small, gpt2-medium, gpt2-large, gpt2-xl) or pass --all.");
            string url = parseResult.GetValue(baseUrl)!;
            using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(2) };
            http.DefaultRequestHeaders.UserAgent.ParseAdd("gptsharp/1.0");
            try
            {
                foreach (var size in sizes)
                {
                    string dir = Gpt2Models.CacheDirectory(size);
                    Console.WriteLine($"{size} → {dir}");
                    await Download(http, url, size, dir, cancellationToken);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                Console.Error.WriteLine("download cancelled: partial files are kept as *.part; run the same command again to resume.");
                return 130;
            }
            return 0;
        }));
        return command;
    }

    private static async Task Download(HttpClient http, string baseUrl, Gpt2ModelSize size, string dir, CancellationToken cancellationToken)
    {
        bool interactive = AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected;
        if (!interactive)
        {
            var downloader = new Gpt2Downloader(http) { BaseUrl = baseUrl, Progress = new PlainProgress() };
            await downloader.DownloadModelAsync(size, dir, cancellationToken);
            return;
        }
        await AnsiConsole.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .StartAsync(async context =>
            {
                var bars = size.FileNames.ToDictionary(f => f, f => context.AddTask(f, autoStart: false, maxValue: size.ExpectedSize(f) ?? 1));
                var downloader = new Gpt2Downloader(http) { BaseUrl = baseUrl, Progress = new BarProgress(bars) };
                await downloader.DownloadModelAsync(size, dir, cancellationToken);
            });
    }

    /// <summary>One Spectre.Console bar per file: bytes, rate, ETA.</summary>
    private sealed class BarProgress(Dictionary<string, ProgressTask> bars) : IDownloadProgress
    {
        public void Skipped(string fileName, long bytes)
        {
            var bar = bars[fileName];
            bar.Description = $"{fileName} [grey](already complete)[/]";
            bar.MaxValue = Math.Max(1, bytes);
            bar.Value = bar.MaxValue;
            bar.StopTask();
        }

        public void Started(string fileName, long? totalBytes, long resumedFrom)
        {
            var bar = bars[fileName];
            if (totalBytes is { } total) bar.MaxValue = Math.Max(1, total);
            else bar.IsIndeterminate = true;
            bar.Description = resumedFrom > 0 ? $"{fileName} [grey](resumed)[/]" : fileName;
            bar.Value = resumedFrom;
            bar.StartTask();
        }

        public void Advanced(string fileName, long bytesDone) => bars[fileName].Value = bytesDone;

        public void Retrying(string fileName, int attempt, TimeSpan delay, string reason) =>
            bars[fileName].Description = $"{fileName} [yellow](retry {attempt} in {delay.TotalSeconds:0.#} s: {Markup.Escape(reason)})[/]";

        public void Completed(string fileName, long bytes)
        {
            var bar = bars[fileName];
            bar.Description = fileName;
            bar.IsIndeterminate = false;
            bar.MaxValue = Math.Max(1, bytes);
            bar.Value = bar.MaxValue;
            bar.StopTask();
        }
    }

    /// <summary>Plain lines for logs and pipes: start, every 10 %, done.</summary>
    private sealed class PlainProgress : IDownloadProgress
    {
        private long? _total;
        private int _lastDecile;
        private DateTime _start;
        private long _resumedFrom;

        public void Skipped(string fileName, long bytes) => Console.WriteLine($"  {fileName}: already complete ({bytes:N0} bytes)");

        public void Started(string fileName, long? totalBytes, long resumedFrom)
        {
            (_total, _lastDecile, _start, _resumedFrom) = (totalBytes, (int)(totalBytes is > 0 ? resumedFrom * 10 / totalBytes.Value : 0), DateTime.UtcNow, resumedFrom);
            string size = totalBytes is { } t ? $"{t:N0} bytes" : "unknown size";
            Console.WriteLine(resumedFrom > 0 ? $"  {fileName}: resuming at {resumedFrom:N0} of {size}" : $"  {fileName}: downloading {size}");
        }

        public void Advanced(string fileName, long bytesDone)
        {
            if (_total is not > 0) return;
            int decile = (int)(bytesDone * 10 / _total.Value);
            if (decile <= _lastDecile || decile >= 10) return;
            _lastDecile = decile;
            double seconds = Math.Max(1e-3, (DateTime.UtcNow - _start).TotalSeconds);
            double rate = (bytesDone - _resumedFrom) / seconds;
            double eta = rate > 0 ? (_total.Value - bytesDone) / rate : 0;
            Console.WriteLine($"  {fileName}: {decile * 10}% ({bytesDone:N0} bytes, {rate / 1e6:0.0} MB/s, ETA {TimeSpan.FromSeconds(Math.Round(eta)):g})");
        }

        public void Retrying(string fileName, int attempt, TimeSpan delay, string reason) =>
            Console.WriteLine($"  {fileName}: {reason}; retry {attempt} in {delay.TotalSeconds:0.#} s");

        public void Completed(string fileName, long bytes) => Console.WriteLine($"  {fileName}: done ({bytes:N0} bytes)");
    }
}
