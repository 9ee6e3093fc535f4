using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using KernelPath = GptSharp.Tensors.Gemm.KernelPath;

namespace GptSharp.Tensors;

internal static unsafe partial class Int8Kernels
{
    /// <summary>Up to this many rows, <see cref="LinearForwardInt8"/> streams the int8 weights (decoding); above, the GEMM dequantizes the weights as it packs them.</summary>
    internal const int Int8DecodeRows = 8;

    /// <summary>
    /// <c>nn.Linear</c> with int8 weights: output[rows, outFeatures] = input[rows, inFeatures] · dequantize(weight)ᵀ + bias.
    /// Decoding (rows ≤ <see cref="Int8DecodeRows"/>) is bound by reading the weights, so the kernel streams the int8
    /// values (a quarter of the float32 bytes), columns spread over <see cref="Workers"/>: with AVX-VNNI the input rows
    /// are rounded to int16 per block and multiplied in integers (Int8IntegerDot.cs), otherwise the weights are
    /// dequantized in registers.
    /// Prefill (more rows) is bound by arithmetic: the regular packed GEMM, with each sliver of weights dequantized
    /// as it is packed (<see cref="Gemm.MatMulInt8B"/>), so it runs at float32 speed with no float32 copy of the weights.
    /// </summary>
    public static void LinearForwardInt8(float* output, float* input, Int8Matrix weight, float* bias, int rows)
        => LinearForwardInt8(Gemm.BestPath, output, input, weight, bias, rows);

    /// <summary><see cref="LinearForwardInt8(float*,float*,Int8Matrix,float*,int)"/> on a chosen kernel path (tests).</summary>
    /// <param name="integerDot">Decoding: quantize the input rows to int16 and take integer dot products (AVX-VNNI), rather than dequantizing the weights to float32 (tests force each).</param>
    internal static void LinearForwardInt8(KernelPath path, float* output, float* input, Int8Matrix weight, float* bias, int rows, bool? integerDot = null)
    {
        Gemm.RequireSupported(path);
        bool integer = integerDot ?? ((Int8IntegerDecodeOnThisThread ?? Int8IntegerDotSupported) && path != KernelPath.Scalar);
        if (integer && (!Int8IntegerDotSupported || path == KernelPath.Scalar)) throw new PlatformNotSupportedException("The integer decode path needs AVX2 and FMA.");
        if (rows <= 0) return;
        int k = weight.Columns, n = weight.Rows;
        if (rows <= Int8DecodeRows && integer)
        {
            var activations = QuantizedActivations.Quantize(input, rows, k);
            if (Int8IntegerVnni && AvxVnni.IsSupported)
                RowParallel.For(n, (long)k * rows, new Int8IntegerDecodeKernel<VnniPairs>
                {
                    Output = output, Activations = activations, Values = weight.Values, Scales = weight.Scales, Bias = bias,
                    Rows = rows, InFeatures = k, OutFeatures = n, BlocksPerRow = weight.BlocksPerRow,
                });
            else
                RowParallel.For(n, (long)k * rows, new Int8IntegerDecodeKernel<Avx2Pairs>
                {
                    Output = output, Activations = activations, Values = weight.Values, Scales = weight.Scales, Bias = bias,
                    Rows = rows, InFeatures = k, OutFeatures = n, BlocksPerRow = weight.BlocksPerRow,
                });
            return;
        }
        if (rows <= Int8DecodeRows)
        {
            RowParallel.For(n, (long)k * rows, new Int8DecodeKernel
            {
                Path = path, Output = output, Input = input, Values = weight.Values, Scales = weight.Scales, Bias = bias,
                Rows = rows, InFeatures = k, OutFeatures = n, BlocksPerRow = weight.BlocksPerRow,
            });
            return;
        }
        Gemm.MatMulInt8B(path, rows, n, k, input, k, weight.Values, weight.Scales, weight.BlocksPerRow, output, n, bias);
    }

    /// <summary>Writes one int8 row (value · its block's scale) as float32.</summary>
    internal static void DequantizeInt8Row(KernelPath path, sbyte* values, float* scales, int columns, float* destination) =>
        DequantizeInt8Range(path, values, scales, 0, columns, destination);

    /// <summary>
    /// Columns [<paramref name="start"/>, <paramref name="end"/>) of one int8 row as float32, into destination[start..end)
    /// (so <paramref name="destination"/> may point before the buffer). <paramref name="start"/> must be a multiple of
    /// 16 so that no vector straddles a block of 32.
    /// </summary>
    internal static void DequantizeInt8Range(KernelPath path, sbyte* values, float* scales, int start, int end, float* destination) =>
        Simd.Map(path, start, end, new DequantizeOp { Values = values, Scales = scales, Destination = destination });

    /// <summary>value · scale of its block; a vector (16 or 8 lanes) never straddles a block of 32.</summary>
    private struct DequantizeOp : IMapOp
    {
        public sbyte* Values;
        public float* Scales, Destination;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly void Invoke(long i) => Destination[i] = Values[i] * Scales[i / Int8Matrix.BlockSize];
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Invoke256(long i) => (Widen256(Values + i) * Vector256.Create(Scales[i / Int8Matrix.BlockSize])).Store(Destination + i);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void Invoke512(long i) => (Widen512(Values + i) * Vector512.Create(Scales[i / Int8Matrix.BlockSize])).Store(Destination + i);
    }

    /// <summary>16 int8 values as float32 (sign-extend, convert).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Widen512(sbyte* q) => Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(q)));

    /// <summary>8 int8 values as float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Widen256(sbyte* q) => Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q));

    /// <summary>
    /// dot(x, dequantize(weight row)) for one row of x: per block, the 32 products are summed in a vector and then
    /// scaled once (scale · Σ x·q), so the scale costs one FMA per block, not one multiply per weight.
    /// </summary>
    private static float DotInt8(KernelPath path, float* x, sbyte* q, float* scales, int k)
    {
        int full = k / Int8Matrix.BlockSize, b = 0;
        float sum = 0f;
        if (path == KernelPath.Vector512)
        {
            Vector512<float> acc0 = default, acc1 = default;
            for (; b + 2 <= full; b += 2)
            {
                int p = b * Int8Matrix.BlockSize;
                var block0 = Avx512F.FusedMultiplyAdd(Vector512.Load(x + p + 16), Widen512(q + p + 16), Vector512.Load(x + p) * Widen512(q + p));
                var block1 = Avx512F.FusedMultiplyAdd(Vector512.Load(x + p + 48), Widen512(q + p + 48), Vector512.Load(x + p + 32) * Widen512(q + p + 32));
                acc0 = Avx512F.FusedMultiplyAdd(block0, Vector512.Create(scales[b]), acc0);
                acc1 = Avx512F.FusedMultiplyAdd(block1, Vector512.Create(scales[b + 1]), acc1);
            }
            for (; b < full; b++)
            {
                int p = b * Int8Matrix.BlockSize;
                var block = Avx512F.FusedMultiplyAdd(Vector512.Load(x + p + 16), Widen512(q + p + 16), Vector512.Load(x + p) * Widen512(q + p));
                acc0 = Avx512F.FusedMultiplyAdd(block, Vector512.Create(scales[b]), acc0);
            }
            sum = Vector512.Sum(acc0 + acc1);
        }
        else if (path == KernelPath.Vector256)
        {
            Vector256<float> acc0 = default, acc1 = default;
            for (; b < full; b++)
            {
                int p = b * Int8Matrix.BlockSize;
                var scale = Vector256.Create(scales[b]);
                var block0 = Fma.MultiplyAdd(Vector256.Load(x + p + 8), Widen256(q + p + 8), Vector256.Load(x + p) * Widen256(q + p));
                var block1 = Fma.MultiplyAdd(Vector256.Load(x + p + 24), Widen256(q + p + 24), Vector256.Load(x + p + 16) * Widen256(q + p + 16));
                acc0 = Fma.MultiplyAdd(block0, scale, acc0);
                acc1 = Fma.MultiplyAdd(block1, scale, acc1);
            }
            sum = Vector256.Sum(acc0 + acc1);
        }
        // Scalar path and the last, shorter block: one scale per block as well.
        for (; b * Int8Matrix.BlockSize < k; b++)
        {
            int first = b * Int8Matrix.BlockSize, end = Math.Min(k, first + Int8Matrix.BlockSize);
            float block = 0f;
            for (int p = first; p < end; p++) block += x[p] * q[p];
            sum += block * scales[b];
        }
        return sum;
    }

    /// <summary>Output columns [start, end) for every row: each int8 weight row is read from memory once.</summary>
    private struct Int8DecodeKernel : IRangeKernel
    {
        public KernelPath Path;
        public float* Output, Input, Scales, Bias;
        public sbyte* Values;
        public int Rows, InFeatures, OutFeatures, BlocksPerRow;

        public readonly void Execute(int start, int end)
        {
            int k = InFeatures;
            // One row: dequantize in registers. More rows: dequantize the weight row once into L1 scratch and
            // take the float dot product per row, rather than converting the same bytes once per row.
            float* row = Rows > 1 ? Int8Scratch.GetRow(k) : null;
            for (int j = start; j < end; j++)
            {
                sbyte* q = Values + (long)j * k;
                float* scales = Scales + (long)j * BlocksPerRow;
                float bias = Bias != null ? Bias[j] : 0f;
                if (Rows == 1)
                {
                    Output[j] = DotInt8(Path, Input, q, scales, k) + bias;
                    continue;
                }
                DequantizeInt8Row(Path, q, scales, k, row);
                for (int i = 0; i < Rows; i++)
                    Output[(long)i * OutFeatures + j] = Gemm.Dot(Path, Input + (long)i * k, row, k) /* rows ≥ 2: against the row dequantized once into L1 */ + bias;
            }
        }
    }

    /// <summary>Per-thread float32 scratch of the int8 kernels, grown on demand and reused (no allocation per call).</summary>
    private static class Int8Scratch
    {
        [ThreadStatic] private static nint t_row;
        [ThreadStatic] private static long t_rowCapacity;
        [ThreadStatic] private static nint t_activations;
        [ThreadStatic] private static long t_activationsCapacity;

        public static float* GetRow(long floats) => ThreadScratch.Grow(ref t_row, ref t_rowCapacity, floats);

        public static float* GetActivations(long floats) => ThreadScratch.Grow(ref t_activations, ref t_activationsCapacity, floats);
    }
}
