using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using KernelPath = GptSharp.Tensors.Gemm.KernelPath;
using GptSharp.Tensors;

namespace GptSharp.Layers;

internal static unsafe partial class Kernels
{
    // √(2/π) and the cubic coefficient of the book's tanh approximation of GELU.
    private const float GeluScale = 0.7978845608028654f;
    private const float GeluCubic = 0.044715f;

    /// <summary>
    /// The book's GELU: output = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (output may alias input).
    /// </summary>
    public static void GeluForward(float* output, float* input, long n) => GeluForward(Gemm.BestPath, output, input, n);

    internal static void GeluForward(KernelPath path, float* output, float* input, long n) =>
        Simd.ParallelMap(path, n, 4, new GeluForwardOp { Output = output, Input = input });

    /// <summary>
    /// Backward of <see cref="GeluForward(float*, float*, long)"/> (dInput may alias dOutput), with t = tanh(u), u = √(2/π)(x + 0.044715x³):
    /// d/dx = 0.5(1 + t) + 0.5·x·(1 − t²)·√(2/π)(1 + 3·0.044715·x²).
    /// </summary>
    public static void GeluBackward(float* dInput, float* input, float* dOutput, long n) => GeluBackward(Gemm.BestPath, dInput, input, dOutput, n);

    internal static void GeluBackward(KernelPath path, float* dInput, float* input, float* dOutput, long n) =>
        Simd.ParallelMap(path, n, 4, new GeluBackwardOp { DInput = dInput, Input = input, DOutput = dOutput });

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

    private struct GeluForwardOp : IMapOp
    {
        public float* Output, Input;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke(long i) => Output[i] = 0.5f * Input[i] * (1f + GeluTanh(Input[i]));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke256(long i)
        {
            var x = Vector256.Load(Input + i);
            (Vector256.Create(0.5f) * x * (Vector256<float>.One + GeluTanh(x))).Store(Output + i);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke512(long i)
        {
            var x = Vector512.Load(Input + i);
            (Vector512.Create(0.5f) * x * (Vector512<float>.One + GeluTanh(x))).Store(Output + i);
        }
    }

    private struct GeluBackwardOp : IMapOp
    {
        public float* DInput, Input, DOutput;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke(long i)
        {
            float x = Input[i], t = GeluTanh(x);
            DInput[i] = (0.5f * (1f + t) + 0.5f * x * (1f - t * t) * GeluScale * (1f + 3f * GeluCubic * x * x)) * DOutput[i];
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke256(long i)
        {
            var x = Vector256.Load(Input + i);
            var t = GeluTanh(x);
            var half = Vector256.Create(0.5f);
            var local = half * (Vector256<float>.One + t)
                + half * x * (Vector256<float>.One - t * t) * Vector256.Create(GeluScale) * (Vector256<float>.One + Vector256.Create(3f * GeluCubic) * x * x);
            (local * Vector256.Load(DOutput + i)).Store(DInput + i);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke512(long i)
        {
            var x = Vector512.Load(Input + i);
            var t = GeluTanh(x);
            var half = Vector512.Create(0.5f);
            var local = half * (Vector512<float>.One + t)
                + half * x * (Vector512<float>.One - t * t) * Vector512.Create(GeluScale) * (Vector512<float>.One + Vector512.Create(3f * GeluCubic) * x * x);
            (local * Vector512.Load(DOutput + i)).Store(DInput + i);
        }
    }
}
