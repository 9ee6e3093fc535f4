using System.Diagnostics;
using GptSharp.Tensors;

namespace GptSharp.Benchmarks;

/// <summary>
/// <c>skinny-shapes [rounds] [threads]</c>: each linear shape of a GPT-2 124M decoding step (y = x·Wᵀ + b, k = 768 or
/// 3072) through the skinny GEMM with one row and with 8 rows, interleaved, the 8-row products once per variant of the
/// skinny kernel's slicing (environment variable VARIANTS=depth:columns,..., depth 0 = whole rows; default 0:16,256:16).
/// Enough copies of each weight matrix are cycled that they come from memory, as in a real step.
/// Prints the median milliseconds per product and the 8-row/1-row ratio per shape and variant.
/// </summary>
public static unsafe class SkinnyShapesBenchmark
{
    public static void Run(int rounds, int threads)
    {
        Workers.Count = threads;
        var variants = (Environment.GetEnvironmentVariable("VARIANTS") ?? "0:16,256:16").Split(',')
            .Select(v => v.Split(':')).Select(p => (Depth: int.Parse(p[0]), Columns: int.Parse(p[1]))).ToArray();
        var shapes = new (string Name, int N, int K)[]
        {
            ("qkv 2304x768", 2304, 768), ("proj 768x768", 768, 768), ("fc 3072x768", 3072, 768),
            ("fc2 768x3072", 768, 3072), ("head 50257x768", 50257, 768),
        };
        Console.WriteLine($"{Machine.Description}; {threads} threads, {rounds} interleaved rounds; variants (depth:columns) {string.Join(", ", variants.Select(v => $"{v.Depth}:{v.Columns}"))}");
        int savedDepth = Gemm.SkinnyDepth, savedColumns = Gemm.SkinnyBlockColumns;
        var random = new Random(7);
        foreach (var (name, n, k) in shapes)
        {
            long size = (long)n * k;
            int copies = (int)Math.Max(1, (96L << 20) / (size * sizeof(float)));
            var weights = Enumerable.Range(0, copies).Select(_ => Filled(random, n, k)).ToArray();
            using var x = Filled(random, 8, k);
            using var bias = Filled(random, n);
            using var c = new Tensor(8, n);
            int calls = Math.Max(copies, 4);
            var modes = new List<(string Name, int Rows, int Depth, int Columns)> { ("1 row", 1, savedDepth, savedColumns) };
            modes.AddRange(variants.Select(v => ($"8 rows {v.Depth}:{v.Columns}", 8, v.Depth, v.Columns)));
            var times = modes.Select(_ => new List<double>()).ToArray();
            for (int round = 0; round <= rounds; round++)
                for (int mode = 0; mode < modes.Count; mode++)
                {
                    Gemm.SkinnyDepth = modes[mode].Depth;
                    Gemm.SkinnyBlockColumns = modes[mode].Columns;
                    long start = Stopwatch.GetTimestamp();
                    for (int call = 0; call < calls; call++)
                        Gemm.MatMul(false, true, modes[mode].Rows, n, k, x.Data, k, weights[call % copies].Data, k, c.Data, n, bias: bias.Data);
                    if (round > 0) times[mode].Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds / calls);
                }
            double one = ServingBenchmark.Percentile(times[0], 50);
            Console.WriteLine($"{name} ({copies} copies): " + string.Join("; ", modes.Select((m, i) =>
            {
                double ms = ServingBenchmark.Percentile(times[i], 50);
                return $"{m.Name} {ms:F3} ms ({ms / one:F2}x)";
            })));
            foreach (var w in weights) w.Dispose();
        }
        Gemm.SkinnyDepth = savedDepth;
        Gemm.SkinnyBlockColumns = savedColumns;
    }

    private static Tensor Filled(Random random, params int[] shape)
    {
        var t = new Tensor(shape);
        var span = new Span<float>(t.Data, checked((int)t.Length));
        for (int i = 0; i < span.Length; i++) span[i] = (float)(random.NextDouble() - 0.5);
        return t;
    }
}
