using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using GptSharp.Tensors;
using GptSharp.IO;

namespace GptSharp.Formats.Gguf;

/// <summary>Fills float32 rows [<paramref name="firstRow"/>, + destination.Length / row length) of a tensor being written.</summary>
internal delegate void GgufRowSource(long firstRow, Span<float> destination);

/// <summary>A tensor to write: name, ggml dimensions (ne0 = row length first), the type to store, and where its float32 rows come from.</summary>
internal sealed record GgufTensorOut(string Name, long[] Dims, GgmlType Type, GgufRowSource Rows)
{
    public long Elements => Dims.Aggregate(1L, (a, d) => a * d);

    public long ByteLength => GgmlTypes.ByteCount(Type, Elements);
}

/// <summary>
/// Writes a GGUF v3 file (what llama.cpp's gguf-py <c>GGUFWriter</c> writes): header, metadata key/values in the given
/// order, tensor table, then each tensor's data at an offset that is a multiple of the alignment (zero padding), written
/// atomically (<see cref="AtomicFile"/>). Values are written with the GGUF type of their .NET type: uint → UINT32,
/// int → INT32, float → FLOAT32, bool → BOOL, string → STRING, ulong → UINT64; string[] and int[] → arrays.
/// </summary>
internal static class GgufWriter
{
    public static void Write(string path, IReadOnlyList<KeyValuePair<string, object>> metadata, IReadOnlyList<GgufTensorOut> tensors, int alignment = GgufFile.DefaultAlignment)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("GGUF files are written little-endian; big-endian hosts are not supported.");
        var header = new MemoryStream();
        var w = new BinaryWriter(header, Encoding.UTF8);
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)tensors.Count);
        w.Write((ulong)metadata.Count);
        foreach (var (key, value) in metadata)
        {
            WriteString(w, key);
            WriteValue(w, value, key);
        }
        long offset = 0;
        var offsets = new long[tensors.Count];
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            WriteString(w, t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (long d in t.Dims) w.Write((ulong)d);
            w.Write((uint)t.Type);
            offsets[i] = offset;
            w.Write((ulong)offset);
            offset = Align(offset + t.ByteLength, alignment);
        }
        w.Flush();
        long dataStart = Align(header.Length, alignment);

        AtomicFile.Write(path, stream =>
        {
            stream.Write(header.GetBuffer().AsSpan(0, (int)header.Length));
            Pad(stream, dataStart - header.Length);
            long written = 0;
            for (int i = 0; i < tensors.Count; i++)
            {
                Pad(stream, offsets[i] - written);
                WriteData(stream, tensors[i]);
                written = offsets[i] + tensors[i].ByteLength;
            }
            Pad(stream, Align(written, alignment) - written);
        }, unbuffered: true);
    }

    private static long Align(long n, int alignment) => (n + alignment - 1) / alignment * alignment;

    private static void Pad(Stream stream, long n)
    {
        Span<byte> zeros = stackalloc byte[64];
        zeros.Clear();
        for (; n > 0; n -= zeros.Length) stream.Write(zeros[..(int)Math.Min(n, zeros.Length)]);
    }

    /// <summary>Converts and writes the tensor about 1M elements (whole rows) at a time.</summary>
    private static void WriteData(Stream stream, GgufTensorOut t)
    {
        long rowLength = t.Dims[0], rows = t.Elements / rowLength;
        long rowBytes = GgmlTypes.ByteCount(t.Type, rowLength);
        long perChunk = Math.Max(1, (1 << 20) / rowLength);
        int chunkRows = (int)Math.Min(perChunk, rows);
        float[] floats = ArrayPool<float>.Shared.Rent(checked((int)(chunkRows * rowLength)));
        byte[] bytes = ArrayPool<byte>.Shared.Rent(checked((int)(chunkRows * rowBytes)));
        try
        {
            for (long done = 0; done < rows; done += chunkRows)
            {
                int n = (int)Math.Min(chunkRows, rows - done);
                var source = floats.AsSpan(0, checked((int)(n * rowLength)));
                t.Rows(done, source);
                var encoded = bytes.AsSpan(0, checked((int)(n * rowBytes)));
                try
                {
                    QuantizeRows(t.Type, source, encoded, (int)rowLength, rowBytes);
                }
                catch (ArgumentException e)
                {
                    throw new ArgumentException($"{t.Name}: {e.Message}", e);
                }
                stream.Write(encoded);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(floats);
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    /// <summary>Converts whole rows, rows in parallel (q8_0 of the 124M model is ~125M elements of scalar rounding).</summary>
    private static unsafe void QuantizeRows(GgmlType type, Span<float> source, Span<byte> destination, int rowLength, long rowBytes)
    {
        fixed (float* s = source)
        fixed (byte* d = destination)
            RowParallel.For(source.Length / rowLength, rowLength, new QuantizeKernel { Type = type, Source = s, Destination = d, RowLength = rowLength, RowBytes = rowBytes });
    }

    private unsafe struct QuantizeKernel : IRangeKernel
    {
        public GgmlType Type;
        public float* Source;
        public byte* Destination;
        public int RowLength;
        public long RowBytes;

        public readonly void Execute(int start, int end) => GgmlTypes.Quantize(Type,
            new ReadOnlySpan<float>(Source + (long)start * RowLength, (end - start) * RowLength),
            new Span<byte>(Destination + start * RowBytes, checked((int)((end - start) * RowBytes))));
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, object value, string key)
    {
        switch (value)
        {
            case uint v: w.Write((uint)GgufValueType.UInt32); w.Write(v); break;
            case int v: w.Write((uint)GgufValueType.Int32); w.Write(v); break;
            case float v: w.Write((uint)GgufValueType.Float32); w.Write(v); break;
            case bool v: w.Write((uint)GgufValueType.Bool); w.Write((byte)(v ? 1 : 0)); break;
            case string v: w.Write((uint)GgufValueType.String); WriteString(w, v); break;
            case ulong v: w.Write((uint)GgufValueType.UInt64); w.Write(v); break;
            case string[] v:
                w.Write((uint)GgufValueType.Array);
                w.Write((uint)GgufValueType.String);
                w.Write((ulong)v.Length);
                foreach (string s in v) WriteString(w, s);
                break;
            case int[] v:
                w.Write((uint)GgufValueType.Array);
                w.Write((uint)GgufValueType.Int32);
                w.Write((ulong)v.Length);
                foreach (int x in v) w.Write(x);
                break;
            default:
                throw new ArgumentException($"GGUF metadata '{key}': cannot write a value of type {value.GetType().Name}.");
        }
    }
}
