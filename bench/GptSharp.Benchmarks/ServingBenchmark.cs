using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Serving;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Benchmarks;

/// <summary>
/// <c>serve-quick [requests per client] [max tokens] [threads]</c>: the HTTP server in process on the book's 124M
/// configuration (context 1024, random weights), with 1, 4 and 8 concurrent streaming clients. Reports aggregate
/// tokens/s, time to first token and the gap between tokens (p50/p95) per client count: continuous batching should
/// make 8 clients ≥ 3× one client's aggregate throughput.
/// </summary>
public static class ServingBenchmark
{
    public static async Task RunAsync(int requestsPerClient, int maxTokens, int threads)
    {
        await using var served = await Served.StartAsync(threads);
        var (config, scheduler, http) = (served.Config, served.Scheduler, served.Http);
        const string prompt = Served.Prompt;
        Console.WriteLine($"124M model (context {config.ContextLength}), {threads} threads, prompt {TextCompletion.Encode(prompt).Length} tokens, {maxTokens} new tokens per request, {requestsPerClient} requests per client");
        await OneRequestAsync(http, prompt, 4, 0); // JIT and buffers
        double? single = null;
        foreach (int clients in new[] { 1, 4, 8 })
        {
            var firstTokens = new List<double>();
            var gaps = new List<double>();
            long tokens = 0;
            var clock = Stopwatch.StartNew();
            var results = await Task.WhenAll(Enumerable.Range(0, clients).Select(async client =>
            {
                var mine = new List<Sample>();
                for (int r = 0; r < requestsPerClient; r++) mine.Add(await OneRequestAsync(http, prompt, maxTokens, client * 1000 + r));
                return mine;
            }));
            double seconds = clock.Elapsed.TotalSeconds;
            foreach (var sample in results.SelectMany(s => s))
            {
                firstTokens.Add(sample.FirstToken);
                gaps.AddRange(sample.Gaps);
                tokens += sample.Tokens;
            }
            double rate = tokens / seconds;
            single ??= rate;
            Console.WriteLine($"{clients} client(s): {rate,7:F1} tokens/s aggregate ({rate / single.Value:F2}x one client), " +
                $"first token p50 {Percentile(firstTokens, 50),6:F0} ms p95 {Percentile(firstTokens, 95),6:F0} ms, " +
                $"per token p50 {Percentile(gaps, 50),5:F1} ms p95 {Percentile(gaps, 95),5:F1} ms; largest step {scheduler.LargestStep}");
        }
    }

    private sealed record Sample(double FirstToken, List<double> Gaps, int Tokens);

    /// <summary>One streaming request: when each chunk arrived, and the exact token count from the usage chunk.</summary>
    private static async Task<Sample> OneRequestAsync(HttpClient http, string prompt, int maxTokens, int seed)
    {
        var clock = Stopwatch.StartNew();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = JsonContent.Create(new { prompt, max_tokens = maxTokens, seed, temperature = 1.0, stream = true, stream_options = new { include_usage = true } }),
        };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        double first = -1, last = 0;
        var gaps = new List<double>();
        int tokens = 0;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal) || line == "data: [DONE]") continue;
            using var chunk = JsonDocument.Parse(line[6..]);
            if (chunk.RootElement.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                tokens = usage.GetProperty("completion_tokens").GetInt32();
            if (chunk.RootElement.GetProperty("choices").GetArrayLength() == 0) continue;
            double now = clock.Elapsed.TotalMilliseconds;
            if (first < 0) first = now; else gaps.Add(now - last);
            last = now;
        }
        return new Sample(first, gaps, tokens);
    }

    private static double Percentile(List<double> values, double p)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.Order().ToArray();
        return sorted[Math.Clamp((int)Math.Ceiling(p / 100 * sorted.Length) - 1, 0, sorted.Length - 1)];
    }
}

/// <summary>
/// <c>serve-one-ab [rounds] [max tokens] [threads]</c>: where one client's per-token time goes. Interleaved rounds of the
/// same greedy-free decode (temperature 1, one seed) three ways on the 124M model: <c>TextGenerator.Stream</c> alone,
/// the <see cref="BatchScheduler"/> without HTTP (<see cref="TextCompletion.RunAsync"/>), and one streaming HTTP client.
/// Interleaving keeps a loaded machine's drift out of the comparison; the medians are printed per path.
/// </summary>
public static class ServingOneClientBenchmark
{
    public static async Task RunAsync(int rounds, int maxTokens, int threads)
    {
        await using var served = await Served.StartAsync(threads);
        var (config, scheduler, http) = (served.Config, served.Scheduler, served.Http);
        using var reference = new GptModel(config, new FastRandom(1));
        const string prompt = Served.Prompt;
        int[] ids = TextCompletion.Encode(prompt);
        var settings = new CompletionSettings { MaxTokens = maxTokens, Temperature = 1f, Seed = 7 };
        Console.WriteLine($"{KernelInfo()}; 124M (context {config.ContextLength}), {threads} threads, prompt {ids.Length} tokens, {maxTokens} new tokens, {rounds} interleaved rounds");
        var paths = new (string Name, Func<Task<int>> Run)[]
        {
            ("generate (TextGenerator.Stream)", () =>
            {
                using var generator = new GptSharp.Generation.TextGenerator(reference, settings.ToGenerationOptions() with { Slide = false }, new TorchGenerator(7));
                return Task.FromResult(generator.Stream(ids, maxTokens).Count());
            }),
            ("scheduler, no HTTP", async () => (await TextCompletion.RunAsync(scheduler, ids, settings)).CompletionTokens),
            ("HTTP stream, one client", async () =>
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
                {
                    Content = JsonContent.Create(new { prompt, max_tokens = maxTokens, seed = 7, temperature = 1.0, stream = true, stream_options = new { include_usage = true } }),
                };
                using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                string body = await response.Content.ReadAsStringAsync();
                int at = body.IndexOf("\"completion_tokens\":", StringComparison.Ordinal);
                return int.Parse(body[(at + 20)..].Split(',', '}')[0].Trim());
            }),
        };
        foreach (var path in paths) await path.Run(); // JIT, buffers
        var rates = paths.Select(_ => new List<double>()).ToArray();
        for (int round = 0; round < rounds; round++)
            for (int p = 0; p < paths.Length; p++)
            {
                var clock = Stopwatch.StartNew();
                int tokens = await paths[p].Run();
                rates[p].Add(tokens / clock.Elapsed.TotalSeconds);
            }
        for (int p = 0; p < paths.Length; p++)
        {
            var sorted = rates[p].Order().ToArray();
            Console.WriteLine($"{paths[p].Name,-34} median {sorted[sorted.Length / 2],6:F1} tokens/s (min {sorted[0]:F1}, max {sorted[^1]:F1})");
        }
    }

    private static string KernelInfo() =>
        $"{(File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':')[1].Trim() : null) ?? "CPU"}, " +
        $"AVX-512F {System.Runtime.Intrinsics.X86.Avx512F.IsSupported}, AVX2 {System.Runtime.Intrinsics.X86.Avx2.IsSupported}, {Environment.ProcessorCount} cores";
}

/// <summary>The served 124M model (random weights, context 1024) the serving benchmarks share, with a client for it.</summary>
internal sealed class Served : IAsyncDisposable
{
    public const string Prompt = "Every effort moves you, and the book explains how a large language model is built from scratch";

    private readonly GptModel _model;
    private readonly GptServer _server;

    private Served(GptModel model, BatchScheduler scheduler, GptServer server)
    {
        (_model, Scheduler, _server) = (model, scheduler, server);
        Http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(30) };
    }

    public GptConfig Config => _model.Config;
    public BatchScheduler Scheduler { get; }
    public HttpClient Http { get; }

    public static async Task<Served> StartAsync(int threads)
    {
        Workers.Count = threads;
        var model = new GptModel(GptConfig.Gpt2Small with { DropRate = 0f }, new FastRandom(1));
        var scheduler = new BatchScheduler(model, maxBatchSize: 8, maxQueueLength: 64);
        var server = GptServer.Create(scheduler, new ServerOptions { Port = 0 });
        await server.StartAsync();
        return new Served(model, scheduler, server);
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await _server.DisposeAsync();
        Scheduler.Dispose();
        _model.Dispose();
    }
}
