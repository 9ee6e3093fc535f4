using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace GptSharp.Tensors;

/// <summary>
/// A weight matrix [rows, columns] (an <c>nn.Linear</c> weight: rows = out features, columns = in features) stored as
/// symmetric int8 with one float32 scale per block of <see cref="BlockSize"/> consecutive columns of a row
/// (llama.cpp's Q8_0 layout, with a float32 scale): w ≈ value · scale, value in [−127, 127], scale = max |w| / 127
/// over the block. A block's error is at most scale / 2 per element, so an outlier only costs precision to the 31
/// weights that share its block, not to its whole row (which is why blocks beat one scale per row: see docs/int8.md).
/// Values are row-major [rows, columns]; scales are [rows, <see cref="BlocksPerRow"/>]; a last, shorter block covers
/// columns that are not a multiple of the block size. Both live in 64-byte-aligned native memory.
/// </summary>
internal sealed unsafe class Int8Matrix : IDisposable
{
    /// <summary>Columns sharing one scale.</summary>
    public const int BlockSize = 32;

    private sbyte* _values;
    private float* _scales;

    /// <summary>An all-zero matrix (values 0, scales 0), to be filled by <see cref="Quantize"/> or a file reader.</summary>
    public Int8Matrix(int rows, int columns)
    {
        if (rows <= 0 || columns <= 0) throw new ArgumentException($"An int8 matrix needs positive dimensions, got [{rows}, {columns}].");
        Rows = rows;
        Columns = columns;
        BlocksPerRow = (columns + BlockSize - 1) / BlockSize;
        _values = (sbyte*)NativeMemory.AlignedAlloc((nuint)ValueBytes, Tensor.Alignment);
        _scales = (float*)NativeMemory.AlignedAlloc((nuint)ScaleBytes, Tensor.Alignment);
        NativeMemory.Clear(_values, (nuint)ValueBytes);
        NativeMemory.Clear(_scales, (nuint)ScaleBytes);
        GC.AddMemoryPressure(ValueBytes + ScaleBytes);
    }

    public int Rows { get; }

    public int Columns { get; }

    /// <summary>Scales per row: ⌈columns / <see cref="BlockSize"/>⌉.</summary>
    public int BlocksPerRow { get; }

    public long ValueBytes => (long)Rows * Columns;

    public long ScaleBytes => (long)Rows * BlocksPerRow * sizeof(float);

    /// <summary>The quantized weights [rows, columns].</summary>
    public sbyte* Values => _values != null ? _values : throw new ObjectDisposedException(nameof(Int8Matrix));

    /// <summary>The scales [rows, blocks per row].</summary>
    public float* Scales => _scales != null ? _scales : throw new ObjectDisposedException(nameof(Int8Matrix));

    /// <summary>The values as bytes (for writing and reading files).</summary>
    public Span<byte> ValueSpan => new(Values, checked((int)ValueBytes));

    /// <summary>The scales as a span.</summary>
    public Span<float> ScaleSpan => new(Scales, checked(Rows * BlocksPerRow));

    /// <summary>The scales as a float32 tensor view [rows, blocks per row] (valid while this matrix lives; for writing files).</summary>
    public Tensor ScalesView() => Tensor.View(Scales, Rows, BlocksPerRow);

    /// <summary>Quantizes the float32 matrix <paramref name="source"/> [rows, columns], rows in parallel.</summary>
    /// <exception cref="ArgumentException">A weight is NaN or infinite (no scale can represent it).</exception>
    public static Int8Matrix Quantize(float* source, int rows, int columns)
    {
        var matrix = new Int8Matrix(rows, columns);
        try
        {
            RowParallel.For(rows, columns, new QuantizeKernel { Source = source, Matrix = matrix.Values, Scales = matrix.Scales, Columns = columns, BlocksPerRow = matrix.BlocksPerRow });
            return matrix;
        }
        catch
        {
            matrix.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Quantizes one block: writes round(w / scale) to <paramref name="values"/> and returns the scale
    /// (max |w| / 127, rounded down to a float so that 127 · scale never exceeds max |w| and cannot overflow).
    /// An all-zero block gets scale 0. Rounding to nearest bounds the error by scale / 2 per element.
    /// </summary>
    public static float QuantizeBlock(ReadOnlySpan<float> block, Span<sbyte> values)
    {
        float maxAbs = block.Length == 0 ? 0f : MathF.Abs(TensorPrimitives.MaxMagnitude(block));
        if (!float.IsFinite(maxAbs)) throw new ArgumentException("cannot quantize a weight that is NaN or infinite.");
        double exact = maxAbs / 127.0;
        float scale = (float)exact;
        if (scale > exact) scale = MathF.BitDecrement(scale);
        if (scale == 0f)
        {
            // All zeros, or so tiny (below 127 × the smallest float) that zero is within scale / 2 of every element.
            values[..block.Length].Clear();
            return 0f;
        }
        for (int i = 0; i < block.Length; i++)
            values[i] = (sbyte)Math.Clamp(Math.Round(block[i] / (double)scale, MidpointRounding.ToEven), -127, 127);
        return scale;
    }

    /// <summary>Writes rows [<paramref name="firstRow"/>, +<paramref name="count"/>) as float32 into <paramref name="destination"/> (ld = columns).</summary>
    public void DequantizeRows(int firstRow, int count, float* destination)
    {
        for (int r = 0; r < count; r++) DequantizeRow(firstRow + r, destination + (long)r * Columns);
    }

    /// <summary>Row <paramref name="row"/> as float32 (value · scale), vectorized.</summary>
    internal void DequantizeRow(int row, float* destination) => Int8Kernels.DequantizeInt8Row(Gemm.BestPath, Values + (long)row * Columns, Scales + (long)row * BlocksPerRow, Columns, destination);

    /// <summary>The whole matrix as a float32 tensor [rows, columns] (tests and tools).</summary>
    public Tensor Dequantize()
    {
        var t = new Tensor(Rows, Columns);
        DequantizeRows(0, Rows, t.Data);
        return t;
    }

    public void Dispose()
    {
        if (_values == null) return;
        NativeMemory.AlignedFree(_values);
        NativeMemory.AlignedFree(_scales);
        _values = null;
        _scales = null;
        GC.RemoveMemoryPressure(ValueBytes + ScaleBytes);
    }

    private struct QuantizeKernel : IRangeKernel
    {
        public float* Source;
        public sbyte* Matrix;
        public float* Scales;
        public int Columns, BlocksPerRow;

        public readonly void Execute(int start, int end)
        {
            for (int row = start; row < end; row++)
            {
                for (int b = 0; b < BlocksPerRow; b++)
                {
                    int first = b * BlockSize, width = Math.Min(BlockSize, Columns - first);
                    long offset = (long)row * Columns + first;
                    Scales[(long)row * BlocksPerRow + b] = QuantizeBlock(new ReadOnlySpan<float>(Source + offset, width), new Span<sbyte>(Matrix + offset, width));
                }
            }
        }
    }
}
