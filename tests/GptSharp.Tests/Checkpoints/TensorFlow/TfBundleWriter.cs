using System.Buffers.Binary;
using System.Runtime.InteropServices;
using GptSharp.Formats;
using GptSharp.Formats.TensorFlow;

namespace GptSharp.Tests.Checkpoints.TensorFlow;

/// <summary>
/// Test-only writer of TensorFlow V2 bundles (what BundleWriter produces): the data shard in sorted key
/// order and a LevelDB-table index with prefix-compressed keys, restart points every
/// <c>restartInterval</c> entries, blocks cut at <c>blockSize</c> bytes and optionally Snappy-"compressed"
/// (literal-only Snappy, a valid stream), masked crc32cs everywhere. Lets tests build GPT-2 checkpoints
/// of any size without TensorFlow.
/// </summary>
internal static class TfBundleWriter
{
    public static void Write(string prefix, IReadOnlyDictionary<string, (long[] Shape, float[] Values)> tensors,
        int blockSize = 262144, bool snappy = false, int restartInterval = 16)
        => Write(prefix, tensors.ToDictionary(t => t.Key, t => t.Value.Shape), name => tensors[name].Values, blockSize, snappy, restartInterval);

    /// <summary>
    /// Streaming form: <paramref name="values"/> makes each tensor's data when it is written, so only one tensor is in
    /// memory at a time (a synthetic GPT-2 XL is 6.2 GB).
    /// </summary>
    public static void Write(string prefix, IReadOnlyDictionary<string, long[]> shapes, Func<string, float[]> values,
        int blockSize = 262144, bool snappy = false, int restartInterval = 16)
    {
        var names = shapes.Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();
        var entries = new List<(byte[] Key, byte[] Value)> { ([], Header()) };
        using (var data = File.Create(prefix + ".data-00000-of-00001"))
        {
            foreach (string name in names)
            {
                var bytes = MemoryMarshal.AsBytes(values(name).AsSpan());
                uint crc = Crc32C.Mask(Crc32C.Compute(bytes));
                entries.Add((System.Text.Encoding.UTF8.GetBytes(name), Entry(shapes[name], data.Position, bytes.Length, crc)));
                data.Write(bytes);
            }
        }

        using var index = new MemoryStream();
        var indexEntries = new List<(byte[] Key, byte[] Value)>();
        var block = new List<(byte[] Key, byte[] Value)>();
        int blockBytes = 0;
        void Flush()
        {
            if (block.Count == 0) return;
            var handle = WriteBlock(index, BuildBlock(block, restartInterval), snappy);
            indexEntries.Add((block[^1].Key, handle));
            block.Clear();
            blockBytes = 0;
        }
        foreach (var e in entries)
        {
            block.Add(e);
            blockBytes += e.Key.Length + e.Value.Length + 3;
            if (blockBytes >= blockSize) Flush();
        }
        Flush();
        var metaHandle = WriteBlock(index, BuildBlock([], 1), false);
        var indexHandle = WriteBlock(index, BuildBlock(indexEntries, 1), false);
        var footer = new byte[LevelDbTable.FooterLength];
        metaHandle.CopyTo(footer, 0);
        indexHandle.CopyTo(footer, metaHandle.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(footer.AsSpan(40), LevelDbTable.Magic);
        index.Write(footer);
        File.WriteAllBytes(prefix + ".index", index.ToArray());
    }

    /// <summary>An index table (LevelDB) of raw key/value entries, keys sorted by the caller (for hostile-file tests).</summary>
    internal static byte[] IndexTable(List<(byte[] Key, byte[] Value)> entries, int restartInterval = 16) =>
        IndexTable(BuildBlock(entries, restartInterval), entries.Count > 0 ? entries[^1].Key : []);

    /// <summary>An index table whose one data block is <paramref name="dataBlock"/> (already encoded), last key <paramref name="lastKey"/>.</summary>
    internal static byte[] IndexTable(byte[] dataBlock, byte[] lastKey)
    {
        using var index = new MemoryStream();
        var handle = WriteBlock(index, dataBlock, false);
        var metaHandle = WriteBlock(index, BuildBlock([], 1), false);
        var indexHandle = WriteBlock(index, BuildBlock([(lastKey, handle)], 1), false);
        var footer = new byte[LevelDbTable.FooterLength];
        metaHandle.CopyTo(footer, 0);
        indexHandle.CopyTo(footer, metaHandle.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(footer.AsSpan(40), LevelDbTable.Magic);
        index.Write(footer);
        return index.ToArray();
    }

    internal static byte[] Header(ulong numShards = 1)
    {
        var m = new MemoryStream();
        Tag(m, 1, 0); Varint(m, numShards);        // num_shards
        Tag(m, 3, 2); Varint(m, 2); Tag(m, 1, 0); Varint(m, 1); // version { producer: 1 }
        return m.ToArray();
    }

    internal static byte[] Entry(long[] shape, long offset, long size, uint maskedCrc)
    {
        var m = new MemoryStream();
        Tag(m, 1, 0); Varint(m, 1); // DT_FLOAT
        var s = new MemoryStream();
        foreach (long d in shape)
        {
            var dim = new MemoryStream();
            if (d != 0) { Tag(dim, 1, 0); Varint(dim, (ulong)d); }
            Tag(s, 2, 2); Varint(s, (ulong)dim.Length); dim.WriteTo(s);
        }
        Tag(m, 2, 2); Varint(m, (ulong)s.Length); s.WriteTo(m);
        // proto3 leaves out zero fields: shard_id is always 0 here, offset 0 for the first tensor.
        if (offset != 0) { Tag(m, 4, 0); Varint(m, (ulong)offset); }
        if (size != 0) { Tag(m, 5, 0); Varint(m, (ulong)size); }
        Tag(m, 6, 5); Span<byte> crc = stackalloc byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(crc, maskedCrc); m.Write(crc);
        return m.ToArray();
    }

    private static byte[] BuildBlock(List<(byte[] Key, byte[] Value)> entries, int restartInterval)
    {
        var m = new MemoryStream();
        var restarts = new List<uint> { 0 };
        byte[] previous = [];
        for (int i = 0; i < entries.Count; i++)
        {
            var (key, value) = entries[i];
            int shared = 0;
            if (i % restartInterval == 0)
            {
                if (i > 0) restarts.Add((uint)m.Length);
            }
            else
            {
                while (shared < previous.Length && shared < key.Length && previous[shared] == key[shared]) shared++;
            }
            Varint(m, (ulong)shared); Varint(m, (ulong)(key.Length - shared)); Varint(m, (ulong)value.Length);
            m.Write(key, shared, key.Length - shared);
            m.Write(value);
            previous = key;
        }
        Span<byte> u32 = stackalloc byte[4];
        foreach (uint r in restarts) { BinaryPrimitives.WriteUInt32LittleEndian(u32, r); m.Write(u32); }
        BinaryPrimitives.WriteUInt32LittleEndian(u32, (uint)restarts.Count); m.Write(u32);
        return m.ToArray();
    }

    /// <summary>Appends block + trailer; returns the encoded handle.</summary>
    private static byte[] WriteBlock(Stream file, byte[] contents, bool snappy)
    {
        byte type = 0;
        if (snappy) { contents = SnappyLiterals(contents); type = 1; }
        long offset = file.Position;
        file.Write(contents);
        uint crc = Crc32C.Finish(Crc32C.Update(Crc32C.Update(Crc32C.Initial, contents), [type]));
        file.WriteByte(type);
        Span<byte> u32 = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(u32, Crc32C.Mask(crc));
        file.Write(u32);
        var handle = new MemoryStream();
        Varint(handle, (ulong)offset); Varint(handle, (ulong)contents.Length);
        return handle.ToArray();
    }

    /// <summary>A valid Snappy stream made of literals only (tag 61: 2-byte length-1), chunks of ≤ 65536 bytes.</summary>
    internal static byte[] SnappyLiterals(byte[] raw)
    {
        var m = new MemoryStream();
        Varint(m, (ulong)raw.Length);
        for (int pos = 0; pos < raw.Length; pos += 65536)
        {
            int n = Math.Min(65536, raw.Length - pos);
            m.WriteByte(61 << 2);
            m.WriteByte((byte)((n - 1) & 0xff));
            m.WriteByte((byte)((n - 1) >> 8));
            m.Write(raw, pos, n);
        }
        return m.ToArray();
    }

    private static void Tag(Stream s, int field, int wire) => Varint(s, (ulong)((field << 3) | wire));

    private static void Varint(Stream s, ulong v)
    {
        while (v >= 0x80) { s.WriteByte((byte)(v | 0x80)); v >>= 7; }
        s.WriteByte((byte)v);
    }
}
