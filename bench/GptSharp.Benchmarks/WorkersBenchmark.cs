using BenchmarkDotNet.Attributes;
using GptSharp.Tensors;

namespace GptSharp.Benchmarks;

/// <summary>Overhead of one <see cref="Workers.Run"/> with trivial tasks: the fixed cost every parallel kernel pays.</summary>
public class WorkersBenchmark
{
    private static readonly int[] Slots = new int[64 * 16];
    private static readonly Action<int> Touch = i => Slots[(i & 63) * 16]++;

    [Params(2, 64)]
    public int Tasks { get; set; }

    [GlobalSetup]
    public void Setup() => Workers.Count = Environment.ProcessorCount;

    [Benchmark]
    public void Run() => Workers.Run(Tasks, Touch);
}
