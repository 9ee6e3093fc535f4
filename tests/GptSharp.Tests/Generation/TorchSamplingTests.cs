using System.Text.Json;
using GptSharp.Generation;
using GptSharp.Tensors;
using GptSharp.Tests.Model;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Tests.Generation;

/// <summary>
/// Sampled generation token for token as PyTorch 1.13 does it: the book's <c>generate</c> (top-k, temperature,
/// softmax, <c>torch.multinomial</c>) after <c>torch.manual_seed</c>, on the reference fixture models
/// (Fixtures/generation/sampled.json, recorded by record.py beside it).
/// </summary>
public class TorchSamplingTests
{
    public static TheoryData<int> Cases()
    {
        var data = new TheoryData<int>();
        for (int i = 0; i < Load().Count; i++) data.Add(i);
        return data;
    }

    private sealed record Case(string Fixture, ulong Seed, float Temperature, int? TopK, int MaxNewTokens, int[] Prompt, int[] Generated);

    private static List<Case> Load()
    {
        using var json = JsonDocument.Parse(File.ReadAllText(FixturePaths.Get("generation", "sampled.json")));
        return json.RootElement.GetProperty("cases").EnumerateArray().Select(c => new Case(
            c.GetProperty("fixture").GetString()!,
            c.GetProperty("seed").GetUInt64(),
            (float)c.GetProperty("temperature").GetDouble(),
            c.GetProperty("top_k").ValueKind == JsonValueKind.Null ? null : c.GetProperty("top_k").GetInt32(),
            c.GetProperty("max_new_tokens").GetInt32(),
            c.GetProperty("prompt").EnumerateArray().Select(v => v.GetInt32()).ToArray(),
            c.GetProperty("generated").EnumerateArray().Select(v => v.GetInt32()).ToArray())).ToList();
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void BookGenerateDrawsWhatPyTorchDraws(int index)
    {
        var c = Load()[index];
        var fixture = new ReferenceFixture(c.Fixture);
        using var model = fixture.CreateModel();
        var prompt = TokenBatch.FromSequence(c.Prompt);
        var book = BookGeneration.Generate(model, prompt, c.MaxNewTokens, fixture.Config.ContextLength,
            temperature: c.Temperature, topK: c.TopK, generator: new TorchGenerator(c.Seed));
        Assert.Equal(c.Generated, book.Ids);

        // The KV-cache generator consumes the same random stream the same way.
        using var cached = new TextGenerator(model, new GenerationOptions { Temperature = c.Temperature, TopK = c.TopK }, new TorchGenerator(c.Seed));
        Assert.Equal(c.Generated, cached.Generate(prompt, c.MaxNewTokens).Ids);
    }
}
