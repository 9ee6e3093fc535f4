using BenchmarkDotNet.Attributes;
using GptSharp.Tensors;
using GptSharp.Formats;
using GptSharp.Pretrained;
using GptSharp.Formats.TensorFlow;
using GptSharp.Checkpoints.Gpt2;

namespace GptSharp.Benchmarks;

/// <summary>
/// The CPU side of loading OpenAI's GPT-2 checkpoint: the crc32c every tensor byte goes through and the
/// Conv1D → nn.Linear transpose of the largest gpt2-xl weight (c_fc, [1600, 6400]). Both must stay well
/// above disk speed. Run: dotnet run -c Release --project bench/GptSharp.Benchmarks -- --filter '*TensorFlow*'
/// </summary>
[MemoryDiagnoser]
public class TensorFlowCheckpointBenchmarks
{
    private byte[] _bytes = [];
    private float[] _conv1D = [];
    private Tensor? _linear;

    private const int In = 1600, Out = 6400;

    [GlobalSetup]
    public void Setup()
    {
        _bytes = new byte[64 << 20];
        new Random(1).NextBytes(_bytes);
        _conv1D = new float[In * Out];
        for (int i = 0; i < _conv1D.Length; i++) _conv1D[i] = i;
        _linear = new Tensor(Out, In);
    }

    [GlobalCleanup]
    public void Cleanup() => _linear?.Dispose();

    /// <summary>64 MiB through crc32c (bytes/s = 64 MiB / mean).</summary>
    [Benchmark]
    public uint Crc32C64MiB() => Crc32C.Compute(_bytes);

    /// <summary>gpt2-xl mlp/c_fc/w [1600, 6400] into ff.layers.0.weight [6400, 1600], in 4 MiB chunks as the loader does.</summary>
    [Benchmark]
    public void TransposeGpt2XlFeedForwardWeight()
    {
        int rowsPerChunk = (4 << 20) / (4 * Out);
        for (int row = 0; row < In; row += rowsPerChunk)
        {
            int count = Math.Min(rowsPerChunk, In - row);
            Gpt2WeightMap.TransposeRowsInto(_conv1D.AsSpan(row * Out, count * Out), count, Out, 0, Out, _linear!, In, row);
        }
    }
}
