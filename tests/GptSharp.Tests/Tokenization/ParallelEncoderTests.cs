using System.Text;
using GptSharp.Tensors;
using GptSharp.Tokenization;

namespace GptSharp.Tests.Tokenization;

/// <summary>The parallel encoder gives the single-threaded ids.</summary>
[Collection("WorkersTests")] // sets Workers.Count and uses the pool: keep it apart from the pool's own tests
public class ParallelEncoderTests
{
    private static readonly Gpt2Tokenizer Tokenizer = Gpt2Tokenizer.Instance;

    [Fact]
    public void ParallelEncoderGivesIdenticalIds()
    {
        // About 3 MB of varied text, so it is cut into several chunks, with <|endoftext|> between documents.
        var random = new Random(3);
        string verdict = Gpt2Vocabulary.ReadTextResource("GptSharp.the-verdict.txt");
        var text = new StringBuilder();
        while (text.Length < 3_000_000)
        {
            text.Append(verdict, random.Next(verdict.Length / 2), random.Next(verdict.Length / 2));
            text.Append(random.Next(4) switch { 0 => "<|endoftext|>", 1 => "  \n\n ", 2 => TokenizerPropertyTests.RandomText(random, 200), _ => " " });
        }
        string corpus = text.ToString();
        byte[] utf8 = Encoding.UTF8.GetBytes(corpus);
        Assert.True(Gpt2Tokenizer.ChunkBounds(utf8, 1 << 20).Count > 3);

        int savedCount = Workers.Count;
        try
        {
            Workers.Count = 2;
            Assert.Equal(Tokenizer.EncodeOrdinaryUtf8(utf8), Tokenizer.EncodeOrdinaryParallel(utf8)); // one thread against all
            Assert.Equal(Tokenizer.EncodeUtf8(utf8, Gpt2Tokenizer.AllSpecialTokens), Tokenizer.EncodeParallel(utf8, Gpt2Tokenizer.AllSpecialTokens));
            Assert.Equal(Tokenizer.EncodeOrdinary(corpus), Tokenizer.EncodeOrdinary(utf8)); // the public doors, each choosing its path by size
        }
        finally
        {
            Workers.Count = savedCount;
        }

        // Chunked at every possible cut, small chunks still give the same ids.
        string sample = corpus[..20_000];
        byte[] sampleUtf8 = Encoding.UTF8.GetBytes(sample);
        var bounds = Gpt2Tokenizer.ChunkBounds(sampleUtf8, 7);
        var joined = new List<int>();
        for (int i = 0; i + 1 < bounds.Count; i++)
            joined.AddRange(Tokenizer.EncodeUtf8(sampleUtf8.AsSpan(bounds[i]..bounds[i + 1]), Gpt2Tokenizer.AllSpecialTokens));
        Assert.Equal(Tokenizer.Encode(sample, Gpt2Tokenizer.AllSpecialTokens), joined);
    }
}
