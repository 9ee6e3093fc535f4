using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using GptSharp.IO;
using GptSharp.Tensors;

namespace GptSharp.Formats.SafeTensors;

/// <summary>
/// Reader of a safetensors file (huggingface/safetensors): u64 LE header length N, N bytes of JSON
/// <c>{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}</c>, then the
/// tensors' bytes (offsets relative to byte 8 + N; row-major, little-endian). The header is validated
/// as the reference implementation does, so a corrupt file fails here with one clear message.
/// </summary>
internal sealed class SafeTensorsFile : ITensorSource
{
    /// <summary>The reference implementation's limit on the header (<c>MAX_HEADER_SIZE</c>).</summary>
    public const long MaxHeaderSize = 100_000_000;

    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, (StoredTensor Tensor, long Begin)> _byName = new(StringComparer.Ordinal);
    private readonly List<StoredTensor> _tensors = new();
    private readonly long _dataStart;

    private SafeTensorsFile(string path, SafeFileHandle handle)
    {
        FilePath = path;
        _handle = handle;
        long fileLength = RandomAccess.GetLength(handle);
        if (fileLength < 8) throw Corrupt($"file is {fileLength} bytes, shorter than the 8-byte header length");
        Span<byte> lengthBytes = stackalloc byte[8];
        ReadExactly(0, lengthBytes);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > MaxHeaderSize)
            throw Corrupt($"header length {headerLength} is larger than the {MaxHeaderSize}-byte limit (not a safetensors file?)");
        if (8 + (long)headerLength > fileLength)
            throw Corrupt($"header length {headerLength} runs past the end of the {fileLength}-byte file (truncated?)");
        _dataStart = 8 + (long)headerLength;
        var header = new byte[headerLength];
        ReadExactly(8, header);
        ParseHeader(header, fileLength - _dataStart);
    }

    public string FilePath { get; }

    public IReadOnlyList<StoredTensor> Tensors => _tensors;

    /// <summary>The <c>__metadata__</c> strings (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; private set; } = new Dictionary<string, string>();

    /// <summary>Opens and validates <paramref name="path"/>.</summary>
    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: file not found.", path);
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            return new SafeTensorsFile(path, handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public StoredTensor? Find(string name) => _byName.TryGetValue(name, out var e) ? e.Tensor : null;

    private (StoredTensor Tensor, long Begin) Get(string name) =>
        _byName.TryGetValue(name, out var e) ? e : throw new InvalidDataException($"{FilePath}: no tensor named '{name}'.");

    public unsafe void ReadInto(string name, Span<float> destination)
    {
        var (tensor, begin) = Get(name);
        CheckDestination(tensor, destination.Length);
        if (tensor.DType == TensorDType.F32 && BitConverter.IsLittleEndian)
        {
            // Straight from the file into the caller's buffer: no intermediate copy.
            ReadExactly(_dataStart + begin, MemoryMarshal.AsBytes(destination));
            return;
        }
        if (!tensor.DType.IsConvertibleToFloat())
            throw new InvalidDataException($"{FilePath}: tensor '{name}' has dtype {tensor.DType.SafeTensorsName()}, which cannot be read as float32.");
        ReadConverted(tensor, begin, destination);
    }

    /// <summary>Reads an int8 tensor's values as they are stored (int8 weights, no conversion) into <paramref name="destination"/>.</summary>
    public void ReadInt8(string name, Span<sbyte> destination)
    {
        var (tensor, begin) = Get(name);
        if (tensor.DType != TensorDType.I8)
            throw new InvalidDataException($"{FilePath}: tensor '{name}' has dtype {tensor.DType.SafeTensorsName()}, expected I8.");
        CheckDestination(tensor, destination.Length);
        ReadExactly(_dataStart + begin, MemoryMarshal.AsBytes(destination));
    }

    /// <summary>Reads an integer tensor (I64, I32, I16, I8, U8) as int64 values.</summary>
    public long[] ReadInt64(string name)
    {
        var (tensor, begin) = Get(name);
        int size = tensor.DType.ElementSize();
        var bytes = new byte[checked(tensor.ElementCount * size)];
        ReadExactly(_dataStart + begin, bytes);
        var result = new long[tensor.ElementCount];
        for (int i = 0; i < result.Length; i++)
        {
            var s = bytes.AsSpan(i * size);
            result[i] = tensor.DType switch
            {
                TensorDType.I64 => BinaryPrimitives.ReadInt64LittleEndian(s),
                TensorDType.I32 => BinaryPrimitives.ReadInt32LittleEndian(s),
                TensorDType.I16 => BinaryPrimitives.ReadInt16LittleEndian(s),
                TensorDType.I8 => (sbyte)s[0],
                TensorDType.U8 or TensorDType.Bool => s[0],
                _ => throw new InvalidDataException($"{FilePath}: tensor '{name}' has dtype {tensor.DType.SafeTensorsName()}, not an integer type."),
            };
        }
        return result;
    }

    /// <summary>Reads a float tensor into a new float32 array (small tensors, tests and tools).</summary>
    public float[] ReadFloats(string name)
    {
        var values = new float[Get(name).Tensor.ElementCount];
        ReadInto(name, values);
        return values;
    }

    private void ReadConverted(StoredTensor tensor, long begin, Span<float> destination)
    {
        int size = tensor.DType.ElementSize();
        const int chunkElements = 1 << 16;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(chunkElements * size);
        try
        {
            for (int done = 0; done < destination.Length; done += chunkElements)
            {
                int n = Math.Min(chunkElements, destination.Length - done);
                var bytes = buffer.AsSpan(0, n * size);
                ReadExactly(_dataStart + begin + (long)done * size, bytes);
                TensorDTypes.ConvertToFloat(tensor.DType, bytes, destination.Slice(done, n));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void CheckDestination(StoredTensor tensor, long length)
    {
        if (length != tensor.ElementCount)
            throw new ArgumentException($"{FilePath}: tensor '{tensor.Name}' {tensor.ShapeString} has {tensor.ElementCount} elements, the destination holds {length}.");
    }

    private void ReadExactly(long offset, Span<byte> destination)
    {
        if (!FileReads.TryReadExactly(_handle, offset, destination, out long end)) throw Corrupt($"unexpected end of file at byte {end}");
    }

    private void ParseHeader(byte[] header, long dataLength)
    {
        JsonDocument doc;
        try
        {
            // Names and strings are read with GetString, which throws InvalidOperationException on bad UTF-8: check it once here.
            StrictUtf8.GetCharCount(header);
        }
        catch (DecoderFallbackException)
        {
            throw Corrupt("header is not valid UTF-8");
        }
        try
        {
            doc = JsonDocument.Parse(header);
        }
        catch (JsonException e)
        {
            throw Corrupt($"header is not valid JSON ({e.Message})");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Corrupt("header is not a JSON object");
            var ranges = new List<(long Begin, long End, string Name)>();
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    Metadata = ParseMetadata(property.Value);
                    continue;
                }
                if (_byName.ContainsKey(property.Name)) throw Corrupt($"tensor '{property.Name}' appears twice in the header");
                var (tensor, begin, end) = ParseEntry(property.Name, property.Value);
                _tensors.Add(tensor);
                _byName.Add(tensor.Name, (tensor, begin));
                ranges.Add((begin, end, tensor.Name));
            }
            // Like the reference validate(): sorted by begin, the ranges tile the data buffer exactly.
            ranges.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            long expected = 0;
            string? previous = null;
            foreach (var (begin, end, name) in ranges)
            {
                if (begin < expected)
                    throw Corrupt($"tensor '{name}' (bytes {begin}..{end}) overlaps tensor '{previous}' (ends at {expected})");
                if (begin > expected)
                    throw Corrupt($"tensor '{name}' starts at byte {begin} but the previous tensor ends at {expected} (gap in the data)");
                expected = end;
                previous = name;
            }
            if (expected > dataLength)
                throw Corrupt($"tensor data ends at byte {expected} of the data section but the file holds only {dataLength} data bytes (truncated?)");
            if (expected < dataLength)
                throw Corrupt($"the header describes {expected} data bytes but the file holds {dataLength}");
        }
    }

    private (StoredTensor Tensor, long Begin, long End) ParseEntry(string name, JsonElement entry)
    {
        if (entry.ValueKind != JsonValueKind.Object) throw Corrupt($"entry '{name}' is not an object");
        if (!entry.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw Corrupt($"tensor '{name}' has no dtype string");
        var dtype = TensorDTypes.FromSafeTensorsName(dtypeElement.GetString()!)
            ?? throw Corrupt($"tensor '{name}' has unknown dtype '{dtypeElement.GetString()}'");
        if (!entry.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw Corrupt($"tensor '{name}' has no shape array");
        var shape = new int[shapeElement.GetArrayLength()];
        long count = 1;
        int i = 0;
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt32(out int size) || size < 0)
                throw Corrupt($"tensor '{name}' has an invalid shape {shapeElement.GetRawText()}");
            shape[i++] = size;
            // The product is compared with the bytes present below; it must not wrap around on the way.
            if (size != 0 && count > long.MaxValue / 8 / size)
                throw Corrupt($"tensor '{name}' has shape {shapeElement.GetRawText()}, whose element count overflows");
            count *= size;
        }
        if (!entry.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array
            || offsets.GetArrayLength() != 2 || !offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end)
            || begin < 0 || end < begin)
            throw Corrupt($"tensor '{name}' has invalid data_offsets (expected [begin, end] with 0 <= begin <= end)");
        long bytes = count * dtype.ElementSize();
        if (end - begin != bytes)
            throw Corrupt($"tensor '{name}' {dtype.SafeTensorsName()} [{string.Join(", ", shape)}] needs {bytes} bytes but data_offsets [{begin}, {end}] span {end - begin}");
        return (new StoredTensor(name, dtype, shape), begin, end);
    }

    private Dictionary<string, string> ParseMetadata(JsonElement element)
    {
        if (element.ValueKind == JsonValueKind.Null) return new();
        if (element.ValueKind != JsonValueKind.Object) throw Corrupt("__metadata__ is not an object of strings");
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in element.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String) throw Corrupt($"__metadata__ value '{p.Name}' is not a string");
            result[p.Name] = p.Value.GetString()!;
        }
        return result;
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private InvalidDataException Corrupt(string what) => new($"{FilePath}: not a valid safetensors file: {what}.");

    public void Dispose() => _handle.Dispose();
}

/// <summary>One tensor to write: float32 from a <see cref="Tensors.Tensor"/> (written from its buffer), int64 values, or int8 weights.</summary>
internal sealed class SafeTensorsEntry
{
    private SafeTensorsEntry(string name, TensorDType dtype, int[] shape, Tensors.Tensor? floats, long[]? longs, Tensors.Int8Matrix? int8 = null,
        Action<Span<float>>? fill = null)
    {
        Name = name;
        DType = dtype;
        Shape = shape;
        Floats = floats;
        Longs = longs;
        Int8Values = int8;
        Fill = fill;
    }

    public string Name { get; }
    public TensorDType DType { get; }
    public int[] Shape { get; }
    internal Tensors.Tensor? Floats { get; }
    internal long[]? Longs { get; }
    internal Tensors.Int8Matrix? Int8Values { get; }
    internal Action<Span<float>>? Fill { get; }

    public long ByteLength => DType switch
    {
        TensorDType.F32 => Floats?.Length * 4L ?? ElementCount(Shape) * 4L,
        TensorDType.I8 => Int8Values!.ValueBytes,
        _ => Longs!.Length * 8L,
    };

    /// <summary>The int8 values [rows, columns] of <paramref name="matrix"/> (its scales are a separate float32 entry), written from its buffer.</summary>
    public static SafeTensorsEntry Int8(string name, Tensors.Int8Matrix matrix) => new(name, TensorDType.I8, [matrix.Rows, matrix.Columns], null, null, matrix);

    public static SafeTensorsEntry Float32(string name, Tensors.Tensor tensor) => new(name, TensorDType.F32, tensor.ShapeArray, tensor, null);

    /// <summary>
    /// A float32 tensor computed only when it is written (<paramref name="fill"/> gets a buffer of the shape's size): a
    /// rearranged copy of a parameter (another publisher's layout) then exists one tensor at a time, never for the whole model.
    /// </summary>
    internal static SafeTensorsEntry Float32(string name, int[] shape, Action<Span<float>> fill)
    {
        if (ElementCount(shape) > Array.MaxLength) throw new ArgumentException($"tensor '{name}' [{string.Join(", ", shape)}] is too large to compute in one buffer.");
        return new(name, TensorDType.F32, shape, null, null, null, fill);
    }

    private static long ElementCount(int[] shape)
    {
        long n = 1;
        foreach (int d in shape) n *= d;
        return n;
    }

    public static SafeTensorsEntry Int64(string name, long[] values, params int[] shape)
    {
        long n = 1;
        foreach (int d in shape) n *= d;
        if (n != values.Length) throw new ArgumentException($"{values.Length} values do not fill shape [{string.Join(", ", shape)}] of '{name}'.");
        return new(name, TensorDType.I64, shape, null, values);
    }
}

/// <summary>Writes safetensors files atomically, streaming the tensors from their buffers (adjacent ones as one run).</summary>
internal static class SafeTensorsWriter
{
    public static void Write(string path, IEnumerable<SafeTensorsEntry> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        // The reference writer orders by alignment (8-byte types first), so every tensor is aligned to its element size.
        var ordered = tensors.OrderByDescending(t => t.DType.ElementSize()).ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in ordered)
            if (t.Name == "__metadata__" || !names.Add(t.Name))
                throw new ArgumentException($"{path}: tensor name '{t.Name}' is reserved or used twice.");
        byte[] header = BuildHeader(ordered, metadata);
        // Unbuffered: a checkpoint is written once, front to back, and read again only to resume (see DirectFileStream).
        AtomicFile.Write(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            WriteData(stream, ordered);
        }, unbuffered: true);
    }

    /// <summary>
    /// The tensors' bytes in order. Float32 tensors that lie back to back in memory (a model's parameter arena, an
    /// optimizer's moments) go out as one run, so a model is streamed in one piece rather than tensor by tensor.
    /// </summary>
    private static unsafe void WriteData(Stream stream, List<SafeTensorsEntry> ordered)
    {
        byte* run = null;
        long runBytes = 0;
        foreach (var t in ordered)
        {
            if (t.Floats is not null)
            {
                byte* start = (byte*)t.Floats.Data;
                if (run != null && run + runBytes == start)
                {
                    runBytes += t.Floats.Length * sizeof(float);
                    continue;
                }
                WriteFloats(stream, run, runBytes);
                run = start;
                runBytes = t.Floats.Length * sizeof(float);
                continue;
            }
            WriteFloats(stream, run, runBytes);
            run = null;
            runBytes = 0;
            if (t.Fill is not null) WriteComputed(stream, t);
            else if (t.Int8Values is not null) WriteInt8(stream, t.Int8Values);
            else WriteLongs(stream, t.Longs!);
        }
        WriteFloats(stream, run, runBytes);
    }

    private static void WriteComputed(Stream stream, SafeTensorsEntry entry)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("Checkpoint files are little-endian; big-endian hosts are not supported.");
        int length = (int)(entry.ByteLength / sizeof(float));
        float[] buffer = System.Buffers.ArrayPool<float>.Shared.Rent(length);
        try
        {
            var values = buffer.AsSpan(0, length);
            entry.Fill!(values);
            stream.Write(MemoryMarshal.AsBytes(values));
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(buffer);
        }
    }

    private static unsafe void WriteFloats(Stream stream, byte* p, long bytes)
    {
        if (bytes == 0) return;
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("Checkpoint files are little-endian; big-endian hosts are not supported.");
        WriteBytes(stream, p, bytes);
    }

    /// <summary>Writes the tensor's bytes from its native buffer in chunks (a span is limited to 2 GiB).</summary>
    internal static unsafe void WriteFloats(Stream stream, Tensors.Tensor tensor) => WriteFloats(stream, (byte*)tensor.Data, tensor.Length * sizeof(float));

    private static unsafe void WriteInt8(Stream stream, Tensors.Int8Matrix matrix) => WriteBytes(stream, (byte*)matrix.Values, matrix.ValueBytes);

    private static unsafe void WriteBytes(Stream stream, byte* p, long total)
    {
        const int chunk = 1 << 24;
        for (long done = 0; done < total; done += chunk)
            stream.Write(new ReadOnlySpan<byte>(p + done, (int)Math.Min(chunk, total - done)));
    }

    private static void WriteLongs(Stream stream, long[] values) => stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));

    private static byte[] BuildHeader(List<SafeTensorsEntry> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata) json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in tensors)
            {
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", t.DType.SafeTensorsName());
                json.WriteStartArray("shape");
                foreach (int d in t.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + t.ByteLength);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += t.ByteLength;
            }
            json.WriteEndObject();
        }
        // Pad with spaces to a multiple of 8 so the data (and every tensor) starts aligned, as the reference writer does.
        int length = (int)buffer.Length;
        int padded = (length + 7) / 8 * 8;
        var header = new byte[padded];
        buffer.GetBuffer().AsSpan(0, length).CopyTo(header);
        header.AsSpan(length).Fill((byte)' ');
        return header;
    }
}
