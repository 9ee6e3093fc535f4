using System.Text;
using GptSharp.Tokenization;
using GptSharp.Data;

namespace GptSharp.Tests.Tokenization;

public class Gpt2TokenizerTests
{
    private static readonly Gpt2Tokenizer Tokenizer = Gpt2Tokenizer.Instance;

    public static IEnumerable<object[]> EncodeCases => TokenizerCase.CaseIds("encode");

    public static IEnumerable<object[]> DecodeCases => TokenizerCase.CaseIds("decode");

    [Fact]
    public void FixtureHasEveryCase()
    {
        Assert.Equal(835, TokenizerCase.All.Count);
        Assert.Equal(749, TokenizerCase.All.Count(c => c.Op == "encode"));
        Assert.Equal(86, TokenizerCase.All.Count(c => c.Op == "decode"));
    }

    [Theory]
    [MemberData(nameof(EncodeCases))]
    public void EncodeGivesTiktokensIds(string caseId)
    {
        var c = TokenizerCase.Get(caseId);
        int[] ids = c.AllowedSpecial ? Tokenizer.Encode(c.Text!, Gpt2Tokenizer.AllSpecialTokens) : Tokenizer.EncodeOrdinary(c.Text!);
        Assert.Equal(c.Ids, ids);

        // The same through the UTF-8 entry points and the parallel encoder (small input: one chunk).
        byte[] utf8 = Encoding.UTF8.GetBytes(c.Text!);
        Assert.Equal(c.Ids, c.AllowedSpecial ? Tokenizer.EncodeUtf8(utf8, Gpt2Tokenizer.AllSpecialTokens) : Tokenizer.EncodeOrdinaryUtf8(utf8));

        // tiktoken's default encode refuses special-token text; otherwise it equals encode_ordinary.
        if (c.ContainsSpecial)
            Assert.Throws<ArgumentException>(() => Tokenizer.Encode(c.Text!));
        else
            Assert.Equal(c.Ids, Tokenizer.Encode(c.Text!));

        // Every encode case round-trips.
        Assert.Equal(c.Text, Tokenizer.Decode(ids));
        Assert.Equal(utf8, Tokenizer.DecodeBytes(ids));
    }

    [Theory]
    [MemberData(nameof(DecodeCases))]
    public void DecodeMatchesTiktoken(string caseId)
    {
        var c = TokenizerCase.Get(caseId);
        Assert.Equal(Convert.FromHexString(c.BytesHex!), Tokenizer.DecodeBytes(c.Ids));
        Assert.Equal(c.Text, Tokenizer.Decode(c.Ids));
        Assert.Equal(c.Text, TokenConversions.TokenIdsToText(c.Ids, Tokenizer));

        // Fed one id at a time, the streaming decoder ends with the same text.
        var stream = new StreamingDecoder(Tokenizer);
        var text = new StringBuilder();
        foreach (int id in c.Ids) text.Append(stream.Push(id));
        text.Append(stream.Flush());
        Assert.Equal(c.Text, text.ToString());
    }

    [Fact]
    public void BookExamples()
    {
        Assert.Equal([6109, 3626, 6100, 345], Tokenizer.Encode("Every effort moves you"));
        var batch = TokenConversions.TextToTokenIds("Every effort moves you", Tokenizer);
        Assert.Equal(1, batch.BatchSize);
        Assert.Equal(4, batch.SequenceLength);
        Assert.Equal([6109, 3626, 6100, 345], batch.Ids);
        Assert.Equal("Every effort moves you", TokenConversions.TokenIdsToText(batch, Tokenizer));

        // text_to_token_ids allows <|endoftext|>, as the book's does.
        var withSpecial = TokenConversions.TextToTokenIds("Hello<|endoftext|>", Tokenizer);
        Assert.Equal([15496, Gpt2Tokenizer.EndOfTextId], withSpecial.Ids);
    }

    [Fact]
    public void BookHelpersRefuseWhatTheyCannotShape()
    {
        Assert.Throws<ArgumentException>(() => TokenConversions.TextToTokenIds("", Tokenizer));
        var twoRows = new GptSharp.Data.TokenBatch([6109, 3626, 6100, 345], 2, 2);
        Assert.Throws<ArgumentException>(() => TokenConversions.TokenIdsToText(twoRows, Tokenizer));
        Assert.Equal("Every effort", TokenConversions.TokenIdsToText(twoRows.Row(0), Tokenizer));
    }

    [Fact]
    public void TheVerdictIs5145Tokens()
    {
        string verdict = Gpt2Vocabulary.ReadTextResource("GptSharp.the-verdict.txt");
        Assert.Equal(20_479, verdict.Length);
        int[] ids = Tokenizer.Encode(verdict);
        Assert.Equal(5_145, ids.Length);
        Assert.Equal(TokenizerCase.All.Single(c => c.Category == "verdict_full").Ids, ids);
        Assert.Equal(verdict, Tokenizer.Decode(ids));
    }

    [Fact]
    public void Constants()
    {
        Assert.Equal(50_256, Gpt2Tokenizer.EndOfTextId);
        Assert.Equal(50_257, Gpt2Tokenizer.VocabSize);
        Assert.Same(Gpt2Tokenizer.Instance, Gpt2Tokenizer.Instance);
        Assert.Equal("<|endoftext|>", Tokenizer.Decode([Gpt2Tokenizer.EndOfTextId]));
    }

    [Fact]
    public void DisallowedSpecialTokenIsAClearError()
    {
        var error = Assert.Throws<ArgumentException>(() => Tokenizer.Encode("tea? <|endoftext|> In"));
        Assert.Contains("special token that is not allowed: <|endoftext|>", error.Message);
        Assert.Throws<ArgumentException>(() => Tokenizer.Encode("a<|endoftext|>", new HashSet<string> { "<|im_start|>" }));
        Assert.Throws<ArgumentException>(() => Tokenizer.EncodeUtf8("<|endoftext|>"u8));
        Assert.Throws<ArgumentException>(() => Tokenizer.EncodeParallel(System.Text.Encoding.UTF8.GetBytes("x <|endoftext|>")));
        // Near misses are plain text.
        Assert.Equal(Tokenizer.EncodeOrdinary("<|endoftext|"), Tokenizer.Encode("<|endoftext|"));
        Assert.Equal([27, 91, 437, 1659, 5239, 91, 29], Tokenizer.EncodeOrdinary("<|endoftext|>"));
        Assert.Equal([50256, 50256], Tokenizer.Encode("<|endoftext|><|endoftext|>", Gpt2Tokenizer.AllSpecialTokens));
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(50_257)]
    [InlineData(int.MaxValue)]
    public void IdOutsideTheVocabularyIsAClearError(int id)
    {
        var error = Assert.Throws<ArgumentException>(() => Tokenizer.Decode([15496, id]));
        Assert.Contains($"Token id {id} ", error.Message);
        Assert.Throws<ArgumentException>(() => Tokenizer.DecodeBytes([id]));
        Assert.Throws<ArgumentException>(() => new StreamingDecoder(Tokenizer).Push(id));
    }

    [Fact]
    public void InvalidUtf8InputNamesTheOffset()
    {
        byte[] bytes = [.. "héllo "u8, 0xFF, .. "x"u8];
        var error = Assert.Throws<InvalidDataException>(() => Tokenizer.EncodeOrdinaryUtf8(bytes));
        Assert.Contains("offset 7", error.Message);
        Assert.Equal(7, Gpt2Tokenizer.IndexOfInvalidUtf8(bytes));
        Assert.Equal(-1, Gpt2Tokenizer.IndexOfInvalidUtf8("héllo"u8));
        Assert.Equal(2, Gpt2Tokenizer.IndexOfInvalidUtf8([0x61, 0x62, 0xE2, 0x82])); // truncated €
    }

    [Fact]
    public void LoneSurrogatesEncodeAsReplacementCharacter()
    {
        Assert.Equal(Tokenizer.Encode("a\uFFFDb"), Tokenizer.Encode("a\uD800b"));
    }

    [Fact]
    public void StreamingDecoderEmitsACharacterOnceComplete()
    {
        // 47249 is the first three bytes of 😀 (f0 9f 98), 222 the last one (80).
        var stream = new StreamingDecoder(Tokenizer);
        Assert.Equal("Hi", stream.Push(17250));
        Assert.Equal("", stream.Push(47249));
        Assert.Equal("😀", stream.Push(222));
        Assert.Equal("!", stream.Push(0));
        Assert.Equal("", stream.Flush());

        // An incomplete character at the end becomes U+FFFD on Flush, as Decode does.
        Assert.Equal("", stream.Push(47249));
        Assert.Equal("\uFFFD", stream.Flush());
        // A byte that cannot continue the pending one makes it U+FFFD at once.
        Assert.Equal("", stream.Push(47249));
        Assert.Equal("\uFFFDa", stream.Push(64));
    }
}
