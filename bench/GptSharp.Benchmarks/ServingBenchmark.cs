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
        Console.WriteLine($"{Machine.Description}; a step's rows row-exact (direct GEMM) up to {Gemm.RowExactRows}");
        Console.WriteLine($"124M model (context {config.ContextLength}), {threads} threads, prompt {TextCompletion.Encode(prompt).Length} tokens, {maxTokens} new tokens per request, {requestsPerClient} requests per client");
        await WarmUpAsync(http, prompt, maxTokens);
        double? single = null;
        foreach (int clients in new[] { 1, 4, 8 })
        {
            var (riding, alone, reused) = (scheduler.PromptsInSteps, scheduler.PromptsAlone, scheduler.PromptTokensReused);
            var phase = await PhaseAsync(http, prompt, clients, requestsPerClient, maxTokens);
            single ??= phase.Rate;
            Console.WriteLine($"{clients} client(s): {phase.Rate,7:F1} tokens/s aggregate ({phase.Rate / single.Value:F2}x one client), " +
                $"first token p50 {Percentile(phase.FirstTokens, 50),6:F0} ms p95 {Percentile(phase.FirstTokens, 95),6:F0} ms, " +
                $"per token p50 {Percentile(phase.Gaps, 50),5:F1} ms p95 {Percentile(phase.Gaps, 95),5:F1} ms; largest step {scheduler.LargestStep}, " +
                $"prompts riding in a step {scheduler.PromptsInSteps - riding}, alone {scheduler.PromptsAlone - alone}, prompt tokens reused {scheduler.PromptTokensReused - reused}");
        }
    }

    /// <summary>
    /// <c>serve-ab [rounds] [max tokens] [threads] [row-exact rows,...]</c>: the one-client and 8-client phases of
    /// serve-quick (3 requests per client) in one process, once per value of <see cref="Gemm.RowExactRows"/> (default
    /// 32,8: 18-token prompts riding in the steps beside the decoding rows, or prefilled alone), interleaved over the
    /// rounds, so the machine's drift falls on every variant alike. Prints each variant's median tokens/s of both phases
    /// and the median of the per-round ratios (8 clients ÷ one).
    /// </summary>
    public static async Task AbAsync(int rounds, int maxTokens, int threads, int[] variants)
    {
        await using var served = await Served.StartAsync(threads);
        var http = served.Http;
        const string prompt = Served.Prompt;
        Console.WriteLine($"{Machine.Description}; 124M (context {served.Config.ContextLength}), {threads} threads, {maxTokens} new tokens per request, 3 requests per client, {rounds} rounds; RowExactRows {string.Join(" | ", variants)}");
        await WarmUpAsync(http, prompt, maxTokens);
        var one = variants.Select(_ => new List<double>()).ToArray();
        var eight = variants.Select(_ => new List<double>()).ToArray();
        var ratios = variants.Select(_ => new List<double>()).ToArray();
        var firstTokens = variants.Select(_ => new List<double>()).ToArray();
        var saved = (Gemm.RowExactRows, Gemm.SkinnyRows);
        for (int round = 0; round < rounds; round++)
            for (int v = 0; v < variants.Length; v++)
            {
                LimitStepRows(variants[v]);
                var single = await PhaseAsync(http, prompt, 1, 3, maxTokens);
                var many = await PhaseAsync(http, prompt, 8, 3, maxTokens);
                (Gemm.RowExactRows, Gemm.SkinnyRows) = saved;
                one[v].Add(single.Rate);
                eight[v].Add(many.Rate);
                ratios[v].Add(many.Rate / single.Rate);
                firstTokens[v].Add(Percentile(many.FirstTokens, 50));
                Console.WriteLine($"round {round + 1}, RowExactRows {variants[v]}: 1 client {single.Rate:F1}, 8 clients {many.Rate:F1} tokens/s ({many.Rate / single.Rate:F2}x)");
            }
        for (int v = 0; v < variants.Length; v++)
            Console.WriteLine($"RowExactRows {variants[v],3}: 1 client median {Percentile(one[v], 50):F1} tokens/s, 8 clients {Percentile(eight[v], 50):F1} " +
                $"(first token p50 {Percentile(firstTokens[v], 50):F0} ms), ratio median {Percentile(ratios[v], 50):F2}x (min {ratios[v].Min():F2}, max {ratios[v].Max():F2})");
    }

    /// <summary>
    /// <c>serve-cache-ab [rounds] [max tokens] [threads]</c>: the one-client and 8-client phases of serve-quick against
    /// two servers in one process, one with the scheduler's prompt cache (the default) and one without, interleaved
    /// over the rounds. Prints each one's median tokens/s of both phases, first-token p50 and the median per-round ratio.
    /// </summary>
    public static async Task PromptCacheAbAsync(int rounds, int maxTokens, int threads)
    {
        await using var withCache = await Served.StartAsync(threads, promptCachePositions: null);
        await using var without = await Served.StartAsync(threads, promptCachePositions: 0);
        var servers = new[] { ("prompt cache", withCache), ("no prompt cache", without) };
        const string prompt = Served.Prompt;
        Console.WriteLine($"{Machine.Description}; 124M (context {withCache.Config.ContextLength}), {threads} threads, {maxTokens} new tokens per request, 3 requests per client, {rounds} rounds");
        foreach (var (_, served) in servers) await WarmUpAsync(served.Http, prompt, maxTokens);
        var one = servers.Select(_ => new List<double>()).ToArray();
        var eight = servers.Select(_ => new List<double>()).ToArray();
        var ratios = servers.Select(_ => new List<double>()).ToArray();
        var firstOne = servers.Select(_ => new List<double>()).ToArray();
        var firstEight = servers.Select(_ => new List<double>()).ToArray();
        for (int round = 0; round < rounds; round++)
            for (int v = 0; v < servers.Length; v++)
            {
                var single = await PhaseAsync(servers[v].Item2.Http, prompt, 1, 3, maxTokens);
                var many = await PhaseAsync(servers[v].Item2.Http, prompt, 8, 3, maxTokens);
                one[v].Add(single.Rate);
                eight[v].Add(many.Rate);
                ratios[v].Add(many.Rate / single.Rate);
                firstOne[v].Add(Percentile(single.FirstTokens, 50));
                firstEight[v].Add(Percentile(many.FirstTokens, 50));
                Console.WriteLine($"round {round + 1}, {servers[v].Item1}: 1 client {single.Rate:F1}, 8 clients {many.Rate:F1} tokens/s ({many.Rate / single.Rate:F2}x)");
            }
        for (int v = 0; v < servers.Length; v++)
            Console.WriteLine($"{servers[v].Item1,-16}: 1 client median {Percentile(one[v], 50):F1} tokens/s (first token p50 {Percentile(firstOne[v], 50):F0} ms), " +
                $"8 clients {Percentile(eight[v], 50):F1} (first token p50 {Percentile(firstEight[v], 50):F0} ms), ratio median {Percentile(ratios[v], 50):F2}x (min {ratios[v].Min():F2}, max {ratios[v].Max():F2}); " +
                $"prompt tokens reused {servers[v].Item2.Scheduler.PromptTokensReused}");
    }

    /// <summary>
    /// Warm-up: a full-length request, then 8 at once, so every path (the HTTP stack, one-row and 8-row steps) runs
    /// optimized code before the clock starts. A 4-token warm-up left the one-client phase measuring tier-0 code and
    /// background JIT work on a 2-core machine, which the later phases no longer paid.
    /// </summary>
    private static async Task WarmUpAsync(HttpClient http, string prompt, int maxTokens)
    {
        await OneRequestAsync(http, prompt, maxTokens, 0);
        await Task.WhenAll(Enumerable.Range(0, 8).Select(client => OneRequestAsync(http, prompt, Math.Min(maxTokens, 8), client)));
    }

    /// <summary>The rows a step keeps on the direct GEMM (<see cref="Gemm.RowExactRows"/>), the plain limit no higher.</summary>
    internal static void LimitStepRows(int rows)
    {
        Gemm.RowExactRows = rows;
        Gemm.SkinnyRows = Math.Min(Gemm.SkinnyRows, rows);
    }

    private sealed record Phase(double Rate, List<double> FirstTokens, List<double> Gaps);

    /// <summary><paramref name="clients"/> streaming clients, each sending its requests one after another: aggregate tokens/s over the phase's wall time.</summary>
    private static async Task<Phase> PhaseAsync(HttpClient http, string prompt, int clients, int requestsPerClient, int maxTokens)
    {
        var clock = Stopwatch.StartNew();
        var results = await Task.WhenAll(Enumerable.Range(0, clients).Select(async client =>
        {
            var mine = new List<Sample>();
            for (int r = 0; r < requestsPerClient; r++) mine.Add(await OneRequestAsync(http, prompt, maxTokens, client * 1000 + r));
            return mine;
        }));
        double seconds = clock.Elapsed.TotalSeconds;
        var samples = results.SelectMany(s => s).ToList();
        return new Phase(samples.Sum(s => s.Tokens) / seconds, [.. samples.Select(s => s.FirstToken)], [.. samples.SelectMany(s => s.Gaps)]);
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

    internal static double Percentile(List<double> values, double p)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.Order().ToArray();
        return sorted[Math.Clamp((int)Math.Ceiling(p / 100 * sorted.Length) - 1, 0, sorted.Length - 1)];
    }
}

/// <summary>
/// <c>serve-one-ab [rounds] [max tokens] [threads]</c>: where one client's per-token time goes. Interleaved rounds of the
/// same decode (temperature 1, one seed) three ways on the 124M model: <c>TextGenerator.Stream</c> alone,
/// the <see cref="BatchScheduler"/> without HTTP (<see cref="TextCompletion.RunAsync"/>), and one streaming HTTP client
/// (reading each event as it arrives). Per path: median tokens/s over the rounds, the gap between tokens (p50/p95 over
/// every round, the first token excluded) and the process's CPU time per token (what the path costs beyond the
/// forward, even when a loaded machine stretches the wall clock). Interleaving keeps drift out of the comparison.
/// </summary>
public static class ServingOneClientBenchmark
{
    /// <summary>One decode: the arrival time of each token, in milliseconds from the request.</summary>
    private delegate Task<List<double>> Path();

    public static async Task RunAsync(int rounds, int maxTokens, int threads)
    {
        await using var served = await Served.StartAsync(threads);
        var (config, scheduler, http) = (served.Config, served.Scheduler, served.Http);
        using var reference = new GptModel(config, new FastRandom(1));
        const string prompt = Served.Prompt;
        int[] ids = TextCompletion.Encode(prompt);
        var settings = new CompletionSettings { MaxTokens = maxTokens, Temperature = 1f, Seed = 7 };
        Console.WriteLine($"{KernelInfo()}; 124M (context {config.ContextLength}), {threads} threads, prompt {ids.Length} tokens, {maxTokens} new tokens, {rounds} interleaved rounds");
        var paths = new (string Name, Path Run)[]
        {
            ("generate (TextGenerator.Stream)", () =>
            {
                using var generator = new GptSharp.Generation.TextGenerator(reference, settings.ToGenerationOptions() with { Slide = false }, new TorchGenerator(7));
                var clock = Stopwatch.StartNew();
                var arrivals = new List<double>();
                foreach (int _ in generator.Stream(ids, maxTokens)) arrivals.Add(clock.Elapsed.TotalMilliseconds);
                return Task.FromResult(arrivals);
            }),
            ("scheduler, no HTTP", async () =>
            {
                var clock = Stopwatch.StartNew();
                var arrivals = new List<double>();
                await TextCompletion.RunAsync(scheduler, ids, settings, piece =>
                {
                    for (int i = 0; i < piece.Tokens.Count; i++) arrivals.Add(clock.Elapsed.TotalMilliseconds);
                    return ValueTask.CompletedTask;
                });
                return arrivals;
            }),
            ("HTTP stream, one client", async () =>
            {
                var clock = Stopwatch.StartNew();
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
                {
                    Content = JsonContent.Create(new { prompt, max_tokens = maxTokens, seed = 7, temperature = 1.0, stream = true }),
                };
                using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                response.EnsureSuccessStatusCode();
                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
                var arrivals = new List<double>();
                // Each event holds one token (no stop texts to hold text back); the text itself is not parsed.
                while (await reader.ReadLineAsync() is { } line)
                    if (line.StartsWith("data: {", StringComparison.Ordinal)) arrivals.Add(clock.Elapsed.TotalMilliseconds);
                return arrivals;
            }),
        };
        foreach (var path in paths) await path.Run(); // JIT, buffers
        var rates = paths.Select(_ => new List<double>()).ToArray();
        var gaps = paths.Select(_ => new List<double>()).ToArray();
        var cpu = new double[paths.Length];
        var tokens = new long[paths.Length];
        using var process = Process.GetCurrentProcess();
        for (int round = 0; round < rounds; round++)
            for (int p = 0; p < paths.Length; p++)
            {
                process.Refresh();
                var cpuBefore = process.TotalProcessorTime;
                var clock = Stopwatch.StartNew();
                var arrivals = await paths[p].Run();
                double seconds = clock.Elapsed.TotalSeconds;
                process.Refresh();
                cpu[p] += (process.TotalProcessorTime - cpuBefore).TotalMilliseconds;
                tokens[p] += arrivals.Count;
                rates[p].Add(arrivals.Count / seconds);
                for (int i = 1; i < arrivals.Count; i++) gaps[p].Add(arrivals[i] - arrivals[i - 1]);
            }
        double generate = Median(rates[0]);
        for (int p = 0; p < paths.Length; p++)
        {
            var sorted = rates[p].Order().ToArray();
            Console.WriteLine($"{paths[p].Name,-32} median {Median(rates[p]),6:F1} tokens/s ({Median(rates[p]) / generate * 100,5:F1} % of generate; min {sorted[0]:F1}, max {sorted[^1]:F1}), " +
                $"per token p50 {ServingBenchmark.Percentile(gaps[p], 50),5:F1} ms p95 {ServingBenchmark.Percentile(gaps[p], 95),5:F1} ms, CPU {cpu[p] / tokens[p],5:F1} ms/token");
        }
    }

    private static double Median(List<double> values) => ServingBenchmark.Percentile(values, 50);

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

    /// <param name="promptCachePositions">The scheduler's prompt cache (null: its default, one context; 0: off); the
    /// environment variable PROMPT_CACHE=positions overrides it.</param>
    public static async Task<Served> StartAsync(int threads, int? promptCachePositions = null)
    {
        Workers.Count = threads;
        var model = new GptModel(GptConfig.Gpt2Small with { DropRate = 0f }, new FastRandom(1));
        if (Environment.GetEnvironmentVariable("PROMPT_CACHE") is { Length: > 0 } positions) promptCachePositions = int.Parse(positions);
        var scheduler = new BatchScheduler(model, maxBatchSize: 8, maxQueueLength: 64, promptCachePositions: promptCachePositions);
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

/// <summary>
/// <c>serve-step-ab [rounds] [steps] [threads]</c>: the forward step alone on the 124M model, interleaved: the one-sequence
/// <see cref="GptModel.DecodeNext(KvCache, int)"/> that <c>generate</c> uses, the scheduler's <see cref="GptModel.DecodeNextSequences"/>
/// with one sequence, and with 8 sequences (each its own cache, 100–275 positions in; STEP_PAST=p moves them, see Run),
/// the 8-sequence step also without the skinny kernel's tiles, with them on every shape, without its prefetch lead and
/// through the packed GEMM (STEP_MODES=i,j picks modes). Prints milliseconds per step and tokens/s per mode: one
/// sequence must cost what <c>DecodeNext</c> costs, 8 sequences should read the weights once.
/// </summary>
public static class ServingStepBenchmark
{
    public static void Run(int rounds, int steps, int threads)
    {
        Workers.Count = threads;
        using var model = new GptModel(GptConfig.Gpt2Small with { DropRate = 0f }, new FastRandom(1));
        model.Eval();
        int vocab = model.Config.VocabSize;
        using var logits = new Tensor(8, vocab);
        var random = new Random(3);
        KvCache Prefilled(int length)
        {
            var cache = new KvCache(model, 1, length + steps + 1);
            model.Prefill(cache, Enumerable.Range(0, length).Select(_ => random.Next(vocab)).ToArray());
            return cache;
        }
        // STEP_PAST=p: the 8 caches p, p + s, ..., p + 7s positions in (s = 25, or 6 below 100: a chat's short prompts).
        int basePast = int.Parse(Environment.GetEnvironmentVariable("STEP_PAST") ?? "100");
        int spread = basePast < 100 ? 6 : 25;
        var single = Prefilled(basePast + 100);
        var batch = Enumerable.Range(0, 8).Select(i => Prefilled(basePast + spread * i)).ToList();
        var modes = new (string Name, int Rows, Action Step)[]
        {
            ("DecodeNext (generate), 1 seq.", 1, () => model.DecodeNext(single, 11)),
            ("DecodeNextSequences, 1 seq.", 1, () => model.DecodeNextSequences(batch.GetRange(0, 1), [11], logits)),
            ("DecodeNextSequences, 8 seq.", 8, () => model.DecodeNextSequences(batch, [11, 12, 13, 14, 15, 16, 17, 18], logits)),
            // The skinny kernel's 2 × 3 tiles for 8 rows on no shape, and on every shape (the default: k ≥ SkinnyTileMinK).
            ("8 seq., tiles never", 8, () => WithTileMinK(int.MaxValue, () => model.DecodeNextSequences(batch, [11, 12, 13, 14, 15, 16, 17, 18], logits))),
            ("8 seq., tiles always", 8, () => WithTileMinK(0, () => model.DecodeNextSequences(batch, [11, 12, 13, 14, 15, 16, 17, 18], logits))),
            ("8 sequences, no prefetch", 8, () =>
            {
                // The skinny kernel without its prefetch lead on the weight rows, as every 8-sequence step ran before it.
                int saved = Gemm.SkinnyPrefetchFloats;
                Gemm.SkinnyPrefetchFloats = 0;
                try { model.DecodeNextSequences(batch, [11, 12, 13, 14, 15, 16, 17, 18], logits); }
                finally { Gemm.SkinnyPrefetchFloats = saved; }
            }),
            ("8 sequences, packed GEMM", 8, () =>
            {
                // The packed GEMM, as every step of more than 7 rows took before the direct kernel grew to 8 rows.
                var saved = (Gemm.RowExactRows, Gemm.SkinnyRows);
                (Gemm.RowExactRows, Gemm.SkinnyRows) = (7, 7);
                try { model.DecodeNextSequences(batch, [11, 12, 13, 14, 15, 16, 17, 18], logits); }
                finally { (Gemm.RowExactRows, Gemm.SkinnyRows) = saved; }
            }),
        };
        // STEP_MODES=i,j,...: only these modes (indices into the list above), e.g. under perf.
        if (Environment.GetEnvironmentVariable("STEP_MODES") is { Length: > 0 } only)
            modes = only.Split(',').Select(i => modes[int.Parse(i)]).ToArray();
        Console.WriteLine($"{Machine.Description}; 124M, {threads} threads, {steps} steps per round, {rounds} interleaved rounds");
        var perStep = modes.Select(_ => new List<double>()).ToArray();
        for (int round = 0; round <= rounds; round++)
            for (int m = 0; m < modes.Length; m++)
            {
                var cacheLengths = batch.Select(c => c.Length).ToArray();
                int singleLength = single.Length;
                var clock = Stopwatch.StartNew();
                for (int s = 0; s < steps; s++) modes[m].Step();
                if (round > 0) perStep[m].Add(clock.Elapsed.TotalMilliseconds / steps); // round 0 warms up
                // Back to the same positions, so every round decodes at the same depth.
                for (int i = 0; i < batch.Count; i++) batch[i].Length = cacheLengths[i];
                single.Length = singleLength;
            }
        double one = ServingBenchmark.Percentile(perStep[0], 50);
        for (int m = 0; m < modes.Length; m++)
        {
            double ms = ServingBenchmark.Percentile(perStep[m], 50);
            Console.WriteLine($"{modes[m].Name,-30} median {ms,6:F2} ms/step ({perStep[m].Min():F2}-{perStep[m].Max():F2}), {modes[m].Rows * 1000 / ms,6:F1} tokens/s ({modes[m].Rows * one / ms:F2}x DecodeNext)");
        }
        foreach (var c in batch) c.Dispose();
        single.Dispose();
    }

    private static void WithTileMinK(int minK, Action step)
    {
        int saved = Gemm.SkinnyTileMinK;
        Gemm.SkinnyTileMinK = minK;
        try { step(); }
        finally { Gemm.SkinnyTileMinK = saved; }
    }
}
