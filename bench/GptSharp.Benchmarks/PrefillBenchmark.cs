using System.Diagnostics;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Benchmarks;

/// <summary>
/// Prefill of one long prompt into a KV cache (GPT-2 small at its own context of 1024): prompt tokens/s, median of
/// <c>rounds</c>, and the peak RSS. <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- prefill-quick [tokens] [rounds] [threads]</c>;
/// with ROW_EXACT_ROWS=a,b an interleaved A/B of <see cref="Gemm.RowExactRows"/> instead (see <see cref="RowExactRowsAb"/>).
/// </summary>
public static class PrefillBenchmark
{
    public static void Quick(int tokens, int rounds, int threads)
    {
        Workers.Count = threads;
        Console.WriteLine($"{Machine.Description}; threads {threads}; prefill of {tokens} tokens, GPT-2 small (context 1024)");
        var config = GptConfig.Gpt2Small with { QkvBias = true };
        using var model = new GptModel(config, new FastRandom(123));
        var rng = new Random(1);
        var prompt = TokenBatch.FromSequence([.. Enumerable.Range(0, tokens).Select(_ => rng.Next(config.VocabSize))]);
        using var cache = new KvCache(model);
        model.Prefill(cache, prompt); // warm-up: buffers and scratch
        var seconds = new double[rounds];
        if (Environment.GetEnvironmentVariable("ROW_EXACT_ROWS") is { Length: > 0 } variants)
        {
            RowExactRowsAb(model, cache, prompt, rounds, variants.Split(',').Select(int.Parse).ToArray());
            return;
        }
        for (int r = 0; r < rounds; r++)
        {
            cache.Clear();
            var clock = Stopwatch.StartNew();
            model.Prefill(cache, prompt);
            seconds[r] = clock.Elapsed.TotalSeconds;
            Console.WriteLine($"round {r + 1}: {seconds[r]:F2} s = {tokens / seconds[r]:F0} tokens/s");
        }
        Array.Sort(seconds);
        double median = seconds[rounds / 2];
        Console.WriteLine($"median {median:F2} s = {tokens / median:F0} prompt tokens/s; peak RSS {Process.GetCurrentProcess().PeakWorkingSet64 / 1e9:F2} GB");
    }

    /// <summary>ROW_EXACT_ROWS=a,b,...: the same prefill with <see cref="Gemm.RowExactRows"/> = a, b, ... in interleaved rounds
    /// (a short prompt through the direct kernel or the packed GEMM); median milliseconds of each.</summary>
    private static void RowExactRowsAb(GptModel model, KvCache cache, TokenBatch prompt, int rounds, int[] variants)
    {
        int saved = Gemm.RowExactRows;
        var times = variants.Select(_ => new List<double>()).ToArray();
        for (int r = 0; r < rounds; r++)
            for (int v = 0; v < variants.Length; v++)
            {
                Gemm.RowExactRows = variants[v];
                cache.Clear();
                var clock = Stopwatch.StartNew();
                model.Prefill(cache, prompt);
                times[v].Add(clock.Elapsed.TotalMilliseconds);
            }
        Gemm.RowExactRows = saved;
        for (int v = 0; v < variants.Length; v++)
            Console.WriteLine($"RowExactRows {variants[v]}: median {ServingBenchmark.Percentile(times[v], 50):F1} ms per prefill of {prompt.SequenceLength} tokens");
    }
}
