using System.Text;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using GptSharp.Tensors;
using GptSharp.Tokenization;

namespace GptSharp.Benchmarks;

/// <summary>
/// GPT-2 encode throughput on a 50 MiB English-like corpus (<see cref="EnglishCorpus"/>), one thread and all
/// cores. The reference is tiktoken's Rust core (WASM) on the identical corpus: bench/tiktoken/bench.mjs.
/// Quiet-machine run:
/// <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- --filter '*TokenizerBenchmarks*'</c>
/// and <c>cd bench/tiktoken &amp;&amp; npm ci &amp;&amp; node bench.mjs</c>.
/// </summary>
[Config(typeof(ThroughputConfig))]
public class TokenizerBenchmarks
{
    private string _corpus = "";
    private byte[] _utf8 = [];
    private int _savedWorkers;

    /// <summary>Corpus size in MiB (50 for the official figure).</summary>
    [Params(50)]
    public int CorpusMiB { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _corpus = EnglishCorpus.Generate(Gpt2Vocabulary.ReadTextResource("GptSharp.the-verdict.txt"), CorpusMiB << 20);
        _utf8 = Encoding.UTF8.GetBytes(_corpus);
        _savedWorkers = Workers.Count;

        // The parallel encoder must give the single-threaded ids exactly; print them for bench.mjs to compare.
        int[] ids = Gpt2Tokenizer.Instance.EncodeOrdinary(_corpus);
        Workers.Count = Environment.ProcessorCount;
        if (!ids.AsSpan().SequenceEqual(Gpt2Tokenizer.Instance.EncodeOrdinaryParallel(_utf8)))
            throw new InvalidOperationException("The parallel encoder's ids differ from the single-threaded ones.");
        Workers.Count = _savedWorkers;
        Console.WriteLine($"// corpus: {_utf8.Length} bytes, fnv1a {EnglishCorpus.Fnv1a(_utf8):x8}; ids: {ids.Length}, checksum {EnglishCorpus.IdChecksum(ids):x8}");
    }

    [GlobalCleanup]
    public void Cleanup() => Workers.Count = _savedWorkers;

    /// <summary>One thread, from a .NET string (includes the UTF-16 → UTF-8 conversion, as tiktoken's JS binding does).</summary>
    [Benchmark(Baseline = true)]
    public int EncodeOrdinaryOneThread() => Gpt2Tokenizer.Instance.EncodeOrdinary(_corpus).Length;

    /// <summary>One thread, from UTF-8 bytes (as <c>gptsharp tokenize --file</c> reads a file).</summary>
    [Benchmark]
    public int EncodeOrdinaryUtf8OneThread() => Gpt2Tokenizer.Instance.EncodeOrdinaryUtf8(_utf8).Length;

    /// <summary>All cores, from UTF-8 bytes: chunks cut at safe boundaries, identical ids.</summary>
    [Benchmark]
    public int EncodeOrdinaryParallelAllCores()
    {
        Workers.Count = Environment.ProcessorCount;
        try
        {
            return Gpt2Tokenizer.Instance.EncodeOrdinaryParallel(_utf8).Length;
        }
        finally
        {
            Workers.Count = _savedWorkers;
        }
    }

    /// <summary>
    /// A quick Stopwatch pass without BenchmarkDotNet: one thread and all cores from UTF-8 bytes, interleaved round
    /// by round so a busy neighbour slows both alike; prints medians and the parallel speed-up.
    /// </summary>
    public static void Quick(int rounds)
    {
        var bench = new TokenizerBenchmarks { CorpusMiB = 50 };
        bench.Setup();
        var one = new List<double>();
        var all = new List<double>();
        for (int r = 0; r < rounds; r++)
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            bench.EncodeOrdinaryUtf8OneThread();
            one.Add(System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds);
            start = System.Diagnostics.Stopwatch.GetTimestamp();
            bench.EncodeOrdinaryParallelAllCores();
            all.Add(System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        one.Sort();
        all.Sort();
        double mb = bench._utf8.Length / 1e6, oneMedian = one[rounds / 2], allMedian = all[rounds / 2];
        Console.WriteLine($"one thread: median {oneMedian * 1e3:F0} ms = {mb / oneMedian:F1} MB/s; " +
            $"{Environment.ProcessorCount} cores: median {allMedian * 1e3:F0} ms = {mb / allMedian:F1} MB/s; speed-up {oneMedian / allMedian:F2}x");
    }

    private sealed class ThroughputConfig : ManualConfig
    {
        public ThroughputConfig() => AddColumn(new MegabytesPerSecondColumn());
    }

    /// <summary>Corpus bytes / mean time, in MB/s (10^6 bytes), the unit bench.mjs prints.</summary>
    private sealed class MegabytesPerSecondColumn : IColumn
    {
        public string Id => "MBps";
        public string ColumnName => "MB/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "Encode throughput: corpus bytes / mean time, 1 MB = 10^6 bytes";
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public bool IsAvailable(Summary summary) => true;

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var statistics = summary[benchmarkCase]?.ResultStatistics;
            if (statistics == null) return "-";
            int mib = (int)benchmarkCase.Parameters["CorpusMiB"];
            long bytes = EnglishCorpusBytes(mib);
            return (bytes / 1e6 / (statistics.Mean / 1e9)).ToString("F1");
        }

        // The column runs in the host process, where Setup did not run: rebuild the corpus once to count it.
        private static readonly Dictionary<int, long> s_bytes = new();

        private static long EnglishCorpusBytes(int mib)
        {
            lock (s_bytes)
            {
                if (!s_bytes.TryGetValue(mib, out long bytes))
                {
                    bytes = Encoding.UTF8.GetByteCount(EnglishCorpus.Generate(Gpt2Vocabulary.ReadTextResource("GptSharp.the-verdict.txt"), mib << 20));
                    s_bytes[mib] = bytes;
                }
                return bytes;
            }
        }

        public override string ToString() => ColumnName;
    }
}
