using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using GptSharp.Tensors;
using GptSharp.IO;

namespace GptSharp.Data;

/// <summary>What <c>gptsharp prepare</c> records about a token file (stored as JSON inside it).</summary>
internal sealed record TokenFileHeader
{
    [JsonPropertyName("format")] public string Format { get; init; } = TokenFile.FormatName;
    [JsonPropertyName("dtype")] public string DataType { get; init; } = "uint16";
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; }
    [JsonPropertyName("count")] public long Count { get; init; }
    [JsonPropertyName("separator_id")] public int SeparatorId { get; init; }
    [JsonPropertyName("sources")] public IReadOnlyList<string> Sources { get; init; } = [];
}

/// <summary>
/// A pre-tokenized corpus: token ids as little-endian uint16 (GPT-2's 50,257 ids fit), read through a
/// memory map so a corpus of any size trains without being loaded into RAM.
/// <para>Layout: 8-byte magic <c>GPTSTOK1</c>, uint64 token count, uint64 offset and uint64 length of
/// the JSON header (<see cref="TokenFileHeader"/>), zero padding to byte 64, the ids from byte 64,
/// then the JSON (written last, once the count is known).</para>
/// </summary>
internal sealed class TokenFile : ITokenSequence, IDisposable
{
    public const string FormatName = "gptsharp-tokens";
    public const int DataOffset = 64;
    private static ReadOnlySpan<byte> Magic => "GPTSTOK1"u8;
    private static readonly DataJsonContext IndentedJson = new(new JsonSerializerOptions { WriteIndented = true });

    private readonly MappedUInt16Ids _ids;

    private TokenFile(MappedUInt16Ids ids, TokenFileHeader header)
    {
        _ids = ids;
        Header = header;
    }

    public string Path => _ids.Path;

    /// <summary>The mapped ids (shared with the other token file formats, <see cref="TokenShard"/>).</summary>
    internal MappedUInt16Ids Ids => _ids;
    public TokenFileHeader Header { get; }
    public long Count => _ids.Count;

    /// <summary>True when the file starts with the token-file magic (so <c>--data</c> can take either text or tokens).</summary>
    public static bool IsTokenFile(string path)
    {
        if (!File.Exists(path)) return false;
        using var stream = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[8];
        return stream.Read(magic) == 8 && magic.SequenceEqual(Magic);
    }

    /// <summary>Maps a file written by <see cref="Write"/>; a truncated or foreign file is a clear error.</summary>
    public static TokenFile Open(string path)
    {
        long fileLength = new FileInfo(path).Length;
        TokenFileHeader header;
        using (var stream = File.OpenRead(path))
        {
            Span<byte> fixedPart = stackalloc byte[32];
            if (stream.Read(fixedPart) != 32 || !fixedPart[..8].SequenceEqual(Magic))
                throw new InvalidDataException($"{path}: not a GptSharp token file (run `gptsharp prepare` to make one).");
            long count = (long)BinaryPrimitives.ReadUInt64LittleEndian(fixedPart[8..]);
            long jsonOffset = (long)BinaryPrimitives.ReadUInt64LittleEndian(fixedPart[16..]);
            long jsonLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(fixedPart[24..]);
            if (count < 0 || jsonOffset != DataOffset + 2 * count || jsonLength <= 0 || jsonLength > 1 << 30
                || jsonOffset + jsonLength != fileLength)
                throw new InvalidDataException($"{path}: token file is truncated or corrupt (count {count}, {fileLength} bytes).");
            var json = new byte[jsonLength];
            stream.Position = jsonOffset;
            stream.ReadExactly(json);
            try
            {
                header = JsonSerializer.Deserialize(json, DataJsonContext.Default.TokenFileHeader)
                    ?? throw new InvalidDataException($"{path}: empty token file header.");
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{path}: token file header is not valid JSON ({e.Message}).");
            }
            if (header.Count != count || header.DataType != "uint16")
                throw new InvalidDataException($"{path}: token file header disagrees with its data (count {header.Count} vs {count}, dtype {header.DataType}).");
        }
        return new TokenFile(new MappedUInt16Ids(path, DataOffset, header.Count), header);
    }

    /// <summary>
    /// Checks that every id is below <paramref name="vocabSize"/>, before any training: an id outside the vocabulary would
    /// otherwise stop a run hours in. The error names the file, the byte offset, the token's index and the id.
    /// </summary>
    public void CheckIds(int vocabSize) => _ids.CheckIds(vocabSize);

    /// <summary>The index of the first id that is at least <paramref name="limit"/>, or -1 (a vectorized scan of the mapped ids).</summary>
    public long FindIdAtLeast(int limit, int maxVectorBits = 512) => _ids.FindIdAtLeast(limit, maxVectorBits);

    public void CopyTo(long start, Span<int> destination) => _ids.CopyTo(start, destination);

    /// <summary>
    /// Writes a token file atomically (<see cref="AtomicFile"/>: temp file, flush, rename): <paramref name="sources"/> are read by <paramref name="readDocument"/>, encoded
    /// one at a time by <paramref name="encode"/> and separated by <paramref name="separatorId"/>, which is
    /// what encoding the texts joined with <c>&lt;|endoftext|&gt;</c> gives. Memory use is one document.
    /// </summary>
    public static TokenFileHeader Write(string path, IReadOnlyList<string> sources, Func<int, string> readDocument,
        Func<string, int[]> encode, int vocabSize, int separatorId, Action<int, long>? progress = null) =>
        Write(path, vocabSize, separatorId, sources, write =>
        {
            long count = 0;
            for (int d = 0; d < sources.Count; d++)
            {
                int[] ids = encode(readDocument(d));
                if (d > 0) write([separatorId], sources[d]);
                write(ids, sources[d]);
                count += ids.Length + (d > 0 ? 1 : 0);
                progress?.Invoke(d, count);
            }
        });

    /// <summary>
    /// Writes a token file atomically from ids that <paramref name="produce"/> hands to the writer it is given, in order, as
    /// many times as it likes (the corpus encoder streams a whole corpus this way); the count and header are written last.
    /// </summary>
    internal static TokenFileHeader Write(string path, int vocabSize, int separatorId, IReadOnlyList<string> sources, Action<IdWriter> produce)
    {
        if (vocabSize > ushort.MaxValue + 1)
            throw new ArgumentException($"A vocabulary of {vocabSize} ids does not fit the uint16 token file.");
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
        TokenFileHeader? header = null;
        AtomicFile.Write(path, stream =>
        {
            stream.Write(new byte[DataOffset]);
            var writer = new UInt16IdWriter(stream, vocabSize);
            produce(writer.Write);
            long count = writer.Count;
            header = new TokenFileHeader { VocabSize = vocabSize, Count = count, SeparatorId = separatorId, Sources = sources };
            byte[] json = JsonSerializer.SerializeToUtf8Bytes(header, IndentedJson.TokenFileHeader);
            long jsonOffset = stream.Position;
            stream.Write(json);
            // The fixed part goes first in the file but is known last: seek back (the atomic stream is a file).
            var fixedPart = new byte[32];
            Magic.CopyTo(fixedPart);
            BinaryPrimitives.WriteUInt64LittleEndian(fixedPart.AsSpan(8), (ulong)count);
            BinaryPrimitives.WriteUInt64LittleEndian(fixedPart.AsSpan(16), (ulong)jsonOffset);
            BinaryPrimitives.WriteUInt64LittleEndian(fixedPart.AsSpan(24), (ulong)json.Length);
            stream.Position = 0;
            stream.Write(fixedPart);
        });
        return header!;
    }

    public void Dispose() => _ids.Dispose();
}

/// <summary>Hands ids to a token file being written; <paramref name="source"/> names where they came from, for the error an id outside the vocabulary gives.</summary>
internal delegate void IdWriter(ReadOnlySpan<int> ids, string source);

/// <summary>Writes ids as little-endian uint16 (the layout of every token file format), checking each against the vocabulary.</summary>
internal sealed class UInt16IdWriter(Stream stream, int vocabSize)
{
    private byte[] _buffer = new byte[1 << 16];

    /// <summary>Ids written so far.</summary>
    public long Count { get; private set; }

    public void Write(ReadOnlySpan<int> ids, string source)
    {
        if (_buffer.Length < 2 * ids.Length) _buffer = new byte[2 * ids.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)vocabSize)
                throw new InvalidDataException($"{source}: token id {id} is outside the vocabulary of {vocabSize}.");
            BinaryPrimitives.WriteUInt16LittleEndian(_buffer.AsSpan(2 * i), (ushort)id);
        }
        stream.Write(_buffer, 0, 2 * ids.Length);
        Count += ids.Length;
    }
}

/// <summary>A contiguous part of another token sequence (the train or validation share of a token file).</summary>
internal sealed class TokenSlice : ITokenSequence
{
    private readonly ITokenSequence _source;
    private readonly long _start;

    public TokenSlice(ITokenSequence source, long start, long count)
    {
        if (start < 0 || count < 0 || start + count > source.Count)
            throw new ArgumentException($"The range [{start}, {start + count}) is outside the {source.Count} token ids.");
        _source = source;
        _start = start;
        Count = count;
    }

    public long Count { get; }

    /// <summary>The sequence this is a part of, and where the part starts in it.</summary>
    public ITokenSequence Source => _source;
    public long Start => _start;

    public void CopyTo(long start, Span<int> destination)
    {
        if (start < 0 || start + destination.Length > Count)
            throw new ArgumentOutOfRangeException(nameof(start), $"Ids [{start}, {start + destination.Length}) are outside a slice of {Count}.");
        _source.CopyTo(_start + start, destination);
    }
}
