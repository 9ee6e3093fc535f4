using System.Numerics.Tensors;
using GptSharp.Randomness;
using GptSharp.Tensors;

namespace GptSharp.Layers;

internal static unsafe partial class Kernels
{
    /// <summary>
    /// Draws an inverted-dropout mask exactly as PyTorch's CPU <c>F.dropout(x, p, training=True)</c> does:
    /// <c>noise = empty_like(x).bernoulli_(1 - p); noise.div_(1 - p)</c>. Each element is 0 (dropped)
    /// or 1/(1-p) (kept and rescaled, so the expected value is unchanged), drawn from
    /// <paramref name="generator"/> in memory order. The mask is kept for the backward pass.
    /// </summary>
    /// <param name="dropRate">p as a double, the value PyTorch's Python float holds (0.1, not (double)0.1f).</param>
    public static void DropoutMask(float* mask, long n, double dropRate, IRandomGenerator generator)
    {
        if (!(dropRate > 0 && dropRate < 1))
            throw new ArgumentOutOfRangeException(nameof(dropRate), $"A dropout mask needs 0 < p < 1, got {dropRate}.");
        double keep = 1 - dropRate;
        var span = new Span<float>(mask, checked((int)n));
        generator.Bernoulli(span, keep);
        // div_(1 - p) on a float32 tensor: the double scalar becomes float32 first.
        float scale = 1f / (float)keep;
        TensorPrimitives.Multiply(span, scale, span);
    }

    /// <summary>output = input * mask (output may alias input): PyTorch's <c>input * noise</c>.</summary>
    public static void DropoutForward(float* output, float* input, float* mask, long n) =>
        Simd.ParallelMap(Gemm.BestPath, n, 1, new ElementwiseOp<Multiply> { Output = output, A = input, B = mask });

    /// <summary>dInput = dOutput * mask (dInput may alias dOutput): the kept elements pass their gradient, rescaled.</summary>
    public static void DropoutBackward(float* dInput, float* dOutput, float* mask, long n) =>
        Simd.ParallelMap(Gemm.BestPath, n, 1, new ElementwiseOp<Multiply> { Output = dInput, A = dOutput, B = mask });
}
