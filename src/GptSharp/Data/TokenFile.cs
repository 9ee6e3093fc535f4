using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.Intrinsics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using GptSharp.Tensors;
using GptSharp.Tensors.IO;

namespace GptSharp.Data;

/// <summary>What <c>gptsharp prepare</c> records about a token file (stored as JSON inside it).</summary>
public sealed record TokenFileHeader
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
public sealed unsafe class TokenFile : ITokenSequence, IDisposable
{
    public const string FormatName = "gptsharp-tokens";
    public const int DataOffset = 64;
    private static ReadOnlySpan<byte> Magic => "GPTSTOK1"u8;
    private static readonly DataJsonContext IndentedJson = new(new JsonSerializerOptions { WriteIndented = true });

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base;
    private readonly ushort* _ids;

    private TokenFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, TokenFileHeader header)
    {
        Path = path;
        _map = map;
        _view = view;
        Header = header;
        Count = header.Count;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref _base);
        _ids = (ushort*)(_base + _view.PointerOffset + DataOffset);
    }

    public string Path { get; }
    public TokenFileHeader Header { get; }
    public long Count { get; }

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
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        var view = map.CreateViewAccessor(0, fileLength, MemoryMappedFileAccess.Read);
        return new TokenFile(path, map, view, header);
    }

    /// <summary>
    /// Checks that every id is below <paramref name="vocabSize"/>, before any training: an id outside the vocabulary would
    /// otherwise stop a run hours in. The error names the file, the byte offset, the token's index and the id.
    /// </summary>
    public void CheckIds(int vocabSize)
    {
        long index = FindIdAtLeast(vocabSize);
        if (index >= 0)
            throw new InvalidDataException($"{Path}: token id {_ids[index]} at byte offset {DataOffset + 2 * index} (token {index:N0}) is outside the vocabulary of {vocabSize} ids: the file is corrupt or was made for another tokenizer.");
    }

    /// <summary>The index of the first id that is at least <paramref name="limit"/>, or -1 (a vectorized scan of the mapped ids).</summary>
    public long FindIdAtLeast(int limit, int maxVectorBits = 512)
    {
        if (limit > ushort.MaxValue) return -1;
        const int Chunk = 1 << 30; // span lengths are ints; a token file may hold more ids
        for (long start = 0; start < Count; start += Chunk)
        {
            int n = (int)Math.Min(Chunk, Count - start);
            int found = FirstAtLeast(new ReadOnlySpan<ushort>(_ids + start, n), (ushort)limit, maxVectorBits);
            if (found >= 0) return start + found;
        }
        return -1;
    }

    /// <summary>
    /// The first index of <paramref name="ids"/> holding a value of at least <paramref name="limit"/>, or -1: four vectors per
    /// block folded with max, then one compare (memory-bound, so the loop does as little as possible per byte).
    /// <paramref name="maxVectorBits"/> (512, 256 or 0) lets tests run the narrower paths on a wider machine.
    /// </summary>
    internal static unsafe int FirstAtLeast(ReadOnlySpan<ushort> ids, ushort limit, int maxVectorBits = 512)
    {
        var path = Gemm.BestPath;
        if (maxVectorBits < 512 && path == Gemm.KernelPath.Vector512) path = Gemm.KernelPath.Vector256;
        if (maxVectorBits < 256) path = Gemm.KernelPath.Scalar;
        fixed (ushort* p = ids)
            return (int)Simd.FindFirst(path, ids.Length, 4 * Vector256<ushort>.Count, 4 * Vector512<ushort>.Count, new AtLeastOp { Ids = p, Limit = limit });
    }

    private unsafe struct AtLeastOp : ISearchOp
    {
        public ushort* Ids;
        public ushort Limit;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly bool Matches(long i) => Ids[i] >= Limit;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly bool Any256(long i)
        {
            const int w = 16;
            var m = Vector256.Max(Vector256.Max(Vector256.Load(Ids + i), Vector256.Load(Ids + i + w)), Vector256.Max(Vector256.Load(Ids + i + 2 * w), Vector256.Load(Ids + i + 3 * w)));
            return Vector256.GreaterThanOrEqualAny(m, Vector256.Create(Limit));
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]

        public readonly bool Any512(long i)
        {
            const int w = 32;
            var m = Vector512.Max(Vector512.Max(Vector512.Load(Ids + i), Vector512.Load(Ids + i + w)), Vector512.Max(Vector512.Load(Ids + i + 2 * w), Vector512.Load(Ids + i + 3 * w)));
            return Vector512.GreaterThanOrEqualAny(m, Vector512.Create(Limit));
        }
    }

    public void CopyTo(long start, Span<int> destination)
    {
        if (start < 0 || start + destination.Length > Count)
            throw new ArgumentOutOfRangeException(nameof(start), $"Ids [{start}, {start + destination.Length}) are outside {Path} ({Count} ids).");
        ushort* source = _ids + start;
        for (int i = 0; i < destination.Length; i++) destination[i] = source[i];
    }

    /// <summary>
    /// Writes a token file atomically (<see cref="AtomicFile"/>: temp file, flush, rename): <paramref name="sources"/> are read by <paramref name="readDocument"/>, encoded
    /// one at a time by <paramref name="encode"/> and separated by <paramref name="separatorId"/>, which is
    /// what encoding the texts joined with <c>&lt;|endoftext|&gt;</c> gives. Memory use is one document.
    /// </summary>
    public static TokenFileHeader Write(string path, IReadOnlyList<string> sources, Func<int, string> readDocument,
        Func<string, int[]> encode, int vocabSize, int separatorId, Action<int, long>? progress = null)
    {
        if (vocabSize > ushort.MaxValue + 1)
            throw new ArgumentException($"A vocabulary of {vocabSize} ids does not fit the uint16 token file.");
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
        TokenFileHeader? header = null;
        AtomicFile.Write(path, stream =>
        {
            long count = 0;
            stream.Write(new byte[DataOffset]);
            byte[] buffer = [];
            for (int d = 0; d < sources.Count; d++)
            {
                int[] ids = encode(readDocument(d));
                int extra = d > 0 ? 1 : 0;
                int needed = 2 * (ids.Length + extra);
                if (buffer.Length < needed) buffer = new byte[needed];
                int at = 0;
                if (extra == 1) { BinaryPrimitives.WriteUInt16LittleEndian(buffer, (ushort)separatorId); at = 2; }
                foreach (int id in ids)
                {
                    if ((uint)id >= (uint)vocabSize)
                        throw new InvalidDataException($"{sources[d]}: token id {id} is outside the vocabulary of {vocabSize}.");
                    BinaryPrimitives.WriteUInt16LittleEndian(buffer.AsSpan(at), (ushort)id);
                    at += 2;
                }
                stream.Write(buffer, 0, at);
                count += ids.Length + extra;
                progress?.Invoke(d, count);
            }
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

    public void Dispose()
    {
        if (_base != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _base = null;
        }
        _view.Dispose();
        _map.Dispose();
    }
}

/// <summary>A contiguous part of another token sequence (the train or validation share of a token file).</summary>
public sealed class TokenSlice : ITokenSequence
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

    public void CopyTo(long start, Span<int> destination)
    {
        if (start < 0 || start + destination.Length > Count)
            throw new ArgumentOutOfRangeException(nameof(start), $"Ids [{start}, {start + destination.Length}) are outside a slice of {Count}.");
        _source.CopyTo(_start + start, destination);
    }
}
