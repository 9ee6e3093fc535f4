using System.Runtime.CompilerServices;
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

    private readonly byte[] _bytes;      // every token's bytes, back to back, in id order
    private readonly int[] _offsets;     // token id's bytes are _bytes[_offsets[id] .. _offsets[id + 1]]

    /// <summary>Id of the single-byte token for each byte value.</summary>
    public readonly int[] ByteToId = new int[256];

    // Open-addressing hash table of the ordinary tokens (not <|endoftext|>) by their bytes: each slot holds
    // (high 32 bits of the key's hash << 32) | (id + 1), 0 when empty, so most misses never touch the bytes.
    private readonly ulong[] _slots = new ulong[1 << 17];

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
            if (Rank(token, ByteHash.Hash(token)) >= 0) throw Bad("encoder.json", $"token {id} repeats an earlier token's bytes");
            ulong hash = ByteHash.Hash(token);
            int slot = (int)hash & (_slots.Length - 1);
            while (_slots[slot] != 0) slot = (slot + 1) & (_slots.Length - 1);
            _slots[slot] = (hash & 0xFFFF_FFFF_0000_0000UL) | (uint)(id + 1);
            max = Math.Max(max, token.Length);
            if (token.Length == 1) ByteToId[token[0]] = id;
        }
        MaxTokenLength = max;
    }

    /// <summary>
    /// The id (= merge rank) of the ordinary token with exactly these bytes, or -1.
    /// <paramref name="hash"/> is <see cref="ByteHash.Hash"/> of <paramref name="piece"/>, computed once by the caller.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Rank(ReadOnlySpan<byte> piece, ulong hash)
    {
        ulong[] slots = _slots;
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

    /// <summary>Loads and validates the embedded <c>encoder.json</c> and <c>vocab.bpe</c>.</summary>
    public static Gpt2Vocabulary LoadEmbedded()
    {
        byte[] encoderJson = ReadResource("GptSharp.encoder.json");
        byte[] vocabBpe = ReadResource("GptSharp.vocab.bpe");

        // GPT-2's bytes_to_unicode: each byte is written as a printable character in the JSON/BPE files.
        var charToByte = new int[512];
        Array.Fill(charToByte, -1);
        int extra = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            charToByte[printable ? b : 256 + extra++] = b;
        }

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
        var all = new byte[offsets[VocabSize]];
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
            int id = Rank(merged, ByteHash.Hash(merged));
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
