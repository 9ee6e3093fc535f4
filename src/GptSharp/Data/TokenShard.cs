using System.Buffers.Binary;

namespace GptSharp.Data;

/// <summary>The token file formats <see cref="TokenShard"/> reads: all little-endian uint16 ids after a header (or none).</summary>
internal enum TokenFileFormat
{
    /// <summary>GptSharp's own token file (<see cref="TokenFile"/>, made by <c>gptsharp prepare</c>).</summary>
    GptSharp,

    /// <summary>
    /// An llm.c shard (<c>dev/data/data_common.py</c>'s <c>write_datafile</c>): 256 int32 (magic 20240520, version 1, token
    /// count, zeros), then the ids.
    /// </summary>
    Llmc,

    /// <summary>nanoGPT's <c>train.bin</c> / <c>val.bin</c>: bare uint16 ids, no header.</summary>
    NanoGpt,
}

/// <summary>
/// One file of token ids in any of the <see cref="TokenFileFormat"/>s, memory-mapped. <see cref="Open"/> tells the formats
/// apart by their first bytes and checks the header against the file's length, so a truncated or foreign file is one clear
/// error naming it, not a crash hours into a run; <see cref="CheckIds"/> checks the ids against the vocabulary.
/// </summary>
internal sealed class TokenShard : ITokenSequence, IDisposable
{
    internal const int LlmcMagic = 20240520;
    internal const int LlmcVersion = 1;
    internal const int LlmcHeaderBytes = 256 * sizeof(int);
    private const int LlmcLlama3Magic = 20240801;

    private readonly MappedUInt16Ids _ids;
    private readonly IDisposable _owner;

    private TokenShard(MappedUInt16Ids ids, IDisposable owner, TokenFileFormat format)
    {
        _ids = ids;
        _owner = owner;
        Format = format;
    }

    public string Path => _ids.Path;
    public TokenFileFormat Format { get; }
    public long Count => _ids.Count;

    /// <summary>Opens a token file of any supported format (see <see cref="TokenFileFormat"/>).</summary>
    public static TokenShard Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such token file.");
        if (TokenFile.IsTokenFile(path))
        {
            var file = TokenFile.Open(path);
            return new TokenShard(file.Ids, file, TokenFileFormat.GptSharp);
        }
        long length = new FileInfo(path).Length;
        Span<byte> header = stackalloc byte[LlmcHeaderBytes];
        int read;
        using (var stream = File.OpenRead(path)) read = stream.ReadAtLeast(header, header.Length, throwOnEndOfStream: false);
        int magic = read >= 4 ? BinaryPrimitives.ReadInt32LittleEndian(header) : 0;
        if (magic == LlmcLlama3Magic)
            throw new InvalidDataException($"{path}: an llm.c Llama 3 shard (magic {LlmcLlama3Magic}, uint32 ids); GptSharp trains on GPT-2's uint16 ids (magic {LlmcMagic}).");
        if (magic == LlmcMagic)
        {
            if (read < LlmcHeaderBytes)
                throw new InvalidDataException($"{path}: an llm.c shard cut short inside its header ({length} bytes; the header alone is {LlmcHeaderBytes}).");
            int version = BinaryPrimitives.ReadInt32LittleEndian(header[4..]);
            if (version != LlmcVersion)
                throw new InvalidDataException($"{path}: llm.c shard version {version}; expected {LlmcVersion} (GPT-2 uint16 ids).");
            int count = BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
            long expected = LlmcHeaderBytes + 2L * count;
            if (count < 0 || expected != length)
                throw new InvalidDataException($"{path}: the llm.c header says {count} tokens ({expected} bytes with the header) but the file has {length} bytes: it is truncated or corrupt.");
            var ids = new MappedUInt16Ids(path, LlmcHeaderBytes, count);
            return new TokenShard(ids, ids, TokenFileFormat.Llmc);
        }
        if (length == 0) throw new InvalidDataException($"{path}: the token file is empty.");
        if (length % 2 != 0)
            throw new InvalidDataException($"{path}: {length} bytes is not a whole number of uint16 ids (nanoGPT's .bin), nor an llm.c shard (magic {LlmcMagic}) or a GptSharp token file: it is truncated or not a token file.");
        var bare = new MappedUInt16Ids(path, 0, length / 2);
        return new TokenShard(bare, bare, TokenFileFormat.NanoGpt);
    }

    /// <summary>Throws an error naming the file, the offset and the id when an id is not below <paramref name="vocabSize"/>.</summary>
    public void CheckIds(int vocabSize) => _ids.CheckIds(vocabSize);

    public void CopyTo(long start, Span<int> destination) => _ids.CopyTo(start, destination);

    /// <summary>The 1,024-byte llm.c header of a shard of <paramref name="count"/> tokens (llm.c keeps counts in an int32).</summary>
    internal static byte[] LlmcHeader(long count)
    {
        if (count is < 0 or > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(count), $"An llm.c shard holds at most {int.MaxValue} tokens, not {count}.");
        var header = new byte[LlmcHeaderBytes];
        BinaryPrimitives.WriteInt32LittleEndian(header, LlmcMagic);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(4), LlmcVersion);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), (int)count);
        return header;
    }

    public void Dispose() => _owner.Dispose();
}

/// <summary>
/// Several token files read as one run of ids, in the order given (a glob's files sorted by name: llm.c's
/// <c>fineweb_train_000001.bin</c>, <c>…000002.bin</c>, …). The shards stay separate files, each memory-mapped.
/// </summary>
internal sealed class TokenShards : ITokenSequence, IDisposable
{
    private readonly TokenShard[] _shards;
    private readonly long[] _starts; // _starts[i]: index of shard i's first id; _starts[^1] = Count

    private TokenShards(TokenShard[] shards)
    {
        _shards = shards;
        _starts = new long[shards.Length + 1];
        for (int i = 0; i < shards.Length; i++) _starts[i + 1] = _starts[i] + shards[i].Count;
    }

    public IReadOnlyList<TokenShard> Shards => _shards;
    public long Count => _starts[^1];

    /// <summary>Opens every file (all are closed again when one fails).</summary>
    public static TokenShards Open(IReadOnlyList<string> paths)
    {
        if (paths.Count == 0) throw new ArgumentException("No token files given.");
        var shards = new List<TokenShard>();
        try
        {
            foreach (string path in paths) shards.Add(TokenShard.Open(path));
            return new TokenShards([.. shards]);
        }
        catch
        {
            foreach (var shard in shards) shard.Dispose();
            throw;
        }
    }

    /// <summary>Checks every shard's ids against the vocabulary (the error names the file).</summary>
    public void CheckIds(int vocabSize)
    {
        foreach (var shard in _shards) shard.CheckIds(vocabSize);
    }

    /// <summary>The shard that holds id <paramref name="index"/> and the id's offset in it.</summary>
    public (int Shard, long Offset) Locate(long index)
    {
        if (index < 0 || index >= Count) throw new ArgumentOutOfRangeException(nameof(index), $"Id {index} is outside {Count} ids.");
        int shard = Array.BinarySearch(_starts, index);
        if (shard < 0) shard = ~shard - 1;
        while (_shards[shard].Count == 0 || _starts[shard + 1] <= index) shard++; // empty shards share a start
        return (shard, index - _starts[shard]);
    }

    public void CopyTo(long start, Span<int> destination)
    {
        if (start < 0 || start + destination.Length > Count)
            throw new ArgumentOutOfRangeException(nameof(start), $"Ids [{start}, {start + destination.Length}) are outside {_shards.Length} shards of {Count} ids.");
        while (destination.Length > 0)
        {
            var (shard, offset) = Locate(start);
            int n = (int)Math.Min(destination.Length, _shards[shard].Count - offset);
            _shards[shard].CopyTo(offset, destination[..n]);
            destination = destination[n..];
            start += n;
        }
    }

    public void Dispose()
    {
        foreach (var shard in _shards) shard.Dispose();
    }
}
