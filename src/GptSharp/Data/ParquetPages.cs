using System.Buffers;
using System.Buffers.Binary;
using System.IO.Compression;

namespace GptSharp.Data;

/// <summary>Where the texts of Parquet pages go (non-null values in row order, each valid UTF-8).</summary>
internal interface IUtf8Texts
{
    void Add(ReadOnlySpan<byte> utf8);
}

/// <summary>The dictionary page of a column chunk, decompressed: entry i is <c>Bytes[(i == 0 ? 4 : Ends[i - 1] + 4) .. Ends[i]]</c>.</summary>
internal sealed record ParquetDictionary(byte[] Bytes, int[] Ends);

/// <summary>A data page v1 of a column chunk: where its bytes as stored start in its batch, and its header's fields.</summary>
internal readonly record struct ParquetDataPage(int Offset, int CompressedSize, int UncompressedSize, int Values, int Encoding, int LevelEncoding);

/// <summary>
/// Consecutive data pages of one column chunk (up to about a unit of text, at least one page), planned by
/// <see cref="ParquetPages.TryPlan"/> and handed on as stored, so that whoever tokenizes them decompresses and decodes them
/// (<see cref="ParquetPages.TryDecode"/>). Their bytes are <see cref="Length"/> bytes from <see cref="Start"/> in the chunk.
/// </summary>
internal sealed class ParquetPageBatch
{
    public required string Name { get; init; }
    public required string Path { get; init; }
    public required string Column { get; init; }
    public required int RowGroup { get; init; }

    /// <summary>Values (nulls included) of the row group before this batch's first, and in this batch.</summary>
    public required long FirstRow { get; init; }
    public int Rows { get; internal set; }

    public required int Codec { get; init; }
    public required int MaxDefinitionLevel { get; init; }
    public required ParquetDictionary? Dictionary { get; init; }
    public required int Start { get; init; }
    public int Length { get; internal set; }

    /// <summary>The pages' decompressed bytes (what decoding them costs, more or less).</summary>
    public long TextBytes { get; internal set; }
    public List<ParquetDataPage> Pages { get; } = [];
}

/// <summary>
/// The values of a flat BYTE_ARRAY column chunk as UTF-8 bytes, straight from its pages (format: parquet.thrift and
/// Encodings.md of apache/parquet-format), for the forms Hugging Face datasets use: data pages v1, PLAIN and dictionary
/// (PLAIN_DICTIONARY / RLE_DICTIONARY) values, RLE definition levels, and no compression, Snappy, gzip or Zstandard.
/// <see cref="TryPlan"/> reads the page headers of a chunk and returns false for any other form (the caller then asks
/// Parquet.Net, which reads every form and names what is corrupt); <see cref="TryDecode"/> decodes the planned pages and
/// returns false where they do not add up.
/// <para>
/// Why not Parquet.Net alone: it decodes each text into a new UTF-16 array, which the tokenizer needs back in UTF-8, and
/// that cost about half the tokenizer's time per byte. Here the pages are planned on the reading side (headers only) and
/// decompressed and decoded by the worker that tokenizes them, each text tokenized straight out of the decompressed page:
/// no copy of the text, no thread of its own competing with the tokenizer for the cores.
/// </para>
/// </summary>
internal static class ParquetPages
{
    private const int PlainEncoding = 0, PlainDictionary = 2, RleEncoding = 3, RleDictionary = 8;
    private const int MaxPageBytes = 256 << 20;
    private const int DataPage = 0, DictionaryPage = 2, DataPageV2 = 3; // v2: left to Parquet.Net

    /// <summary>
    /// Reads the page headers of <paramref name="chunk"/> (the column chunk's bytes as stored) holding <paramref name="values"/>
    /// values (nulls included), decodes its dictionary page if any, and cuts its data pages into batches of up to
    /// <paramref name="batchBytes"/> decompressed bytes (at least one page each). False: a form this decoder leaves to Parquet.Net.
    /// </summary>
    public static bool TryPlan(ReadOnlySpan<byte> chunk, int codec, long values, int maxDefinitionLevel, int batchBytes,
        string name, string path, string column, int rowGroup, List<ParquetPageBatch> batches)
    {
        batches.Clear();
        if (maxDefinitionLevel > 1 || codec is not (0 or 1 or 2 or 6)) return false;
        ParquetDictionary? dictionary = null;
        ParquetPageBatch? batch = null;
        long seen = 0;
        int position = 0;
        while (seen < values)
        {
            int headerStart = position;
            if (position >= chunk.Length || !PageHeader.TryRead(chunk[position..], out var header, out int headerLength)) return false;
            position += headerLength;
            if (header.CompressedSize < 0 || header.UncompressedSize < 0 || header.CompressedSize > chunk.Length - position) return false;
            // A page header may claim any size: a very large page is left to Parquet.Net rather than allocated here.
            if (header.UncompressedSize > MaxPageBytes) return false;
            var stored = chunk.Slice(position, header.CompressedSize);
            position += header.CompressedSize;
            switch (header.Type)
            {
                case DictionaryPage:
                    if (dictionary is not null || batch is not null || header.Encoding is not (PlainEncoding or PlainDictionary)
                        || header.Values < 0 || header.Values > header.UncompressedSize / 4) return false;
                    var bytes = new byte[header.UncompressedSize];
                    if (!Decompress(codec, stored, bytes)) return false;
                    var ends = new int[header.Values];
                    // Entries are PLAIN: each a 4-byte length and its bytes; ends are kept as offsets of the entry's last byte + 1.
                    int entry = 0;
                    for (int i = 0; i < header.Values; i++)
                    {
                        if (!TryPlainValue(bytes, ref entry, out _)) return false;
                        ends[i] = entry;
                    }
                    dictionary = new ParquetDictionary(bytes, ends);
                    break;
                case DataPage or DataPageV2:
                {
                    if (header.Values < 0 || header.Values > values - seen) return false;
                    if (header.Type != DataPage) return false; // v2 pages: Parquet.Net (pyarrow and Hugging Face write v1 by default)
                    if (maxDefinitionLevel > 0 && header.LevelEncoding != RleEncoding) return false;
                    if (header.Encoding is PlainDictionary or RleDictionary ? dictionary is null : header.Encoding != PlainEncoding) return false;
                    if (batch is not null && batch.TextBytes + header.UncompressedSize > batchBytes)
                    {
                        batches.Add(batch);
                        batch = null;
                    }
                    batch ??= new ParquetPageBatch
                    {
                        Name = name, Path = path, Column = column, RowGroup = rowGroup, FirstRow = seen, Codec = codec,
                        MaxDefinitionLevel = maxDefinitionLevel, Dictionary = dictionary, Start = headerStart,
                    };
                    batch.Pages.Add(new ParquetDataPage(position - header.CompressedSize - batch.Start, header.CompressedSize,
                        header.UncompressedSize, header.Values, header.Encoding, header.LevelEncoding));
                    batch.Rows += header.Values;
                    batch.TextBytes += header.UncompressedSize;
                    batch.Length = position - batch.Start;
                    seen += header.Values;
                    break;
                }
                default:
                    return false; // an index page, or something unknown
            }
        }
        if (batch is not null) batches.Add(batch);
        return true;
    }

    /// <summary>
    /// Decompresses and decodes the pages of <paramref name="batch"/> (<paramref name="stored"/>: its bytes as stored) and adds
    /// every non-null text to <paramref name="texts"/>, counting them in <paramref name="added"/> (bytes that are not valid UTF-8
    /// become U+FFFD, as Parquet.Net's decoding makes them). False: something does not add up, after <paramref name="added"/>
    /// texts (the caller asks Parquet.Net for the rest, or for what is wrong).
    /// </summary>
    public static bool TryDecode(ParquetPageBatch batch, ReadOnlySpan<byte> stored, IUtf8Texts texts, ref int added)
    {
        if (stored.Length != batch.Length) return false;
        int largest = 0, mostValues = 0;
        foreach (var p in batch.Pages) (largest, mostValues) = (Math.Max(largest, p.UncompressedSize), Math.Max(mostValues, p.Values));
        byte[] page = ArrayPool<byte>.Shared.Rent(Math.Max(largest, 1));
        int[] indexes = batch.Dictionary is null ? [] : ArrayPool<int>.Shared.Rent(Math.Max(mostValues, 1));
        try
        {
            foreach (var p in batch.Pages)
            {
                if (p.Offset < 0 || p.CompressedSize > stored.Length - p.Offset) return false;
                if (!Decompress(batch.Codec, stored.Slice(p.Offset, p.CompressedSize), page.AsSpan(0, p.UncompressedSize))) return false;
                ReadOnlySpan<byte> data = page.AsSpan(0, p.UncompressedSize), levels = default;
                if (batch.MaxDefinitionLevel > 0)
                {
                    if (data.Length < 4) return false;
                    int length = BinaryPrimitives.ReadInt32LittleEndian(data);
                    if (length < 0 || length > data.Length - 4) return false;
                    levels = data.Slice(4, length);
                    data = data[(4 + length)..];
                }
                int present = p.Values;
                if (batch.MaxDefinitionLevel > 0 && !TryCountPresent(levels, p.Values, out present)) return false;
                if (p.Encoding == PlainEncoding)
                {
                    int at = 0;
                    for (int i = 0; i < present; i++)
                    {
                        if (!TryPlainValue(data, ref at, out var value)) return false;
                        Add(texts, value);
                        added++;
                    }
                }
                else
                {
                    var dictionary = batch.Dictionary!;
                    if (data.Length < 1 || data[0] > 32) return false;
                    var ids = indexes.AsSpan(0, present);
                    if (!TryReadHybrid(data[1..], data[0], ids)) return false;
                    foreach (int id in ids)
                    {
                        if ((uint)id >= (uint)dictionary.Ends.Length) return false;
                        int start = id == 0 ? 4 : dictionary.Ends[id - 1] + 4;
                        Add(texts, dictionary.Bytes.AsSpan(start, dictionary.Ends[id] - start));
                        added++;
                    }
                }
            }
            return true;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(page);
            if (indexes.Length > 0) ArrayPool<int>.Shared.Return(indexes);
        }
    }

    /// <summary>Adds one text; bytes that are not valid UTF-8 become U+FFFD as Parquet.Net's decoding makes them.</summary>
    internal static void Add(IUtf8Texts texts, ReadOnlySpan<byte> value)
    {
        if (System.Text.Unicode.Utf8.IsValid(value)) texts.Add(value);
        else texts.Add(System.Text.Encoding.UTF8.GetBytes(System.Text.Encoding.UTF8.GetString(value)));
    }

    private static bool TryPlainValue(ReadOnlySpan<byte> data, ref int at, out ReadOnlySpan<byte> value)
    {
        value = default;
        if (data.Length - at < 4) return false;
        int length = BinaryPrimitives.ReadInt32LittleEndian(data[at..]);
        if (length < 0 || length > data.Length - at - 4) return false;
        value = data.Slice(at + 4, length);
        at += 4 + length;
        return true;
    }

    private static bool Decompress(int codec, ReadOnlySpan<byte> stored, Span<byte> output)
    {
        try
        {
            switch (codec)
            {
                case 0:
                    if (stored.Length != output.Length) return false;
                    stored.CopyTo(output);
                    return true;
                case 1:
                    return Snappier.Snappy.GetUncompressedLength(stored) == output.Length && Snappier.Snappy.Decompress(stored, output) == output.Length;
                case 6:
                    using (var zstd = new ZstdSharp.Decompressor())
                        return zstd.Unwrap(stored, output) == output.Length;
                case 2:
                    unsafe
                    {
                        fixed (byte* pointer = stored)
                        {
                            using var memory = new UnmanagedMemoryStream(pointer, stored.Length);
                            using var gzip = new GZipStream(memory, CompressionMode.Decompress);
                            gzip.ReadExactly(output);
                            return gzip.Read(new byte[1]) == 0;
                        }
                    }
                default:
                    return false;
            }
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or ArgumentException or ZstdSharp.ZstdException or IOException)
        {
            return false; // Parquet.Net reads it again and says what is wrong
        }
    }

    /// <summary>How many of <paramref name="count"/> definition levels (RLE/bit-packed hybrid, bit width 1) are 1: values present.</summary>
    private static bool TryCountPresent(ReadOnlySpan<byte> levels, int count, out int present)
    {
        present = 0;
        int done = 0, at = 0;
        while (done < count)
        {
            if (!TryVarint(levels, ref at, out uint header)) return false;
            if ((header & 1) == 0)
            {
                int run = (int)Math.Min(header >> 1, (uint)(count - done));
                if (at >= levels.Length || header >> 1 == 0) return false;
                byte level = levels[at++];
                if (level > 1) return false;
                if (level == 1) present += run;
                done += run;
            }
            else
            {
                long groups = header >> 1, bytes = groups; // 8 one-bit values a byte
                if (groups == 0 || bytes > levels.Length - at) return false;
                int n = (int)Math.Min(groups * 8, count - done);
                var packed = levels.Slice(at, (n + 7) / 8);
                for (int i = 0; i < packed.Length - 1; i++) present += System.Numerics.BitOperations.PopCount(packed[i]);
                int lastBits = n - 8 * (packed.Length - 1);
                present += System.Numerics.BitOperations.PopCount((uint)(packed[^1] & ((1 << lastBits) - 1)));
                at += (int)bytes;
                done += n;
            }
        }
        return true;
    }

    /// <summary>The RLE/bit-packed hybrid: exactly <c>output.Length</c> values of <paramref name="bitWidth"/> bits.</summary>
    private static bool TryReadHybrid(ReadOnlySpan<byte> data, int bitWidth, Span<int> output)
    {
        int done = 0, at = 0, byteWidth = (bitWidth + 7) / 8;
        while (done < output.Length)
        {
            if (!TryVarint(data, ref at, out uint header)) return false;
            if ((header & 1) == 0)
            {
                uint run = header >> 1;
                if (run == 0 || data.Length - at < byteWidth) return false;
                int value = 0;
                for (int b = 0; b < byteWidth; b++) value |= data[at + b] << (8 * b);
                at += byteWidth;
                if (bitWidth < 32 && (uint)value >> bitWidth != 0) return false;
                int n = (int)Math.Min(run, (uint)(output.Length - done));
                output.Slice(done, n).Fill(value);
                done += n;
            }
            else
            {
                long groups = header >> 1, bytes = groups * bitWidth;
                if (groups == 0 || bytes > data.Length - at) return false;
                int n = (int)Math.Min(groups * 8, output.Length - done);
                var packed = data.Slice(at, (int)bytes);
                ulong mask = bitWidth == 32 ? uint.MaxValue : (1UL << bitWidth) - 1;
                for (int i = 0; i < n; i++)
                {
                    long bit = (long)i * bitWidth;
                    int first = (int)(bit >> 3), shift = (int)(bit & 7);
                    ulong word = 0;
                    for (int b = 0; b < 5 && first + b < packed.Length; b++) word |= (ulong)packed[first + b] << (8 * b);
                    output[done + i] = (int)((word >> shift) & mask);
                }
                at += (int)bytes;
                done += n;
            }
        }
        return true;
    }

    /// <summary>A ULEB128 varint of at most 32 bits (run headers).</summary>
    private static bool TryVarint(ReadOnlySpan<byte> data, ref int at, out uint value)
    {
        bool ok = TryVarint64(data, ref at, out ulong raw);
        value = (uint)raw;
        return ok && raw <= uint.MaxValue;
    }

    /// <summary>A ULEB128 varint (Thrift's compact protocol and the hybrid run headers both use them).</summary>
    private static bool TryVarint64(ReadOnlySpan<byte> data, ref int at, out ulong value)
    {
        value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (at >= data.Length) return false;
            byte b = data[at++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return true;
        }
        return false;
    }

    /// <summary>The fields of parquet.thrift's PageHeader (and its data/dictionary headers) this decoder needs.</summary>
    private struct PageHeader
    {
        public int Type, UncompressedSize, CompressedSize;
        public int Values, Encoding, LevelEncoding;

        /// <summary>Reads a Thrift compact-protocol PageHeader; false if it is cut or malformed.</summary>
        public static bool TryRead(ReadOnlySpan<byte> data, out PageHeader header, out int length)
        {
            header = new PageHeader { Type = -1, UncompressedSize = -1, CompressedSize = -1 };
            var reader = new CompactReader(data);
            bool ok = reader.ReadStruct(ref header, 0);
            length = reader.Position;
            return ok && header.Type >= 0;
        }
    }

    /// <summary>Just enough of Thrift's compact protocol: field headers, integers, and skipping everything else.</summary>
    private ref struct CompactReader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        public int Position;

        /// <summary>
        /// Reads a struct: the PageHeader at <paramref name="level"/> 0, its data or dictionary page header at level 1 (their
        /// fields fill <paramref name="header"/>), any other struct skipped.
        /// </summary>
        public bool ReadStruct(ref PageHeader header, int level, int kind = 0)
        {
            if (level > 8) return false;
            short id = 0;
            while (true)
            {
                if (Position >= _data.Length) return false;
                byte b = _data[Position++];
                int type = b & 0x0F;
                if (type == 0) return true; // STOP
                int delta = b >> 4;
                if (delta != 0) id += (short)delta;
                else if (!ReadVarInt(out long full)) return false;
                else id = (short)full;
                if (type is 1 or 2) continue; // booleans carry their value in the type
                if (type is 4 or 5 or 6 && level <= 1)
                {
                    if (!ReadVarInt(out long value) || value is < int.MinValue or > int.MaxValue) return false;
                    int v = (int)value;
                    if (level == 0)
                    {
                        if (id == 1) header.Type = v;
                        else if (id == 2) header.UncompressedSize = v;
                        else if (id == 3) header.CompressedSize = v;
                    }
                    else if (kind == 5) // DataPageHeader: num_values, encoding, definition_level_encoding
                    {
                        if (id == 1) header.Values = v;
                        else if (id == 2) header.Encoding = v;
                        else if (id == 3) header.LevelEncoding = v;
                    }
                    else if (kind == 7) // DictionaryPageHeader: num_values, encoding
                    {
                        if (id == 1) header.Values = v;
                        else if (id == 2) header.Encoding = v;
                    }
                    continue;
                }
                if (type == 12 && level == 0 && id is 5 or 7)
                {
                    if (!ReadStruct(ref header, 1, id)) return false;
                    continue;
                }
                if (!Skip(type, level + 1)) return false;
            }
        }

        private bool Skip(int type, int level)
        {
            if (level > 16) return false;
            switch (type)
            {
                case 1 or 2: return true;
                case 3: Position++; return Position <= _data.Length;
                case 4 or 5 or 6: return ReadVarInt(out _);
                case 7: Position += 8; return Position <= _data.Length;
                case 8:
                    if (!ReadUnsigned(out long length) || length > _data.Length - Position) return false;
                    Position += (int)length;
                    return true;
                case 9 or 10:
                {
                    if (Position >= _data.Length) return false;
                    byte b = _data[Position++];
                    long size = b >> 4;
                    if (size == 15 && !ReadUnsigned(out size)) return false;
                    int element = b & 0x0F;
                    for (long i = 0; i < size; i++)
                    {
                        if (element is 1 or 2) { Position++; if (Position > _data.Length) return false; } // a boolean in a list is a byte
                        else if (!Skip(element, level + 1)) return false;
                    }
                    return true;
                }
                case 11:
                {
                    if (!ReadUnsigned(out long size)) return false;
                    if (size == 0) return true;
                    if (Position >= _data.Length) return false;
                    byte types = _data[Position++];
                    for (long i = 0; i < size; i++)
                        if (!SkipElement(types >> 4, level) || !SkipElement(types & 0x0F, level)) return false;
                    return true;
                }
                case 12:
                {
                    var ignored = new PageHeader();
                    return ReadStructSkipping(ref ignored, level);
                }
                default: return false;
            }
        }

        private bool SkipElement(int type, int level)
        {
            if (type is not (1 or 2)) return Skip(type, level + 1);
            Position++;
            return Position <= _data.Length;
        }

        private bool ReadStructSkipping(ref PageHeader ignored, int level)
        {
            short id = 0;
            while (true)
            {
                if (Position >= _data.Length) return false;
                byte b = _data[Position++];
                int type = b & 0x0F;
                if (type == 0) return true;
                if (b >> 4 != 0) id += (short)(b >> 4);
                else if (!ReadVarInt(out long full)) return false;
                else id = (short)full;
                if (!Skip(type, level + 1)) return false;
            }
        }

        /// <summary>A zigzag varint (Thrift's i16, i32 and i64).</summary>
        private bool ReadVarInt(out long value)
        {
            bool ok = TryVarint64(_data, ref Position, out ulong raw);
            value = (long)(raw >> 1) ^ -(long)(raw & 1);
            return ok;
        }

        /// <summary>A plain varint (lengths of binaries, sizes of lists and maps), at most 31 bits.</summary>
        private bool ReadUnsigned(out long value)
        {
            bool ok = TryVarint64(_data, ref Position, out ulong raw);
            value = (long)raw;
            return ok && raw <= int.MaxValue;
        }
    }
}

/// <summary>Texts of one row group as UTF-8 bytes one after the other; <see cref="Ends"/>[i] is where text i ends.</summary>
internal sealed class TextGroupBuilder(int capacity) : IUtf8Texts
{
    public byte[] Text = new byte[capacity];
    public int Length;
    public int[] Ends = new int[Math.Max(16, capacity / 1024)];
    public int Count;

    /// <summary>Adds one text; bytes that are not valid UTF-8 become U+FFFD as Parquet.Net's decoding makes them.</summary>
    public void Add(ReadOnlySpan<byte> value)
    {
        if (!System.Text.Unicode.Utf8.IsValid(value))
        {
            ParquetPages.Add(this, value);
            return;
        }
        if (Text.Length - Length < value.Length) Array.Resize(ref Text, (int)Math.Min(Array.MaxLength, Math.Max(Length + (long)value.Length, 2L * Text.Length)));
        value.CopyTo(Text.AsSpan(Length));
        Length += value.Length;
        if (Count == Ends.Length) Array.Resize(ref Ends, 2 * Ends.Length);
        Ends[Count++] = Length;
    }

    public ReadOnlySpan<byte> this[int i] => Text.AsSpan(i == 0 ? 0 : Ends[i - 1], Ends[i] - (i == 0 ? 0 : Ends[i - 1]));

    public void Clear() => Length = Count = 0;
}
