using System.Diagnostics;
using System.Text;
using GptSharp.Cli.Commands;
using GptSharp.Data;
using GptSharp.Tensors;
using GptSharp.Tokenization;

namespace GptSharp.Tests.Hostile;

/// <summary>
/// The tokenizer part of the mutation fuzzer (<see cref="MutationFuzzTests"/> covers the file formats): 10,000
/// seeded mutations of real text through every encoder, and 10,000 seeded id sequences through every decoder.
/// Text must encode (or be refused with the documented <see cref="ArgumentException"/> for a disallowed
/// <c>&lt;|endoftext|&gt;</c>) and decode back to itself; ids must decode or be refused with our own clear
/// exception. Each case runs under a time limit and an allocation bound; a failure names the seed to replay it.
/// </summary>
public sealed class TokenizerFuzzTests
{
    private const int Cases = 10_000;
    private static readonly TimeSpan CaseLimit = TimeSpan.FromSeconds(2);
    private static readonly Gpt2Tokenizer Tokenizer = Gpt2Tokenizer.Instance;
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private static readonly string[] Snippets =
    [
        "Hello, world! ", "Grüße aus München — ça va? ", "日本語のテキストです。", "Привет, мир! ", "مرحبا بالعالم ",
        "नमस्ते दुनिया ", "😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ", "x = a\t+ b;\r\n", "  \n\n   \u00a0\u2003 ", "'s 've 're 'll 'd 't ",
        "<|endoftext|>", "<|endoftext|><|endoftext|>", "1234567890 3.14159 ", "ﬁ ǅ Ⅻ ½ ", "a\u0301e\u0308 ",
    ];

    private static readonly string[] Inserts =
    [
        "\0", "\u001b[31m", "\r", "\u0085", "\u2028", "\uFEFF", "\u200d", "\uD800", "\uDFFF", "\uDBFF\uDBFF", "\uFFFD",
        "<|endoftext|>", "<|", "|>", "endoftext", "<|endoftext", "endoftext|>", "<|endof", "<<|endoftext|>|>",
    ];

    private static readonly Lazy<string> Verdict = new(TextCorpus.TheVerdict);

    [Fact]
    public void TokenizerText()
    {
        var clock = new Stopwatch();
        int refusedSpecial = 0, illFormedUtf8 = 0, loneSurrogates = 0;
        for (int seedNumber = 0; seedNumber < Cases; seedNumber++)
        {
            var rng = new Random(seedNumber);
            string text = seedNumber == 0 ? Verdict.Value : MutateText(SeedText(rng), rng);
            string replay = $"tokenizer-text case {seedNumber} ({text.Length} chars)";
            // Lone surrogates are documented to encode as U+FFFD; UTF-8's encoder replaces them the same way.
            string expected = Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(text));
            bool hasEndOfText = expected.Contains(Gpt2Tokenizer.EndOfText, StringComparison.Ordinal);
            if (expected.Length != text.Length || expected != text) loneSurrogates++;
            long before = GC.GetAllocatedBytesForCurrentThread();
            clock.Restart();
            try
            {
                int[] ordinary = Tokenizer.EncodeOrdinary(text);
                AssertEqual(replay, "decode(encode_ordinary)", expected, Tokenizer.Decode(ordinary));
                Assert.DoesNotContain(Gpt2Tokenizer.EndOfTextId, ordinary);

                int[] special = Tokenizer.Encode(text, Gpt2Tokenizer.AllSpecialTokens);
                AssertEqual(replay, "decode(encode allowed_special)", expected, Tokenizer.Decode(special));
                if (!hasEndOfText) Assert.Equal(ordinary, special);

                try
                {
                    int[] refused = Tokenizer.Encode(text);
                    if (hasEndOfText) throw new Xunit.Sdk.XunitException($"{replay}: <|endoftext|> was not refused");
                    Assert.Equal(ordinary, refused);
                }
                catch (ArgumentException e) when (hasEndOfText && e.Message.Contains(Gpt2Tokenizer.EndOfText, StringComparison.Ordinal))
                {
                    refusedSpecial++; // the documented refusal of a disallowed special token
                }

                // The UTF-8 entry point: well-formed bytes give the same ids, ill-formed ones our InvalidDataException.
                byte[] utf8 = MutateBytes(Encoding.UTF8.GetBytes(text), rng);
                bool wellFormed = IsWellFormed(utf8);
                try
                {
                    int[] fromBytes = Tokenizer.EncodeOrdinaryUtf8(utf8);
                    if (!wellFormed) throw new Xunit.Sdk.XunitException($"{replay}: ill-formed UTF-8 was encoded");
                    Assert.Equal(Tokenizer.EncodeOrdinary(Encoding.UTF8.GetString(utf8)), fromBytes);
                    Assert.Equal(utf8, Tokenizer.DecodeBytes(fromBytes));
                }
                catch (InvalidDataException) when (!wellFormed)
                {
                    illFormedUtf8++;
                }
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                throw new Xunit.Sdk.XunitException($"{replay}: {e.GetType().Name}: {e}");
            }
            clock.Stop();
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (clock.Elapsed > CaseLimit) throw new Xunit.Sdk.XunitException($"{replay}: took {clock.Elapsed.TotalSeconds:0.00} s");
            long allowed = (4L << 20) + 256L * text.Length;
            if (allocated > allowed) throw new Xunit.Sdk.XunitException($"{replay}: allocated {allocated:N0} bytes (limit {allowed:N0})");
        }
        // The mutations reach every path: refused specials, ill-formed UTF-8, lone surrogates (U+FFFD).
        Assert.InRange(refusedSpecial, Cases / 10, Cases);
        Assert.InRange(illFormedUtf8, Cases / 10, Cases);
        Assert.InRange(loneSurrogates, Cases / 50, Cases);
    }

    [Fact]
    public void EncodeParallelMatchesEncodeOnMutatedText()
    {
        // EncodeParallel only cuts inputs of 2 MiB or more, so each case is The Verdict repeated past that, mutated throughout.
        for (int seedNumber = 1; seedNumber <= 2; seedNumber++)
        {
            var rng = new Random(seedNumber);
            var builder = new StringBuilder();
            while (builder.Length < (5 << 19)) builder.Append(MutateText(Verdict.Value, rng));
            string text = builder.ToString();
            byte[] utf8 = Encoding.UTF8.GetBytes(text);
            Assert.True(Gpt2Tokenizer.ChunkBounds(utf8, 1 << 20).Count > 2, "the input is cut into several chunks");
            Assert.Equal(Tokenizer.EncodeOrdinaryUtf8(utf8), Tokenizer.EncodeOrdinaryParallel(utf8)); // one thread against all
            Assert.Equal(Tokenizer.EncodeUtf8(utf8, Gpt2Tokenizer.AllSpecialTokens), Tokenizer.EncodeParallel(utf8, Gpt2Tokenizer.AllSpecialTokens));
            Assert.Equal(Tokenizer.EncodeOrdinary(text), Tokenizer.EncodeOrdinary(utf8)); // the public doors, each choosing its path by size
        }
    }

    [Fact]
    public void TokenIds()
    {
        int[] verdictIds = Tokenizer.Encode(Verdict.Value);
        var clock = new Stopwatch();
        var streaming = new StreamingDecoder(Tokenizer);
        int invalidCases = 0;
        for (int seedNumber = 0; seedNumber < Cases; seedNumber++)
        {
            var rng = new Random(seedNumber);
            int[] ids = seedNumber == 0 ? verdictIds[..256] : MutateIds(verdictIds, rng);
            bool valid = ids.All(id => (uint)id < Gpt2Tokenizer.VocabSize);
            if (!valid) invalidCases++;
            string replay = $"token-ids case {seedNumber} ({ids.Length} ids)";
            long before = GC.GetAllocatedBytesForCurrentThread();
            clock.Restart();
            try
            {
                string? oneShot = Expect(valid, () => Tokenizer.Decode(ids));
                // A batch of [1, 0] is refused by TokenBatch itself (no empty model input), so only non-empty ones.
                string? viaBatch = ids.Length == 0 ? oneShot : Expect(valid, () => TokenConversions.TokenIdsToText(TokenBatch.FromSequence(ids), Tokenizer));
                byte[]? bytes = Expect(valid, () => Tokenizer.DecodeBytes(ids));
                Expect(valid, () => { Gpt2Tokenizer.CheckIds(ids); return ""; });
                if (valid)
                {
                    Assert.Equal(oneShot, viaBatch);
                    AssertEqual(replay, "decode vs decode_bytes", Encoding.UTF8.GetString(bytes!), oneShot!);
                }

                // Streamed in random-sized pieces: the text joined equals the one-shot decode; a bad id is refused
                // before it is added, so Reset leaves the decoder ready for the next sequence.
                var streamed = new StringBuilder();
                streaming.Reset();
                for (int at = 0; at < ids.Length;)
                {
                    int take = Math.Min(ids.Length - at, 1 + rng.Next(8));
                    bool pieceValid = true;
                    foreach (int id in ids.AsSpan(at, take)) pieceValid &= (uint)id < Gpt2Tokenizer.VocabSize;
                    streamed.Append(take == 1
                        ? Expect(pieceValid, () => streaming.Push(ids[at]))
                        : Expect(pieceValid, () => streaming.Push(ids.AsSpan(at, take))));
                    at += take;
                }
                streamed.Append(streaming.Flush());
                if (valid) AssertEqual(replay, "streamed vs one-shot", oneShot!, streamed.ToString());

                // The detokenize command's parser and decoder, on the ids written both ways it accepts.
                string idsText = rng.Next(2) == 0 ? "[" + string.Join(", ", ids) + "]" : string.Join(rng.Next(2) == 0 ? " " : "\n", ids);
                Assert.Equal(ids, DetokenizeCommand.ParseIds(idsText));
                var output = new MemoryStream();
                Expect(valid, () => { DetokenizeCommand.Run(idsText, hex: rng.Next(4) == 0, output); return ""; });
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                throw new Xunit.Sdk.XunitException($"{replay}: {e.GetType().Name}: {e}");
            }
            clock.Stop();
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (clock.Elapsed > CaseLimit) throw new Xunit.Sdk.XunitException($"{replay}: took {clock.Elapsed.TotalSeconds:0.00} s");
            long allowed = (4L << 20) + 1024L * ids.Length;
            if (allocated > allowed) throw new Xunit.Sdk.XunitException($"{replay}: allocated {allocated:N0} bytes (limit {allowed:N0})");
        }
        Assert.InRange(invalidCases, Cases / 4, 3 * Cases / 4); // both valid and invalid sequences are well represented
    }

    [Fact]
    public void DetokenizeParsesMutatedIdTextOrRefusesItClearly()
    {
        byte[] seed = Encoding.UTF8.GetBytes("[6109, 3626, 6100, 345, 50256, 0]");
        byte[] words = Encoding.UTF8.GetBytes("6109 3626\n6100\t345 50256 0");
        int decoded = 0;
        for (int seedNumber = 0; seedNumber < Cases; seedNumber++)
        {
            var rng = new Random(seedNumber);
            string text = Encoding.UTF8.GetString(MutateBytes(seedNumber % 2 == 0 ? seed : words, rng));
            try
            {
                DetokenizeCommand.Run(text, hex: seedNumber % 3 == 0, new MemoryStream());
                decoded++;
            }
            catch (Exception e) when (e is FormatException or ArgumentException)
            {
                // Not ids ("… is not a token id") or an id outside the vocabulary: one clear line from the CLI.
            }
            catch (Exception e)
            {
                throw new Xunit.Sdk.XunitException($"detokenize case {seedNumber} ({text}): {e.GetType().Name}: {e}");
            }
        }
        Assert.InRange(decoded, Cases / 10, Cases - Cases / 10);
    }

    /// <summary>Returns <paramref name="decode"/>'s result when <paramref name="valid"/>, else asserts it refused with our ArgumentException.</summary>
    private static T? Expect<T>(bool valid, Func<T> decode) where T : class
    {
        if (valid) return decode();
        var error = Assert.ThrowsAny<ArgumentException>(() => decode());
        Assert.Contains("not in the GPT-2 vocabulary", error.Message);
        return null;
    }

    private static void AssertEqual(string replay, string what, string expected, string actual)
    {
        if (!string.Equals(expected, actual, StringComparison.Ordinal))
        {
            int at = 0;
            while (at < Math.Min(expected.Length, actual.Length) && expected[at] == actual[at]) at++;
            throw new Xunit.Sdk.XunitException($"{replay}: {what} differs at char {at} (lengths {expected.Length} vs {actual.Length})");
        }
    }

    private static bool IsWellFormed(byte[] utf8)
    {
        try { StrictUtf8.GetCharCount(utf8); return true; }
        catch (DecoderFallbackException) { return false; }
    }

    /// <summary>A window of The Verdict (up to 600 chars) or a run of snippets.</summary>
    private static string SeedText(Random rng)
    {
        if (rng.Next(3) != 0)
        {
            string verdict = Verdict.Value;
            int length = 1 + rng.Next(600);
            int start = rng.Next(verdict.Length - length);
            return verdict.Substring(start, length);
        }
        var builder = new StringBuilder();
        for (int i = 1 + rng.Next(6); i > 0; i--) builder.Append(Snippets[rng.Next(Snippets.Length)]);
        return builder.ToString();
    }

    private static string MutateText(string text, Random rng)
    {
        var builder = new StringBuilder(text);
        for (int steps = 1 + rng.Next(4); steps > 0; steps--)
        {
            int at = rng.Next(builder.Length + 1);
            switch (rng.Next(7))
            {
                case 0: // byte flips in the UTF-8, decoded with replacement (ill-formed sequences become U+FFFD)
                {
                    byte[] utf8 = Encoding.UTF8.GetBytes(builder.ToString());
                    if (utf8.Length == 0) break;
                    for (int flips = 1 + rng.Next(3); flips > 0; flips--) utf8[rng.Next(utf8.Length)] ^= (byte)(1 << rng.Next(8));
                    builder.Clear().Append(Encoding.UTF8.GetString(utf8));
                    break;
                }
                case 1: // the UTF-8 truncated anywhere, mid-character included
                {
                    byte[] utf8 = Encoding.UTF8.GetBytes(builder.ToString());
                    builder.Clear().Append(Encoding.UTF8.GetString(utf8, 0, rng.Next(utf8.Length + 1)));
                    break;
                }
                case 2: // the string cut anywhere, between a surrogate pair's halves included
                    builder.Length = at;
                    break;
                case 3: // control characters, lone surrogates, special-token pieces
                    builder.Insert(at, Inserts[rng.Next(Inserts.Length)]);
                    break;
                case 4: // <|endoftext|> (or a piece of it) repeated
                    builder.Insert(at, string.Concat(Enumerable.Repeat(Inserts[11 + rng.Next(Inserts.Length - 11)], 1 + rng.Next(50))));
                    break;
                case 5: // a long run of one character or white space (bounded: a few thousand)
                {
                    string[] units = [" ", "\n", "\t", "a", "!", "é", "😀", "\u3000", "0", " a", "'s"];
                    builder.Insert(at, string.Concat(Enumerable.Repeat(units[rng.Next(units.Length)], 1 + rng.Next(4000))));
                    break;
                }
                default: // a random BMP character or astral code point
                {
                    int codePoint = rng.Next(4) == 0 ? 0x10000 + rng.Next(0x100000) : rng.Next(0x10000);
                    builder.Insert(at, codePoint < 0x10000 ? ((char)codePoint).ToString() : char.ConvertFromUtf32(codePoint));
                    break;
                }
            }
        }
        return builder.ToString();
    }

    /// <summary>Raw byte mutations (half of the time none), so the UTF-8 entry points see ill-formed input.</summary>
    private static byte[] MutateBytes(byte[] utf8, Random rng)
    {
        if (utf8.Length == 0 || rng.Next(2) == 0) return utf8;
        byte[] bytes = (byte[])utf8.Clone();
        switch (rng.Next(4))
        {
            case 0: bytes[rng.Next(bytes.Length)] ^= (byte)(1 << rng.Next(8)); return bytes;
            case 1: return bytes[..rng.Next(bytes.Length)];
            case 2: bytes[rng.Next(bytes.Length)] = (byte)(0x80 + rng.Next(0x80)); return bytes;
            default: // an overlong or surrogate encoding, or a byte that never occurs in UTF-8
                byte[][] bad = [[0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xFF], [0xE2, 0x82]];
                int at = rng.Next(bytes.Length + 1);
                return [.. bytes[..at], .. bad[rng.Next(bad.Length)], .. bytes[at..]];
        }
    }

    private static int[] MutateIds(int[] verdictIds, Random rng)
    {
        int[] ids = rng.Next(4) switch
        {
            0 => Enumerable.Range(0, rng.Next(64)).Select(_ => rng.Next(Gpt2Tokenizer.VocabSize)).ToArray(),
            1 => Enumerable.Repeat(rng.Next(Gpt2Tokenizer.VocabSize), rng.Next(4096)).ToArray(), // a huge count, bounded
            _ => verdictIds.AsSpan(rng.Next(verdictIds.Length - 200), rng.Next(200)).ToArray(),
        };
        if (ids.Length == 0 || rng.Next(2) == 0) return ids;
        int[] invalid = [-1, int.MinValue, int.MaxValue, Gpt2Tokenizer.VocabSize, Gpt2Tokenizer.VocabSize + 1, 1 << 16, -Gpt2Tokenizer.VocabSize];
        for (int n = 1 + rng.Next(3); n > 0; n--)
            ids[rng.Next(ids.Length)] = rng.Next(3) == 0 ? rng.Next() - rng.Next() : invalid[rng.Next(invalid.Length)];
        return ids;
    }
}
