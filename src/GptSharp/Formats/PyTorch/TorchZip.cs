using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace GptSharp.Formats.PyTorch;

/// <summary>
/// The zip container of <c>torch.save</c> (PyTorch's <c>inline_container.cc</c>): entries STORED, local headers
/// with a data descriptor (so sizes come from the central directory), zip64 end records, data aligned to 64 bytes.
/// Reading gives each entry's absolute data offset, so tensor bytes are read straight from the file.
/// </summary>
internal sealed class TorchZipReader : IDisposable
{
    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, (long Offset, long Size, int Method)> _entries = new(StringComparer.Ordinal);

    public TorchZipReader(string path)
    {
        Path = path;
        _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            Length = RandomAccess.GetLength(_handle);
            ReadCentralDirectory();
        }
        catch
        {
            _handle.Dispose();
            throw;
        }
    }

    public string Path { get; }
    public long Length { get; }

    /// <summary>Entry names in central-directory order.</summary>
    public List<string> Names { get; } = new();

    public bool Contains(string name) => _entries.ContainsKey(name);

    public long SizeOf(string name) => Entry(name).Size;

    /// <summary>Reads <paramref name="destination"/>.Length bytes of entry <paramref name="name"/> starting at byte <paramref name="offset"/>.</summary>
    public void Read(string name, long offset, Span<byte> destination)
    {
        var (start, size) = Entry(name);
        if (offset < 0 || offset > size - destination.Length)
            throw Corrupt($"read of {destination.Length} bytes at {offset} runs past the end of record '{name}' ({size} bytes)");
        ReadAt(start + offset, destination);
    }

    public byte[] ReadAll(string name)
    {
        long size = SizeOf(name);
        if (size > Array.MaxLength) throw Corrupt($"record '{name}' ({size} bytes) is too large to read whole");
        var bytes = new byte[size];
        Read(name, 0, bytes);
        return bytes;
    }

    private (long Offset, long Size) Entry(string name)
    {
        if (!_entries.TryGetValue(name, out var e)) throw Corrupt($"record '{name}' is missing");
        // torch.save stores every record uncompressed; a compressed one only fails if it is actually needed.
        if (e.Method != 0) throw Corrupt($"record '{name}' is compressed (method {e.Method}); torch.save archives are stored uncompressed");
        return (e.Offset, e.Size);
    }

    private void ReadAt(long offset, Span<byte> destination)
    {
        if (!FileReads.TryReadExactly(_handle, offset, destination, out long end)) throw Corrupt($"unexpected end of file at byte {end} (truncated?)");
    }

    private void ReadCentralDirectory()
    {
        if (Length < 22) throw Corrupt("file too short to be a zip archive");
        int tailLength = (int)Math.Min(Length, 22 + 65535 + 20);
        var tail = new byte[tailLength];
        ReadAt(Length - tailLength, tail);
        int eocd = -1;
        for (int i = tailLength - 22; i >= 0; i--)
            if (BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(i)) == 0x06054b50) { eocd = i; break; }
        if (eocd < 0) throw Corrupt("no zip end-of-central-directory record (truncated?)");
        long count = BinaryPrimitives.ReadUInt16LittleEndian(tail.AsSpan(eocd + 10));
        long cdSize = BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(eocd + 12));
        long cdOffset = BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(eocd + 16));
        if (eocd >= 20 && BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(eocd - 20)) == 0x07064b50)
        {
            // zip64: the locator points at the zip64 end record, which holds the 64-bit values.
            long zip64Offset = (long)BinaryPrimitives.ReadUInt64LittleEndian(tail.AsSpan(eocd - 20 + 8));
            if (zip64Offset < 0 || zip64Offset > Length - 56) throw Corrupt("zip64 end record out of range");
            var z = new byte[56];
            ReadAt(zip64Offset, z);
            if (BinaryPrimitives.ReadUInt32LittleEndian(z) != 0x06064b50) throw Corrupt("bad zip64 end record");
            count = (long)BinaryPrimitives.ReadUInt64LittleEndian(z.AsSpan(32));
            cdSize = (long)BinaryPrimitives.ReadUInt64LittleEndian(z.AsSpan(40));
            cdOffset = (long)BinaryPrimitives.ReadUInt64LittleEndian(z.AsSpan(48));
        }
        if (count < 0 || cdOffset < 0 || cdSize < 0 || cdOffset > Length - cdSize || cdSize > int.MaxValue) throw Corrupt("central directory out of range (truncated?)");
        var cd = new byte[cdSize];
        ReadAt(cdOffset, cd);
        int p = 0;
        Span<byte> local = stackalloc byte[30];
        for (long i = 0; i < count; i++)
        {
            if (p + 46 > cd.Length || BinaryPrimitives.ReadUInt32LittleEndian(cd.AsSpan(p)) != 0x02014b50) throw Corrupt("bad central directory entry");
            int method = BinaryPrimitives.ReadUInt16LittleEndian(cd.AsSpan(p + 10));
            long compressed = BinaryPrimitives.ReadUInt32LittleEndian(cd.AsSpan(p + 20));
            long size = BinaryPrimitives.ReadUInt32LittleEndian(cd.AsSpan(p + 24));
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(cd.AsSpan(p + 28));
            int extraLength = BinaryPrimitives.ReadUInt16LittleEndian(cd.AsSpan(p + 30));
            int commentLength = BinaryPrimitives.ReadUInt16LittleEndian(cd.AsSpan(p + 32));
            long localOffset = BinaryPrimitives.ReadUInt32LittleEndian(cd.AsSpan(p + 42));
            if (p + 46 + nameLength + extraLength + commentLength > cd.Length) throw Corrupt("bad central directory entry");
            string name = Encoding.UTF8.GetString(cd, p + 46, nameLength);
            var extra = cd.AsSpan(p + 46 + nameLength, extraLength);
            while (extra.Length >= 4)
            {
                int id = BinaryPrimitives.ReadUInt16LittleEndian(extra);
                int len = BinaryPrimitives.ReadUInt16LittleEndian(extra[2..]);
                if (4 + len > extra.Length) break;
                if (id == 0x0001)
                {
                    // zip64 extended information: only the fields whose 32-bit value is saturated, in this order.
                    var z = extra.Slice(4, len);
                    int q = 0;
                    if (size == 0xFFFFFFFF && q + 8 <= z.Length) { size = (long)BinaryPrimitives.ReadUInt64LittleEndian(z[q..]); q += 8; }
                    if (compressed == 0xFFFFFFFF && q + 8 <= z.Length) { compressed = (long)BinaryPrimitives.ReadUInt64LittleEndian(z[q..]); q += 8; }
                    if (localOffset == 0xFFFFFFFF && q + 8 <= z.Length) { localOffset = (long)BinaryPrimitives.ReadUInt64LittleEndian(z[q..]); }
                }
                extra = extra[(4 + len)..];
            }
            p += 46 + nameLength + extraLength + commentLength;
            if (localOffset < 0 || localOffset > Length - 30) throw Corrupt($"record '{name}' starts past the end of the file (truncated?)");
            ReadAt(localOffset, local);
            if (BinaryPrimitives.ReadUInt32LittleEndian(local) != 0x04034b50) throw Corrupt($"bad local header for record '{name}'");
            long dataOffset = localOffset + 30 + BinaryPrimitives.ReadUInt16LittleEndian(local[26..]) + BinaryPrimitives.ReadUInt16LittleEndian(local[28..]);
            if (size < 0 || dataOffset > Length - size) throw Corrupt($"record '{name}' ({size} bytes) runs past the end of the file (truncated?)");
            _entries[name] = (dataOffset, size, method);
            Names.Add(name);
        }
    }

    private InvalidDataException Corrupt(string what) => new($"{Path}: not a valid PyTorch archive: {what}.");

    public void Dispose() => _handle.Dispose();
}

/// <summary>Writes a torch.save-style zip (stored entries, data on 64-byte boundaries, zip64 end records and offsets past 4 GiB) to a forward-only stream.</summary>
internal sealed class TorchZipWriter(Stream output)
{
    private readonly List<(byte[] Name, uint Crc, long Size, long Offset)> _central = new();
    private long _position;

    /// <summary>Adds an entry whose bytes come from <paramref name="writeData"/> (exactly <paramref name="size"/> bytes, CRC given).</summary>
    public void Add(string name, long size, uint crc, Action<Stream> writeData)
    {
        // A single record of 4 GiB or more would need zip64 sizes; no tensor gets there (a span is limited to 2 GiB).
        if (size >= 0xFFFFFFFF) throw new NotSupportedException($"zip record '{name}' is 4 GiB or larger; not supported.");
        var nameBytes = Encoding.UTF8.GetBytes(name);
        long offset = _position;
        // Pad with an extra field (id "FB", bytes 'Z') so the data starts on a 64-byte boundary, as PyTorch does.
        long headerEnd = offset + 30 + nameBytes.Length + 4;
        int padding = (int)((64 - headerEnd % 64) % 64);
        var header = new byte[30 + nameBytes.Length + 4 + padding];
        BinaryPrimitives.WriteUInt32LittleEndian(header, 0x04034b50);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(4), 45);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(14), crc);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(18), (uint)size);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(22), (uint)size);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(26), (ushort)nameBytes.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(28), (ushort)(4 + padding));
        nameBytes.CopyTo(header, 30);
        int extra = 30 + nameBytes.Length;
        header[extra] = (byte)'F';
        header[extra + 1] = (byte)'B';
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(extra + 2), (ushort)padding);
        header.AsSpan(extra + 4).Fill((byte)'Z');
        output.Write(header);
        _position += header.Length;
        writeData(output);
        _position += size;
        _central.Add((nameBytes, crc, size, offset));
    }

    public void Add(string name, byte[] data) => Add(name, data.Length, Crc32.Compute(data), s => s.Write(data));

    /// <summary>Writes the central directory and the end records.</summary>
    public void Finish()
    {
        long cdOffset = _position;
        var cd = new MemoryStream();
        Span<byte> b = stackalloc byte[46];
        Span<byte> z = stackalloc byte[12];
        foreach (var (name, crc, size, offset) in _central)
        {
            bool bigOffset = offset >= 0xFFFFFFFF;
            b.Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(b, 0x02014b50);
            BinaryPrimitives.WriteUInt16LittleEndian(b[4..], 45);
            BinaryPrimitives.WriteUInt16LittleEndian(b[6..], 45);
            BinaryPrimitives.WriteUInt32LittleEndian(b[16..], crc);
            BinaryPrimitives.WriteUInt32LittleEndian(b[20..], (uint)size);
            BinaryPrimitives.WriteUInt32LittleEndian(b[24..], (uint)size);
            BinaryPrimitives.WriteUInt16LittleEndian(b[28..], (ushort)name.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(b[30..], (ushort)(bigOffset ? 12 : 0));
            BinaryPrimitives.WriteUInt32LittleEndian(b[42..], bigOffset ? 0xFFFFFFFF : (uint)offset);
            cd.Write(b);
            cd.Write(name);
            if (bigOffset)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(z, 0x0001);
                BinaryPrimitives.WriteUInt16LittleEndian(z[2..], 8);
                BinaryPrimitives.WriteUInt64LittleEndian(z[4..], (ulong)offset);
                cd.Write(z);
            }
        }
        output.Write(cd.GetBuffer().AsSpan(0, (int)cd.Length));
        long cdSize = cd.Length;
        long zip64Offset = cdOffset + cdSize;
        // Zip64 end record and locator, always (as PyTorch writes them), then the classic end record.
        Span<byte> z64 = stackalloc byte[56 + 20 + 22];
        z64.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(z64, 0x06064b50);
        BinaryPrimitives.WriteUInt64LittleEndian(z64[4..], 44);
        BinaryPrimitives.WriteUInt16LittleEndian(z64[12..], 45);
        BinaryPrimitives.WriteUInt16LittleEndian(z64[14..], 45);
        BinaryPrimitives.WriteUInt64LittleEndian(z64[24..], (ulong)_central.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(z64[32..], (ulong)_central.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(z64[40..], (ulong)cdSize);
        BinaryPrimitives.WriteUInt64LittleEndian(z64[48..], (ulong)cdOffset);
        var loc = z64[56..];
        BinaryPrimitives.WriteUInt32LittleEndian(loc, 0x07064b50);
        BinaryPrimitives.WriteUInt64LittleEndian(loc[8..], (ulong)zip64Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(loc[16..], 1);
        var end = z64[76..];
        BinaryPrimitives.WriteUInt32LittleEndian(end, 0x06054b50);
        BinaryPrimitives.WriteUInt16LittleEndian(end[8..], (ushort)Math.Min(_central.Count, 0xFFFF));
        BinaryPrimitives.WriteUInt16LittleEndian(end[10..], (ushort)Math.Min(_central.Count, 0xFFFF));
        BinaryPrimitives.WriteUInt32LittleEndian(end[12..], (uint)Math.Min(cdSize, 0xFFFFFFFF));
        BinaryPrimitives.WriteUInt32LittleEndian(end[16..], (uint)Math.Min(cdOffset, 0xFFFFFFFF));
        output.Write(z64);
    }
}

/// <summary>CRC-32 (IEEE 802.3, zip's checksum), table-driven, eight bytes per step.</summary>
internal static class Crc32
{
    private static readonly uint[] Table = BuildTable();

    private static uint[] BuildTable()
    {
        var t = new uint[8 * 256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        for (int i = 0; i < 256; i++)
            for (int s = 1; s < 8; s++)
                t[s * 256 + i] = (t[(s - 1) * 256 + i] >> 8) ^ t[t[(s - 1) * 256 + i] & 0xFF];
        return t;
    }

    public static uint Compute(ReadOnlySpan<byte> data) => Append(0, data);

    /// <summary>Continues <paramref name="crc"/> (a previous result, 0 to start) over <paramref name="data"/>.</summary>
    public static uint Append(uint crc, ReadOnlySpan<byte> data)
    {
        var t = Table;
        uint c = ~crc;
        while (data.Length >= 8)
        {
            uint lo = BinaryPrimitives.ReadUInt32LittleEndian(data) ^ c;
            uint hi = BinaryPrimitives.ReadUInt32LittleEndian(data[4..]);
            c = t[7 * 256 + (lo & 0xFF)] ^ t[6 * 256 + ((lo >> 8) & 0xFF)] ^ t[5 * 256 + ((lo >> 16) & 0xFF)] ^ t[4 * 256 + (lo >> 24)]
              ^ t[3 * 256 + (hi & 0xFF)] ^ t[2 * 256 + ((hi >> 8) & 0xFF)] ^ t[256 + ((hi >> 16) & 0xFF)] ^ t[hi >> 24];
            data = data[8..];
        }
        foreach (byte x in data) c = t[(c ^ x) & 0xFF] ^ (c >> 8);
        return ~c;
    }
}
