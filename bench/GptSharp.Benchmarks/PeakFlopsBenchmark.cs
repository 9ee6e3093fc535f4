using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using BenchmarkDotNet.Attributes;
using GptSharp.Tensors;

namespace GptSharp.Benchmarks;

/// <summary>
/// The machine's float32 peak: a tight FMA loop with many independent accumulators (enough to cover the FMA
/// latency on both FMA pipes) on 1 and 2 threads, with the widest vectors the CPU has (Vector512 with AVX-512,
/// else Vector256 with FMA3, the same choice the GEMM makes). The GEMM bar (≥ 70 % of this) is measured against it.
/// </summary>
[Config(typeof(GflopsConfig))]
public class PeakFlopsBenchmark : IWorkMeasure
{
    // Per thread and invocation: Iterations × 12 accumulators × Lanes × 2 flops.
    private const int Iterations = 4_000_000;
    private const int Accumulators = 12;
    private static readonly int Lanes = Avx512F.IsSupported ? 16 : 8;
    private static readonly float[] Sinks = new float[16 * 64];
    private static readonly Action<int> LoopTask = i => Sinks[i * 16] = Avx512F.IsSupported ? FmaLoop512(Iterations) : FmaLoop256(Iterations);

    [Params(1, 2)]
    public int Threads { get; set; }

    public double WorkPerInvocation(string methodName) => (double)Iterations * Accumulators * Lanes * 2 * Threads;

    [GlobalSetup]
    public void Setup() => Workers.Count = Threads;

    [Benchmark]
    public void WidestFma() => Workers.Run(Threads, LoopTask);

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
        double flops = (double)Iterations * Accumulators * Lanes * 2 * threads;
        Console.WriteLine($"peak {threads} thread(s), {Lanes * 32}-bit FMA: {flops / best / 1e9,7:F1} GFLOP/s (wall)  {flops / (bestCpu / threads) / 1e9,7:F1} GFLOP/s (cpu)");
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaLoop512(int iterations)
    {
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

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaLoop256(int iterations)
    {
        if (!Fma.IsSupported) throw new PlatformNotSupportedException("FMA3 is needed for this benchmark.");
        var scale = Vector256.Create(0.9999999f);
        var shift = Vector256.Create(1e-7f);
        Vector256<float> x0 = Vector256.Create(1f), x1 = Vector256.Create(2f), x2 = Vector256.Create(3f), x3 = Vector256.Create(4f);
        Vector256<float> x4 = Vector256.Create(5f), x5 = Vector256.Create(6f), x6 = Vector256.Create(7f), x7 = Vector256.Create(8f);
        Vector256<float> x8 = Vector256.Create(9f), x9 = Vector256.Create(10f), x10 = Vector256.Create(11f), x11 = Vector256.Create(12f);
        for (int i = 0; i < iterations; i++)
        {
            x0 = Fma.MultiplyAdd(x0, scale, shift); x1 = Fma.MultiplyAdd(x1, scale, shift);
            x2 = Fma.MultiplyAdd(x2, scale, shift); x3 = Fma.MultiplyAdd(x3, scale, shift);
            x4 = Fma.MultiplyAdd(x4, scale, shift); x5 = Fma.MultiplyAdd(x5, scale, shift);
            x6 = Fma.MultiplyAdd(x6, scale, shift); x7 = Fma.MultiplyAdd(x7, scale, shift);
            x8 = Fma.MultiplyAdd(x8, scale, shift); x9 = Fma.MultiplyAdd(x9, scale, shift);
            x10 = Fma.MultiplyAdd(x10, scale, shift); x11 = Fma.MultiplyAdd(x11, scale, shift);
        }
        return Vector256.Sum(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + x10 + x11);
    }
}
