using System.Diagnostics;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using GptSharp.Tensors;

namespace GptSharp.Benchmarks;

/// <summary>
/// GEMM at the shapes of the 124M model with 512 tokens (B·T = 512), forward and both backward forms, plus the
/// per-head attention products (single-threaded, as attention calls them from inside its own parallel loop).
/// Case names: form (NT = A·Bᵀ, NN = A·B, TN = Aᵀ·B) then m×n×k.
/// </summary>
[Config(typeof(GflopsConfig))]
public unsafe class GemmBenchmarks : IWorkMeasure
{
    // Names stay within 20 characters, which BenchmarkDotNet prints untruncated.
    public static IEnumerable<string> Cases() => new[]
    {
        // forward y = x·Wᵀ + b: qkv/out_proj, ff.layers.0 (fc1), ff.layers.2 (fc2), out_head
        "NT 512x768x768", "NT 512x3072x768", "NT 512x768x3072", "NT 512x50257x768",
        // backward dx = dy·W: same layers
        "NN 512x768x768", "NN 512x768x3072", "NN 512x3072x768", "NN 512x768x50257",
        // backward dW += dyᵀ·x: same layers
        "TN 768x768x512", "TN 3072x768x512", "TN 768x3072x512", "TN 50257x768x512",
        // one attention head ("att"), ctx 256, head dim 64, strided in the [T, 3·768] activations, 1 thread:
        // scores Q·Kᵀ, context P·V, dV = Pᵀ·dO
        "NT 256x256x64 att", "NN 256x64x256 att", "TN 256x64x256 att",
        // the same in the 32-query-row blocks that skip the causal mask's upper triangle (last block shown)
        "NT 32x256x64 att", "NN 32x64x256 att", "TN 32x64x256 att",
        // generation with a KV cache: one new token through the output head (memory-bound: reads W once)
        "NT 1x50257x768",
    };

    [ParamsSource(nameof(Cases))]
    public string Case { get; set; } = "NT 512x768x768";

    private GemmCase _case;
    private float* _a, _b, _c, _bias;

    public double WorkPerInvocation(string methodName) => GemmCase.Parse(Case).Flops;

    [GlobalSetup]
    public void Setup()
    {
        Workers.Count = Environment.ProcessorCount;
        _case = GemmCase.Parse(Case);
        _a = Allocate(_case.ASize);
        _b = Allocate(_case.BSize);
        _c = Allocate(_case.CSize);
        _bias = Allocate(_case.N);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_a);
        NativeMemory.AlignedFree(_b);
        NativeMemory.AlignedFree(_c);
        NativeMemory.AlignedFree(_bias);
    }

    [Benchmark]
    public void MatMul() => _case.Run(_a, _b, _c, _bias);

    internal static float* Allocate(long floats)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
        var random = new Random(42);
        for (long i = 0; i < floats; i++) p[i] = (float)(random.NextDouble() - 0.5);
        return p;
    }
}

/// <summary>One benchmark shape, parsed from "NT 512x768x768" (form, m×n×k, optional " att").</summary>
internal readonly struct GemmCase
{
    public bool TransA { get; init; }
    public bool TransB { get; init; }
    public int M { get; init; }
    public int N { get; init; }
    public int K { get; init; }
    public bool Attention { get; init; }
    public double Flops => 2.0 * M * N * K;

    // Attention products read one head out of the wide activations: Q/K/V rows are 3·768 floats apart.
    public int Lda => Attention ? 3 * 768 : (TransA ? M : K);
    public int Ldb => Attention ? 3 * 768 : (TransB ? K : N);
    public int Ldc => Attention ? Math.Max(N, 768) : N;
    public long ASize => (long)(TransA ? K : M) * Lda;
    public long BSize => (long)(TransB ? N : K) * Ldb;
    public long CSize => (long)M * Ldc;

    public static GemmCase Parse(string text)
    {
        string[] parts = text.Split(' ');
        int[] dims = parts[1].Split('x').Select(int.Parse).ToArray();
        return new GemmCase
        {
            TransA = parts[0][0] == 'T', TransB = parts[0][1] == 'T',
            M = dims[0], N = dims[1], K = dims[2],
            Attention = text.EndsWith(" att"),
        };
    }

    public unsafe void Run(float* a, float* b, float* c, float* bias)
        => Gemm.MatMul(TransA, TransB, M, N, K, a, Lda, b, Ldb, c, Ldc,
            accumulate: TransA, bias: !TransA && TransB && !Attention ? bias : null, parallel: !Attention);

    /// <summary>A quick Stopwatch measurement (no BenchmarkDotNet): best GFLOP/s over a few runs.</summary>
    public static unsafe void Quick(IEnumerable<string> cases, int threads)
    {
        Workers.Count = threads;
        foreach (string name in cases)
        {
            var g = Parse(name);
            float* a = GemmBenchmarks.Allocate(g.ASize), b = GemmBenchmarks.Allocate(g.BSize);
            float* c = GemmBenchmarks.Allocate(g.CSize), bias = GemmBenchmarks.Allocate(g.N);
            int repeats = (int)Math.Clamp(3e10 / g.Flops, 3, 2000);
            g.Run(a, b, c, bias);
            double best = double.MaxValue, bestCpu = double.MaxValue;
            var process = Process.GetCurrentProcess();
            int perRound = Math.Max(1, repeats / 5);
            for (int r = 0; r < 5; r++)
            {
                process.Refresh();
                var cpu0 = process.TotalProcessorTime;
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < perRound; i++) g.Run(a, b, c, bias);
                best = Math.Min(best, sw.Elapsed.TotalSeconds / perRound);
                process.Refresh();
                bestCpu = Math.Min(bestCpu, (process.TotalProcessorTime - cpu0).TotalSeconds / perRound);
            }
            // On a shared machine the wall time counts other processes' slices; the CPU time (spread over the
            // threads used) does not, so "cpu" approximates a quiet machine (it also counts the pool's spinning).
            int used = g.Attention ? 1 : threads;
            Console.WriteLine($"{name,-28} {best * 1e3,9:F3} ms  {g.Flops / best / 1e9,7:F1} GFLOP/s (wall)  {g.Flops / (bestCpu / used) / 1e9,7:F1} GFLOP/s (cpu)");
            NativeMemory.AlignedFree(a); NativeMemory.AlignedFree(b); NativeMemory.AlignedFree(c); NativeMemory.AlignedFree(bias);
        }
    }
}
