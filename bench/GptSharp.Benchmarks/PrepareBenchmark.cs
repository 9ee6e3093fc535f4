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
/// so that load from other processes falls on all of them; each line gives the text's MB/s (document bytes, the same for the
/// three), the files' MB/s, tokens/s and the peak RSS of that preparation (VmHWM, reset before each through /proc/self/clear_refs).
/// Everything is written under DIR and deleted at the end; the free space is checked first.
/// Run: dotnet run -c Release --project bench/GptSharp.Benchmarks -- prepare-quick [MB=4096] [rounds=2] [threads=all] [DIR=/tmp]
/// </summary>
public static class PrepareBenchmark
{
    private const int ChunkBytes = 32 << 20;

    public static void Quick(int megabytes, int rounds, int threads, string? directory)
    {
        Workers.Count = threads;
        string dir = Path.Combine(directory ?? Path.GetTempPath(), "gptsharp-prepare-" + Guid.NewGuid().ToString("N"));
        long textBytes = (long)megabytes << 20;
        // Three copies of the text (Parquet compresses: less) plus the largest token file (2 bytes a token, about 4 bytes a token of text).
        long needed = 3 * textBytes + textBytes / 2 + (256L << 20);
        long free = new DriveInfo(Path.GetFullPath(directory ?? Path.GetTempPath())).AvailableFreeSpace;
        if (free < needed + (4L << 30))
            throw new IOException($"prepare-quick {megabytes}: needs about {needed >> 20} MB in {dir} and leaves 4 GB free; {free >> 20} MB are free. Give a smaller size or another DIR.");
        Directory.CreateDirectory(dir);
        Console.WriteLine($"CPU: {CpuName()}, {Environment.ProcessorCount} logical cores; ISA: {(Vector512.IsHardwareAccelerated ? "AVX-512" : Vector256.IsHardwareAccelerated ? "AVX2" : "scalar")}; threads {Workers.Count}");
        try
        {
            var clock = Stopwatch.StartNew();
            var (txt, jsonl, parquet, documents) = Generate(dir, textBytes);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Corpus: {textBytes / 1e6:F0} MB of text in {documents:N0} documents; .txt {Size(txt) / 1e6:F0} MB, .jsonl {Size(jsonl) / 1e6:F0} MB, .parquet {Size(parquet) / 1e6:F0} MB (made in {clock.Elapsed.TotalSeconds:F0} s)"));
            // The readers alone (one thread, documents read and dropped): what each format costs before the tokenizer.
            // Twice for a small corpus: the first pass includes the JIT's tiering up (slow to come on a loaded machine).
            for (int pass = 0; pass < (megabytes > 512 ? 1 : 2); pass++)
            foreach (var (name, files) in new[] { ("txt", txt), ("jsonl", jsonl), ("parquet", parquet) })
            {
                var read = Stopwatch.StartNew();
                var sink = new CountingSink();
                foreach (string file in files) DocumentReader.Read(CorpusFile.Classify(file), new CorpusReadOptions(), sink);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"reader alone, pass {pass + 1}: {name,-8} {textBytes / 1e6 / read.Elapsed.TotalSeconds,7:F0} MB/s of text ({sink.Documents:N0} documents)"));
            }
            var results = new Dictionary<string, List<(double TextMBps, double FileMBps, double TokensPerSecond, long PeakBytes)>>();
            for (int round = 0; round < rounds; round++)
            {
                foreach (var (name, files) in new[] { ("txt", txt), ("jsonl", jsonl), ("parquet", parquet) })
                {
                    string output = Path.Combine(dir, "tokens.bin");
                    GC.Collect();
                    ResetPeakRss();
                    var result = CorpusPreparation.Prepare(files, output);
                    long peak = PeakRss();
                    double seconds = result.Progress.Elapsed.TotalSeconds;
                    var r = (textBytes / 1e6 / seconds, Size(files) / 1e6 / seconds, result.Tokens / seconds, peak);
                    (results.TryGetValue(name, out var list) ? list : results[name] = []).Add(r);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"round {round + 1} {name,-8} {seconds,7:F1} s  text {r.Item1,6:F1} MB/s  files {r.Item2,6:F1} MB/s  {r.Item3,10:F0} tokens/s  {result.Tokens,13:N0} tokens  peak RSS {peak / 1e6,6:F0} MB"));
                    File.Delete(output);
                }
            }
            double best(string name) => results[name].Max(r => r.TextMBps);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Best of {rounds}: txt {best("txt"):F1} MB/s, jsonl {best("jsonl"):F1} MB/s ({100 * best("jsonl") / best("txt"):F0} % of txt), parquet {best("parquet"):F1} MB/s ({100 * best("parquet") / best("txt"):F0} % of txt); peak RSS at most {results.Values.SelectMany(l => l).Max(r => r.PeakBytes) / 1e6:F0} MB"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private sealed class CountingSink : IDocumentSink
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

        public void FileBytesRead(long bytes) { }
    }

    private static long Size(IEnumerable<string> files) => files.Sum(f => new FileInfo(f).Length);

    /// <summary>Chunks of <see cref="EnglishCorpus"/> text cut into documents of 1-8 KB at paragraph ends, written the three ways.</summary>
    private static (string[] Txt, string[] Jsonl, string[] Parquet, long Documents) Generate(string dir, long textBytes)
    {
        string verdict = TextCorpus.TheVerdict();
        var txt = new List<string>();
        var text = new DataField<string>("text");
        string jsonlPath = Path.Combine(dir, "corpus.jsonl"), parquetPath = Path.Combine(dir, "corpus.parquet");
        long documents = 0;
        using var jsonl = new FileStream(jsonlPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        using var parquetFile = new FileStream(parquetPath, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20);
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
            string txtPath = Path.Combine(dir, $"part-{chunk:D5}.txt");
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
        return ([.. txt], [jsonlPath], [parquetPath], documents);
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

    /// <summary>Resets VmHWM (Linux: writing 5 to /proc/self/clear_refs), so that the next reading is this preparation's peak.</summary>
    private static void ResetPeakRss()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
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
