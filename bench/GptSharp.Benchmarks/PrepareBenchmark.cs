using System.Diagnostics;
using System.Globalization;
using System.Runtime.Intrinsics;
using System.Text;
using System.Text.Json;
using GptSharp.Data;
using GptSharp.Tensors;
using Parquet;
using Parquet.Schema;

namespace GptSharp.Benchmarks;

/// <summary>
/// <c>gptsharp prepare</c>'s throughput and peak memory on one generated corpus stored three ways: .txt files, JSON Lines and
/// Parquet (Snappy, row groups of 4,096 documents), the same documents in each. The formats take turns, round after round,
/// so that load from other processes falls on all of them. Each preparation runs in a process of its own (this program
/// again, <c>prepare-one</c>), so that its peak RSS (VmHWM) is the preparation's alone, not the generator's; each line gives
/// the text's MB/s (document bytes, the same for the three), the files' MB/s, tokens/s and that peak. The corpus is written
/// 32 MiB of text at a time (nothing holds the whole corpus), under DIR, and deleted at the end; the free space is checked first.
/// Run: dotnet run -c Release --project bench/GptSharp.Benchmarks -- prepare-quick [MB=4096] [rounds=2] [threads=all] [DIR=/tmp] [formats=txt,jsonl,parquet]
/// The corpus alone, kept for other runs (e.g. an A/B of two builds' <c>gptsharp prepare</c>): ... -- prepare-corpus MB DIR
/// </summary>
public static class PrepareBenchmark
{
    private const int ChunkBytes = 32 << 20;
    private static readonly string[] AllFormats = ["txt", "jsonl", "parquet"];

    public static void Quick(int megabytes, int rounds, int threads, string? directory, string? formats = null)
    {
        string[] chosen = formats is null ? AllFormats : formats.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (chosen.Length == 0 || chosen.Any(f => !AllFormats.Contains(f))) throw new ArgumentException($"prepare-quick: formats are a comma-separated list of {string.Join(", ", AllFormats)}, got \"{formats}\".");
        string dir = Path.Combine(directory ?? Path.GetTempPath(), "gptsharp-prepare-" + Guid.NewGuid().ToString("N"));
        long textBytes = (long)megabytes << 20;
        CheckSpace(megabytes, directory ?? Path.GetTempPath(), dir);
        Console.WriteLine($"CPU: {CpuName()}, {Environment.ProcessorCount} logical cores; ISA: {(Vector512.IsHardwareAccelerated ? "AVX-512" : Vector256.IsHardwareAccelerated ? "AVX2" : "scalar")}; threads {threads}");
        Directory.CreateDirectory(dir);
        try
        {
            var corpus = Generate(dir, textBytes);
            // The readers alone (one thread, documents read and dropped): what each format costs before the tokenizer.
            // Twice for a small corpus: the first pass includes the JIT's tiering up (slow to come on a loaded machine).
            Workers.Count = threads;
            for (int pass = 0; pass < (megabytes > 512 ? 1 : 2); pass++)
                foreach (string name in chosen) ReaderAlone(name, corpus.Files(name), $"pass {pass + 1}");
            var results = new Dictionary<string, List<(double TextMBps, long Tokens, long PeakBytes)>>();
            for (int round = 0; round < rounds; round++)
            {
                foreach (string name in chosen)
                {
                    string[] files = corpus.Files(name);
                    var (seconds, tokens, peak) = RunOne(threads, Path.Combine(dir, "tokens.bin"), files);
                    var r = (textBytes / 1e6 / seconds, tokens, peak);
                    (results.TryGetValue(name, out var list) ? list : results[name] = []).Add(r);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"round {round + 1} {name,-8} {seconds,7:F1} s  text {r.Item1,6:F1} MB/s  files {Size(files) / 1e6 / seconds,6:F1} MB/s  {tokens / seconds,10:F0} tokens/s  {tokens,13:N0} tokens  peak RSS {peak / 1e6,6:F0} MB"));
                }
            }
            static double Median(IEnumerable<double> values)
            {
                var sorted = values.Order().ToArray();
                return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
            }
            var summary = new StringBuilder($"Medians of {rounds}:");
            foreach (string name in chosen)
            {
                summary.Append(CultureInfo.InvariantCulture, $" {name} {Median(results[name].Select(r => r.TextMBps)):F1} MB/s");
                if (name != "txt" && results.TryGetValue("txt", out var txt))
                    summary.Append(CultureInfo.InvariantCulture, $" ({100 * Median(results[name].Select((r, i) => r.TextMBps / txt[i].TextMBps)):F0} % of txt, round by round)");
                summary.Append(CultureInfo.InvariantCulture, $", peak RSS {Median(results[name].Select(r => (double)r.PeakBytes)) / 1e6:F0} MB;");
            }
            Console.WriteLine(summary.ToString().TrimEnd(';'));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Writes the corpus under <paramref name="directory"/> (txt/, corpus.jsonl, corpus.parquet) and keeps it.</summary>
    public static void Corpus(int megabytes, string directory)
    {
        if (Directory.Exists(directory) && Directory.EnumerateFileSystemEntries(directory).Any())
            throw new IOException($"prepare-corpus: {directory} is not empty; give a new directory.");
        CheckSpace(megabytes, Path.GetDirectoryName(Path.GetFullPath(directory))!, directory);
        Directory.CreateDirectory(directory);
        Generate(directory, (long)megabytes << 20);
    }

    /// <summary>One preparation in this process (<c>prepare-one</c>, started by <see cref="Quick"/>): its time, tokens and peak RSS on one line.</summary>
    public static void One(int threads, string output, string[] files)
    {
        Workers.Count = threads;
        var result = CorpusPreparation.Prepare(files, output);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{result.Progress.Elapsed.TotalSeconds:R} {result.Tokens} {PeakRss()}"));
    }

    /// <summary>The reader alone on <paramref name="files"/> (one thread, documents read and dropped), <paramref name="passes"/> times.</summary>
    public static void Read(int passes, string[] files)
    {
        for (int pass = 0; pass < passes; pass++)
            ReaderAlone(Path.GetExtension(files[0]).TrimStart('.'), files, $"pass {pass + 1}");
    }

    private static (double Seconds, long Tokens, long PeakBytes) RunOne(int threads, string output, string[] files)
    {
        var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
        start.Environment["DOTNET_TC_QuickJitForLoops"] = "0"; // as the CLI ships (GptSharp.Cli.csproj): loops optimized from the start
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet") start.ArgumentList.Add(typeof(PrepareBenchmark).Assembly.Location);
        foreach (string a in new[] { "prepare-one", threads.ToString(CultureInfo.InvariantCulture), output }.Concat(files)) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        string text = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        File.Delete(output);
        if (process.ExitCode != 0) throw new InvalidOperationException($"prepare-one failed (exit {process.ExitCode}): {text}");
        string[] parts = text.Trim().Split('\n')[^1].Split(' ');
        return (double.Parse(parts[0], CultureInfo.InvariantCulture), long.Parse(parts[1], CultureInfo.InvariantCulture), long.Parse(parts[2], CultureInfo.InvariantCulture));
    }

    private static void ReaderAlone(string name, string[] files, string label)
    {
        var read = Stopwatch.StartNew();
        var sink = new CountingSink();
        foreach (string file in files) DocumentReader.Read(CorpusFile.Classify(file), new CorpusReadOptions(), sink);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"reader alone, {label}: {name,-8} {sink.Bytes / 1e6 / read.Elapsed.TotalSeconds,7:F0} MB/s of text ({sink.Documents:N0} documents, {sink.Bytes / 1e6:F0} MB)"));
    }

    private static void CheckSpace(int megabytes, string parent, string dir)
    {
        long textBytes = (long)megabytes << 20;
        // Three copies of the text (Parquet compresses: less) plus the largest token file (2 bytes a token, about 4 bytes a token of text).
        long needed = 3 * textBytes + textBytes / 2 + (256L << 20);
        long free = new DriveInfo(Path.GetFullPath(parent)).AvailableFreeSpace;
        if (free < needed + (4L << 30))
            throw new IOException($"prepare-quick {megabytes}: needs about {needed >> 20} MB in {dir} and leaves 4 GB free; {free >> 20} MB are free. Give a smaller size or another DIR.");
    }

    private sealed class CountingSink : IDocumentSink, IUtf8Texts
    {
        public long Documents, Bytes;
        private byte[] _scratch = [];

        public void AddJsonLine(ReadOnlySpan<byte> line, long number)
        {
            if (DocumentReader.JsonText(line, number, "bench", "text", ref _scratch, out var text)) Add(text, true);
        }

        public void Add(ReadOnlySpan<byte> utf8, bool startsDocument)
        {
            if (startsDocument) Documents++;
            Bytes += utf8.Length;
        }

        public void AddParquetPages(ParquetPageBatch batch, ReadOnlySpan<byte> stored) => DocumentReader.ParquetTexts(batch, stored, this);

        void IUtf8Texts.Add(ReadOnlySpan<byte> utf8) => Add(utf8, startsDocument: true);

        public void FileBytesRead(long bytes) { }
    }

    private static long Size(IEnumerable<string> files) => files.Sum(f => new FileInfo(f).Length);

    /// <summary>The same documents stored three ways.</summary>
    private sealed record GeneratedCorpus(string[] Txt, string[] Jsonl, string[] Parquet, long Documents)
    {
        public string[] Files(string format) => format switch { "txt" => Txt, "jsonl" => Jsonl, _ => Parquet };
    }

    /// <summary>
    /// Chunks of <see cref="EnglishCorpus"/> text cut into documents of 1-8 KB at paragraph ends, written the three ways as they
    /// are made: only one chunk of text (<see cref="ChunkBytes"/>) and one row group of documents are held at a time.
    /// </summary>
    private static GeneratedCorpus Generate(string dir, long textBytes)
    {
        var clock = Stopwatch.StartNew();
        string verdict = TextCorpus.TheVerdict();
        var txt = new List<string>();
        var text = new DataField<string>("text");
        string txtDir = Path.Combine(dir, "txt"), jsonlPath = Path.Combine(dir, "corpus.jsonl"), parquetPath = Path.Combine(dir, "corpus.parquet");
        Directory.CreateDirectory(txtDir);
        long documents = 0;
        using (var jsonl = new FileStream(jsonlPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
        using (var parquetFile = new FileStream(parquetPath, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20))
        {
            var parquet = ParquetWriter.CreateAsync(new ParquetSchema(text), parquetFile).GetAwaiter().GetResult();
            var rows = new List<string>();
            void FlushRows()
            {
                if (rows.Count == 0) return;
                using var group = parquet.CreateRowGroup();
                group.WriteAsync(text, rows, null).GetAwaiter().GetResult();
                rows.Clear();
            }
            var random = new Random(123);
            for (uint chunk = 0; (long)chunk * ChunkBytes < textBytes; chunk++)
            {
                int bytes = (int)Math.Min(ChunkBytes, textBytes - (long)chunk * ChunkBytes);
                string[] paragraphs = EnglishCorpus.Generate(verdict, bytes, EnglishCorpus.DefaultSeed + chunk).Split("\n\n");
                var document = new StringBuilder();
                string txtPath = Path.Combine(txtDir, $"part-{chunk:D5}.txt");
                using (var writer = new StreamWriter(txtPath, false, new UTF8Encoding(false), 1 << 20))
                {
                    for (int p = 0; p < paragraphs.Length; p++)
                    {
                        if (document.Length > 0) document.Append("\n\n");
                        document.Append(paragraphs[p]);
                        if (document.Length < 1024 + random.Next(7 * 1024) && p + 1 < paragraphs.Length) continue;
                        string doc = document.ToString();
                        document.Clear();
                        // The .txt file holds the same documents, one after the other.
                        writer.Write(doc);
                        writer.Write("\n\n");
                        jsonl.Write(JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, string> { ["text"] = doc }));
                        jsonl.WriteByte((byte)'\n');
                        rows.Add(doc);
                        if (rows.Count == 4096) FlushRows();
                        documents++;
                    }
                }
                txt.Add(txtPath);
            }
            FlushRows();
            parquet.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        var corpus = new GeneratedCorpus([.. txt], [jsonlPath], [parquetPath], documents);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Corpus in {dir}: {textBytes / 1e6:F0} MB of text in {documents:N0} documents; .txt {Size(corpus.Txt) / 1e6:F0} MB ({corpus.Txt.Length} files), .jsonl {Size(corpus.Jsonl) / 1e6:F0} MB, .parquet {Size(corpus.Parquet) / 1e6:F0} MB (made in {clock.Elapsed.TotalSeconds:F0} s)"));
        return corpus;
    }

    private static string CpuName()
    {
        try
        {
            return File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown";
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    private static long PeakRss()
    {
        try
        {
            string? line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        }
        catch (IOException)
        {
            return 0;
        }
    }
}
