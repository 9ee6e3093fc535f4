using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using GptSharp.Data;
using GptSharp.Tokenization;

namespace GptSharp.Cli.Commands;

/// <summary>
/// <c>gptsharp prepare --data DIR --out tokens.bin</c>: tokenizes a corpus once (all cores, the parallel encoder)
/// into a uint16 token file that <c>gptsharp train --data tokens.bin</c> reads memory-mapped.
/// </summary>
internal static class PrepareCommand
{
    public static Command Create()
    {
        var dataOption = new Option<string>("--data") { Description = "A .txt file, a directory of .txt files (recursive) or a glob.", Required = true };
        var outOption = new Option<string>("--out") { Description = "Token file to write.", DefaultValueFactory = _ => "tokens.bin" };
        var threadsOption = new Option<int?>("--threads") { Description = "Worker threads (default: all cores)." };
        var command = new Command("prepare", "Pre-tokenize a text corpus into a memory-mappable token file (documents joined with <|endoftext|>).");
        foreach (var o in new Option[] { dataOption, outOption, threadsOption }) command.Options.Add(o);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            if (parse.GetValue(threadsOption) is int threads) Tensors.Workers.Count = threads;
            var files = TextCorpus.ResolveFiles(parse.GetValue(dataOption)!);
            string output = parse.GetValue(outOption)!;
            var tokenizer = Gpt2Tokenizer.Instance;
            var clock = Stopwatch.StartNew();
            long bytes = 0;
            var header = TokenFile.Write(output, files, i =>
                {
                    string text = TextCorpus.ReadTextFile(files[i]);
                    bytes += new FileInfo(files[i]).Length;
                    return text;
                },
                text => tokenizer.EncodeParallel(text, Gpt2Tokenizer.AllSpecialTokens),
                Gpt2Tokenizer.VocabSize, Gpt2Tokenizer.EndOfTextId,
                (done, count) =>
                {
                    if (!Console.IsOutputRedirected) Console.Write($"\r{done + 1}/{files.Count} files, {count:N0} tokens");
                });
            if (!Console.IsOutputRedirected) Console.WriteLine();
            double seconds = clock.Elapsed.TotalSeconds;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Wrote {output}: {header.Count:N0} tokens from {files.Count} files ({bytes / 1e6:F1} MB) in {seconds:F1} s ({bytes / 1e6 / Math.Max(seconds, 1e-9):F1} MB/s)."));
            return 0;
        }));
        return command;
    }
}
