using System.Text;
using System.Text.RegularExpressions;
using GptSharp.Tokenization;

namespace GptSharp.Tests.Tokenization;

/// <summary>Seeded random texts: round trips, the pre-tokenizer against a regex engine, the two merge loops, the parallel encoder.</summary>
public class TokenizerPropertyTests
{
    private static readonly Gpt2Tokenizer Tokenizer = Gpt2Tokenizer.Instance;

    // Code points that exercise every class and edge: ASCII, contractions, white space of all kinds, accents,
    // combining marks, CJK, emoji with ZWJ and skin tones, astral letters and digits, format characters.
    private static readonly int[] Interesting =
    [
        ' ', ' ', ' ', '\t', '\n', '\r', 0x0B, 0x0C, 0x1C, 0x1F, 0x85, 0xA0, 0x3000, 0x2028, 0x2029, 0x200B, 0x200C, 0x200D,
        0xFEFF, 0xFFFD, 0xAD, '\'', '\'', 's', 't', 'r', 'e', 'v', 'm', 'l', 'd', 'S', 'T', 'a', 'Z', '0', '9', '!', '.', ',',
        '<', '|', '>', '-', '_', 0xE9, 0xDF, 0x0301, 0x0308, 0x4E2D, 0x6587, 0x3042, 0xAC00, 0x0915, 0x094D, 0x0660, 0xFF11,
        0xBD, 0xB2, 0x216B, 0x1F600, 0x1F44D, 0x1F3FD, 0x1F3F3, 0xFE0F, 0x1F308, 0x1D400, 0x1D7CF, 0x20000, 0x10400, 0x1E900,
        0xE000, 0xFFFF, 0x10FFFF, 0x2019, 0x05D0, 0x0627, 0x0E01, 0x10D0, 0x00,
    ];

    internal static string RandomText(Random random, int maxLength)
    {
        var text = new StringBuilder();
        int length = random.Next(maxLength + 1);
        for (int i = 0; i < length; i++)
        {
            int choice = random.Next(10);
            int scalar = choice switch
            {
                < 5 => Interesting[random.Next(Interesting.Length)],
                < 7 => random.Next(0x20, 0x7F),
                < 9 => random.Next(0x80, 0x3000),
                _ => random.Next(0x10000, 0x110000),
            };
            if (scalar is >= 0xD800 and <= 0xDFFF) scalar = 0xFFFD;
            text.Append(char.ConvertFromUtf32(scalar));
        }
        return text.ToString();
    }

    private static string RandomWords(Random random, int maxLength)
    {
        string[] alphabet = ["a", "b", "s", "t", "l", "e", "Z", "Q", "'", " ", " ", "\n", "\u00e9", "\u4e2d", "1", "!", "\U0001F600", "\u0301", "\u00a0"];
        var text = new StringBuilder();
        int length = random.Next(maxLength + 1);
        for (int i = 0; i < length; i++)
            text.Append(random.Next(3) == 0 ? alphabet[random.Next(alphabet.Length)] : alphabet[random.Next(8)]);
        return text.ToString();
    }

    [Fact]
    public void DecodeOfEncodeIsTheText()
    {
        var random = new Random(20_241_122);
        for (int i = 0; i < 4000; i++)
        {
            string text = i % 4 == 0 ? RandomWords(random, 60) : RandomText(random, 40);
            Assert.Equal(text, Tokenizer.Decode(Tokenizer.EncodeOrdinary(text)));
        }
    }

    /// <summary>
    /// The pre-tokenizer against .NET's regex engine running GPT-2's pattern. .NET's <c>\p{L}</c> works on UTF-16
    /// units, so each code point is first replaced by one BMP character of the same class (keeping ASCII as is),
    /// which .NET classifies the way Rust's regex classifies the original.
    /// </summary>
    [Fact]
    public void PiecesAreTheRegexMatches()
    {
        var pattern = new Regex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.CultureInvariant);
        var random = new Random(7);
        for (int trial = 0; trial < 4000; trial++)
        {
            // Half the texts are mostly ASCII letters, with words longer than the 16-byte steps of the letter scan.
            string text = trial % 2 == 0 ? RandomText(random, 30) : RandomWords(random, 90);
            var runes = text.EnumerateRunes().ToArray();
            var stand = new StringBuilder();
            foreach (var rune in runes)
            {
                stand.Append(rune.Value < 0x80 ? (char)rune.Value : PreTokenizer.ClassOf(rune) switch
                {
                    PreTokenizer.Letter => 'a',
                    PreTokenizer.Number => '1',
                    PreTokenizer.Space => '\t',
                    _ => '!',
                });
            }
            // Piece boundaries as code point indices.
            var expected = pattern.Matches(stand.ToString()).Select(m => m.Index + m.Length).ToList();

            byte[] utf8 = Encoding.UTF8.GetBytes(text);
            var actual = new List<int>();
            int codePoints = 0;
            for (int start = 0; start < utf8.Length;)
            {
                int end = PreTokenizer.PieceEnd(utf8, start);
                codePoints += Encoding.UTF8.GetString(utf8, start, end - start).EnumerateRunes().Count();
                actual.Add(codePoints);
                start = end;
            }
            Assert.True(expected.SequenceEqual(actual), $"pieces differ for {string.Join(" ", runes.Select(r => $"U+{r.Value:X4}"))}");
        }
    }

    [Fact]
    public void HeapMergeEqualsLinearMerge()
    {
        var vocabulary = TestVocabulary;
        var random = new Random(11);
        byte[] alphabet = "aaabbe eeinnorsstt,.\u00e9"u8.ToArray();
        for (int trial = 0; trial < 400; trial++)
        {
            var piece = new byte[random.Next(2, 300)];
            for (int i = 0; i < piece.Length; i++)
                piece[i] = trial % 2 == 0 ? alphabet[random.Next(alphabet.Length)] : (byte)random.Next(256);
            var linear = new IdList(16);
            var heap = new IdList(16);
            BytePairMerge.EncodeLinear(vocabulary, piece, ref linear);
            BytePairMerge.EncodeHeap(vocabulary, piece, ref heap);
            Assert.Equal(linear.ToArray(), heap.ToArray());
            Assert.Equal(piece, Tokenizer.DecodeBytes(heap.AsSpan()));
            linear.Dispose();
            heap.Dispose();
        }
    }

    private static Gpt2Vocabulary TestVocabulary => s_vocabulary.Value;

    private static readonly Lazy<Gpt2Vocabulary> s_vocabulary = new(Gpt2Vocabulary.LoadEmbedded);

    [Fact]
    public void MergeCacheStaysRightWhenItFillsUp()
    {
        // 40,000 distinct made-up words, more than the cache holds, so it empties itself on the way; then the
        // same words again (from the cache, or merged afresh after a clear).
        var random = new Random(5);
        var words = new List<string>();
        var seen = new HashSet<string>();
        while (words.Count < 40_000)
        {
            var word = new StringBuilder(" ");
            for (int i = random.Next(6, 12); i > 0; i--) word.Append((char)('a' + random.Next(26)));
            if (seen.Add(word.ToString())) words.Add(word.ToString());
        }

        var once = new List<int>();
        foreach (string word in words)
        {
            byte[] piece = Encoding.UTF8.GetBytes(word);
            int rank = TestVocabulary.Rank(piece);
            if (rank >= 0)
            {
                once.Add(rank);
                continue;
            }
            var ids = new IdList(16);
            BytePairMerge.EncodeLinear(TestVocabulary, piece, ref ids);
            once.AddRange(ids.AsSpan());
            ids.Dispose();
        }
        int[] actual = Tokenizer.EncodeOrdinary(string.Concat(words) + string.Concat(words));
        Assert.True(once.Concat(once).SequenceEqual(actual), "the ids differ from merging each word afresh");
        Assert.True(MergeCache.Current.Count < 40_000);
    }

    [Fact]
    public void LongRunsMatchTheCases()
    {
        // The long_runs cases hold pieces longer than the merge cache and the linear merge handle.
        foreach (var c in TokenizerCase.All.Where(c => c.Category == "long_runs"))
            Assert.Equal(c.Ids, Tokenizer.EncodeOrdinary(c.Text!));
    }
}
