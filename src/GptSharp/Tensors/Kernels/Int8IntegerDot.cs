using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GptSharp.Tensors;

public static unsafe partial class Kernels
{
    /// <summary>This CPU has the int8×int8 decode path: AVX-VNNI's VPDPBUSD (u8 × s8 → int32), with AVX2 and FMA.</summary>
    /// <remarks>
    /// .NET 10 exposes VPDPBUSD at 256 bits only (<see cref="AvxVnni"/>; the 512-bit form needs AVX10), so both kernel
    /// paths use the 256-bit loop; it still reads the weights 3× faster than dequantizing them in 512-bit registers.
    /// </remarks>
    internal static readonly bool Int8IntegerDotSupported = AvxVnni.IsSupported && Avx2.IsSupported && Fma.IsSupported;

    [ThreadStatic] private static bool? t_int8IntegerDecode;

    /// <summary>
    /// Whether decoding (≤ <see cref="Int8DecodeRows"/> rows) on int8 weights, called from this thread, quantizes the input
    /// rows and takes int8×int8 dot products or dequantizes the weights in registers. Null (the default): int8×int8 where
    /// <see cref="Int8IntegerDotSupported"/>, as measured faster (docs/int8.md). Benchmarks and tests set it to compare the two.
    /// </summary>
    internal static bool? Int8IntegerDecodeOnThisThread
    {
        get => t_int8IntegerDecode;
        set => t_int8IntegerDecode = value;
    }

    /// <summary>
    /// Input rows quantized for the int8×int8 path, in per-thread scratch of the calling thread (valid until its next
    /// call): per row, |q| as bytes and q as signed bytes (both padded with zeros to whole blocks), and one float scale
    /// per block of <see cref="Int8Matrix.BlockSize"/> inputs, the same blocks as the weights' scales.
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

        public byte* Magnitudes(int row) => Base + row * RowStride;

        public sbyte* Values(int row) => (sbyte*)(Base + row * RowStride + Blocks * Int8Matrix.BlockSize);

        public float* Scales(int row) => (float*)(Base + row * RowStride + 2L * Blocks * Int8Matrix.BlockSize);

        /// <summary>
        /// Quantizes <paramref name="rows"/> rows of <paramref name="columns"/> floats, per block: scale = max |x| / 127,
        /// q = round(x / scale) in [−127, 127], so every input is within scale / 2 of q · scale (blocks whose max is
        /// below 1e-30 become zeros, a NaN block gets a NaN scale so the output is NaN as in float32).
        /// </summary>
        public static QuantizedActivations Quantize(float* input, int rows, int columns)
        {
            int blocks = (columns + Int8Matrix.BlockSize - 1) / Int8Matrix.BlockSize;
            long stride = (2L * blocks * Int8Matrix.BlockSize + blocks * sizeof(float) + 63) & ~63L;
            var activations = new QuantizedActivations((byte*)Int8Scratch.GetActivations((stride * rows + 3) / 4), stride, blocks);
            for (int i = 0; i < rows; i++)
                QuantizeActivationRow(input + (long)i * columns, columns, activations.Magnitudes(i), activations.Values(i), activations.Scales(i));
            return activations;
        }
    }

    /// <summary>One row of <see cref="QuantizedActivations.Quantize"/>: 32 floats per block in four 8-wide vectors, packed to bytes.</summary>
    internal static void QuantizeActivationRow(float* x, int columns, byte* magnitudes, sbyte* values, float* scales)
    {
        const int block = Int8Matrix.BlockSize;
        float* padded = stackalloc float[block];
        // Packing 8+8+8+8 int32 to bytes interleaves the 128-bit lanes; this dword order restores 0..31.
        var lanes = Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7);
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
            // vmaxps returns its second operand when either is NaN: NaN | x has the NaN's bits, so detect it separately.
            bool nan = Vector256.EqualsAny(Avx.Compare(max, max, FloatComparisonMode.UnorderedNonSignaling), Vector256<float>.AllBitsSet);
            var max128 = Sse.Max(max.GetLower(), max.GetUpper());
            max128 = Sse.Max(max128, Sse.Shuffle(max128, max128, 0b01_00_11_10));
            max128 = Sse.Max(max128, Sse.Shuffle(max128, max128, 0b10_11_00_01));
            float maxAbs = max128.ToScalar();
            float scale = maxAbs / 127f;
            float inverse = 127f / maxAbs;
            if (nan || maxAbs < 1e-30f || !float.IsFinite(inverse))
            {
                new Span<byte>(magnitudes + b * block, block).Clear();
                new Span<sbyte>(values + b * block, block).Clear();
                scales[b] = nan ? float.NaN : maxAbs < 1e-30f ? 0f : scale;
                continue;
            }
            var factor = Vector256.Create(inverse);
            // cvtps2dq rounds to nearest even; |x · 127 / max| ≤ 127 (+ rounding), and the packs saturate at ±127/128.
            var q01 = Avx2.PackSignedSaturate(Avx.ConvertToVector256Int32(x0 * factor), Avx.ConvertToVector256Int32(x1 * factor));
            var q23 = Avx2.PackSignedSaturate(Avx.ConvertToVector256Int32(x2 * factor), Avx.ConvertToVector256Int32(x3 * factor));
            var q = Avx2.PermuteVar8x32(Avx2.PackSignedSaturate(q01, q23).AsInt32(), lanes).AsSByte();
            q = Vector256.Max(q, Vector256.Create((sbyte)-127));
            Vector256.Store(q, values + b * block);
            Vector256.Store(Avx2.Abs(q), magnitudes + b * block);
            scales[b] = scale;
        }
    }

    /// <summary>
    /// dot(x, dequantize(weight row)) with x quantized: per block, VPDPBUSD multiplies |x| (unsigned) by the weights with
    /// x's sign (VPSIGNB) and sums 4 adjacent products into int32 lanes (exact: |Σ| ≤ 32·127·127), then the lanes are
    /// converted once and multiplied by the block's weight scale × activation scale, precomputed into
    /// <paramref name="combined"/> so that the loop broadcasts it straight from memory. Four accumulators cover the FMA latency.
    /// The sign trick avoids the +128 offset and its per-block correction term.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DotInt8Integer(byte* magnitudes, sbyte* signs, float* activationScales, sbyte* q, float* scales, float* combined, int k)
    {
        const int block = Int8Matrix.BlockSize;
        int blocks = (k + block - 1) / block, full = k / block, b = 0;
        for (; b + 8 <= blocks; b += 8) Vector256.Store(Vector256.Load(scales + b) * Vector256.Load(activationScales + b), combined + b);
        for (; b < blocks; b++) combined[b] = scales[b] * activationScales[b];
        b = 0;
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        for (; b + 4 <= full; b += 4)
        {
            int p = b * block;
            acc0 = Fma.MultiplyAdd(BlockDot(magnitudes + p, signs + p, q + p), Avx.BroadcastScalarToVector256(combined + b), acc0);
            acc1 = Fma.MultiplyAdd(BlockDot(magnitudes + p + block, signs + p + block, q + p + block), Avx.BroadcastScalarToVector256(combined + b + 1), acc1);
            acc2 = Fma.MultiplyAdd(BlockDot(magnitudes + p + 2 * block, signs + p + 2 * block, q + p + 2 * block), Avx.BroadcastScalarToVector256(combined + b + 2), acc2);
            acc3 = Fma.MultiplyAdd(BlockDot(magnitudes + p + 3 * block, signs + p + 3 * block, q + p + 3 * block), Avx.BroadcastScalarToVector256(combined + b + 3), acc3);
        }
        for (; b < full; b++)
        {
            int p = b * block;
            acc0 = Fma.MultiplyAdd(BlockDot(magnitudes + p, signs + p, q + p), Avx.BroadcastScalarToVector256(combined + b), acc0);
        }
        float sum = Vector256.Sum((acc0 + acc1) + (acc2 + acc3));
        if (b * block < k)
        {
            // The last, shorter block (in-features not a multiple of 32): the weight row ends here, so no 32-byte load.
            int dot = 0;
            for (int p = b * block; p < k; p++) dot += signs[p] * q[p];
            sum += dot * combined[b];
        }
        return sum;
    }

    /// <summary>
    /// <see cref="DotInt8Integer"/> for four consecutive weight rows at once (<paramref name="q"/>, stride
    /// <paramref name="k"/>): each activation block is loaded once for the four, the four accumulators are independent
    /// chains, and the per-row overheads (combined scales, horizontal sum) are shared. Writes the four dots to <paramref name="dots"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DotInt8Integer4(byte* magnitudes, sbyte* signs, float* activationScales, sbyte* q, float* scales, int blocksPerRow, float* combined, int k, float* dots)
    {
        const int block = Int8Matrix.BlockSize;
        int full = k / block;
        for (int r = 0; r < 4; r++)
        {
            float* rowScales = scales + r * blocksPerRow, rowCombined = combined + r * blocksPerRow;
            int c = 0;
            for (; c + 8 <= blocksPerRow; c += 8) Vector256.Store(Vector256.Load(rowScales + c) * Vector256.Load(activationScales + c), rowCombined + c);
            for (; c < blocksPerRow; c++) rowCombined[c] = rowScales[c] * activationScales[c];
        }
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
            var magnitude = Vector256.Load(magnitudes + p);
            var sign = Vector256.Load(signs + p);
            acc0 = Fma.MultiplyAdd(BlockDot(magnitude, sign, q0 + p), Avx.BroadcastScalarToVector256(c0 + b), acc0);
            acc1 = Fma.MultiplyAdd(BlockDot(magnitude, sign, q1 + p), Avx.BroadcastScalarToVector256(c1 + b), acc1);
            acc2 = Fma.MultiplyAdd(BlockDot(magnitude, sign, q2 + p), Avx.BroadcastScalarToVector256(c2 + b), acc2);
            acc3 = Fma.MultiplyAdd(BlockDot(magnitude, sign, q3 + p), Avx.BroadcastScalarToVector256(c3 + b), acc3);
        }
        dots[0] = Vector256.Sum(acc0);
        dots[1] = Vector256.Sum(acc1);
        dots[2] = Vector256.Sum(acc2);
        dots[3] = Vector256.Sum(acc3);
        if (full * block < k)
        {
            for (int r = 0; r < 4; r++)
            {
                int dot = 0;
                for (int p = full * block; p < k; p++) dot += signs[p] * q[r * k + p];
                dots[r] += dot * combined[r * blocksPerRow + full];
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockDot(Vector256<byte> magnitude, Vector256<sbyte> sign, sbyte* q)
        => Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, magnitude, Avx2.Sign(Vector256.Load(q), sign)));

    /// <summary>One block: 8 int32 partial sums of |x|·(w · sign x) = x·w, as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockDot(byte* magnitudes, sbyte* signs, sbyte* q)
        => Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, Vector256.Load(magnitudes), Avx2.Sign(Vector256.Load(q), Vector256.Load(signs))));

    /// <summary>Output columns [start, end) of the int8×int8 path, every row per column (the weight row stays in L1 across rows).</summary>
    private struct Int8IntegerDecodeKernel : IRangeKernel
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
                    DotInt8Integer4(Activations.Magnitudes(i), Activations.Values(i), Activations.Scales(i), q, scales, BlocksPerRow, combined, k, dots);
                    for (int r = 0; r < 4; r++) Output[(long)i * OutFeatures + j + r] = dots[r] + (Bias != null ? Bias[j + r] : 0f);
                }
            }
            for (; j < end; j++)
            {
                sbyte* q = Values + (long)j * k;
                float* scales = Scales + (long)j * BlocksPerRow;
                float bias = Bias != null ? Bias[j] : 0f;
                for (int i = 0; i < Rows; i++)
                    Output[(long)i * OutFeatures + j] = DotInt8Integer(Activations.Magnitudes(i), Activations.Values(i), Activations.Scales(i), q, scales, combined, k) + bias;
            }
        }
    }
}
