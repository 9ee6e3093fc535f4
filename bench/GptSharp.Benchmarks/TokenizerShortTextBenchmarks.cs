using BenchmarkDotNet.Attributes;
using GptSharp.Tokenization;

namespace GptSharp.Benchmarks;

/// <summary>
/// The tokenizer at the book's scale: The Verdict (20,479 characters, 5,145 tokens) encoded and decoded, and a
/// one-line prompt. Run: <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- --filter '*TokenizerShortText*'</c>
/// </summary>
[MemoryDiagnoser]
public class TokenizerShortTextBenchmarks
{
    private string _verdict = "";
    private int[] _verdictIds = [];

    [GlobalSetup]
    public void Setup()
    {
        _verdict = Gpt2Vocabulary.ReadTextResource("GptSharp.the-verdict.txt");
        _verdictIds = Gpt2Tokenizer.Instance.Encode(_verdict);
    }

    [Benchmark]
    public int EncodeTheVerdict() => Gpt2Tokenizer.Instance.Encode(_verdict, Gpt2Tokenizer.AllSpecialTokens).Length;

    [Benchmark]
    public int DecodeTheVerdict() => Gpt2Tokenizer.Instance.Decode(_verdictIds).Length;

    [Benchmark]
    public int EncodePrompt() => Gpt2Tokenizer.Instance.Encode("Every effort moves you", Gpt2Tokenizer.AllSpecialTokens).Length;
}
