using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;

namespace GptSharp.Benchmarks;

/// <summary>
/// Greedy generation with GPT-2 124M (context 1024, qkv_bias, random weights): an 8-token prompt, 200 new tokens,
/// batch 1, 2 threads, with the KV cache and without it (the book's loop: the whole window through the model for
/// every token). One operation = one generated token, so the Op/s column is tokens/s.
/// </summary>
/// <remarks>
/// Run: <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- --filter '*GenerationBenchmarks*'</c>.
/// With the cache every token reads every weight once except the embedding tables (one row each): the
/// transformer blocks (85.0M floats) and the output head (38.6M) = 494 MB per token, so tokens/s is bounded by
/// read bandwidth ÷ 494 MB. The PyTorch 1.13 reference (book loop, no cache) is bench/python/book_generate.py.
/// </remarks>
[Config(typeof(Config))]
public class GenerationBenchmarks
{
    public const int PromptTokens = 8;
    public const int NewTokens = 200;

    private sealed class Config : ManualConfig
    {
        public Config()
        {
            // A run is seconds (cached) to a minute (uncached): one invocation per iteration, few iterations.
            AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(1).WithIterationCount(3).WithInvocationCount(1).WithUnrollFactor(1));
            AddColumn(StatisticColumn.OperationsPerSecond);
        }
    }

    private GptModel _model = null!;
    private TextGenerator _generator = null!;
    private TokenBatch _prompt = null!;

    [Params(true, false)]
    public bool UseCache { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        Workers.Count = 2;
        var config = GptConfig.Gpt2Small with { QkvBias = true };
        _model = new GptModel(config, new FastRandom(123));
        _prompt = TokenBatch.FromSequence([6109, 3626, 6100, 345, 11, 290, 262, 640]); // 8 tokens
        _generator = new TextGenerator(_model, new GenerationOptions { UseCache = UseCache });
        long readPerToken = _model.ParameterCount - _model.TokenEmbedding.Length - _model.PositionEmbedding.Length;
        Console.WriteLine($"// weights read per cached token: {readPerToken * 4 / 1e6:F0} MB ({readPerToken / 1e6:F1}M floats)");
    }

    [Benchmark(OperationsPerInvoke = NewTokens)]
    public int Greedy200Tokens()
    {
        var generated = _generator.Generate(_prompt, NewTokens);
        return generated.SequenceLength;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _generator.Dispose();
        _model.Dispose();
    }
}
