using System.Diagnostics;
using GptSharp.Checkpoints;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;

namespace GptSharp.Benchmarks;

/// <summary>
/// Int8 against float32 weights, interleaved in one process so a busy neighbour slows both alike:
/// <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- int8-quick [rounds=3] [threads=2] [newTokens=200]</c>
/// runs GPT-2 124M (ctx 1024, qkv_bias, random weights) greedy with the KV cache (8-token prompt, 200 new tokens) and a
/// 512-token prefill, each precision in turn every round, and reports the int8 rate against the read-bandwidth bound
/// computed from the int8 bytes read per token. For GPT-2 XL shapes, one process per precision (peak RSS is per process):
/// <c>... -- int8-model DIR float32|int8 [newTokens=20] [threads=2]</c> on a <c>gpt2-synthetic DIR gpt2-xl</c> checkpoint.
/// </summary>
public static class Int8Quick
{
    private static readonly int[] Prompt = [6109, 3626, 6100, 345, 11, 290, 262, 640];

    /// <summary>Bytes a cached step reads: every weight but the embedding tables (one row each), int8 ones at 1 byte + their scales.</summary>
    private static double BytesPerToken(GptModel model)
    {
        double bytes = 0;
        foreach (var p in model.Parameters())
        {
            if (ReferenceEquals(p, model.TokenEmbedding) || ReferenceEquals(p, model.PositionEmbedding)) continue;
            bytes += p.Int8 is { } q ? q.ValueBytes + q.ScaleBytes : p.Length * 4.0;
        }
        return bytes;
    }

    public static void Run(int rounds, int threads, int newTokens)
    {
        Workers.Count = threads;
        double bandwidth = GenerationQuick.ReadBandwidth();
        Console.WriteLine($"CPU: {Environment.ProcessorCount} logical cores, {threads} threads; read bandwidth {bandwidth / 1e9:F1} GB/s (1 GiB vector sum, best of 5)");
        var config = GptConfig.Gpt2Small with { QkvBias = true };
        using var float32 = new GptModel(config, new FastRandom(123));
        float32.Eval();
        using var int8 = new GptModel(config, new FastRandom(123));
        int8.QuantizeInt8();
        var models = new (string Name, GptModel Model)[] { ("float32", float32), ("int8", int8) };
        var longPrompt = Enumerable.Range(0, 512).Select(i => (i * 7919) % config.VocabSize).ToArray();
        var rates = models.Select(_ => new List<double>()).ToArray();
        var stepMedians = models.Select(_ => new List<double>()).ToArray();
        var prefill = models.Select(_ => new List<double>()).ToArray();
        var generators = models.Select(m => new TextGenerator(m.Model)).ToArray();
        var caches = models.Select(m => new KvCache(m.Model)).ToArray();
        foreach (var g in generators) g.Generate(TokenBatch.FromSequence(Prompt), 4); // warm-up
        for (int r = 0; r < rounds; r++)
            for (int v = 0; v < models.Length; v++)
            {
                var clock = Stopwatch.StartNew();
                generators[v].Generate(TokenBatch.FromSequence(Prompt), newTokens);
                rates[v].Add(newTokens / clock.Elapsed.TotalSeconds);
                // Single steps timed alone (the median says more than a total that includes a neighbour's bursts).
                var model = models[v].Model;
                model.Prefill(caches[v], Prompt);
                var steps = new double[50];
                for (int i = 0; i < steps.Length; i++)
                {
                    long start = Stopwatch.GetTimestamp();
                    model.Step(caches[v], 6109 + i);
                    steps[i] = Stopwatch.GetElapsedTime(start).TotalSeconds;
                }
                Array.Sort(steps);
                stepMedians[v].Add(steps[steps.Length / 2]);
                clock.Restart();
                model.Prefill(caches[v], longPrompt);
                prefill[v].Add(longPrompt.Length / clock.Elapsed.TotalSeconds);
            }
        double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);
        for (int v = 0; v < models.Length; v++)
        {
            double bytes = BytesPerToken(models[v].Model), bound = bandwidth / bytes, rate = Median(rates[v]), step = 1 / Median(stepMedians[v]);
            Console.WriteLine($"{models[v].Name}: {bytes / 1e6:F0} MB read per token (bound {bound:F1} tokens/s); cached greedy {newTokens} tokens: " +
                $"median {rate:F1} tokens/s (runs {string.Join(", ", rates[v].Select(x => x.ToString("F1")))}) = {100 * rate / bound:F0}% of the bound; " +
                $"median single step {1e3 / step:F1} ms = {step:F1} tokens/s ({100 * step / bound:F0}%); prefill 512 tokens: median {Median(prefill[v]):F0} tokens/s");
        }
        Console.WriteLine($"int8 / float32: cached decoding {Median(rates[1]) / Median(rates[0]):F2}x, single steps {Median(stepMedians[0]) / Median(stepMedians[1]):F2}x, prefill {Median(prefill[1]) / Median(prefill[0]):F2}x");
        foreach (var g in generators) g.Dispose();
        foreach (var c in caches) c.Dispose();
    }

    /// <summary>One precision of a model from disk (a <c>gpt2-synthetic</c> checkpoint): load time, cached greedy tokens/s, peak RSS.</summary>
    public static void Model(string spec, string precision, int newTokens, int threads)
    {
        Workers.Count = threads;
        var quantization = precision == "int8" ? WeightQuantization.Int8 : WeightQuantization.None;
        var clock = Stopwatch.StartNew();
        using var model = ModelStore.Load(spec, quantization: quantization);
        model.Eval();
        double load = clock.Elapsed.TotalSeconds;
        long afterLoad = PeakRss();
        using var generator = new TextGenerator(model);
        generator.Generate(TokenBatch.FromSequence(Prompt), 2); // warm-up
        clock.Restart();
        generator.Generate(TokenBatch.FromSequence(Prompt), newTokens);
        double rate = newTokens / clock.Elapsed.TotalSeconds;
        Console.WriteLine($"{spec} {precision}: loaded in {load:F1} s ({BytesPerToken(model) / 1e9:F2} GB read per token), peak RSS after load {afterLoad / 1e9:F2} GB, " +
            $"cached greedy {newTokens} tokens {rate:F2} tokens/s, peak RSS {PeakRss() / 1e9:F2} GB");
    }

    /// <summary>VmHWM of this process (Linux), in bytes.</summary>
    private static long PeakRss()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return 0;
    }
}
