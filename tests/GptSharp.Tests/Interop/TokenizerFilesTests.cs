using System.Text;
using System.Text.Json;
using GptSharp.Tests.Checkpoints;
using GptSharp.Tests.Tokenization;
using GptSharp.Tokenization;
using Microsoft.ML.Tokenizers;

namespace GptSharp.Tests.Interop;

/// <summary>
/// The tokenizer files of an exported folder, read by an independent implementation (Microsoft.ML.Tokenizers' byte-level
/// BPE with GPT-2's pre-tokenizer pattern), must give tiktoken's ids on the fixture cases.
/// </summary>
public class TokenizerFilesTests : IClassFixture<TokenizerFilesTests.Folder>
{
    public sealed class Folder : IDisposable
    {
        private readonly TempDir _dir = new();
        public Folder() => TokenizerFiles.Write(_dir.Path, 1024);
        public string File(string name) => _dir.File(name);
        public void Dispose() => _dir.Dispose();
    }

    private readonly Folder _folder;

    public TokenizerFilesTests(Folder folder) => _folder = folder;

    /// <summary>
    /// The encode cases a Hugging Face tokenizer must agree on: all but those where tiktoken was told to treat
    /// <c>&lt;|endoftext|&gt;</c> as text, which transformers always splits out as the special token (its added token),
    /// and the five letters and digits outside the BMP (𝐁's): the reader's pre-tokenizer is a .NET Regex, whose \p{L}
    /// and \p{N} test UTF-16 units, so a surrogate pair is no letter to it (tokenizers and tiktoken match code points).
    /// </summary>
    private static IEnumerable<TokenizerCase> Cases => TokenizerCase.All.Where(c =>
        c.Op == "encode" && (c.AllowedSpecial || !c.ContainsSpecial) && !HasAstralLetterOrDigit(c.Text!));

    private static bool HasAstralLetterOrDigit(string text)
    {
        foreach (var rune in text.EnumerateRunes())
            if (rune.Value > 0xFFFF && (Rune.IsLetter(rune) || Rune.IsNumber(rune))) return true;
        return false;
    }

    private static void AssertSameIds(Tokenizer tokenizer)
    {
        int checkedCases = 0;
        var failures = new List<string>();
        foreach (var c in Cases)
        {
            var ids = tokenizer.EncodeToIds(c.Text!);
            if (!c.Ids.SequenceEqual(ids)) failures.Add($"{c.Id}: expected [{string.Join(",", c.Ids)}], got [{string.Join(",", ids)}]");
            checkedCases++;
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {checkedCases}:\n" + string.Join("\n", failures));
        Assert.True(checkedCases > 600, $"only {checkedCases} cases"); // 643 today
    }

    /// <summary>
    /// GPT-2's pre-tokenizer pattern, which a tokenizer.json's <c>ByteLevel</c> pre-tokenizer with <c>use_regex: true</c>
    /// stands for; <c>&lt;|endoftext|&gt;</c> is split out first, as an added special token is.
    /// </summary>
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly Dictionary<string, int> Special = new() { ["<|endoftext|>"] = 50256 };

    private static Tokenizer ByteLevelBpe(BpeOptions options)
    {
        options.ByteLevel = true;
        options.SpecialTokens = Special;
        options.PreTokenizer = new RegexPreTokenizer(new System.Text.RegularExpressions.Regex(Gpt2Pattern), Special);
        return BpeTokenizer.Create(options);
    }

    [Fact]
    public void VocabJsonAndMergesTxtGiveTiktokensIds()
    {
        AssertSameIds(ByteLevelBpe(new BpeOptions(_folder.File("vocab.json"), _folder.File("merges.txt"))));
    }

    [Fact]
    public void TokenizerJsonIsAByteLevelBpeThatGivesTiktokensIds()
    {
        using var json = JsonDocument.Parse(File.ReadAllBytes(_folder.File("tokenizer.json")));
        var root = json.RootElement;
        var model = root.GetProperty("model");
        Assert.Equal("BPE", model.GetProperty("type").GetString());
        Assert.Equal("ByteLevel", root.GetProperty("pre_tokenizer").GetProperty("type").GetString());
        Assert.False(root.GetProperty("pre_tokenizer").GetProperty("add_prefix_space").GetBoolean());
        Assert.Equal("ByteLevel", root.GetProperty("decoder").GetProperty("type").GetString());
        var added = root.GetProperty("added_tokens").EnumerateArray().Single();
        Assert.Equal(50256, added.GetProperty("id").GetInt32());
        Assert.Equal("<|endoftext|>", added.GetProperty("content").GetString());
        Assert.True(added.GetProperty("special").GetBoolean());
        Assert.Equal(50257, model.GetProperty("vocab").EnumerateObject().Count());
        Assert.Equal(50000, model.GetProperty("merges").GetArrayLength());

        // The BPE model's own vocab and merges, handed to the independent reader as the two files they stand for.
        var vocab = model.GetProperty("vocab").EnumerateObject().Select(p => KeyValuePair.Create(p.Name, p.Value.GetInt32())).ToList();
        var merges = model.GetProperty("merges").EnumerateArray().Select(m => m.GetString()!).ToList();
        AssertSameIds(ByteLevelBpe(new BpeOptions(vocab) { Merges = merges }));
    }

    [Fact]
    public void TokenizerConfigNamesGpt2sSpecialTokens()
    {
        using var json = JsonDocument.Parse(File.ReadAllBytes(_folder.File("tokenizer_config.json")));
        var root = json.RootElement;
        Assert.Equal("GPT2Tokenizer", root.GetProperty("tokenizer_class").GetString());
        Assert.Equal("<|endoftext|>", root.GetProperty("eos_token").GetString());
        Assert.Equal(1024, root.GetProperty("model_max_length").GetInt32());
        Assert.True(root.GetProperty("added_tokens_decoder").GetProperty("50256").GetProperty("special").GetBoolean());
    }
}
