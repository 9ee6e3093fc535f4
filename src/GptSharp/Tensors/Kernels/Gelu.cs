using System.Numerics.Tensors;

namespace GptSharp.Tensors;

public static unsafe partial class Kernels
{
    // √(2/π) and the cubic coefficient of the book's tanh approximation of GELU.
    private const float GeluScale = 0.7978845608028654f;
    private const float GeluCubic = 0.044715f;

    /// <summary>
    /// The book's GELU: output = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (output may alias input).
    /// tanh goes through TensorPrimitives.Tanh, which is vectorized.
    /// </summary>
    public static void GeluForward(float* output, float* input, long n)
    {
        RowParallel.For(Chunks(n), ElementChunk * 8, new GeluForwardKernel { Output = output, Input = input, Length = n });
    }

    /// <summary>
    /// Backward of <see cref="GeluForward"/> (dInput may alias dOutput), with t = tanh(u), u = √(2/π)(x + 0.044715x³):
    /// d/dx = 0.5(1 + t) + 0.5·x·(1 − t²)·√(2/π)(1 + 3·0.044715·x²).
    /// </summary>
    public static void GeluBackward(float* dInput, float* input, float* dOutput, long n)
    {
        RowParallel.For(Chunks(n), ElementChunk * 8, new GeluBackwardKernel { DInput = dInput, Input = input, DOutput = dOutput, Length = n });
    }

    /// <summary>u = √(2/π)·(x + 0.044715·x³) then tanh(u), into <paramref name="tanh"/>.</summary>
    private static void GeluTanh(ReadOnlySpan<float> x, Span<float> tanh)
    {
        for (int i = 0; i < x.Length; i++)
        {
            float xi = x[i];
            tanh[i] = GeluScale * (xi + GeluCubic * xi * xi * xi);
        }
        TensorPrimitives.Tanh(tanh, tanh);
    }

    private struct GeluForwardKernel : IRangeKernel
    {
        public float* Output, Input;
        public long Length;

        public readonly void Execute(int start, int end)
        {
            var (first, count) = ChunkSpan(start, end, Length);
            Span<float> tanh = stackalloc float[ElementChunk];
            for (int offset = 0; offset < count; offset += ElementChunk)
            {
                int len = Math.Min(ElementChunk, count - offset);
                var x = new ReadOnlySpan<float>(Input + first + offset, len);
                var y = new Span<float>(Output + first + offset, len);
                var t = tanh[..len];
                GeluTanh(x, t);
                for (int i = 0; i < len; i++) y[i] = 0.5f * x[i] * (1f + t[i]);
            }
        }
    }

    private struct GeluBackwardKernel : IRangeKernel
    {
        public float* DInput, Input, DOutput;
        public long Length;

        public readonly void Execute(int start, int end)
        {
            var (first, count) = ChunkSpan(start, end, Length);
            Span<float> tanh = stackalloc float[ElementChunk];
            for (int offset = 0; offset < count; offset += ElementChunk)
            {
                int len = Math.Min(ElementChunk, count - offset);
                var x = new ReadOnlySpan<float>(Input + first + offset, len);
                var dy = new ReadOnlySpan<float>(DOutput + first + offset, len);
                var dx = new Span<float>(DInput + first + offset, len);
                var t = tanh[..len];
                GeluTanh(x, t);
                for (int i = 0; i < len; i++)
                {
                    float xi = x[i], ti = t[i];
                    float local = 0.5f * (1f + ti) + 0.5f * xi * (1f - ti * ti) * GeluScale * (1f + 3f * GeluCubic * xi * xi);
                    dx[i] = local * dy[i];
                }
            }
        }
    }
}
