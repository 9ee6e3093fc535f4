using System.Diagnostics;
using GptSharp.Tensors;

namespace GptSharp.Benchmarks;

/// <summary>
/// <c>skinny-shapes [rounds] [threads]</c>: each linear shape of a GPT-2 124M decoding step (y = x·Wᵀ + b, k = 768 or
/// 3072) through the skinny GEMM with one row and with 8 rows, interleaved, the 8-row products once per prefetch lead
/// of the skinny kernel (environment variable VARIANTS=floats,...; default 0,512; 0 = no lead). Enough copies of each
/// weight matrix are cycled that they come from memory, as in a real step (COPIES=n overrides, CALLS=n the calls per
/// timing, SHAPES=prefix,... picks shapes). Prints the median milliseconds per product and its ratio to one row.
/// </summary>
public static unsafe class SkinnyShapesBenchmark
{
    public static void Run(int rounds, int threads)
    {
        Workers.Count = threads;
        int[] variants = (Environment.GetEnvironmentVariable("VARIANTS") ?? "0,512").Split(',').Select(int.Parse).ToArray();
        var shapes = new (string Name, int N, int K)[]
        {
            ("qkv 2304x768", 2304, 768), ("proj 768x768", 768, 768), ("fc 3072x768", 3072, 768),
            ("fc2 768x3072", 768, 3072), ("head 50257x768", 50257, 768),
        };
        Console.WriteLine($"{Machine.Description}; {threads} threads, {rounds} interleaved rounds; 8-row prefetch leads (floats) {string.Join(", ", variants)}");
        int saved = Gemm.SkinnyPrefetchFloats;
        string? only = Environment.GetEnvironmentVariable("SHAPES");
        var random = new Random(7);
        foreach (var (name, n, k) in shapes.Where(s => only == null || only.Split(',').Any(o => s.Name.StartsWith(o))))
        {
            long bytes = (long)n * k * sizeof(float);
            int copies = Environment.GetEnvironmentVariable("COPIES") is { } fixedCopies ? int.Parse(fixedCopies) : (int)Math.Max(1, (96L << 20) / bytes);
            int calls = Environment.GetEnvironmentVariable("CALLS") is { } fixedCalls ? int.Parse(fixedCalls) : Math.Max(copies, 4);
            var weights = Enumerable.Range(0, copies).Select(_ => Filled(random, n, k)).ToArray();
            using var x = Filled(random, 8, k);
            using var bias = Filled(random, n);
            using var c = new Tensor(8, n);
            var modes = new List<(string Name, int Rows, int Prefetch)> { ($"1 row {saved}", 1, saved) };
            modes.AddRange(variants.Select(v => ($"8 rows {v}", 8, v)));
            var times = modes.Select(_ => new List<double>()).ToArray();
            // Warm-up long enough for the JIT's tiered recompilation of every kernel (a few calls are not: the first
            // products of a short run measured 20x slow).
            var warm = Stopwatch.StartNew();
            while (warm.ElapsedMilliseconds < 1500)
                foreach (var mode in modes)
                {
                    Gemm.SkinnyPrefetchFloats = mode.Prefetch;
                    Gemm.MatMul(false, true, mode.Rows, n, k, x.Data, k, weights[0].Data, k, c.Data, n, bias: bias.Data);
                }
            for (int round = 0; round < rounds; round++)
                for (int mode = 0; mode < modes.Count; mode++)
                {
                    Gemm.SkinnyPrefetchFloats = modes[mode].Prefetch;
                    long start = Stopwatch.GetTimestamp();
                    for (int call = 0; call < calls; call++)
                        Gemm.MatMul(false, true, modes[mode].Rows, n, k, x.Data, k, weights[call % copies].Data, k, c.Data, n, bias: bias.Data);
                    times[mode].Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds / calls);
                }
            double one = ServingBenchmark.Percentile(times[0], 50);
            Console.WriteLine($"{name} ({copies} copies): " + string.Join("; ", modes.Select((m, i) =>
            {
                double ms = ServingBenchmark.Percentile(times[i], 50);
                return $"{m.Name} {ms:F3} ms ({ms / one:F2}x)";
            })));
            foreach (var w in weights) w.Dispose();
        }
        Gemm.SkinnyPrefetchFloats = saved;
    }

    private static Tensor Filled(Random random, params int[] shape)
    {
        var t = new Tensor(shape);
        var span = new Span<float>(t.Data, checked((int)t.Length));
        for (int i = 0; i < span.Length; i++) span[i] = (float)(random.NextDouble() - 0.5);
        return t;
    }
}
