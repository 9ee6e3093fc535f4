using BenchmarkDotNet.Attributes;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Benchmarks;

/// <summary>
/// The draws a Book124M training step makes: one attention-weights dropout mask per block
/// ([2, 12, 256, 256] = 1.57M Bernoulli draws; a step makes ~29M), and init-style uniform/normal fills.
/// </summary>
[MemoryDiagnoser]
public class RandomGeneratorBenchmarks
{
    private readonly float[] _mask = new float[2 * 12 * 256 * 256];
    private readonly float[] _weights = new float[768 * 768];
    private IRandomGenerator _generator = null!;

    [Params("torch", "fast")]
    public string Kind { get; set; } = "torch";

    [GlobalSetup]
    public void Setup() => _generator = RandomGenerators.Create(Kind, 123);

    [Benchmark]
    public void AttentionDropoutMask() => _generator.Bernoulli(_mask, 0.9);

    [Benchmark]
    public void LinearInitUniform() => _generator.Uniform(_weights, -0.036, 0.036);

    [Benchmark]
    public void EmbeddingInitNormal() => _generator.Normal(_weights, 0, 1);
}
