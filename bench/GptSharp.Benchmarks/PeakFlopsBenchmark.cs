using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using BenchmarkDotNet.Attributes;
using GptSharp.Tensors;

namespace GptSharp.Benchmarks;

/// <summary>
/// The machine's float32 peak: a tight Vector512 FMA loop with many independent accumulators (enough to cover
/// the FMA latency on both FMA pipes) on 1 and 2 threads. The GEMM bar (≥ 70 % of this) is measured against it.
/// </summary>
[Config(typeof(GflopsConfig))]
public class PeakFlopsBenchmark : IWorkMeasure
{
    // Per thread and invocation: Iterations × 12 accumulators × 16 lanes × 2 flops.
    private const int Iterations = 4_000_000;
    private const int Accumulators = 12;
    private static readonly Action<int> LoopTask = i => Sinks[i * 16] = FmaLoop(Iterations);
    private static readonly float[] Sinks = new float[16 * 64];

    [Params(1, 2)]
    public int Threads { get; set; }

    public double WorkPerInvocation(string methodName) => (double)Iterations * Accumulators * 16 * 2 * Threads;

    [GlobalSetup]
    public void Setup() => Workers.Count = Threads;

    [Benchmark]
    public void Vector512Fma() => Workers.Run(Threads, LoopTask);

    /// <summary>Quick Stopwatch + CPU-time measurement without BenchmarkDotNet (see Program).</summary>
    public static void Quick(int threads)
    {
        Workers.Count = threads;
        var process = System.Diagnostics.Process.GetCurrentProcess();
        double best = double.MaxValue, bestCpu = double.MaxValue;
        for (int r = 0; r < 10; r++)
        {
            process.Refresh();
            var cpu0 = process.TotalProcessorTime;
            var sw = System.Diagnostics.Stopwatch.StartNew();
            Workers.Run(threads, LoopTask);
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
            process.Refresh();
            bestCpu = Math.Min(bestCpu, (process.TotalProcessorTime - cpu0).TotalSeconds);
        }
        double flops = (double)Iterations * Accumulators * 16 * 2 * threads;
        Console.WriteLine($"peak {threads} thread(s): {flops / best / 1e9,7:F1} GFLOP/s (wall)  {flops / (bestCpu / threads) / 1e9,7:F1} GFLOP/s (cpu)");
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaLoop(int iterations)
    {
        if (!Avx512F.IsSupported) throw new PlatformNotSupportedException("AVX-512 is needed for this benchmark.");
        var scale = Vector512.Create(0.9999999f);
        var shift = Vector512.Create(1e-7f);
        Vector512<float> x0 = Vector512.Create(1f), x1 = Vector512.Create(2f), x2 = Vector512.Create(3f), x3 = Vector512.Create(4f);
        Vector512<float> x4 = Vector512.Create(5f), x5 = Vector512.Create(6f), x6 = Vector512.Create(7f), x7 = Vector512.Create(8f);
        Vector512<float> x8 = Vector512.Create(9f), x9 = Vector512.Create(10f), x10 = Vector512.Create(11f), x11 = Vector512.Create(12f);
        for (int i = 0; i < iterations; i++)
        {
            x0 = Avx512F.FusedMultiplyAdd(x0, scale, shift); x1 = Avx512F.FusedMultiplyAdd(x1, scale, shift);
            x2 = Avx512F.FusedMultiplyAdd(x2, scale, shift); x3 = Avx512F.FusedMultiplyAdd(x3, scale, shift);
            x4 = Avx512F.FusedMultiplyAdd(x4, scale, shift); x5 = Avx512F.FusedMultiplyAdd(x5, scale, shift);
            x6 = Avx512F.FusedMultiplyAdd(x6, scale, shift); x7 = Avx512F.FusedMultiplyAdd(x7, scale, shift);
            x8 = Avx512F.FusedMultiplyAdd(x8, scale, shift); x9 = Avx512F.FusedMultiplyAdd(x9, scale, shift);
            x10 = Avx512F.FusedMultiplyAdd(x10, scale, shift); x11 = Avx512F.FusedMultiplyAdd(x11, scale, shift);
        }
        return Vector512.Sum(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + x10 + x11);
    }
}
