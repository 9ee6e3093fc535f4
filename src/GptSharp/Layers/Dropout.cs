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
        // div_(1 - p) on a float32 tensor: the double scalar becomes float32 first.
        float scale = 1f / (float)keep;
        if (generator is FastRandom fast && n >= MaskRow)
        {
            // The same draws in the same order, as bits in parallel pieces (DropoutMaskBits over rows of MaskRow),
            // then expanded: 1 · scale and 0 · scale, the products below, bit for bit.
            int rows = (int)(n / MaskRow), tail = (int)(n - (long)rows * MaskRow), words = DropoutBitWords(MaskRow);
            uint* bits = (uint*)ThreadScratch.Grow(ref t_maskBits, ref t_maskBitsCapacity, (long)rows * words + DropoutBitWords(tail));
            DropoutMaskBits(bits, rows, MaskRow, dropRate, fast);
            if (tail > 0) fast.BernoulliBits(bits + (long)rows * words, tail, keep);
            RowParallel.For(rows + (tail > 0 ? 1 : 0), MaskRow, new ExpandMaskKernel { Mask = mask, Bits = bits, Length = n, Scale = scale });
            return;
        }
        generator.Bernoulli(span, keep);
        TensorPrimitives.Multiply(span, scale, span);
    }

    /// <summary>Elements per row when a <see cref="FastRandom"/> mask is drawn as bits.</summary>
    private const int MaskRow = 1024;

    [ThreadStatic] private static nint t_maskBits;
    [ThreadStatic] private static long t_maskBitsCapacity;

    /// <summary>Rows of <see cref="MaskRow"/> mask elements from their bits: scale where kept, 0 where dropped.</summary>
    private struct ExpandMaskKernel : IRangeKernel
    {
        public float* Mask;
        public uint* Bits;
        public long Length;
        public float Scale;

        public readonly void Execute(int start, int end)
        {
            for (int r = start; r < end; r++)
            {
                long first = (long)r * MaskRow;
                int length = (int)Math.Min(MaskRow, Length - first);
                new Span<float>(Mask + first, length).Fill(1f);
                ApplyDropoutBits(Gemm.BestPath, Mask + first, Bits + (long)r * DropoutBitWords(MaskRow), length, Scale);
            }
        }
    }

    /// <summary>output = input * mask (output may alias input): PyTorch's <c>input * noise</c>.</summary>
    public static void DropoutForward(float* output, float* input, float* mask, long n) =>
        Simd.ParallelMap(Gemm.BestPath, n, 1, new ElementwiseOp<Multiply> { Output = output, A = input, B = mask });

    /// <summary>dInput = dOutput * mask (dInput may alias dOutput): the kept elements pass their gradient, rescaled.</summary>
    public static void DropoutBackward(float* dInput, float* dOutput, float* mask, long n) =>
        Simd.ParallelMap(Gemm.BestPath, n, 1, new ElementwiseOp<Multiply> { Output = dInput, A = dOutput, B = mask });
}
