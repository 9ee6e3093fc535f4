using System.Text;
using GptSharp.Data;

namespace GptSharp.Tests.Data;

public sealed class CorpusTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-corpus-" + Guid.NewGuid().ToString("N"));

    public CorpusTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // A stand-in encoder for the data layer (the BPE tokenizer has its own tests): one id per character.
    private static int[] CharIds(string text) => text.Select(c => (int)c).ToArray();

    [Fact]
    public void DirectoryAndGlobResolveInOrdinalOrder()
    {
        File.WriteAllText(Path.Combine(_dir, "b.txt"), "bb");
        File.WriteAllText(Path.Combine(_dir, "a.txt"), "aa");
        File.WriteAllText(Path.Combine(_dir, "notes.md"), "skip");
        Assert.Equal(["a.txt", "b.txt"], TextCorpus.ResolveFiles(_dir).Select(Path.GetFileName));
        Assert.Equal(["b.txt"], TextCorpus.ResolveFiles(Path.Combine(_dir, "b*.txt")).Select(Path.GetFileName));
        Assert.Equal("aa<|endoftext|>bb", TextCorpus.ReadCorpus(TextCorpus.ResolveFiles(_dir)));
        Assert.Throws<FileNotFoundException>(() => TextCorpus.ResolveFiles(Path.Combine(_dir, "*.json")));
    }

    [Fact]
    public void EmptyAndNonUtf8FilesAreNamed()
    {
        string empty = Path.Combine(_dir, "empty.txt");
        File.WriteAllBytes(empty, []);
        var e = Assert.Throws<InvalidDataException>(() => TextCorpus.ReadTextFile(empty));
        Assert.Contains("empty.txt", e.Message);
        Assert.Contains("empty", e.Message);

        string latin1 = Path.Combine(_dir, "latin1.txt");
        File.WriteAllBytes(latin1, [(byte)'c', (byte)'a', (byte)'f', 0xE9, (byte)'!']);
        var b = Assert.Throws<InvalidDataException>(() => TextCorpus.ReadTextFile(latin1));
        Assert.Contains("latin1.txt", b.Message);
        Assert.Contains("UTF-8", b.Message);
    }

    [Fact]
    public void TokenFileRoundTripsThroughTheMemoryMap()
    {
        string[] docs = ["Hello", "wörld", "third document"];
        string path = Path.Combine(_dir, "tokens.bin");
        var header = TokenFile.Write(path, ["a.txt", "b.txt", "c.txt"], i => docs[i], CharIds, vocabSize: 50257, separatorId: 50256);
        var expected = CharIds(docs[0]).Append(50256).Concat(CharIds(docs[1])).Append(50256).Concat(CharIds(docs[2])).ToArray();
        Assert.Equal(expected.Length, header.Count);
        Assert.True(TokenFile.IsTokenFile(path));
        Assert.False(File.Exists(path + ".tmp"));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));

        using var file = TokenFile.Open(path);
        Assert.Equal(expected.Length, file.Count);
        Assert.Equal(["a.txt", "b.txt", "c.txt"], file.Header.Sources);
        Assert.Equal(50257, file.Header.VocabSize);
        var all = new int[file.Count];
        file.CopyTo(0, all);
        Assert.Equal(expected, all);

        // Windows over the mapped file equal windows over the same ids in memory.
        var mapped = new GptDatasetV1(file, 4, 3);
        var memory = new GptDatasetV1(new ArrayTokenSequence(expected), 4, 3);
        Assert.Equal(memory.Count, mapped.Count);
        var (a, b, c, d) = (new int[4], new int[4], new int[4], new int[4]);
        for (int i = 0; i < memory.Count; i++)
        {
            mapped.GetItem(i, a, b);
            memory.GetItem(i, c, d);
            Assert.Equal(c, a);
            Assert.Equal(d, b);
        }

        var (train, validation) = DataLoaders.SplitTokens(file, 0.9);
        Assert.Equal((long)(0.9 * expected.Length), train.Count);
        Assert.Equal(expected.Length - train.Count, validation.Count);
        var firstValidation = new int[1];
        validation.CopyTo(0, firstValidation);
        Assert.Equal(expected[train.Count], firstValidation[0]);
    }

    [Fact]
    public void TruncatedTokenFileIsAClearError()
    {
        string path = Path.Combine(_dir, "tokens.bin");
        TokenFile.Write(path, ["a.txt"], _ => "some text here", CharIds, 50257, 50256);
        byte[] bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 10)]);
        var e = Assert.Throws<InvalidDataException>(() => TokenFile.Open(path));
        Assert.Contains("tokens.bin", e.Message);
        File.WriteAllText(path, "plain text, not tokens");
        Assert.False(TokenFile.IsTokenFile(path));
        Assert.Throws<InvalidDataException>(() => TokenFile.Open(path));
    }

    [Theory]
    [InlineData(512)]
    [InlineData(256)]
    [InlineData(0)]
    public void TheIdScanFindsTheFirstIdOutsideTheVocabularyAtEveryPosition(int maxVectorBits)
    {
        var ids = new ushort[1000];
        for (int i = 0; i < ids.Length; i++) ids[i] = (ushort)(i * 37 % 50257);
        Assert.Equal(-1, MappedUInt16Ids.FirstAtLeast(ids, 50257, maxVectorBits));
        // Each position of a 4-vector block, the scalar tail, and a second bad id after the first.
        foreach (int at in new[] { 0, 1, 31, 32, 127, 128, 255, 256, 500, 997, 999 })
        {
            var copy = (ushort[])ids.Clone();
            copy[at] = 50257;
            if (at + 3 < copy.Length) copy[at + 3] = ushort.MaxValue;
            Assert.Equal(at, MappedUInt16Ids.FirstAtLeast(copy, 50257, maxVectorBits));
        }
        Assert.Equal(-1, MappedUInt16Ids.FirstAtLeast([], 50257, maxVectorBits));
    }

    [Fact]
    public void ATokenFileWithAnIdOutsideTheVocabularyStopsBeforeTraining()
    {
        string path = Path.Combine(_dir, "tokens.bin");
        TokenFile.Write(path, ["a.txt"], _ => new string('a', 300), CharIds, 50257, 50256);
        byte[] bytes = File.ReadAllBytes(path);
        bytes[TokenFile.DataOffset + 2 * 123] = 0xFF; // id 97 becomes 0xFFFF = 65535
        bytes[TokenFile.DataOffset + 2 * 123 + 1] = 0xFF;
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<InvalidDataException>(() => GptSharp.Training.TrainingData.Load(path, 0.9, GptSharp.Tokenization.Gpt2Tokenizer.Instance));
        Assert.Contains("tokens.bin", e.Message);
        Assert.Contains("token id 65535", e.Message);
        Assert.Contains($"byte offset {TokenFile.DataOffset + 2 * 123}", e.Message);
    }

    [Fact]
    public void FailedWriteLeavesThePreviousFile()
    {
        string path = Path.Combine(_dir, "tokens.bin");
        TokenFile.Write(path, ["a.txt"], _ => "first", CharIds, 50257, 50256);
        byte[] before = File.ReadAllBytes(path);
        Assert.Throws<InvalidDataException>(() =>
            TokenFile.Write(path, ["a.txt", "b.txt"], i => i == 0 ? "ok" : "bad", t => t == "bad" ? [70000] : CharIds(t), 50257, 50256));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
        Assert.Empty(Directory.GetFiles(_dir, ".*"));
    }
}
