using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace GptSharp.Tokenization;

/// <summary>
/// GPT-2's vocabulary as bytes: every token id's byte string, and the reverse lookup bytes → id
/// (which is also the BPE merge rank, as in tiktoken's <c>mergeable_ranks</c>).
/// Built once from OpenAI's <c>encoder.json</c> and checked against <c>vocab.bpe</c>, both embedded in the library.
/// </summary>
internal sealed class Gpt2Vocabulary
{
    public const int EndOfTextId = 50256;
    public const int VocabSize = 50257;
    public const string EndOfText = "<|endoftext|>";

    private readonly byte[] _bytes;      // every token's bytes, back to back, in id order, then CopySlack spare bytes
    private readonly int[] _offsets;     // token id's bytes are _bytes[_offsets[id] .. _offsets[id + 1]]

    /// <summary>Id of the single-byte token for each byte value.</summary>
    public readonly int[] ByteToId = new int[256];

    /// <summary>Tokens of up to this many bytes are keyed by their bytes packed into a ulong.</summary>
    public const int ShortLength = 8;

    // Two open-addressing tables of the ordinary tokens (not <|endoftext|>). Short tokens (most of them, and
    // nearly every English word) are keyed by their bytes packed little-endian into a ulong, so a lookup is one
    // multiply and one slot compare, with no trip to the token bytes. Longer ones are keyed by ByteHash: a slot
    // holds (high 32 bits of the hash << 32) | (id + 1), 0 when empty, and only a matching tag compares bytes.
    private readonly ShortSlot[] _shortSlots = new ShortSlot[1 << 17];
    private readonly ulong[] _longSlots = new ulong[1 << 15];

    private struct ShortSlot
    {
        public ulong Key;
        public int Length; // 0: empty
        public int Id;
    }

    /// <summary>Longest ordinary token in bytes: a longer byte string cannot be a token.</summary>
    public readonly int MaxTokenLength;

    private Gpt2Vocabulary(byte[] bytes, int[] offsets)
    {
        _bytes = bytes;
        _offsets = offsets;
        int max = 0;
        for (int id = 0; id < EndOfTextId; id++)
        {
            var token = TokenBytes(id);
            if (token.Length == 0 || Rank(token) >= 0) throw Bad("encoder.json", $"token {id} is empty or repeats an earlier token's bytes");
            if (token.Length <= ShortLength)
            {
                ulong key = Pack(token);
                int slot = ShortSlotOf(key, token.Length);
                while (_shortSlots[slot].Length != 0) slot = (slot + 1) & (_shortSlots.Length - 1);
                _shortSlots[slot] = new ShortSlot { Key = key, Length = token.Length, Id = id };
            }
            else
            {
                ulong hash = ByteHash.Hash(token);
                int slot = (int)hash & (_longSlots.Length - 1);
                while (_longSlots[slot] != 0) slot = (slot + 1) & (_longSlots.Length - 1);
                _longSlots[slot] = (hash & 0xFFFF_FFFF_0000_0000UL) | (uint)(id + 1);
            }
            max = Math.Max(max, token.Length);
            if (token.Length == 1) ByteToId[token[0]] = id;
        }
        MaxTokenLength = max;
    }

    /// <summary>Up to 8 bytes packed little-endian into a ulong (the rest zero).</summary>
    public static ulong Pack(ReadOnlySpan<byte> bytes)
    {
        ulong key = 0;
        for (int i = bytes.Length - 1; i >= 0; i--) key = (key << 8) | bytes[i];
        return key;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int ShortSlotOf(ulong key, int length)
    {
        ulong high = Math.BigMul(key ^ ((ulong)length << 61), 0x9E37_79B9_7F4A_7C15UL, out ulong low);
        return (int)(high ^ low) & (_shortSlots.Length - 1);
    }

    /// <summary>The id (= merge rank) of the ordinary token whose <paramref name="length"/> (1 to 8) bytes are packed in <paramref name="key"/>, or -1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int ShortRank(ulong key, int length)
    {
        ref ShortSlot slots = ref MemoryMarshal.GetArrayDataReference(_shortSlots);
        int mask = _shortSlots.Length - 1;
        int slot = ShortSlotOf(key, length);
        while (true)
        {
            ref ShortSlot entry = ref Unsafe.Add(ref slots, slot); // slot is masked: always in range
            if (entry.Key == key && entry.Length == length) return entry.Id;
            if (entry.Length == 0) return -1;
            slot = (slot + 1) & mask;
        }
    }

    /// <summary>The id (= merge rank) of the ordinary token with exactly these bytes, or -1.</summary>
    public int Rank(ReadOnlySpan<byte> piece)
    {
        if (piece.Length <= ShortLength) return piece.Length == 0 ? -1 : ShortRank(Pack(piece), piece.Length);
        if (piece.Length > MaxTokenLength) return -1;
        return LongRank(piece, ByteHash.Hash(piece));
    }

    /// <summary>
    /// <see cref="Rank"/> of a piece longer than <see cref="ShortLength"/> whose <see cref="ByteHash.Hash"/> the
    /// caller has computed already.
    /// </summary>
    public int LongRank(ReadOnlySpan<byte> piece, ulong hash)
    {
        ulong[] slots = _longSlots;
        int mask = slots.Length - 1;
        ulong tag = hash & 0xFFFF_FFFF_0000_0000UL;
        int slot = (int)hash & mask;
        while (true)
        {
            ulong entry = slots[slot];
            if (entry == 0) return -1;
            if ((entry & 0xFFFF_FFFF_0000_0000UL) == tag)
            {
                int id = (int)(uint)entry - 1;
                if (TokenBytes(id).SequenceEqual(piece)) return id;
            }
            slot = (slot + 1) & mask;
        }
    }

    public ReadOnlySpan<byte> TokenBytes(int id) => _bytes.AsSpan(_offsets[id], _offsets[id + 1] - _offsets[id]);

    public int TokenLength(int id) => _offsets[id + 1] - _offsets[id];

    /// <summary>Spare bytes after the last token (and, for speed, after the end of <see cref="CopyTokens"/>'s destination).</summary>
    public const int CopySlack = 16;

    /// <summary>
    /// Writes the bytes of <paramref name="ids"/> back to back into <paramref name="destination"/>, which must hold
    /// their total length. Tokens of up to 16 bytes (nearly all) are copied as one 16-byte block that spills into
    /// the next token's place, overwritten next, instead of a variable-length copy per token; within the last 16
    /// bytes of the destination tokens are copied exactly (so <see cref="CopySlack"/> spare bytes make every copy fast).
    /// </summary>
    public void CopyTokens(ReadOnlySpan<int> ids, Span<byte> destination)
    {
        ref byte source = ref MemoryMarshal.GetArrayDataReference(_bytes);
        ref int offsets = ref MemoryMarshal.GetArrayDataReference(_offsets);
        int at = 0;
        foreach (int id in ids)
        {
            if ((uint)id >= VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {id} is not in the GPT-2 vocabulary.");
            int start = Unsafe.Add(ref offsets, id);
            int length = Unsafe.Add(ref offsets, id + 1) - start;
            if (length <= CopySlack && at + CopySlack <= destination.Length)
                Unsafe.WriteUnaligned(ref destination[at], Unsafe.ReadUnaligned<System.Runtime.Intrinsics.Vector128<byte>>(ref Unsafe.Add(ref source, start)));
            else
                _bytes.AsSpan(start, length).CopyTo(destination[at..]);
            at += length;
        }
    }

    /// <summary>
    /// GPT-2's <c>bytes_to_unicode</c>: the printable character each byte is written as in encoder.json and vocab.bpe
    /// (and so in every byte-level BPE vocabulary file: Hugging Face's tokenizer.json, GGUF's <c>tokenizer.ggml.tokens</c>).
    /// </summary>
    public static readonly char[] ByteAlphabet = BuildByteAlphabet();

    private static char[] BuildByteAlphabet()
    {
        var alphabet = new char[256];
        int extra = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            alphabet[b] = (char)(printable ? b : 256 + extra++);
        }
        return alphabet;
    }

    /// <summary>Token <paramref name="id"/> as vocabulary files spell it: its bytes in <see cref="ByteAlphabet"/> (<c>&lt;|endoftext|&gt;</c> as itself).</summary>
    public string ByteLevelToken(int id)
    {
        if (id == EndOfTextId) return EndOfText;
        var bytes = TokenBytes(id);
        return string.Create(bytes.Length, this, (chars, vocabulary) =>
        {
            var token = vocabulary.TokenBytes(id);
            for (int i = 0; i < chars.Length; i++) chars[i] = ByteAlphabet[token[i]];
        });
    }

    /// <summary>GPT-2's merges in rank order, as vocab.bpe spells them (<c>"Ġ t"</c>): merge n makes token 256 + n.</summary>
    public static IEnumerable<string> MergeLines()
    {
        string[] lines = Encoding.UTF8.GetString(ReadResource("GptSharp.vocab.bpe")).Split('\n');
        for (int line = 1; line < lines.Length; line++)
        {
            string entry = lines[line].TrimEnd('\r');
            if (entry.Length > 0) yield return entry;
        }
    }

    /// <summary>Loads and validates the embedded <c>encoder.json</c> and <c>vocab.bpe</c>.</summary>
    public static Gpt2Vocabulary LoadEmbedded()
    {
        byte[] encoderJson = ReadResource("GptSharp.encoder.json");
        byte[] vocabBpe = ReadResource("GptSharp.vocab.bpe");

        var charToByte = new int[512];
        Array.Fill(charToByte, -1);
        for (int b = 0; b < 256; b++) charToByte[ByteAlphabet[b]] = b;

        var tokens = new byte[VocabSize][];
        var reader = new Utf8JsonReader(encoderJson);
        reader.Read();
        if (reader.TokenType != JsonTokenType.StartObject) throw Bad("encoder.json", "expected a JSON object");
        int count = 0;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            string name = reader.GetString()!;
            reader.Read();
            int id = reader.GetInt32();
            if ((uint)id >= VocabSize || tokens[id] != null) throw Bad("encoder.json", $"token id {id} out of range or repeated");
            tokens[id] = id == EndOfTextId ? Encoding.UTF8.GetBytes(name) : ToBytes(name, charToByte);
            count++;
        }
        if (count != VocabSize || Encoding.UTF8.GetString(tokens[EndOfTextId]) != EndOfText)
            throw Bad("encoder.json", $"expected {VocabSize} tokens with {EndOfText} = {EndOfTextId}, found {count}");

        var offsets = new int[VocabSize + 1];
        for (int id = 0; id < VocabSize; id++) offsets[id + 1] = offsets[id] + tokens[id].Length;
        var all = new byte[offsets[VocabSize] + CopySlack];
        for (int id = 0; id < VocabSize; id++) tokens[id].CopyTo(all, offsets[id]);
        var vocabulary = new Gpt2Vocabulary(all, offsets);
        vocabulary.CheckMerges(vocabBpe, charToByte);
        return vocabulary;
    }

    /// <summary>
    /// tiktoken's <c>data_gym_to_mergeable_bpe_ranks</c> check: the first 256 ranks are the single bytes and
    /// merge n of vocab.bpe produces token 256 + n. So merging by "rank of the concatenation" (tiktoken's rule)
    /// is GPT-2's original merge order.
    /// </summary>
    private void CheckMerges(byte[] vocabBpe, int[] charToByte)
    {
        for (int id = 0; id < 256; id++)
            if (TokenLength(id) != 1) throw Bad("encoder.json", $"token {id} should be a single byte");
        string text = Encoding.UTF8.GetString(vocabBpe);
        string[] lines = text.Split('\n');
        if (!lines[0].StartsWith("#version", StringComparison.Ordinal)) throw Bad("vocab.bpe", "missing the #version header");
        int merge = 0;
        for (int line = 1; line < lines.Length; line++)
        {
            string entry = lines[line].TrimEnd('\r');
            if (entry.Length == 0) continue;
            int space = entry.IndexOf(' ');
            if (space <= 0) throw Bad("vocab.bpe", $"line {line + 1} is not a pair");
            byte[] merged = [.. ToBytes(entry[..space], charToByte), .. ToBytes(entry[(space + 1)..], charToByte)];
            int id = Rank(merged);
            if (id != 256 + merge) throw Bad("vocab.bpe", $"line {line + 1}: merge {merge} gives token {id}, expected {256 + merge}");
            merge++;
        }
        if (merge != EndOfTextId - 256) throw Bad("vocab.bpe", $"expected {EndOfTextId - 256} merges, found {merge}");
    }

    private static byte[] ToBytes(string name, int[] charToByte)
    {
        var bytes = new byte[name.Length];
        for (int i = 0; i < name.Length; i++)
        {
            int b = name[i] < charToByte.Length ? charToByte[name[i]] : -1;
            if (b < 0) throw Bad("encoder.json", $"character U+{(int)name[i]:X4} is not in GPT-2's byte alphabet");
            bytes[i] = (byte)b;
        }
        return bytes;
    }

    private static byte[] ReadResource(string name)
    {
        using var stream = typeof(Gpt2Vocabulary).Assembly.GetManifestResourceStream(name)
            ?? throw new InvalidDataException($"The embedded resource {name} is missing from the GptSharp library.");
        var buffer = new byte[stream.Length];
        stream.ReadExactly(buffer);
        return buffer;
    }

    /// <summary>An embedded text resource of the library (e.g. <c>GptSharp.the-verdict.txt</c>), as UTF-8 text.</summary>
    public static string ReadTextResource(string name) => Encoding.UTF8.GetString(ReadResource(name));

    private static InvalidDataException Bad(string file, string what) =>
        new($"The embedded GPT-2 {file} is corrupt: {what}.");
}
