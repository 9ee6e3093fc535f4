using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using BenchmarkDotNet.Attributes;
using GptSharp.Tensors;

namespace GptSharp.Benchmarks;

/// <summary>
/// Read bandwidth from main memory: sum a 1 GiB float array with Vector256 loads (two per cycle
/// outrun main memory on any AVX2 core, so the width does not matter here), split over the threads.
/// The figure bounds every memory-bound kernel (AdamW, LayerNorm, the skinny GEMM of generation).
/// </summary>
[Config(typeof(BandwidthConfig))]
public unsafe class MemoryBandwidthBenchmark : IWorkMeasure
{
    private const long Floats = 1L << 28; // 1 GiB
    private const int Chunks = 64;
    private static float* s_data;
    private static readonly float[] Partials = new float[Chunks];
    private static readonly Action<int> SumTask = SumChunk;

    [Params(1, 2)]
    public int Threads { get; set; }

    public double WorkPerInvocation(string methodName) => Floats * sizeof(float);

    [GlobalSetup]
    public void Setup()
    {
        Workers.Count = Threads;
        s_data = (float*)NativeMemory.AlignedAlloc((nuint)(Floats * sizeof(float)), 64);
        new Span<float>(s_data, 1 << 20).Fill(1f);
        for (long i = 1 << 20; i < Floats; i += 1 << 20) new Span<float>(s_data, 1 << 20).CopyTo(new Span<float>(s_data + i, 1 << 20));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(s_data);
        s_data = null;
    }

    [Benchmark]
    public float Sum()
    {
        Workers.Run(Chunks, SumTask);
        float total = 0;
        foreach (float p in Partials) total += p;
        return total;
    }

    /// <summary>Quick Stopwatch measurement without BenchmarkDotNet (see Program): best of a few passes.</summary>
    public static void Quick(int threads)
    {
        var bench = new MemoryBandwidthBenchmark { Threads = threads };
        bench.Setup();
        double best = double.MaxValue;
        for (int r = 0; r < 8; r++)
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            bench.Sum();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        bench.Cleanup();
        Console.WriteLine($"read bandwidth {threads} thread(s): {Floats * sizeof(float) / best / 1e9,6:F1} GB/s (1 GiB in {best * 1e3:F1} ms)");
    }

    private static void SumChunk(int chunk)
    {
        const long perChunk = Floats / Chunks;
        float* p = s_data + chunk * perChunk;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (long i = 0; i < perChunk; i += 32)
        {
            s0 += Vector256.LoadAligned(p + i);
            s1 += Vector256.LoadAligned(p + i + 8);
            s2 += Vector256.LoadAligned(p + i + 16);
            s3 += Vector256.LoadAligned(p + i + 24);
        }
        Partials[chunk] = Vector256.Sum(s0 + s1 + s2 + s3);
    }
}
