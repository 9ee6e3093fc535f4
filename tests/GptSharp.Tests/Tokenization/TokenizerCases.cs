using System.Text.Json;

namespace GptSharp.Tests.Tokenization;

/// <summary>One line of Fixtures/tokenizer/cases.jsonl (ids produced by the real tiktoken, see its README).</summary>
public sealed record TokenizerCase(
    string Id, string Category, string Op, string? Text, int[] Ids, bool AllowedSpecial, bool ContainsSpecial, string? BytesHex)
{
    public override string ToString() => Id;

    private static readonly Lazy<IReadOnlyList<TokenizerCase>> s_all = new(Load);

    public static IReadOnlyList<TokenizerCase> All => s_all.Value;

    private static List<TokenizerCase> Load()
    {
        var cases = new List<TokenizerCase>();
        foreach (string line in File.ReadLines(FixturePaths.Get("tokenizer", "cases.jsonl")))
        {
            if (line.Length == 0) continue;
            using var json = JsonDocument.Parse(line);
            var root = json.RootElement;
            cases.Add(new TokenizerCase(
                root.GetProperty("id").GetString()!,
                root.GetProperty("category").GetString()!,
                root.GetProperty("op").GetString()!,
                root.TryGetProperty("text", out var text) ? text.GetString() : null,
                root.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                root.GetProperty("allowed_special").GetBoolean(),
                root.TryGetProperty("contains_special", out var special) && special.GetBoolean(),
                root.TryGetProperty("bytes_hex", out var hex) ? hex.GetString() : null));
        }
        return cases;
    }

    public static IEnumerable<object[]> CaseIds(string op) => All.Where(c => c.Op == op).Select(c => new object[] { c.Id });

    public static TokenizerCase Get(string id) => All.Single(c => c.Id == id);
}
