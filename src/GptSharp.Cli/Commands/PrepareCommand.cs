using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using GptSharp.Data;
using Spectre.Console;

namespace GptSharp.Cli.Commands;

/// <summary>
/// <c>gptsharp prepare --data DIR --out tokens.bin</c>: tokenizes a corpus once (streaming, all cores) into a uint16 token
/// file that <c>gptsharp train --data tokens.bin</c> reads memory-mapped, or into llm.c shards (<c>--format llmc</c>).
/// </summary>
internal static class PrepareCommand
{
    public static Command Create()
    {
        var dataOption = new Option<string>("--data") { Description = "The corpus: a file, a directory (recursive) or a glob of .txt, .jsonl/.json (JSON Lines) and .parquet files, each optionally .gz or .zst.", Required = true };
        var outOption = new Option<string>("--out") { Description = "Token file to write; with --format llmc the shards' path prefix (PREFIX_val_000000.bin, PREFIX_train_000001.bin, ...).", DefaultValueFactory = _ => "tokens.bin" };
        var formatOption = new Option<string>("--format") { Description = "gptsharp: one GptSharp token file (documents joined with <|endoftext|>); llmc: llm.c shards (<|endoftext|> before every document, as llm.c's fineweb.py).", DefaultValueFactory = _ => "gptsharp" };
        formatOption.AcceptOnlyFromAmong("gptsharp", "llmc");
        var shardOption = new Option<long>("--shard-tokens") { Description = "Tokens per llm.c shard (the first shard is the validation shard).", DefaultValueFactory = _ => 100_000_000L };
        var columnOption = new Option<string>("--text-column") { Description = "Parquet column holding the text.", DefaultValueFactory = _ => "text" };
        var fieldOption = new Option<string>("--text-field") { Description = "JSON Lines field holding the text.", DefaultValueFactory = _ => "text" };
        var threadsOption = new Option<int?>("--threads") { Description = "Worker threads (default: all cores); the output is the same for any number." };
        var command = new Command("prepare", "Pre-tokenize a text corpus into a memory-mappable token file or llm.c shards (streaming: memory does not grow with the corpus).");
        foreach (var o in new Option[] { dataOption, outOption, formatOption, shardOption, columnOption, fieldOption, threadsOption }) command.Options.Add(o);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            if (parse.GetValue(threadsOption) is int threads)
            {
                if (threads < 1) throw new ArgumentException($"--threads must be at least 1, got {threads}.");
                Tensors.Workers.Count = threads;
            }
            var options = new PreparationOptions
            {
                Read = new CorpusReadOptions { TextColumn = parse.GetValue(columnOption)!, TextField = parse.GetValue(fieldOption)! },
                Format = parse.GetValue(formatOption) == "llmc" ? PreparedFormat.Llmc : PreparedFormat.GptSharp,
                ShardTokens = parse.GetValue(shardOption),
            }.Validate();
            var files = TextCorpus.ResolveFiles(parse.GetValue(dataOption)!);
            string output = parse.GetValue(outOption)!;
            var result = Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive
                ? PrepareWithLines(files, output, options)
                : PrepareWithProgressBar(files, output, options);
            var p = result.Progress;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Wrote {Describe(result.Outputs)}: {result.Tokens:N0} tokens from {p.Documents:N0} documents in {files.Count} files ({p.TotalBytes / 1e6:F1} MB) in {p.Elapsed.TotalSeconds:F1} s ({p.TotalBytes / 1e6 / Math.Max(p.Elapsed.TotalSeconds, 1e-9):F1} MB/s, {result.Tokens / Math.Max(p.Elapsed.TotalSeconds, 1e-9):F0} tokens/s)."));
            return 0;
        }));
        return command;
    }

    private static string Describe(IReadOnlyList<string> outputs) =>
        outputs.Count == 1 ? outputs[0] : $"{outputs.Count} llm.c shards ({outputs[0]} ... {outputs[^1]})";

    /// <summary>One line of progress (piped output, and the live bar's description).</summary>
    internal static string Line(CorpusProgress p) => string.Create(CultureInfo.InvariantCulture,
        $"{p.BytesRead / 1e6:F0}/{p.TotalBytes / 1e6:F0} MB, file {Math.Min(p.FilesDone + 1, p.Files)}/{p.Files}, {p.Tokens:N0} tokens, {p.TokensPerSecond:F0} tokens/s, {p.MegabytesPerSecond:F1} MB/s, ETA {(p.Remaining is TimeSpan r ? r.ToString(@"hh\:mm\:ss", CultureInfo.InvariantCulture) : "-")}");

    private static PreparationResult PrepareWithLines(IReadOnlyList<string> files, string output, PreparationOptions options)
    {
        long last = Stopwatch.GetTimestamp();
        return CorpusPreparation.Prepare(files, output, options, p =>
        {
            if (Stopwatch.GetElapsedTime(last).TotalSeconds < 10) return;
            last = Stopwatch.GetTimestamp();
            Console.WriteLine(Line(p));
        });
    }

    private static PreparationResult PrepareWithProgressBar(IReadOnlyList<string> files, string output, PreparationOptions options)
    {
        PreparationResult? result = null;
        AnsiConsole.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask("reading", maxValue: 1);
                result = CorpusPreparation.Prepare(files, output, options, p =>
                {
                    task.MaxValue = Math.Max(1, p.TotalBytes);
                    task.Value = p.BytesRead;
                    task.Description = Markup.Escape(Line(p));
                });
                task.Value = task.MaxValue;
            });
        return result!;
    }
}
