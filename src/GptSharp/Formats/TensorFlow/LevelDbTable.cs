using System.Buffers.Binary;

namespace GptSharp.Formats.TensorFlow;

/// <summary>
/// Reader for the LevelDB table ("SSTable") format that TensorFlow uses for a bundle's <c>.index</c>
/// file (tensorflow/core/lib/io/table_format.txt, format.cc, block_builder.cc):
/// <code>
/// [data block][trailer] ... [metaindex block][trailer] [index block][trailer] [footer: 48 bytes]
/// </code>
/// The footer holds two block handles and the magic number; every block is followed by a compression
/// byte and a masked crc32c; block entries are prefix-compressed keys with a restart array at the end.
/// The whole file is small (a few KB for GPT-2), so it is read into memory.
/// </summary>
internal static class LevelDbTable
{
    /// <summary>The table magic, stored little-endian in the last 8 bytes.</summary>
    public const ulong Magic = 0xdb4775248b80fb57UL;

    /// <summary>Encoded length of the footer: two max-size block handles (2 × 20) plus the magic.</summary>
    public const int FooterLength = 48;

    /// <summary>Compression byte + masked crc32c after every block.</summary>
    public const int BlockTrailerLength = 5;

    public const byte NoCompression = 0;
    public const byte SnappyCompression = 1;

    /// <summary>Reads every key/value pair of the table in key order; <paramref name="source"/> names the file in errors.</summary>
    public static List<KeyValuePair<string, byte[]>> ReadAll(ReadOnlySpan<byte> file, string source)
    {
        if (file.Length < FooterLength)
            throw new InvalidDataException($"{source}: truncated table: {file.Length} bytes is shorter than the {FooterLength}-byte footer.");
        var footer = file[^FooterLength..];
        ulong magic = BinaryPrimitives.ReadUInt64LittleEndian(footer[40..]);
        if (magic != Magic)
            throw new InvalidDataException($"{source}: not a TensorFlow checkpoint index (bad table magic 0x{magic:x16}, expected 0x{Magic:x16}).");
        int pos = 0;
        var metaindex = BlockHandle.Read(footer, ref pos, source);
        var index = BlockHandle.Read(footer, ref pos, source);
        _ = metaindex; // TensorFlow writes no filter or meta blocks; nothing in it is needed.

        var result = new List<KeyValuePair<string, byte[]>>();
        long decoded = 0, decodedBudget = 2L * file.Length;
        foreach (var (_, handleBytes) in ReadBlockEntries(ReadBlock(file, index, source, "index block"), source, "index block"))
        {
            int hp = 0;
            var dataHandle = BlockHandle.Read(handleBytes, ref hp, source);
            // Index entries could all point at the same big data block: bound the total work by the file's size.
            decoded += dataHandle.Size;
            if (decoded > decodedBudget)
                throw new InvalidDataException($"{source}: the index block points at more data-block bytes than a {file.Length}-byte table can hold (repeated block handles?).");
            foreach (var entry in ReadBlockEntries(ReadBlock(file, dataHandle, source, "data block"), source, "data block"))
                result.Add(new KeyValuePair<string, byte[]>(System.Text.Encoding.UTF8.GetString(entry.Key), entry.Value));
        }
        return result;
    }

    /// <summary>Verifies the trailer of the block at <paramref name="handle"/> and returns its (decompressed) contents.</summary>
    public static byte[] ReadBlock(ReadOnlySpan<byte> file, BlockHandle handle, string source, string what)
    {
        if (handle.Offset < 0 || handle.Size < 0 || handle.Offset > file.Length - FooterLength - BlockTrailerLength - handle.Size)
            throw new InvalidDataException($"{source}: truncated table: the {what} at offset {handle.Offset} ({handle.Size} bytes) runs past the end of the {file.Length}-byte file.");
        var contents = file.Slice((int)handle.Offset, (int)handle.Size);
        byte type = file[(int)(handle.Offset + handle.Size)];
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(file[(int)(handle.Offset + handle.Size + 1)..]);
        // The crc covers the contents and the compression byte (format.cc ReadBlock).
        uint actual = Crc32C.Finish(Crc32C.Update(Crc32C.Update(Crc32C.Initial, contents), [type]));
        if (actual != Crc32C.Unmask(stored))
            throw new InvalidDataException($"{source}: checksum mismatch in the {what} at offset {handle.Offset} (crc32c 0x{actual:x8}, stored 0x{Crc32C.Unmask(stored):x8}); the file is corrupt.");
        return type switch
        {
            NoCompression => contents.ToArray(),
            SnappyCompression => Snappy.Decompress(contents, source),
            _ => throw new InvalidDataException($"{source}: the {what} at offset {handle.Offset} uses unknown compression type {type} (expected 0 = none or 1 = Snappy)."),
        };
    }

    /// <summary>Parses the prefix-compressed entries of one block (block_builder.cc).</summary>
    public static List<KeyValuePair<byte[], byte[]>> ReadBlockEntries(byte[] block, string source, string what)
    {
        if (block.Length < 4) throw new InvalidDataException($"{source}: {what} of {block.Length} bytes is too short for its restart count.");
        uint restarts = BinaryPrimitives.ReadUInt32LittleEndian(block.AsSpan(block.Length - 4));
        long entriesEnd = block.Length - 4 - 4L * restarts;
        if (restarts == 0 || entriesEnd < 0)
            throw new InvalidDataException($"{source}: {what} has an invalid restart count {restarts}.");

        var entries = new List<KeyValuePair<byte[], byte[]>>();
        byte[] previous = [];
        int pos = 0;
        // Prefix sharing lets each entry repeat the previous key for free: n entries of a few bytes could rebuild
        // keys of total length ~n²/2. Real keys (tensor names) decode to a few times the block's size at most.
        long keyBytes = 0, keyBudget = 64L * block.Length + (1 << 20);
        while (pos < entriesEnd)
        {
            uint shared = ReadVarint32(block, ref pos, source, what);
            uint nonShared = ReadVarint32(block, ref pos, source, what);
            uint valueLength = ReadVarint32(block, ref pos, source, what);
            if (shared > previous.Length || (long)nonShared + valueLength > entriesEnd - pos)
                throw new InvalidDataException($"{source}: {what} has a malformed entry at byte {pos}.");
            keyBytes += shared + nonShared;
            if (keyBytes > keyBudget)
                throw new InvalidDataException($"{source}: {what} of {block.Length} bytes decodes to more than {keyBudget} bytes of keys (prefix-sharing bomb?).");
            var key = new byte[shared + nonShared];
            previous.AsSpan(0, (int)shared).CopyTo(key);
            block.AsSpan(pos, (int)nonShared).CopyTo(key.AsSpan((int)shared));
            pos += (int)nonShared;
            entries.Add(new(key, block.AsSpan(pos, (int)valueLength).ToArray()));
            pos += (int)valueLength;
            previous = key;
        }
        return entries;
    }

    private static uint ReadVarint32(byte[] block, ref int pos, string source, string what)
    {
        uint value = 0;
        for (int shift = 0; shift < 35; shift += 7)
        {
            if (pos >= block.Length) throw new InvalidDataException($"{source}: {what} ends inside a varint.");
            byte b = block[pos++];
            value |= (uint)(b & 0x7f) << shift;
            if (b < 0x80) return value;
        }
        throw new InvalidDataException($"{source}: {what} has a varint longer than 5 bytes.");
    }
}

/// <summary>Offset and size (without the 5-byte trailer) of a block: two varint64s.</summary>
internal readonly record struct BlockHandle(long Offset, long Size)
{
    public static BlockHandle Read(ReadOnlySpan<byte> data, ref int pos, string source)
    {
        long offset = ReadVarint64(data, ref pos, source);
        long size = ReadVarint64(data, ref pos, source);
        return new BlockHandle(offset, size);
    }

    private static long ReadVarint64(ReadOnlySpan<byte> data, ref int pos, string source)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (pos >= data.Length) throw new InvalidDataException($"{source}: truncated block handle.");
            byte b = data[pos++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) return value > long.MaxValue ? throw new InvalidDataException($"{source}: block handle out of range.") : (long)value;
        }
        throw new InvalidDataException($"{source}: malformed block handle varint.");
    }
}
