using System.Runtime.CompilerServices;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using KernelPath = GptSharp.Tensors.Gemm.KernelPath;
using GptSharp.Tensors;

namespace GptSharp.Layers;

internal static unsafe partial class Kernels
{
    /// <summary>
    /// The shortcut connection <c>x = x + shortcut</c>: output = a + b (output may alias either input).
    /// Its backward is the identity into both branches, so the model passes the residual stream's
    /// gradient straight on (<see cref="ResidualBackward"/> spells it out for the tests).
    /// </summary>
    public static void ResidualForward(float* output, float* a, float* b, long n) => ResidualForward(Gemm.BestPath, output, a, b, n);

    internal static void ResidualForward(KernelPath path, float* output, float* a, float* b, long n) =>
        Simd.ParallelMap(path, n, 1, new ElementwiseOp<Add> { Output = output, A = a, B = b });

    /// <summary>Backward of <see cref="ResidualForward(float*, float*, float*, long)"/>: dA += dOutput, dB += dOutput.</summary>
    public static void ResidualBackward(float* dA, float* dB, float* dOutput, long n)
    {
        var d = new ReadOnlySpan<float>(dOutput, checked((int)n));
        var a = new Span<float>(dA, (int)n);
        var b = new Span<float>(dB, (int)n);
        TensorPrimitives.Add(a, d, a);
        TensorPrimitives.Add(b, d, b);
    }

    /// <summary>A binary arithmetic operator on each width (TensorPrimitives' operator structs).</summary>
    private interface IBinaryOperator
    {
        static abstract float Invoke(float x, float y);
        static abstract Vector256<float> Invoke(Vector256<float> x, Vector256<float> y);
        static abstract Vector512<float> Invoke(Vector512<float> x, Vector512<float> y);
    }

    private readonly struct Add : IBinaryOperator
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Invoke(float x, float y) => x + y;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Invoke(Vector256<float> x, Vector256<float> y) => x + y;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Invoke(Vector512<float> x, Vector512<float> y) => x + y;
    }

    private readonly struct Multiply : IBinaryOperator
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Invoke(float x, float y) => x * y;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Invoke(Vector256<float> x, Vector256<float> y) => x * y;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Invoke(Vector512<float> x, Vector512<float> y) => x * y;
    }

    /// <summary>output = a ∘ b element by element (output may alias either input): the residual sum and dropout's masking.</summary>
    private struct ElementwiseOp<TOperator> : IMapOp where TOperator : struct, IBinaryOperator
    {
        public float* Output, A, B;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke(long i) => Output[i] = TOperator.Invoke(A[i], B[i]);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Invoke256(long i) => TOperator.Invoke(Vector256.Load(A + i), Vector256.Load(B + i)).Store(Output + i);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Invoke512(long i) => TOperator.Invoke(Vector512.Load(A + i), Vector512.Load(B + i)).Store(Output + i);
    }
}
