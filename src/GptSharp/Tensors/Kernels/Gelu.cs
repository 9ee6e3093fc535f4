using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace GptSharp.Tensors;

public static unsafe partial class Kernels
{
    // √(2/π) and the cubic coefficient of the book's tanh approximation of GELU.
    private const float GeluScale = 0.7978845608028654f;
    private const float GeluCubic = 0.044715f;

    /// <summary>
    /// The book's GELU: output = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (output may alias input).
    /// Vectorized with Vector512 (Vector256 fallback, scalar tail).
    /// </summary>
    public static void GeluForward(float* output, float* input, long n)
    {
        RowParallel.For(Chunks(n), ElementChunk * 4, new GeluForwardKernel { Output = output, Input = input, Length = n });
    }

    /// <summary>
    /// Backward of <see cref="GeluForward"/> (dInput may alias dOutput), with t = tanh(u), u = √(2/π)(x + 0.044715x³):
    /// d/dx = 0.5(1 + t) + 0.5·x·(1 − t²)·√(2/π)(1 + 3·0.044715·x²).
    /// </summary>
    public static void GeluBackward(float* dInput, float* input, float* dOutput, long n)
    {
        RowParallel.For(Chunks(n), ElementChunk * 4, new GeluBackwardKernel { DInput = dInput, Input = input, DOutput = dOutput, Length = n });
    }

    /// <summary>tanh(√(2/π)·(x + 0.044715·x³)) for 16 lanes, as 1 − 2/(e^{2u} + 1) (exact limits ±1 when e^{2u} over/underflows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> GeluTanh(Vector512<float> x)
    {
        var u = Vector512.Create(GeluScale) * (x + Vector512.Create(GeluCubic) * x * x * x);
        var e = Vector512.Exp(u + u);
        return Vector512<float>.One - Vector512.Create(2f) / (e + Vector512<float>.One);
    }

    /// <summary>The same for 8 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> GeluTanh(Vector256<float> x)
    {
        var u = Vector256.Create(GeluScale) * (x + Vector256.Create(GeluCubic) * x * x * x);
        var e = Vector256.Exp(u + u);
        return Vector256<float>.One - Vector256.Create(2f) / (e + Vector256<float>.One);
    }

    private static float GeluTanh(float x) => MathF.Tanh(GeluScale * (x + GeluCubic * x * x * x));

    private static float GeluGrad(float x, float t) =>
        0.5f * (1f + t) + 0.5f * x * (1f - t * t) * GeluScale * (1f + 3f * GeluCubic * x * x);

    private struct GeluForwardKernel : IRangeKernel
    {
        public float* Output, Input;
        public long Length;

        public readonly void Execute(int start, int end)
        {
            var (first, count) = ChunkSpan(start, end, Length);
            float* x = Input + first, y = Output + first;
            int i = 0;
            if (Vector512.IsHardwareAccelerated)
            {
                for (; i <= count - Vector512<float>.Count; i += Vector512<float>.Count)
                {
                    var xv = Vector512.Load(x + i);
                    (Vector512.Create(0.5f) * xv * (Vector512<float>.One + GeluTanh(xv))).Store(y + i);
                }
            }
            else if (Vector256.IsHardwareAccelerated)
            {
                for (; i <= count - Vector256<float>.Count; i += Vector256<float>.Count)
                {
                    var xv = Vector256.Load(x + i);
                    (Vector256.Create(0.5f) * xv * (Vector256<float>.One + GeluTanh(xv))).Store(y + i);
                }
            }
            for (; i < count; i++) y[i] = 0.5f * x[i] * (1f + GeluTanh(x[i]));
        }
    }

    private struct GeluBackwardKernel : IRangeKernel
    {
        public float* DInput, Input, DOutput;
        public long Length;

        public readonly void Execute(int start, int end)
        {
            var (first, count) = ChunkSpan(start, end, Length);
            float* x = Input + first, dy = DOutput + first, dx = DInput + first;
            int i = 0;
            if (Vector512.IsHardwareAccelerated)
            {
                var half = Vector512.Create(0.5f);
                var slope = Vector512.Create(3f * GeluCubic);
                var scale = Vector512.Create(GeluScale);
                for (; i <= count - Vector512<float>.Count; i += Vector512<float>.Count)
                {
                    var xv = Vector512.Load(x + i);
                    var t = GeluTanh(xv);
                    var local = half * (Vector512<float>.One + t)
                        + half * xv * (Vector512<float>.One - t * t) * scale * (Vector512<float>.One + slope * xv * xv);
                    (local * Vector512.Load(dy + i)).Store(dx + i);
                }
            }
            else if (Vector256.IsHardwareAccelerated)
            {
                var half = Vector256.Create(0.5f);
                var slope = Vector256.Create(3f * GeluCubic);
                var scale = Vector256.Create(GeluScale);
                for (; i <= count - Vector256<float>.Count; i += Vector256<float>.Count)
                {
                    var xv = Vector256.Load(x + i);
                    var t = GeluTanh(xv);
                    var local = half * (Vector256<float>.One + t)
                        + half * xv * (Vector256<float>.One - t * t) * scale * (Vector256<float>.One + slope * xv * xv);
                    (local * Vector256.Load(dy + i)).Store(dx + i);
                }
            }
            for (; i < count; i++) dx[i] = GeluGrad(x[i], GeluTanh(x[i])) * dy[i];
        }
    }
}
