using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Unicode;
using GptSharp.Tensors;

namespace GptSharp.Tokenization;

/// <summary>
/// GPT-2's byte-level BPE tokenizer, giving the same ids as tiktoken's <c>get_encoding("gpt2")</c>, which the
/// book uses: <c>tokenizer.encode(text, allowed_special={"&lt;|endoftext|&gt;"})</c> and <c>tokenizer.decode(ids)</c>.
/// </summary>
/// <remarks>
/// The vocabulary is embedded in the library and loaded once, on first use of <see cref="Instance"/>.
/// Encoding converts the text to UTF-8, cuts it into pieces with <see cref="PreTokenizer"/>, and maps each piece
/// to ids: a piece that is itself a token is one hash lookup (tiktoken's shortcut), a piece seen before comes
/// from this thread's <see cref="MergeCache"/>, and only new pieces run the byte-pair merges.
/// All methods are thread-safe.
/// </remarks>
public sealed class Gpt2Tokenizer
{
    /// <summary>Id of <c>&lt;|endoftext|&gt;</c>.</summary>
    public const int EndOfTextId = Gpt2Vocabulary.EndOfTextId;

    /// <summary>Number of token ids: 50,256 byte-pair tokens plus <c>&lt;|endoftext|&gt;</c>.</summary>
    public const int VocabSize = Gpt2Vocabulary.VocabSize;

    /// <summary>GPT-2's only special token.</summary>
    public const string EndOfText = Gpt2Vocabulary.EndOfText;

    private static readonly Lazy<Gpt2Tokenizer> s_instance = new(() => new Gpt2Tokenizer(Gpt2Vocabulary.LoadEmbedded()));

    private static ReadOnlySpan<byte> EndOfTextUtf8 => "<|endoftext|>"u8;

    // Encode(string) converts text this short on the stack; longer text goes through a pooled buffer.
    private const int StackUtf8Limit = 1024;

    private readonly Gpt2Vocabulary _vocabulary;

    private Gpt2Tokenizer(Gpt2Vocabulary vocabulary) => _vocabulary = vocabulary;

    /// <summary>The vocabulary behind this tokenizer (for writers of vocabulary files: GGUF, tokenizer.json).</summary>
    internal Gpt2Vocabulary Vocabulary => _vocabulary;

    /// <summary>The tokenizer (the book's <c>tiktoken.get_encoding("gpt2")</c>), loaded on first use.</summary>
    public static Gpt2Tokenizer Instance => s_instance.Value;

    /// <summary>Every special token: pass as <c>allowedSpecial</c> for tiktoken's <c>allowed_special="all"</c>.</summary>
    public static IReadOnlySet<string> AllSpecialTokens { get; } =
        new System.Collections.ObjectModel.ReadOnlySet<string>(new HashSet<string>(StringComparer.Ordinal) { EndOfText });

    /// <summary>
    /// Inputs of at least this many UTF-8 bytes are encoded on all <see cref="Workers"/>: the text is cut where a word ends
    /// before white space (where the pre-tokenizer always cuts, whatever comes before or after), the chunks are encoded in
    /// parallel and their ids joined, so the ids are identical either way. Below it, starting the workers costs more than it saves.
    /// </summary>
    internal const int ParallelBytes = 4 << 20;

    /// <summary>
    /// Ids of <paramref name="text"/>, like tiktoken's <c>encode(text, allowed_special=...)</c>: each
    /// <c>&lt;|endoftext|&gt;</c> becomes <see cref="EndOfTextId"/> if it is in <paramref name="allowedSpecial"/>
    /// (strings that are not special tokens are ignored, as tiktoken does); if it is not allowed, the text is
    /// refused with an <see cref="ArgumentException"/> (use <see cref="EncodeOrdinary(string)"/> to encode it as plain text).
    /// Lone surrogates are encoded as U+FFFD, as tiktoken does. A big text is encoded on all cores (<see cref="ParallelBytes"/>).
    /// </summary>
    public int[] Encode(string text, IReadOnlySet<string>? allowedSpecial = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        var mode = ModeOf(allowedSpecial);
        return text.Length >= ParallelBytes ? EncodeValidUtf8Parallel(Encoding.UTF8.GetBytes(text), mode) : WithUtf8(text, mode);
    }

    /// <summary>Ids of <paramref name="text"/> with special-token text treated as plain text (tiktoken's <c>encode_ordinary</c>).</summary>
    public int[] EncodeOrdinary(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Length >= ParallelBytes ? EncodeValidUtf8Parallel(Encoding.UTF8.GetBytes(text), Mode.Ordinary) : WithUtf8(text, Mode.Ordinary);
    }

    /// <summary>
    /// <see cref="Encode(string, IReadOnlySet{string}?)"/> of UTF-8 bytes (a file's contents); ill-formed UTF-8 is an
    /// <see cref="InvalidDataException"/> naming the byte offset.
    /// </summary>
    public int[] Encode(ReadOnlyMemory<byte> utf8, IReadOnlySet<string>? allowedSpecial = null) => EncodeUtf8Memory(utf8, ModeOf(allowedSpecial));

    /// <summary><see cref="EncodeOrdinary(string)"/> of UTF-8 bytes; ill-formed UTF-8 is an <see cref="InvalidDataException"/> naming the byte offset.</summary>
    public int[] EncodeOrdinary(ReadOnlyMemory<byte> utf8) => EncodeUtf8Memory(utf8, Mode.Ordinary);

    private int[] EncodeUtf8Memory(ReadOnlyMemory<byte> utf8, Mode mode)
    {
        ThrowIfInvalidUtf8(utf8.Span);
        return utf8.Length >= ParallelBytes ? EncodeValidUtf8Parallel(utf8, mode) : EncodeValidUtf8(utf8.Span, mode);
    }

    /// <summary><see cref="Encode(ReadOnlyMemory{byte}, IReadOnlySet{string}?)"/> on this thread, whatever the size (tests compare the two paths).</summary>
    internal int[] EncodeUtf8(ReadOnlySpan<byte> utf8, IReadOnlySet<string>? allowedSpecial = null)
    {
        ThrowIfInvalidUtf8(utf8);
        return EncodeValidUtf8(utf8, ModeOf(allowedSpecial));
    }

    /// <summary><see cref="EncodeOrdinary(ReadOnlyMemory{byte})"/> on this thread, whatever the size.</summary>
    internal int[] EncodeOrdinaryUtf8(ReadOnlySpan<byte> utf8)
    {
        ThrowIfInvalidUtf8(utf8);
        return EncodeValidUtf8(utf8, Mode.Ordinary);
    }

    /// <summary><see cref="Encode(ReadOnlyMemory{byte}, IReadOnlySet{string}?)"/> on all <see cref="Workers"/>, whatever the size.</summary>
    internal int[] EncodeParallel(ReadOnlyMemory<byte> utf8, IReadOnlySet<string>? allowedSpecial = null)
    {
        ThrowIfInvalidUtf8(utf8.Span);
        return EncodeValidUtf8Parallel(utf8, ModeOf(allowedSpecial));
    }

    /// <summary><see cref="EncodeOrdinary(ReadOnlyMemory{byte})"/> on all <see cref="Workers"/>, whatever the size.</summary>
    internal int[] EncodeOrdinaryParallel(ReadOnlyMemory<byte> utf8)
    {
        ThrowIfInvalidUtf8(utf8.Span);
        return EncodeValidUtf8Parallel(utf8, Mode.Ordinary);
    }

    private static Mode ModeOf(IReadOnlySet<string>? allowedSpecial) => IsEndOfTextAllowed(allowedSpecial) ? Mode.SpecialAllowed : Mode.SpecialRefused;

    /// <summary>
    /// Text of <paramref name="ids"/>, like tiktoken's <c>decode</c>: the tokens' bytes joined and read as UTF-8,
    /// with each ill-formed sequence (e.g. a character cut between tokens) replaced by U+FFFD.
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        int length = DecodedLength(ids);
        int size = length + Gpt2Vocabulary.CopySlack;
        byte[]? rented = null;
        Span<byte> bytes = size <= StackUtf8Limit ? stackalloc byte[size] : (rented = ArrayPool<byte>.Shared.Rent(size));
        try
        {
            _vocabulary.CopyTokens(ids, bytes);
            return Encoding.UTF8.GetString(bytes[..length]);
        }
        finally
        {
            if (rented != null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>The raw bytes of <paramref name="ids"/> joined (tiktoken's <c>decode_bytes</c>).</summary>
    public byte[] DecodeBytes(ReadOnlySpan<int> ids)
    {
        // Every byte is written: the tokens' lengths add up to the array's.
        var bytes = GC.AllocateUninitializedArray<byte>(DecodedLength(ids));
        _vocabulary.CopyTokens(ids, bytes);
        return bytes;
    }

    /// <summary>The bytes of one token (tiktoken's <c>decode_single_token_bytes</c>).</summary>
    public ReadOnlySpan<byte> TokenBytes(int id)
    {
        CheckId(id);
        return _vocabulary.TokenBytes(id);
    }

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first id outside 0 … 50256.</summary>
    public static void CheckIds(ReadOnlySpan<int> ids)
    {
        foreach (int id in ids) CheckId(id);
    }

    private static void CheckId(int id)
    {
        if ((uint)id >= VocabSize)
            throw new ArgumentException($"Token id {id} is not in the GPT-2 vocabulary (ids are 0 to {VocabSize - 1}).");
    }

    private int DecodedLength(ReadOnlySpan<int> ids)
    {
        long length = 0;
        foreach (int id in ids)
        {
            CheckId(id);
            length += _vocabulary.TokenLength(id);
        }
        if (length > Array.MaxLength) throw new ArgumentException($"{ids.Length} token ids decode to more than {Array.MaxLength} bytes.");
        return (int)length;
    }

    private enum Mode
    {
        /// <summary>encode_ordinary: special-token text is plain text.</summary>
        Ordinary,
        /// <summary>&lt;|endoftext|&gt; becomes its id.</summary>
        SpecialAllowed,
        /// <summary>&lt;|endoftext|&gt; in the text is an error (tiktoken's default disallowed_special="all").</summary>
        SpecialRefused,
    }

    private static bool IsEndOfTextAllowed(IReadOnlySet<string>? allowedSpecial) =>
        allowedSpecial != null && allowedSpecial.Contains(EndOfText);

    private int[] WithUtf8(string text, Mode mode)
    {
        // Short texts: the worst case (3 bytes per UTF-16 unit) on the stack; long ones: the exact count, pooled.
        int maxBytes = text.Length <= StackUtf8Limit / 3 ? text.Length * 3 : Encoding.UTF8.GetByteCount(text);
        byte[]? rented = null;
        Span<byte> buffer = maxBytes <= StackUtf8Limit ? stackalloc byte[maxBytes] : (rented = ArrayPool<byte>.Shared.Rent(maxBytes));
        try
        {
            // Lone surrogates become U+FFFD, as in tiktoken (which re-encodes such strings with "replace").
            int length = Encoding.UTF8.GetBytes(text, buffer);
            return EncodeValidUtf8(buffer[..length], mode);
        }
        finally
        {
            if (rented != null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private int[] EncodeValidUtf8(ReadOnlySpan<byte> utf8, Mode mode)
    {
        if (mode == Mode.SpecialRefused) ThrowIfContainsSpecial(utf8);
        var ids = new IdList(utf8.Length / 3 + 16);
        try
        {
            AppendIds(utf8, mode == Mode.SpecialAllowed, ref ids);
            return ids.ToArray();
        }
        finally
        {
            ids.Dispose();
        }
    }

    private static void ThrowIfContainsSpecial(ReadOnlySpan<byte> utf8)
    {
        if (utf8.IndexOf(EndOfTextUtf8) >= 0)
            throw new ArgumentException(
                $"The text contains a special token that is not allowed: {EndOfText}. Pass it in allowedSpecial to encode it as " +
                $"token {EndOfTextId}, or use EncodeOrdinary to encode it as plain text.");
    }

    /// <summary>
    /// Appends the ids of UTF-8 the caller has already checked (the corpus encoder validates as it reads, naming the file) to
    /// <paramref name="ids"/>; <paramref name="endOfTextAllowed"/> false is <c>encode_ordinary</c>.
    /// </summary>
    internal void AppendValidUtf8(ReadOnlySpan<byte> utf8, bool endOfTextAllowed, ref IdList ids) => AppendIds(utf8, endOfTextAllowed, ref ids);

    /// <summary>Appends the ids of valid UTF-8 to <paramref name="ids"/>, splitting at <c>&lt;|endoftext|&gt;</c> when allowed.</summary>
    private void AppendIds(ReadOnlySpan<byte> utf8, bool endOfTextAllowed, ref IdList ids)
    {
        if (endOfTextAllowed)
        {
            int special;
            while ((special = utf8.IndexOf(EndOfTextUtf8)) >= 0)
            {
                AppendOrdinaryIds(utf8[..special], ref ids);
                ids.Add(EndOfTextId);
                utf8 = utf8[(special + EndOfTextUtf8.Length)..];
            }
        }
        AppendOrdinaryIds(utf8, ref ids);
    }

    /// <summary>The hot loop: pre-tokenize and map each piece to ids.</summary>
    private void AppendOrdinaryIds(ReadOnlySpan<byte> utf8, ref IdList ids)
    {
        Gpt2Vocabulary vocabulary = _vocabulary;
        MergeCache? cache = null;
        int maxTokenLength = vocabulary.MaxTokenLength;
        ref byte text = ref MemoryMarshal.GetReference(utf8);
        int n = utf8.Length;
        int start = 0;
        while (start < n)
        {
            int end = PreTokenizer.PieceEnd(utf8, start);
            int length = end - start;
            if (length <= Gpt2Vocabulary.ShortLength)
            {
                ulong key = PackAt(ref text, start, length, n);
                int id = length == 1 ? vocabulary.ByteToId[(int)key] : vocabulary.ShortRank(key, length);
                if (id >= 0)
                {
                    ids.Add(id);
                    start = end;
                    continue;
                }
            }
            ReadOnlySpan<byte> piece = utf8[start..end];
            start = end;
            ulong hash = ByteHash.Hash(piece);
            if (length > Gpt2Vocabulary.ShortLength && length <= maxTokenLength)
            {
                int id = vocabulary.LongRank(piece, hash);
                if (id >= 0)
                {
                    ids.Add(id);
                    continue;
                }
            }
            cache ??= MergeCache.Current;
            if (cache.TryGet(piece, hash, out ReadOnlySpan<int> cached))
            {
                ids.AddRange(cached);
                continue;
            }
            int first = ids.Count;
            BytePairMerge.Encode(vocabulary, piece, ref ids);
            cache.Add(piece, hash, ids.AsSpan()[first..]);
        }
    }

    /// <summary>
    /// <see cref="Gpt2Vocabulary.Pack"/> of text[start .. start + length) (length 1 to 8), with one unaligned load
    /// where 8 bytes are readable, masked to the piece.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong PackAt(ref byte text, int start, int length, int n)
    {
        ulong word;
        if (!BitConverter.IsLittleEndian) return Gpt2Vocabulary.Pack(MemoryMarshal.CreateReadOnlySpan(ref Unsafe.Add(ref text, start), length));
        if (start + 8 <= n) word = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref text, start));
        else if (n >= 8) word = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref text, n - 8)) >> ((start + 8 - n) * 8);
        else return Gpt2Vocabulary.Pack(MemoryMarshal.CreateReadOnlySpan(ref Unsafe.Add(ref text, start), length));
        return word & (ulong.MaxValue >> ((8 - length) * 8));
    }

    // Chunks of about this many bytes are the units of work of the parallel encoder.
    private const int ParallelChunkBytes = 1 << 20;

    private int[] EncodeValidUtf8Parallel(ReadOnlyMemory<byte> utf8, Mode mode)
    {
        if (mode == Mode.SpecialRefused) ThrowIfContainsSpecial(utf8.Span);
        if (Workers.Count == 1 || utf8.Length < 2 * ParallelChunkBytes) return EncodeValidUtf8(utf8.Span, mode);

        List<int> bounds = ChunkBounds(utf8.Span, ParallelChunkBytes);
        var chunkIds = new IdList[bounds.Count - 1];
        bool endOfTextAllowed = mode == Mode.SpecialAllowed;
        try
        {
            Workers.Run(chunkIds.Length, chunk =>
            {
                ref IdList ids = ref chunkIds[chunk];
                ids = new IdList((bounds[chunk + 1] - bounds[chunk]) / 3 + 16);
                AppendIds(utf8.Span[bounds[chunk]..bounds[chunk + 1]], endOfTextAllowed, ref ids);
            });

            long total = 0;
            foreach (var ids in chunkIds) total += ids.Count;
            if (total > Array.MaxLength) throw new ArgumentException($"The text has more than {Array.MaxLength} tokens.");
            var result = GC.AllocateUninitializedArray<int>((int)total);
            int at = 0;
            foreach (var ids in chunkIds)
            {
                ids.AsSpan().CopyTo(result.AsSpan(at));
                at += ids.Count;
            }
            return result;
        }
        finally
        {
            for (int i = 0; i < chunkIds.Length; i++) chunkIds[i].Dispose();
        }
    }

    /// <summary>
    /// Offsets that cut <paramref name="utf8"/> into chunks of about <paramref name="chunkBytes"/>, each cut at a
    /// position p where byte p - 1 is an ASCII non-space and byte p is ASCII white space. No piece crosses p (no
    /// alternative of the pattern matches across a non-space → space edge), and the pieces on either side do not
    /// depend on the other side (the only look-ahead, <c>\s+(?!\S)</c>, and the optional leading space both
    /// start at p or later), so encoding the chunks separately gives the same ids. <c>&lt;|endoftext|&gt;</c>
    /// holds no space, so it is never cut either.
    /// </summary>
    internal static List<int> ChunkBounds(ReadOnlySpan<byte> utf8, int chunkBytes)
    {
        var bounds = new List<int> { 0 };
        int target = chunkBytes;
        while (target < utf8.Length)
        {
            int cut = -1;
            for (int p = Math.Max(target, 1); p < utf8.Length; p++)
            {
                if (IsSafeCut(utf8, p))
                {
                    cut = p;
                    break;
                }
            }
            if (cut < 0) break;
            bounds.Add(cut);
            target = cut + chunkBytes;
        }
        bounds.Add(utf8.Length);
        return bounds;
    }

    /// <summary>True where <see cref="ChunkBounds"/> may cut: byte p - 1 is an ASCII non-space and byte p is ASCII white space.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsSafeCut(ReadOnlySpan<byte> utf8, int p) =>
        PreTokenizer.IsAsciiSpace(utf8[p]) && utf8[p - 1] < 0x80 && !PreTokenizer.IsAsciiSpace(utf8[p - 1]);

    /// <summary>
    /// The last position in <paramref name="utf8"/> (after its first byte) where the text may be cut without changing its ids (see
    /// <see cref="ChunkBounds"/>), or -1: a stream is encoded block by block up to such a cut, the rest carried into the next block.
    /// </summary>
    internal static int LastSafeCut(ReadOnlySpan<byte> utf8)
    {
        for (int p = utf8.Length - 1; p >= 1; p--)
            if (IsSafeCut(utf8, p)) return p;
        return -1;
    }

    /// <summary>Offset of the first byte of <paramref name="utf8"/> that starts an ill-formed UTF-8 sequence, or -1 if it is all valid.</summary>
    public static int IndexOfInvalidUtf8(ReadOnlySpan<byte> utf8)
    {
        if (Utf8.IsValid(utf8)) return -1;
        Span<char> scratch = stackalloc char[1024];
        int offset = 0;
        while (true)
        {
            var status = Utf8.ToUtf16(utf8[offset..], scratch, out int read, out _, replaceInvalidSequences: false, isFinalBlock: true);
            offset += read;
            switch (status)
            {
                case System.Buffers.OperationStatus.Done:
                    return -1;
                case System.Buffers.OperationStatus.DestinationTooSmall:
                    continue;
                default:
                    return offset;
            }
        }
    }

    private static void ThrowIfInvalidUtf8(ReadOnlySpan<byte> utf8)
    {
        if (Utf8.IsValid(utf8)) return;
        int offset = IndexOfInvalidUtf8(utf8);
        throw new InvalidDataException($"The input is not valid UTF-8: byte 0x{utf8[offset]:x2} at offset {offset} does not start a well-formed sequence.");
    }
}
