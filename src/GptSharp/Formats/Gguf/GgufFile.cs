using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace GptSharp.Formats.Gguf;

/// <summary>One tensor of a GGUF file: its name, ggml dimensions (ne0 first: the row length), type and place in the data section.</summary>
internal sealed record GgufTensorInfo(string Name, long[] Dims, GgmlType Type, long Offset, long ByteLength)
{
    /// <summary>ne0: elements per row (the fastest-varying dimension).</summary>
    public long RowLength => Dims[0];

    /// <summary>Rows: the product of the other dimensions.</summary>
    public long Rows => Elements / Dims[0];

    public long Elements => Dims.Aggregate(1L, (a, d) => a * d);

    public long RowBytes => GgmlTypes.ByteCount(Type, RowLength);

    /// <summary>The dimensions as ggml writes them: <c>[768, 50257]</c>.</summary>
    public string DimsString => "[" + string.Join(", ", Dims) + "]";
}

/// <summary>
/// A GGUF file (version 2 or 3, little-endian): the metadata key/values and the tensor table read up front, tensor data
/// read on demand through one handle. Hostile files get one <see cref="InvalidDataException"/> naming the file: every
/// count, length, dimension and offset is checked against the bytes the file really has before anything is allocated
/// for it, strings and arrays are capped, so a header that claims billions of keys or a terabyte string costs nothing.
/// </summary>
internal sealed class GgufFile : IDisposable
{
    /// <summary>"GGUF" read as a little-endian uint32.</summary>
    public const uint Magic = 0x46554747;

    public const int DefaultAlignment = 32;

    /// <summary>Longest string read (keys, values, tensor names): a chat template is a few kB, a token a few dozen bytes.</summary>
    public const int MaxStringBytes = 16 << 20;

    /// <summary>Most elements in one metadata array (the largest vocabularies are ~260k tokens).</summary>
    public const int MaxArrayLength = 2 << 20;

    /// <summary>Most metadata entries (real files have a few dozen).</summary>
    public const int MaxKeyCount = 1 << 16;

    /// <summary>Most tensors (the largest models have a few thousand).</summary>
    public const int MaxTensorCount = 1 << 18;

    /// <summary>ggml's GGML_MAX_DIMS.</summary>
    public const int MaxDims = 4;

    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, GgufTensorInfo> _byName = new(StringComparer.Ordinal);

    private GgufFile(string path, SafeFileHandle handle)
    {
        FilePath = path;
        _handle = handle;
    }

    public string FilePath { get; }

    public uint Version { get; private set; }

    /// <summary>Key → value: byte, sbyte, ushort, short, uint, int, float, bool, string, ulong, long, double, or an array of one of them.</summary>
    public IReadOnlyDictionary<string, object> Metadata { get; private set; } = new Dictionary<string, object>();

    public IReadOnlyList<GgufTensorInfo> Tensors { get; private set; } = [];

    /// <summary>Where the data section starts (tensor offsets are relative to it).</summary>
    public long DataStart { get; private set; }

    public int Alignment { get; private set; } = DefaultAlignment;

    public GgufTensorInfo? Find(string name) => _byName.GetValueOrDefault(name);

    /// <summary>True when the file starts with the GGUF magic.</summary>
    public static bool HasMagic(string path)
    {
        if (!File.Exists(path)) return false;
        using var f = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        return f.ReadAtLeast(magic, 4, throwOnEndOfStream: false) == 4 && BinaryPrimitives.ReadUInt32LittleEndian(magic) == Magic;
    }

    public static GgufFile Open(string path)
    {
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        var file = new GgufFile(path, handle);
        try
        {
            file.ReadHeader();
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private InvalidDataException Bad(string what) => new($"{FilePath}: not a valid GGUF file: {what}.");

    private void ReadHeader()
    {
        long length = RandomAccess.GetLength(_handle);
        var r = new HeaderReader(_handle, length, this);
        if (length < 24) throw Bad($"{length} bytes, shorter than a GGUF header (24)");
        uint magic = r.U32();
        if (magic != Magic) throw Bad($"the file does not start with 'GGUF' (found 0x{magic:X8})");
        Version = r.U32();
        if (Version is not (2 or 3))
            throw Bad(Version == 1 ? "version 1 (obsolete, 32-bit counts): convert it again with a current llama.cpp" : $"version {Version} (expected 3)");
        ulong tensorCount = r.U64(), kvCount = r.U64();
        // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes, a tensor at least 8 + 4 + 8 + 4 + 8.
        if (kvCount > (ulong)(length / 13) || kvCount > MaxKeyCount) throw Bad($"it claims {kvCount} metadata entries (its {length} bytes hold at most {length / 13}, GptSharp reads at most {MaxKeyCount})");
        if (tensorCount > (ulong)(length / 32) || tensorCount > MaxTensorCount) throw Bad($"it claims {tensorCount} tensors (its {length} bytes hold at most {length / 32}, GptSharp reads at most {MaxTensorCount})");

        var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = r.String("a metadata key");
            var type = (GgufValueType)r.U32();
            object value = type == GgufValueType.Array ? r.Array(key) : r.Scalar(type, key);
            if (!metadata.TryAdd(key, value)) throw Bad($"metadata key '{Printable(key)}' appears twice");
        }
        Metadata = metadata;
        if (metadata.TryGetValue("general.alignment", out var a))
        {
            if (a is not uint alignment || alignment == 0 || alignment > (1 << 20) || (alignment & (alignment - 1)) != 0)
                throw Bad($"general.alignment must be a power of two (uint32), got {a}");
            Alignment = (int)alignment;
        }

        var tensors = new List<GgufTensorInfo>((int)Math.Min(tensorCount, 1 << 16));
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = r.String("a tensor name");
            uint nDims = r.U32();
            if (nDims is 0 or > MaxDims) throw Bad($"tensor '{Printable(name)}' has {nDims} dimensions (1 to {MaxDims} allowed)");
            var dims = new long[nDims];
            long elements = 1;
            for (int d = 0; d < nDims; d++)
            {
                ulong n = r.U64();
                if (n == 0 || n > long.MaxValue / 2) throw Bad($"tensor '{Printable(name)}' has dimension {n}");
                dims[d] = (long)n;
                elements = elements > long.MaxValue / (long)n ? throw Bad($"tensor '{Printable(name)}' has too many elements") : elements * (long)n;
            }
            var type = (GgmlType)r.U32();
            var geometry = GgmlTypes.Geometry(type) ?? throw Bad($"tensor '{Printable(name)}' has unknown ggml type {(uint)type}");
            if (dims[0] % geometry.Elements != 0)
                throw Bad($"tensor '{Printable(name)}' rows of {dims[0]} are not whole blocks of {geometry.Elements} ({GgmlTypes.Name(type)})");
            ulong offset = r.U64();
            long bytes = elements / geometry.Elements * geometry.Bytes;
            if (offset > (ulong)length) throw Bad($"tensor '{Printable(name)}' data offset {offset} is past the end of the file");
            if (offset % (ulong)Alignment != 0) throw Bad($"tensor '{Printable(name)}' data offset {offset} is not a multiple of the alignment {Alignment}");
            var info = new GgufTensorInfo(name, dims, type, (long)offset, bytes);
            if (!_byName.TryAdd(name, info)) throw Bad($"tensor '{Printable(name)}' appears twice");
            tensors.Add(info);
        }
        Tensors = tensors;
        DataStart = (r.Position + Alignment - 1) / Alignment * Alignment;
        foreach (var t in tensors)
            if (t.ByteLength > length - DataStart - t.Offset)
                throw Bad($"tensor '{Printable(t.Name)}' ({t.DimsString} {GgmlTypes.Name(t.Type)}, {t.ByteLength} bytes at {DataStart + t.Offset}) runs past the end of the file ({length} bytes): truncated?");
    }

    /// <summary>A name safe to print: control characters escaped, cut at 80 characters.</summary>
    internal static string Printable(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s.Length > 80 ? s[..80] : s) sb.Append(char.IsControl(c) ? $"\\u{(int)c:X4}" : c);
        return s.Length > 80 ? sb + "..." : sb.ToString();
    }

    /// <summary>Reads <paramref name="rowCount"/> rows from <paramref name="firstRow"/> on, raw (the type's blocks).</summary>
    public void ReadRowBytes(GgufTensorInfo t, long firstRow, Span<byte> destination)
    {
        long at = DataStart + t.Offset + firstRow * t.RowBytes;
        if (!FileReads.TryReadExactly(_handle, at, destination, out long end))
            throw new InvalidDataException($"{FilePath}: file ends at byte {end} inside tensor '{t.Name}': truncated.");
    }

    /// <summary>
    /// Reads rows [<paramref name="firstRow"/>, + destination.Length / row length) of <paramref name="t"/> as float32,
    /// dequantizing block by block through a bounded staging buffer.
    /// </summary>
    public void ReadRows(GgufTensorInfo t, long firstRow, Span<float> destination)
    {
        if (!GgmlTypes.CanDequantize(t.Type))
            throw new InvalidDataException($"{FilePath}: tensor '{t.Name}' is {GgmlTypes.Name(t.Type)}, which GptSharp cannot read (it reads {GgmlTypes.ReadableTypes}).");
        if (t.Type == GgmlType.F32)
        {
            // Straight from the file into the destination, as the safetensors reader does.
            ReadRowBytes(t, firstRow, System.Runtime.InteropServices.MemoryMarshal.AsBytes(destination));
            return;
        }
        long rows = destination.Length / t.RowLength;
        int rowLength = checked((int)t.RowLength);
        // About 4 MB of raw blocks per read, at least one row.
        long perChunk = Math.Max(1, (4 << 20) / Math.Max(1, t.RowBytes));
        byte[] staging = ArrayPool<byte>.Shared.Rent(checked((int)(Math.Min(perChunk, rows) * t.RowBytes)));
        try
        {
            for (long done = 0; done < rows; done += perChunk)
            {
                long n = Math.Min(perChunk, rows - done);
                var raw = staging.AsSpan(0, checked((int)(n * t.RowBytes)));
                ReadRowBytes(t, firstRow + done, raw);
                GgmlTypes.Dequantize(t.Type, raw, destination.Slice(checked((int)(done * rowLength)), checked((int)(n * rowLength))));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(staging);
        }
    }

    public string? GetString(string key) => Metadata.GetValueOrDefault(key) as string;

    /// <summary>An unsigned or signed integer value of any width, or null when absent or not an integer.</summary>
    public long? GetInteger(string key) => Metadata.GetValueOrDefault(key) switch
    {
        byte v => v, sbyte v => v, ushort v => v, short v => v, uint v => v, int v => v,
        ulong v => v > long.MaxValue ? null : (long)v, long v => v,
        _ => null,
    };

    public double? GetFloat(string key) => Metadata.GetValueOrDefault(key) switch
    {
        float v => v, double v => v,
        _ => null,
    };

    public void Dispose() => _handle.Dispose();

    /// <summary>Reads the header front to back, refusing any length that the rest of the file cannot hold.</summary>
    private sealed class HeaderReader(SafeFileHandle handle, long fileLength, GgufFile file)
    {
        // Positional reads through a 64 kB window (the handle stays the file's: no stream owns it).
        private readonly byte[] _buffer = new byte[1 << 16];
        private long _bufferStart;
        private int _bufferLength;

        public long Position { get; private set; }

        private ReadOnlySpan<byte> Take(int n)
        {
            if (n > fileLength - Position) throw file.Bad($"the header ends past the end of the file ({fileLength} bytes): truncated?");
            if (Position + n > _bufferStart + _bufferLength)
            {
                _bufferStart = Position;
                int want = (int)Math.Min(_buffer.Length, fileLength - Position);
                if (!FileReads.TryReadExactly(handle, Position, _buffer.AsSpan(0, want), out long end))
                    throw file.Bad($"the file ends at byte {end}, inside the header: truncated?");
                _bufferLength = want;
            }
            var span = _buffer.AsSpan((int)(Position - _bufferStart), n);
            Position += n;
            return span;
        }

        private void ReadInto(Span<byte> destination)
        {
            while (destination.Length > 0)
            {
                int n = Math.Min(destination.Length, _buffer.Length);
                Take(n).CopyTo(destination);
                destination = destination[n..];
            }
        }

        public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));

        public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));

        public string String(string what)
        {
            ulong n = U64();
            if (n > MaxStringBytes) throw file.Bad($"{what} claims {n} bytes (at most {MaxStringBytes} allowed)");
            if ((long)n > fileLength - Position) throw file.Bad($"{what} of {n} bytes runs past the end of the file: truncated?");
            if (n == 0) return "";
            byte[] bytes = ArrayPool<byte>.Shared.Rent((int)n);
            try
            {
                ReadInto(bytes.AsSpan(0, (int)n));
                return Encoding.UTF8.GetString(bytes, 0, (int)n);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(bytes);
            }
        }

        public object Scalar(GgufValueType type, string key) => type switch
        {
            GgufValueType.UInt8 => Take(1)[0],
            GgufValueType.Int8 => (sbyte)Take(1)[0],
            GgufValueType.UInt16 => BinaryPrimitives.ReadUInt16LittleEndian(Take(2)),
            GgufValueType.Int16 => BinaryPrimitives.ReadInt16LittleEndian(Take(2)),
            GgufValueType.UInt32 => U32(),
            GgufValueType.Int32 => BinaryPrimitives.ReadInt32LittleEndian(Take(4)),
            GgufValueType.Float32 => BinaryPrimitives.ReadSingleLittleEndian(Take(4)),
            GgufValueType.Bool => Take(1)[0] switch
            {
                0 => false,
                1 => true,
                var b => throw file.Bad($"metadata '{Printable(key)}' is a bool of value {b}"),
            },
            GgufValueType.String => String($"the value of '{Printable(key)}'"),
            GgufValueType.UInt64 => U64(),
            GgufValueType.Int64 => BinaryPrimitives.ReadInt64LittleEndian(Take(8)),
            GgufValueType.Float64 => BinaryPrimitives.ReadDoubleLittleEndian(Take(8)),
            _ => throw file.Bad($"metadata '{Printable(key)}' has unknown value type {(uint)type}"),
        };

        public object Array(string key)
        {
            var type = (GgufValueType)U32();
            ulong count = U64();
            if (type == GgufValueType.Array) throw file.Bad($"metadata '{Printable(key)}' is an array of arrays (not supported)");
            int size = type.MinimumSize();
            if (size == 0) throw file.Bad($"metadata '{Printable(key)}' is an array of unknown value type {(uint)type}");
            if (count > MaxArrayLength) throw file.Bad($"metadata '{Printable(key)}' is an array of {count} elements (at most {MaxArrayLength} allowed)");
            if ((long)count * size > fileLength - Position) throw file.Bad($"metadata '{Printable(key)}' claims {count} elements, more than the rest of the file holds: truncated?");
            int n = (int)count;
            switch (type)
            {
                case GgufValueType.String:
                {
                    var values = new string[n];
                    for (int i = 0; i < n; i++) values[i] = String($"element {i} of '{Printable(key)}'");
                    return values;
                }
                case GgufValueType.Int32:
                {
                    var values = new int[n];
                    for (int i = 0; i < n; i++) values[i] = BinaryPrimitives.ReadInt32LittleEndian(Take(4));
                    return values;
                }
                default:
                {
                    var values = new object[n];
                    for (int i = 0; i < n; i++) values[i] = Scalar(type, key);
                    return values;
                }
            }
        }
    }
}

/// <summary>GGUF's metadata value types (gguf.h's <c>enum gguf_type</c>).</summary>
internal enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
    String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
}

internal static class GgufValueTypes
{
    /// <summary>Fewest bytes one value takes in the file (a string: its 8-byte length); 0 for an unknown type.</summary>
    public static int MinimumSize(this GgufValueType type) => type switch
    {
        GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
        GgufValueType.UInt16 or GgufValueType.Int16 => 2,
        GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
        GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 or GgufValueType.String or GgufValueType.Array => 8,
        _ => 0,
    };
}
