using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GptSharp.Tensors;

internal static unsafe partial class Int8Kernels
{
    /// <summary>
    /// This CPU has the integer decode path: int16 × int16 pairs summed into int32 lanes, by AVX-VNNI's VPDPWSSD where the
    /// CPU has it, else by AVX2's VPMADDWD and an add (the same exact integers, two instructions instead of one).
    /// </summary>
    /// <remarks>
    /// .NET 10 exposes the VNNI instructions at 256 bits only (<see cref="AvxVnni"/>; the 512-bit forms need AVX10), so
    /// both kernel paths use the 256-bit loop.
    /// </remarks>
    internal static readonly bool Int8IntegerDotSupported = Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Whether the integer decode path uses VPDPWSSD (AVX-VNNI) rather than VPMADDWD + VPADDD (tests force each).</summary>
    internal static bool Int8IntegerVnni { get; set; } = AvxVnni.IsSupported;

    [ThreadStatic] private static bool? t_int8IntegerDecode;

    /// <summary>
    /// Whether decoding (≤ <see cref="Int8DecodeRows"/> rows) on int8 weights, called from this thread, quantizes the input
    /// rows to int16 and takes integer dot products, or dequantizes the weights to float32 in registers. Null (the
    /// default): integer where <see cref="Int8IntegerDotSupported"/>, measured faster (docs/int8.md). Benchmarks and tests
    /// set it to compare the two.
    /// </summary>
    internal static bool? Int8IntegerDecodeOnThisThread
    {
        get => t_int8IntegerDecode;
        set => t_int8IntegerDecode = value;
    }

    /// <summary>
    /// Input rows quantized for the integer path, in per-thread scratch of the calling thread (valid until its next call):
    /// per row, int16 values padded with zeros to whole blocks, and one float scale per block of
    /// <see cref="Int8Matrix.BlockSize"/> inputs, the same blocks as the weights' scales.
    /// </summary>
    internal readonly struct QuantizedActivations
    {
        public readonly byte* Base;
        public readonly long RowStride;
        public readonly int Blocks;

        private QuantizedActivations(byte* start, long rowStride, int blocks)
        {
            Base = start;
            RowStride = rowStride;
            Blocks = blocks;
        }

        public short* Values(int row) => (short*)(Base + row * RowStride);

        public float* Scales(int row) => (float*)(Base + row * RowStride + 2L * Blocks * Int8Matrix.BlockSize);

        /// <summary>
        /// Quantizes <paramref name="rows"/> rows of <paramref name="columns"/> floats, per block: scale = max |x| / 32767,
        /// q = round(x / scale), so every input is within scale / 2 of q · scale: a relative 1.5e-5 of the block's
        /// largest input, far below the weights' rounding (blocks whose max is below 1e-30 become zeros; a NaN block gets
        /// a NaN scale so the output is NaN as in float32).
        /// </summary>
        public static QuantizedActivations Quantize(float* input, int rows, int columns)
        {
            int blocks = (columns + Int8Matrix.BlockSize - 1) / Int8Matrix.BlockSize;
            long stride = (2L * blocks * Int8Matrix.BlockSize + blocks * sizeof(float) + 63) & ~63L;
            var activations = new QuantizedActivations((byte*)Int8Scratch.GetActivations((stride * rows + 3) / 4), stride, blocks);
            for (int i = 0; i < rows; i++)
                QuantizeActivationRow(input + (long)i * columns, columns, activations.Values(i), activations.Scales(i));
            return activations;
        }
    }

    /// <summary>One row of <see cref="QuantizedActivations.Quantize"/>: 32 floats per block in four 8-wide vectors, packed to int16.</summary>
    internal static void QuantizeActivationRow(float* x, int columns, short* values, float* scales)
    {
        const int block = Int8Matrix.BlockSize;
        const float levels = short.MaxValue;
        float* padded = stackalloc float[block];
        int blocks = (columns + block - 1) / block;
        for (int b = 0; b < blocks; b++)
        {
            float* source = x + b * block;
            int width = Math.Min(block, columns - b * block);
            if (width < block)
            {
                new Span<float>(padded, block).Clear();
                new Span<float>(source, width).CopyTo(new Span<float>(padded, block));
                source = padded;
            }
            var x0 = Vector256.Load(source);
            var x1 = Vector256.Load(source + 8);
            var x2 = Vector256.Load(source + 16);
            var x3 = Vector256.Load(source + 24);
            var max = Avx.Max(Avx.Max(Vector256.Abs(x0), Vector256.Abs(x1)), Avx.Max(Vector256.Abs(x2), Vector256.Abs(x3)));
            // vmaxps returns its second operand when either is NaN, so a NaN is looked for separately.
            var anyNaN = Avx.Or(Avx.Or(Avx.Compare(x0, x0, FloatComparisonMode.UnorderedNonSignaling), Avx.Compare(x1, x1, FloatComparisonMode.UnorderedNonSignaling)),
                Avx.Or(Avx.Compare(x2, x2, FloatComparisonMode.UnorderedNonSignaling), Avx.Compare(x3, x3, FloatComparisonMode.UnorderedNonSignaling)));
            var max128 = Sse.Max(max.GetLower(), max.GetUpper());
            max128 = Sse.Max(max128, Sse.Shuffle(max128, max128, 0b01_00_11_10));
            max128 = Sse.Max(max128, Sse.Shuffle(max128, max128, 0b10_11_00_01));
            float maxAbs = max128.ToScalar();
            float inverse = levels / maxAbs;
            bool nan = anyNaN != Vector256<float>.Zero;
            if (nan || maxAbs < 1e-30f || !float.IsFinite(inverse))
            {
                new Span<short>(values + b * block, block).Clear();
                scales[b] = nan ? float.NaN : maxAbs < 1e-30f ? 0f : maxAbs / levels;
                continue;
            }
            var factor = Vector256.Create(inverse);
            // cvtps2dq rounds to nearest even; |x · 32767 / max| ≤ 32767 (+ rounding), and the pack saturates.
            // Packing interleaves the 128-bit lanes (0-3, 8-11, 4-7, 12-15): the 64-bit permute restores the order.
            var q01 = Avx2.PackSignedSaturate(Avx.ConvertToVector256Int32(x0 * factor), Avx.ConvertToVector256Int32(x1 * factor));
            var q23 = Avx2.PackSignedSaturate(Avx.ConvertToVector256Int32(x2 * factor), Avx.ConvertToVector256Int32(x3 * factor));
            Vector256.Store(Avx2.Permute4x64(q01.AsInt64(), 0b11_01_10_00).AsInt16(), values + b * block);
            Vector256.Store(Avx2.Permute4x64(q23.AsInt64(), 0b11_01_10_00).AsInt16(), values + b * block + 16);
            scales[b] = maxAbs / levels;
        }
    }

    /// <summary>
    /// dot(x, dequantize(weight row)) with x quantized to int16: per block, the 32 weights are sign-extended to int16 and
    /// VPDPWSSD multiplies pairs and adds them into int32 lanes (exact: |Σ| ≤ 32·127·32767), then the lanes are converted
    /// once and multiplied by the block's weight scale × activation scale, precomputed into <paramref name="combined"/> so
    /// the loop broadcasts it from memory. Four accumulators cover the FMA latency.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DotInt8Integer<TPairs>(short* x, float* activationScales, sbyte* q, float* scales, float* combined, int k) where TPairs : struct, IPairDot
    {
        const int block = Int8Matrix.BlockSize;
        int blocks = (k + block - 1) / block, full = k / block, b = 0;
        CombineScales(scales, activationScales, blocks, combined);
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        for (; b + 4 <= full; b += 4)
        {
            int p = b * block;
            acc0 = Fma.MultiplyAdd(BlockDot<TPairs>(x + p, q + p), Avx.BroadcastScalarToVector256(combined + b), acc0);
            acc1 = Fma.MultiplyAdd(BlockDot<TPairs>(x + p + block, q + p + block), Avx.BroadcastScalarToVector256(combined + b + 1), acc1);
            acc2 = Fma.MultiplyAdd(BlockDot<TPairs>(x + p + 2 * block, q + p + 2 * block), Avx.BroadcastScalarToVector256(combined + b + 2), acc2);
            acc3 = Fma.MultiplyAdd(BlockDot<TPairs>(x + p + 3 * block, q + p + 3 * block), Avx.BroadcastScalarToVector256(combined + b + 3), acc3);
        }
        for (; b < full; b++)
        {
            int p = b * block;
            acc0 = Fma.MultiplyAdd(BlockDot<TPairs>(x + p, q + p), Avx.BroadcastScalarToVector256(combined + b), acc0);
        }
        return Vector256.Sum((acc0 + acc1) + (acc2 + acc3)) + ShortBlockDot(x, q, combined, k);
    }

    /// <summary>
    /// <see cref="DotInt8Integer{TPairs}"/> for four consecutive weight rows at once (<paramref name="q"/>, stride
    /// <paramref name="k"/>): each activation block is loaded once for the four, the four accumulators are independent
    /// chains, and the per-row overheads (combined scales, horizontal sum) are shared. Writes the four dots to <paramref name="dots"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DotInt8Integer4<TPairs>(short* x, float* activationScales, sbyte* q, float* scales, int blocksPerRow, float* combined, int k, float* dots) where TPairs : struct, IPairDot
    {
        const int block = Int8Matrix.BlockSize;
        int full = k / block;
        for (int r = 0; r < 4; r++) CombineScales(scales + r * blocksPerRow, activationScales, blocksPerRow, combined + r * blocksPerRow);
        sbyte* q0 = q, q1 = q + k, q2 = q + 2 * k, q3 = q + 3 * k;
        float* c0 = combined, c1 = combined + blocksPerRow, c2 = combined + 2 * blocksPerRow, c3 = combined + 3 * blocksPerRow;
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        // The four rows are read interleaved, which the hardware prefetcher follows poorly: fetch the group after
        // next (rows +8..+11, contiguous) two cache lines per block, so it has arrived when its turn comes.
        sbyte* ahead = q + 8L * k;
        for (int b = 0; b < full; b++)
        {
            int p = b * block;
            Sse.Prefetch0(ahead + 4 * p);
            Sse.Prefetch0(ahead + 4 * p + 64);
            var low = Vector256.Load(x + p);
            var high = Vector256.Load(x + p + 16);
            acc0 = Fma.MultiplyAdd(BlockDot<TPairs>(low, high, q0 + p), Avx.BroadcastScalarToVector256(c0 + b), acc0);
            acc1 = Fma.MultiplyAdd(BlockDot<TPairs>(low, high, q1 + p), Avx.BroadcastScalarToVector256(c1 + b), acc1);
            acc2 = Fma.MultiplyAdd(BlockDot<TPairs>(low, high, q2 + p), Avx.BroadcastScalarToVector256(c2 + b), acc2);
            acc3 = Fma.MultiplyAdd(BlockDot<TPairs>(low, high, q3 + p), Avx.BroadcastScalarToVector256(c3 + b), acc3);
        }
        dots[0] = Vector256.Sum(acc0) + ShortBlockDot(x, q0, c0, k);
        dots[1] = Vector256.Sum(acc1) + ShortBlockDot(x, q1, c1, k);
        dots[2] = Vector256.Sum(acc2) + ShortBlockDot(x, q2, c2, k);
        dots[3] = Vector256.Sum(acc3) + ShortBlockDot(x, q3, c3, k);
    }

    /// <summary>combined[b] = weight scale × activation scale of block b.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CombineScales(float* scales, float* activationScales, int blocks, float* combined)
    {
        int b = 0;
        for (; b + 8 <= blocks; b += 8) Vector256.Store(Vector256.Load(scales + b) * Vector256.Load(activationScales + b), combined + b);
        for (; b < blocks; b++) combined[b] = scales[b] * activationScales[b];
    }

    /// <summary>The last, shorter block when in-features are not a multiple of 32 (the weight row ends there: no 32-byte load).</summary>
    private static float ShortBlockDot(short* x, sbyte* q, float* combined, int k)
    {
        int first = k / Int8Matrix.BlockSize * Int8Matrix.BlockSize;
        if (first == k) return 0f;
        long dot = 0;
        for (int p = first; p < k; p++) dot += x[p] * q[p];
        return dot * combined[k / Int8Matrix.BlockSize];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockDot<TPairs>(short* x, sbyte* q) where TPairs : struct, IPairDot
        => BlockDot<TPairs>(Vector256.Load(x), Vector256.Load(x + 16), q);

    /// <summary>One block: 8 int32 partial sums of x·w (weights sign-extended to int16, then two pair dots), as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockDot<TPairs>(Vector256<short> low, Vector256<short> high, sbyte* q) where TPairs : struct, IPairDot
        => Avx.ConvertToVector256Single(default(TPairs).Add(default(TPairs).Add(Vector256<int>.Zero, Avx2.ConvertToVector256Int16(q), low), Avx2.ConvertToVector256Int16(q + 16), high));

    /// <summary>sum + (a[2l]·b[2l] + a[2l+1]·b[2l+1]) per int32 lane l: exact for int16 inputs whose pairs are not both −32768.</summary>
    internal interface IPairDot
    {
        Vector256<int> Add(Vector256<int> sum, Vector256<short> a, Vector256<short> b);
    }

    /// <summary>VPDPWSSD (AVX-VNNI): the pair products and the add in one instruction.</summary>
    private struct VnniPairs : IPairDot
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly Vector256<int> Add(Vector256<int> sum, Vector256<short> a, Vector256<short> b) => AvxVnni.MultiplyWideningAndAdd(sum, a, b);
    }

    /// <summary>VPMADDWD then VPADDD (AVX2): the same integers as <see cref="VnniPairs"/>.</summary>
    private struct Avx2Pairs : IPairDot
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly Vector256<int> Add(Vector256<int> sum, Vector256<short> a, Vector256<short> b) => Avx2.Add(sum, Avx2.MultiplyAddAdjacent(a, b));
    }

    /// <summary>Output columns [start, end) of the integer path, every row per column (the weight row stays in L1 across rows).</summary>
    private struct Int8IntegerDecodeKernel<TPairs> : IRangeKernel where TPairs : struct, IPairDot
    {
        public float* Output, Scales, Bias;
        public sbyte* Values;
        public QuantizedActivations Activations;
        public int Rows, InFeatures, OutFeatures, BlocksPerRow;

        public readonly void Execute(int start, int end)
        {
            int k = InFeatures;
            float* combined = Int8Scratch.GetRow(4L * BlocksPerRow + 4), dots = combined + 4L * BlocksPerRow;
            int j = start;
            // Four weight rows at a time (they stay in L1 across the input rows), then the last few one by one.
            for (; j + 4 <= end; j += 4)
            {
                sbyte* q = Values + (long)j * k;
                float* scales = Scales + (long)j * BlocksPerRow;
                for (int i = 0; i < Rows; i++)
                {
                    DotInt8Integer4<TPairs>(Activations.Values(i), Activations.Scales(i), q, scales, BlocksPerRow, combined, k, dots);
                    for (int r = 0; r < 4; r++) Output[(long)i * OutFeatures + j + r] = dots[r] + (Bias != null ? Bias[j + r] : 0f);
                }
            }
            for (; j < end; j++)
            {
                sbyte* q = Values + (long)j * k;
                float* scales = Scales + (long)j * BlocksPerRow;
                float bias = Bias != null ? Bias[j] : 0f;
                for (int i = 0; i < Rows; i++)
                    Output[(long)i * OutFeatures + j] = DotInt8Integer<TPairs>(Activations.Values(i), Activations.Scales(i), q, scales, combined, k) + bias;
            }
        }
    }
}
