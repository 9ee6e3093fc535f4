using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace GptSharp.Formats.TensorFlow;

/// <summary>TensorFlow's <c>DataType</c> enum values that can appear in a bundle (types.proto).</summary>
internal enum TfDataType
{
    Invalid = 0, Float = 1, Double = 2, Int32 = 3, UInt8 = 4, Int16 = 5, Int8 = 6, String = 7,
    Complex64 = 8, Int64 = 9, Bool = 10, BFloat16 = 14, UInt16 = 17, Half = 19, Resource = 20, Variant = 21,
}

/// <summary>The <c>BundleHeaderProto</c> stored under the empty key.</summary>
internal sealed record BundleHeader(int NumShards, bool BigEndian, int Producer, int MinConsumer);

/// <summary>
/// One tensor's <c>BundleEntryProto</c>: where its bytes are (<see cref="ShardId"/>, absolute
/// <see cref="Offset"/>, <see cref="Size"/>) and the masked crc32c of those bytes.
/// </summary>
internal sealed record BundleEntry(string Name, TfDataType DType, long[] Shape, int ShardId, long Offset, long Size, uint MaskedCrc32C, bool IsSliced)
{
    /// <summary>Number of elements (1 for a scalar).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, d) => checked(a * d));

    /// <summary>The unmasked crc32c of the tensor's bytes.</summary>
    public uint Crc32C => TensorFlow.Crc32C.Unmask(MaskedCrc32C);

    public string ShapeString => "[" + string.Join(", ", Shape) + "]";

    /// <summary>Bytes per element, or 0 for variable-size types (strings, resources, variants).</summary>
    public static int ElementSize(TfDataType type) => type switch
    {
        TfDataType.Float or TfDataType.Int32 => 4,
        TfDataType.Double or TfDataType.Int64 or TfDataType.Complex64 => 8,
        TfDataType.UInt8 or TfDataType.Int8 or TfDataType.Bool => 1,
        TfDataType.Int16 or TfDataType.UInt16 or TfDataType.BFloat16 or TfDataType.Half => 2,
        _ => 0,
    };
}

/// <summary>
/// Reads a TensorFlow V2 checkpoint ("tensor bundle") without TensorFlow: the <c>PREFIX.index</c>
/// table of <see cref="BundleEntry"/>s and the raw bytes in <c>PREFIX.data-0000S-of-0000N</c>.
/// Tensors are streamed from the data shard into the caller's buffer with their crc32c verified,
/// so a multi-GB shard is never held in memory.
/// </summary>
internal sealed class TensorBundleReader : IDisposable
{
    /// <summary>Size of one read from the data shard.</summary>
    private const int ChunkBytes = 1 << 20;

    private readonly Dictionary<string, BundleEntry> _byName;
    // Opened on first use, by shard id: the header's num_shards comes from the file and may be absurd.
    private readonly Dictionary<int, FileStream> _shards = new();

    private TensorBundleReader(string prefix, BundleHeader header, List<BundleEntry> entries)
    {
        Prefix = prefix;
        Header = header;
        Entries = entries;
        _byName = entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
    }

    /// <summary>The checkpoint prefix, e.g. <c>models/124M/model.ckpt</c>.</summary>
    public string Prefix { get; }

    public string IndexPath => Prefix + ".index";

    public BundleHeader Header { get; }

    /// <summary>Every tensor, in the index's (bytewise sorted) key order.</summary>
    public IReadOnlyList<BundleEntry> Entries { get; }

    /// <summary>The data file of a shard: <c>PREFIX.data-%05d-of-%05d</c> (tensor_bundle/naming.cc).</summary>
    public string DataPath(int shard) => $"{Prefix}.data-{shard:D5}-of-{Header.NumShards:D5}";

    /// <summary>Opens the bundle whose index is <c><paramref name="prefix"/>.index</c> and decodes every entry.</summary>
    public static TensorBundleReader Open(string prefix)
    {
        string indexPath = prefix + ".index";
        if (!File.Exists(indexPath)) throw new FileNotFoundException($"{indexPath}: checkpoint index not found.", indexPath);
        return Parse(prefix, File.ReadAllBytes(indexPath));
    }

    /// <summary>Decodes an index already in memory (its data shards are looked up next to <paramref name="prefix"/>).</summary>
    public static TensorBundleReader Parse(string prefix, byte[] indexBytes)
    {
        string source = prefix + ".index";
        BundleHeader? header = null;
        var entries = new List<BundleEntry>();
        foreach (var (key, value) in LevelDbTable.ReadAll(indexBytes, source))
        {
            if (key.Length == 0) header = ParseHeader(value, source);
            else entries.Add(ParseEntry(key, value, source));
        }
        if (header is null) throw new InvalidDataException($"{source}: no bundle header (the empty key) in the index; not a TensorFlow V2 checkpoint.");
        if (header.MinConsumer > 1)
            throw new InvalidDataException($"{source}: written by a bundle format that needs a reader of version {header.MinConsumer}; this reader supports version 1.");
        if (header.BigEndian)
            throw new InvalidDataException($"{source}: big-endian checkpoints are not supported.");
        foreach (var e in entries)
        {
            if (e.ShardId < 0 || e.ShardId >= header.NumShards)
                throw new InvalidDataException($"{source}: tensor '{e.Name}' is in shard {e.ShardId} but the bundle has {header.NumShards} shard(s).");
            int elementSize = BundleEntry.ElementSize(e.DType);
            // Checked here, once, so that ElementCount is safe everywhere after: the byte count must fit a long.
            long count = 1;
            foreach (long d in e.Shape)
            {
                if (d != 0 && count > long.MaxValue / 8 / d)
                    throw new InvalidDataException($"{source}: tensor '{e.Name}' has shape {e.ShapeString}, whose element count overflows.");
                count *= d;
            }
            if (e.DType == TfDataType.String && count > e.Size)
                throw new InvalidDataException($"{source}: string tensor '{e.Name}' {e.ShapeString} claims more strings than its {e.Size} bytes can hold.");
            if (elementSize > 0 && e.Size != e.ElementCount * elementSize)
                throw new InvalidDataException($"{source}: tensor '{e.Name}' {e.ShapeString} of {e.DType} should take {e.ElementCount * elementSize} bytes, the index says {e.Size}.");
        }
        return new TensorBundleReader(prefix, header, entries);
    }

    /// <summary>
    /// Checks up front that every data shard exists and is long enough for the tensors the index puts
    /// in it, so a missing or cut-short download is reported before gigabytes are allocated.
    /// </summary>
    public void CheckDataFiles()
    {
        // Grouped by shard (not a loop over num_shards, which the file states); within a shard, tensors may not overlap,
        // so the bytes a model can read are bounded by the data files' real sizes.
        foreach (var group in Entries.GroupBy(e => e.ShardId).OrderBy(g => g.Key))
        {
            string path = DataPath(group.Key);
            var info = new FileInfo(path);
            if (!info.Exists)
                throw new FileNotFoundException($"{path}: data shard {group.Key} of checkpoint '{Path.GetFileName(Prefix)}' is missing.", path);
            BundleEntry? previous = null;
            foreach (var e in group.Where(e => e.Size > 0).OrderBy(e => e.Offset))
            {
                if (e.Offset > info.Length - e.Size)
                    throw new InvalidDataException($"{path}: truncated data shard: {info.Length} bytes, tensor '{e.Name}' needs bytes {e.Offset}..{e.Offset + e.Size} (an incomplete download?).");
                if (previous is not null && e.Offset < previous.Offset + previous.Size)
                    throw new InvalidDataException($"{path}: tensors '{previous.Name}' and '{e.Name}' overlap in the data shard; the index is corrupt.");
                previous = e;
            }
        }
    }

    public bool TryGetEntry(string name, out BundleEntry entry) => _byName.TryGetValue(name, out entry!);

    public BundleEntry GetEntry(string name) =>
        _byName.TryGetValue(name, out var e) ? e : throw new KeyNotFoundException($"{IndexPath}: no tensor named '{name}'.");

    /// <summary>Reads a float32 tensor into <paramref name="destination"/> (exactly its element count), verifying its crc32c.</summary>
    public void ReadFloat32(BundleEntry entry, Span<float> destination)
    {
        RequireFloat(entry);
        if (destination.Length != entry.ElementCount)
            throw new ArgumentException($"{IndexPath}: tensor '{entry.Name}' {entry.ShapeString} has {entry.ElementCount} elements, the destination holds {destination.Length}.");
        var bytes = MemoryMarshal.AsBytes(destination);
        var stream = OpenShard(entry);
        uint state = Crc32C.Initial;
        for (int done = 0; done < bytes.Length;)
        {
            var chunk = bytes.Slice(done, Math.Min(ChunkBytes, bytes.Length - done));
            ReadExactly(stream, chunk, entry);
            state = Crc32C.Update(state, chunk);
            done += chunk.Length;
        }
        VerifyCrc(entry, state);
        if (!BitConverter.IsLittleEndian) ReverseEndianness(destination);
    }

    /// <summary>
    /// Streams a float32 tensor of rows of <paramref name="rowLength"/> elements through a bounded
    /// scratch buffer: <paramref name="consume"/> gets (first row index, a whole number of rows).
    /// The crc is verified after the last chunk, so a caller writing into a model must discard it on error.
    /// </summary>
    public void ReadFloat32Rows(BundleEntry entry, int rowLength, int maxChunkBytes, RowChunkConsumer consume)
    {
        RequireFloat(entry);
        if (rowLength <= 0 || entry.ElementCount % rowLength != 0)
            throw new ArgumentException($"{IndexPath}: tensor '{entry.Name}' {entry.ShapeString} is not made of rows of {rowLength} elements.");
        long rows = entry.ElementCount / rowLength;
        int rowsPerChunk = (int)Math.Clamp(maxChunkBytes / (4L * rowLength), 1, Math.Max(1, rows));
        float[] scratch = ArrayPool<float>.Shared.Rent(rowsPerChunk * rowLength);
        try
        {
            var stream = OpenShard(entry);
            uint state = Crc32C.Initial;
            for (long row = 0; row < rows; row += rowsPerChunk)
            {
                int count = (int)Math.Min(rowsPerChunk, rows - row);
                var chunk = scratch.AsSpan(0, count * rowLength);
                var bytes = MemoryMarshal.AsBytes(chunk);
                ReadExactly(stream, bytes, entry);
                state = Crc32C.Update(state, bytes);
                if (!BitConverter.IsLittleEndian) ReverseEndianness(chunk);
                consume((int)row, chunk);
            }
            VerifyCrc(entry, state);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scratch);
        }
    }

    /// <summary>The raw stored bytes of any tensor (for small tensors), crc verified.</summary>
    public byte[] ReadRawBytes(BundleEntry entry)
    {
        if (entry.Size > Array.MaxLength) throw new NotSupportedException($"{IndexPath}: tensor '{entry.Name}' is too large to read into one array.");
        var stream = OpenShard(entry); // checks the bytes exist before they are allocated
        var bytes = new byte[entry.Size];
        ReadExactly(stream, bytes, entry);
        VerifyCrc(entry, Crc32C.Update(Crc32C.Initial, bytes));
        return bytes;
    }

    /// <summary>
    /// Reads a DT_STRING tensor (tensor_bundle.cc WriteStringTensor): varint64 lengths, the masked
    /// crc32c of those lengths (each fed as uint32 LE, uint64 above 2^32-1), then the bytes. The entry
    /// crc covers the lengths (as fed), the 4 stored crc bytes and the strings.
    /// </summary>
    public byte[][] ReadStrings(BundleEntry entry)
    {
        if (entry.DType != TfDataType.String)
            throw new InvalidDataException($"{IndexPath}: tensor '{entry.Name}' is {entry.DType}, not a string tensor.");
        if (entry.Size > Array.MaxLength) throw new NotSupportedException($"{IndexPath}: tensor '{entry.Name}' is too large to read into one array.");
        var stream = OpenShard(entry); // checks the bytes exist before they are allocated
        var raw = new byte[entry.Size];
        ReadExactly(stream, raw, entry);
        long count = entry.ElementCount;
        var lengths = new ulong[count];
        int pos = 0;
        uint lengthsCrc = Crc32C.Initial, entryCrc = Crc32C.Initial;
        Span<byte> buffer = stackalloc byte[8];
        for (long i = 0; i < count; i++)
        {
            var p = new ProtoReader(raw.AsSpan(pos), DataPath(entry.ShardId));
            ulong len = p.ReadVarint();
            pos += VarintLength(len);
            lengths[i] = len;
            int width = len > uint.MaxValue ? 8 : 4;
            BinaryPrimitives.WriteUInt64LittleEndian(buffer, len);
            lengthsCrc = Crc32C.Update(lengthsCrc, buffer[..width]);
            entryCrc = Crc32C.Update(entryCrc, buffer[..width]);
        }
        if (pos + 4 > raw.Length) throw Truncated(entry);
        uint storedLengthsCrc = BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan(pos));
        if (Crc32C.Unmask(storedLengthsCrc) != Crc32C.Finish(lengthsCrc))
            throw new InvalidDataException($"{DataPath(entry.ShardId)}: checksum mismatch in the string lengths of tensor '{entry.Name}'; the file is corrupt.");
        entryCrc = Crc32C.Update(entryCrc, raw.AsSpan(pos, 4));
        pos += 4;
        var strings = new byte[count][];
        for (long i = 0; i < count; i++)
        {
            if (lengths[i] > (ulong)(raw.Length - pos)) throw Truncated(entry);
            strings[i] = raw.AsSpan(pos, (int)lengths[i]).ToArray();
            entryCrc = Crc32C.Update(entryCrc, strings[i]);
            pos += (int)lengths[i];
        }
        VerifyCrc(entry, entryCrc);
        return strings;
    }

    public void Dispose()
    {
        foreach (var stream in _shards.Values) stream.Dispose();
        _shards.Clear();
    }

    private static int VarintLength(ulong v)
    {
        int n = 1;
        while (v >= 0x80) { v >>= 7; n++; }
        return n;
    }

    private void RequireFloat(BundleEntry entry)
    {
        if (entry.IsSliced)
            throw new NotSupportedException($"{IndexPath}: tensor '{entry.Name}' is partitioned into slices, which this reader does not support.");
        if (entry.DType != TfDataType.Float)
            throw new NotSupportedException($"{IndexPath}: tensor '{entry.Name}' has unsupported dtype {entry.DType} ({(int)entry.DType}); only float32 (DT_FLOAT) tensors can be loaded.");
    }

    private FileStream OpenShard(BundleEntry entry)
    {
        if (!_shards.TryGetValue(entry.ShardId, out var stream))
        {
            string path = DataPath(entry.ShardId);
            if (!File.Exists(path))
                throw new FileNotFoundException($"{path}: data shard {entry.ShardId} of checkpoint '{Path.GetFileName(Prefix)}' is missing (it holds tensor '{entry.Name}').", path);
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan);
            _shards[entry.ShardId] = stream;
        }
        if (entry.Offset < 0 || entry.Offset > stream.Length - entry.Size) throw Truncated(entry);
        stream.Position = entry.Offset;
        return stream;
    }

    private void ReadExactly(FileStream stream, Span<byte> destination, BundleEntry entry)
    {
        try
        {
            stream.ReadExactly(destination);
        }
        catch (EndOfStreamException)
        {
            throw Truncated(entry);
        }
    }

    private InvalidDataException Truncated(BundleEntry entry) =>
        new($"{DataPath(entry.ShardId)}: truncated data shard: tensor '{entry.Name}' needs bytes {entry.Offset}..{entry.Offset + entry.Size} but the file is shorter.");

    private void VerifyCrc(BundleEntry entry, uint state)
    {
        uint actual = Crc32C.Finish(state);
        if (actual != entry.Crc32C)
            throw new InvalidDataException($"{DataPath(entry.ShardId)}: checksum mismatch in tensor '{entry.Name}' (crc32c 0x{actual:x8}, index says 0x{entry.Crc32C:x8}); the file is corrupt.");
    }

    private static void ReverseEndianness(Span<float> values)
    {
        var ints = MemoryMarshal.Cast<float, int>(values);
        BinaryPrimitives.ReverseEndianness(ints, ints);
    }

    private static BundleHeader ParseHeader(byte[] value, string source)
    {
        int numShards = 0, endianness = 0, producer = 0, minConsumer = 0;
        var r = new ProtoReader(value, source);
        while (r.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1: r.Expect(wire, 0, "num_shards"); numShards = (int)r.ReadVarint(); break;
                case 2: r.Expect(wire, 0, "endianness"); endianness = (int)r.ReadVarint(); break;
                case 3:
                    r.Expect(wire, 2, "version");
                    var v = new ProtoReader(r.ReadBytes(), source);
                    while (v.Next(out int vf, out int vw))
                    {
                        if (vf == 1 && vw == 0) producer = (int)v.ReadVarint();
                        else if (vf == 2 && vw == 0) minConsumer = (int)v.ReadVarint();
                        else v.Skip(vw);
                    }
                    break;
                default: r.Skip(wire); break;
            }
        }
        if (numShards <= 0) throw new InvalidDataException($"{source}: bundle header has num_shards = {numShards}.");
        return new BundleHeader(numShards, endianness == 1, producer, minConsumer);
    }

    private static BundleEntry ParseEntry(string name, byte[] value, string source)
    {
        int dtype = 0, shardId = 0;
        long offset = 0, size = 0;
        uint crc = 0;
        bool sliced = false;
        var shape = new List<long>();
        var r = new ProtoReader(value, source);
        while (r.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1: r.Expect(wire, 0, "dtype"); dtype = (int)r.ReadVarint(); break;
                case 2:
                    r.Expect(wire, 2, "shape");
                    var s = new ProtoReader(r.ReadBytes(), source);
                    while (s.Next(out int sf, out int sw))
                    {
                        if (sf == 2 && sw == 2)
                        {
                            long dim = 0;
                            var d = new ProtoReader(s.ReadBytes(), source);
                            while (d.Next(out int df, out int dw))
                            {
                                if (df == 1 && dw == 0) dim = (long)d.ReadVarint();
                                else d.Skip(dw);
                            }
                            if (dim < 0) throw new InvalidDataException($"{source}: tensor '{name}' has an unknown dimension.");
                            shape.Add(dim);
                        }
                        else if (sf == 3 && sw == 0 && s.ReadVarint() != 0)
                            throw new InvalidDataException($"{source}: tensor '{name}' has unknown rank.");
                        else if (!(sf == 3 && sw == 0)) s.Skip(sw);
                    }
                    break;
                case 3: r.Expect(wire, 0, "shard_id"); shardId = (int)r.ReadVarint(); break;
                case 4: r.Expect(wire, 0, "offset"); offset = (long)r.ReadVarint(); break;
                case 5: r.Expect(wire, 0, "size"); size = (long)r.ReadVarint(); break;
                case 6: r.Expect(wire, 5, "crc32c"); crc = r.ReadFixed32(); break;
                case 7: r.Skip(wire); sliced = true; break;
                default: r.Skip(wire); break;
            }
        }
        if (offset < 0 || size < 0) throw new InvalidDataException($"{source}: tensor '{name}' has a negative offset or size.");
        return new BundleEntry(name, (TfDataType)dtype, shape.ToArray(), shardId, offset, size, crc, sliced);
    }
}

/// <summary>Receives consecutive whole rows of a tensor streamed by <see cref="TensorBundleReader.ReadFloat32Rows"/>.</summary>
internal delegate void RowChunkConsumer(int firstRow, ReadOnlySpan<float> rows);
