using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Benchmarks;

/// <summary>
/// Greedy generation with GPT-2 124M (context 1024, qkv_bias, random weights): an 8-token prompt, 200 new tokens,
/// batch 1, 2 threads, with the KV cache and without it (the book's loop: the whole window through the model for
/// every token). One operation = one generated token, so the Op/s column is tokens/s.
/// </summary>
/// <remarks>
/// Run: <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- --filter '*GenerationBenchmarks*'</c>.
/// With the cache every token reads every weight once except the embedding tables (one row each): the
/// transformer blocks (85.0M floats) and the output head (38.6M) = 494 MB per token, so tokens/s is bounded by
/// read bandwidth ÷ 494 MB. The PyTorch 1.13 reference (book loop, no cache) is bench/pytorch/book_generate.py.
/// </remarks>
[Config(typeof(Config))]
public class GenerationBenchmarks
{
    public const int PromptTokens = 8;
    public const int NewTokens = 200;

    private sealed class Config : ManualConfig
    {
        public Config()
        {
            // A run is seconds (cached) to a minute (uncached): one invocation per iteration, few iterations.
            AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(1).WithIterationCount(3).WithInvocationCount(1).WithUnrollFactor(1));
            AddColumn(StatisticColumn.OperationsPerSecond);
        }
    }

    private GptModel _model = null!;
    private TextGenerator _generator = null!;
    private TokenBatch _prompt = null!;

    [Params(true, false)]
    public bool UseCache { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        Workers.Count = 2;
        var config = GptConfig.Gpt2Small with { QkvBias = true };
        _model = new GptModel(config, new FastRandom(123));
        _prompt = TokenBatch.FromSequence([6109, 3626, 6100, 345, 11, 290, 262, 640]); // 8 tokens
        _generator = new TextGenerator(_model, new GenerationOptions { UseCache = UseCache });
        long readPerToken = _model.ParameterCount - _model.TokenEmbedding.Length - _model.PositionEmbedding.Length;
        Console.WriteLine($"// weights read per cached token: {readPerToken * 4 / 1e6:F0} MB ({readPerToken / 1e6:F1}M floats)");
    }

    [Benchmark(OperationsPerInvoke = NewTokens)]
    public int Greedy200Tokens()
    {
        var generated = _generator.Generate(_prompt, NewTokens);
        return generated.SequenceLength;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _generator.Dispose();
        _model.Dispose();
    }
}

/// <summary>
/// A quick Stopwatch pass without BenchmarkDotNet: read bandwidth (a vector sum of 1 GiB on the worker threads),
/// then cached and uncached greedy generation with the benchmark's model and prompt, and the cached rate as a
/// fraction of the bandwidth bound (bandwidth ÷ weight bytes read per token).
/// <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- generate-quick [newTokens=200] [threads=2] [uncachedTokens=20]</c>
/// </summary>
public static class GenerationQuick
{
    /// <summary>Interleaved A/B of the skinny GEMM's choices on cached steps: each round runs one step per
    /// variant, so a busy neighbour slows every variant alike; prints each variant's median and 10th percentile.</summary>
    public static void SkinnyAb(int rounds, int threads)
    {
        Workers.Count = threads;
        var config = GptConfig.Gpt2Small with { QkvBias = true };
        using var model = new GptModel(config, new FastRandom(123));
        int[] prompt = [6109, 3626, 6100, 345, 11, 290, 262, 640];
        var variants = new (string Name, bool ByBytes, int Tasks)[]
        {
            ("768-wide products serial, 4 tasks/thread", false, 4),
            ("768-wide products parallel, 4 tasks/thread", true, 4),
            ("768-wide products serial, 64 tasks/thread", false, 64),
            ("768-wide products parallel, 64 tasks/thread", true, 64),
        };
        var caches = variants.Select(_ => new KvCache(model)).ToArray();
        var times = variants.Select(_ => new List<double>()).ToArray();
        for (int r = 0; r < rounds; r++)
            for (int v = 0; v < variants.Length; v++)
            {
                Gemm.SkinnyParallelByBytes = variants[v].ByBytes;
                Gemm.SkinnyTasksPerThread = variants[v].Tasks;
                if (caches[v].Length == 0 || caches[v].Length >= 108) model.Prefill(caches[v], prompt);
                long start = System.Diagnostics.Stopwatch.GetTimestamp();
                model.DecodeNext(caches[v], 6109 + r);
                if (r > 0) times[v].Add(System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            }
        for (int v = 0; v < variants.Length; v++)
        {
            times[v].Sort();
            Console.WriteLine($"{variants[v].Name}: median {times[v][times[v].Count / 2]:F1} ms, 10th percentile {times[v][times[v].Count / 10]:F1} ms");
            caches[v].Dispose();
        }
        Gemm.SkinnyParallelByBytes = true; Gemm.SkinnyTasksPerThread = 4;
    }

    public static void Run(int newTokens, int threads, int uncachedTokens)
    {
        Workers.Count = threads;
        double bandwidth = ReadBandwidth();
        Console.WriteLine($"read bandwidth, {threads} threads: {bandwidth / 1e9:F1} GB/s");

        var config = GptConfig.Gpt2Small with { QkvBias = true };
        using var model = new GptModel(config, new FastRandom(123));
        var prompt = TokenBatch.FromSequence([6109, 3626, 6100, 345, 11, 290, 262, 640]);
        double bytesPerToken = (model.ParameterCount - model.TokenEmbedding.Length - model.PositionEmbedding.Length) * 4.0;
        double bound = bandwidth / bytesPerToken;
        Console.WriteLine($"weights read per cached token: {bytesPerToken / 1e6:F0} MB -> bound {bound:F1} tokens/s");

        using var cached = new TextGenerator(model);
        cached.Generate(prompt, 4); // warm-up
        for (int run = 0; run < 3; run++)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            cached.Generate(prompt, newTokens);
            double rate = newTokens / clock.Elapsed.TotalSeconds;
            Console.WriteLine($"KV cache: {newTokens} tokens in {clock.Elapsed.TotalSeconds:F2} s = {rate:F1} tokens/s = {100 * rate / bound:F0}% of the bandwidth bound");
        }
        // Each cached step timed alone: on a shared machine the fastest steps (and the median) say more
        // about the kernels than one wall-clock total that includes every moment another process held a core.
        {
            using var cache = new KvCache(model);
            model.Prefill(cache, prompt);
            var steps = new double[newTokens];
            for (int i = 0; i < newTokens; i++)
            {
                long start = System.Diagnostics.Stopwatch.GetTimestamp();
                model.DecodeNext(cache, 6109 + i);
                steps[i] = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
            }
            Array.Sort(steps);
            double best = steps[newTokens / 10], median = steps[newTokens / 2];
            Console.WriteLine($"single steps: 10th percentile {best * 1e3:F1} ms = {1 / best:F1} tokens/s ({100 / best / bound:F0}% of the bound), " +
                $"median {median * 1e3:F1} ms = {1 / median:F1} tokens/s ({100 / median / bound:F0}%)");
        }
        if (uncachedTokens > 0)
        {
            using var uncached = new TextGenerator(model, new GenerationOptions { UseCache = false });
            var clock = System.Diagnostics.Stopwatch.StartNew();
            uncached.Generate(prompt, uncachedTokens);
            Console.WriteLine($"no cache (book loop): {uncachedTokens} tokens in {clock.Elapsed.TotalSeconds:F2} s = {uncachedTokens / clock.Elapsed.TotalSeconds:F2} tokens/s " +
                $"(windows of {prompt.SequenceLength}..{prompt.SequenceLength + uncachedTokens - 1} tokens; the 200-token run averages longer windows)");
        }
    }

    /// <summary>The engine's read-bandwidth kernel (<see cref="MemoryBandwidthBenchmark"/>, 1 GiB), best of 5, in bytes/s.</summary>
    internal static double ReadBandwidth()
    {
        var bench = new MemoryBandwidthBenchmark { Threads = Workers.Count };
        bench.Setup();
        try
        {
            double best = double.MaxValue;
            for (int rep = 0; rep < 5; rep++)
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                bench.Sum();
                best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
            return bench.WorkPerInvocation(nameof(MemoryBandwidthBenchmark.Sum)) / best;
        }
        finally
        {
            bench.Cleanup();
        }
    }
}
