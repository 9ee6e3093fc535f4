using System.Numerics.Tensors;

namespace GptSharp.Tensors;

public static unsafe partial class Kernels
{
    /// <summary>
    /// The shortcut connection <c>x = x + shortcut</c>: output = a + b (output may alias either input).
    /// Its backward is the identity into both branches, so the model passes the residual stream's
    /// gradient straight on (<see cref="ResidualBackward"/> spells it out for the tests).
    /// </summary>
    public static void ResidualForward(float* output, float* a, float* b, long n)
    {
        RowParallel.For(Chunks(n), ElementChunk, new ResidualForwardKernel { Output = output, A = a, B = b, Length = n });
    }

    /// <summary>Backward of <see cref="ResidualForward"/>: dA += dOutput, dB += dOutput.</summary>
    public static void ResidualBackward(float* dA, float* dB, float* dOutput, long n)
    {
        var d = new ReadOnlySpan<float>(dOutput, checked((int)n));
        var a = new Span<float>(dA, (int)n);
        var b = new Span<float>(dB, (int)n);
        TensorPrimitives.Add(a, d, a);
        TensorPrimitives.Add(b, d, b);
    }

    /// <summary>Elementwise kernels split their elements into chunks of this size.</summary>
    internal const int ElementChunk = 4096;

    internal static int Chunks(long n) => checked((int)((n + ElementChunk - 1) / ElementChunk));

    /// <summary>First element and element count of chunks [start, end) of <paramref name="n"/> elements.</summary>
    internal static (long First, int Count) ChunkSpan(int start, int end, long n)
    {
        long first = (long)start * ElementChunk;
        return (first, (int)Math.Min((long)(end - start) * ElementChunk, n - first));
    }

    private struct ResidualForwardKernel : IRangeKernel
    {
        public float* Output, A, B;
        public long Length;

        public readonly void Execute(int start, int end)
        {
            var (first, count) = ChunkSpan(start, end, Length);
            TensorPrimitives.Add(new ReadOnlySpan<float>(A + first, count), new ReadOnlySpan<float>(B + first, count),
                new Span<float>(Output + first, count));
        }
    }
}
