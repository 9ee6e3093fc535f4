using System.Diagnostics;
using GptSharp.Checkpoints;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Layers;
using GptSharp.Randomness;
using GptSharp.Data;

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
        Console.WriteLine($"CPU: {Environment.ProcessorCount} logical cores, {threads} threads; read bandwidth {bandwidth / 1e9:F1} GB/s (1 GiB vector sum, best of 5); " +
            $"AVX-VNNI {(Int8Kernels.Int8IntegerDotSupported ? "yes" : "no")}");
        var config = GptConfig.Gpt2Small with { QkvBias = true };
        using var float32 = new GptModel(config, new FastRandom(123));
        float32.Eval();
        using var int8 = new GptModel(config, new FastRandom(123));
        int8.QuantizeInt8();
        // The int8 model runs twice per round: weights dequantized to float32 in registers, and int16 activations with integer dot products (AVX-VNNI) where the CPU has it.
        var variants = new List<(string Name, GptModel Model, bool IntegerDot)> { ("float32", float32, false), ("int8 dequantize", int8, false) };
        if (Int8Kernels.Int8IntegerDotSupported) variants.Add(("int8 integer dot", int8, true));
        var longPrompt = Enumerable.Range(0, 512).Select(i => (i * 7919) % config.VocabSize).ToArray();
        var rates = variants.Select(_ => new List<double>()).ToArray();
        var stepMedians = variants.Select(_ => new List<double>()).ToArray();
        var matvecMedians = variants.Select(_ => new List<double>()).ToArray();
        var prefill = variants.Select(_ => new List<double>()).ToArray();
        var generators = variants.Select(m => new TextGenerator(m.Model)).ToArray();
        var caches = variants.Select(m => new KvCache(m.Model)).ToArray();
        for (int v = 0; v < variants.Count; v++)
        {
            Int8Kernels.Int8IntegerDecodeOnThisThread = variants[v].IntegerDot;
            generators[v].Generate(TokenBatch.FromSequence(Prompt), 4); // warm-up
        }
        for (int r = 0; r < rounds; r++)
            for (int v = 0; v < variants.Count; v++)
            {
                Int8Kernels.Int8IntegerDecodeOnThisThread = variants[v].IntegerDot;
                var clock = Stopwatch.StartNew();
                generators[v].Generate(TokenBatch.FromSequence(Prompt), newTokens);
                rates[v].Add(newTokens / clock.Elapsed.TotalSeconds);
                // Single steps timed alone (the median says more than a total that includes a neighbour's bursts).
                var model = variants[v].Model;
                model.Prefill(caches[v], Prompt);
                var steps = new double[50];
                for (int i = 0; i < steps.Length; i++)
                {
                    long start = Stopwatch.GetTimestamp();
                    model.DecodeNext(caches[v], 6109 + i);
                    steps[i] = Stopwatch.GetElapsedTime(start).TotalSeconds;
                }
                Array.Sort(steps);
                stepMedians[v].Add(steps[steps.Length / 2]);
                matvecMedians[v].Add(MatvecSeconds(model));
                clock.Restart();
                model.Prefill(caches[v], longPrompt);
                prefill[v].Add(longPrompt.Length / clock.Elapsed.TotalSeconds);
            }
        Int8Kernels.Int8IntegerDecodeOnThisThread = null;
        double Median(List<double> values) => values.Order().ElementAt(values.Count / 2);
        for (int v = 0; v < variants.Count; v++)
        {
            double bytes = BytesPerToken(variants[v].Model), bound = bandwidth / bytes, rate = Median(rates[v]), step = 1 / Median(stepMedians[v]);
            double matvec = Median(matvecMedians[v]);
            Console.WriteLine($"{variants[v].Name}: {bytes / 1e6:F0} MB read per token (bound {bound:F1} tokens/s); cached greedy {newTokens} tokens: " +
                $"median {rate:F1} tokens/s (runs {string.Join(", ", rates[v].Select(x => x.ToString("F1")))}) = {100 * rate / bound:F0}% of the bound; " +
                $"median single step {1e3 / step:F2} ms = {step:F1} tokens/s ({100 * step / bound:F0}%), of which the linear layers alone {1e3 * matvec:F2} ms " +
                $"({bytes / matvec / 1e9:F1} GB/s); prefill 512 tokens: median {Median(prefill[v]):F0} tokens/s");
        }
        for (int v = 1; v < variants.Count; v++)
            Console.WriteLine($"{variants[v].Name} / float32: cached decoding {Median(rates[v]) / Median(rates[0]):F2}x, single steps {Median(stepMedians[0]) / Median(stepMedians[v]):F2}x, " +
                $"linear layers {Median(matvecMedians[0]) / Median(matvecMedians[v]):F2}x, prefill {Median(prefill[v]) / Median(prefill[0]):F2}x");
        foreach (var g in generators) g.Dispose();
        foreach (var c in caches) c.Dispose();
    }

    /// <summary>
    /// One input row through int8 weights, both decode paths, on 1 and 2 threads: GB/s of int8 bytes for a matrix that
    /// fits in L2 (the kernel's own speed) and for GPT-2's head (from memory), so one sees which bound a path hits.
    /// </summary>
    public static unsafe void KernelSpeeds()
    {
        var shapes = new (string Name, int Out, int In)[] { ("768x768 (L2)", 768, 768), ("3072x768 (L3)", 3072, 768), ("50257x768 (memory)", 50257, 768) };
        foreach (var (name, n, k) in shapes)
        {
            using var weight = new Tensor(n, k);
            for (long i = 0; i < weight.Length; i++) weight.Data[i] = MathF.Sin(i * 0.37f) * 0.02f;
            using var matrix = Int8Matrix.Quantize(weight.Data, n, k);
            using var input = new Tensor(k);
            using var output = new Tensor(n);
            for (int i = 0; i < k; i++) input.Data[i] = MathF.Cos(i);
            foreach (int threads in new[] { 1, 2 })
                foreach (bool integer in GptSharp.Tensors.Int8Kernels.Int8IntegerDotSupported ? new[] { false, true } : new[] { false })
                {
                    Workers.Count = threads;
                    int repeats = (int)Math.Max(3, 2e9 / matrix.ValueBytes);
                    var times = new double[7];
                    for (int t = 0; t < times.Length; t++)
                    {
                        long start = Stopwatch.GetTimestamp();
                        for (int r = 0; r < repeats; r++) GptSharp.Tensors.Int8Kernels.LinearForwardInt8(Gemm.BestPath, output.Data, input.Data, matrix, null, 1, integerDot: integer);
                        times[t] = Stopwatch.GetElapsedTime(start).TotalSeconds / repeats;
                    }
                    Array.Sort(times);
                    Console.WriteLine($"{name}, {threads} thread(s), {(integer ? "integer (int16 activations)" : "dequantize")}: {(matrix.ValueBytes + matrix.ScaleBytes) / times[3] / 1e9:F1} GB/s ({times[3] * 1e6:F1} us)");
                }
        }
    }

    /// <summary>Median time of one token's linear layers alone (every block's six and the head, one input row): a step minus this is the rest (attention, LayerNorm, GELU, overheads).</summary>
    private static double MatvecSeconds(GptModel model)
    {
        var weights = model.LinearWeights().ToArray();
        int widest = weights.Max(w => Math.Max(w.Int8?.Columns ?? w.Value.Size(1), w.Int8?.Rows ?? w.Value.Size(0)));
        using var input = new Tensor(widest);
        unsafe
        {
            // Not zeros: the int8×int8 path skips all-zero blocks.
            for (int i = 0; i < widest; i++) input.Data[i] = MathF.Sin(i);
        }
        using var output = new Tensor(widest);
        var times = new double[21];
        for (int t = 0; t < times.Length; t++)
        {
            long start = Stopwatch.GetTimestamp();
            foreach (var w in weights)
                unsafe
                {
                    if (w.Int8 is { } q) Int8Kernels.LinearForwardInt8(output.Data, input.Data, q, null, 1);
                    else Kernels.LinearForward(output.Data, input.Data, w.Value.Data, null, 1, w.Value.Size(1), w.Value.Size(0));
                }
            times[t] = Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        Array.Sort(times);
        return times[times.Length / 2];
    }

    /// <summary>One precision of a model from disk (a <c>gpt2-synthetic</c> checkpoint): load time, cached greedy tokens/s, peak RSS.</summary>
    public static void Model(string spec, string precision, int newTokens, int threads)
    {
        Workers.Count = threads;
        var quantization = precision == "int8" ? WeightQuantization.Int8 : WeightQuantization.None;
        var clock = Stopwatch.StartNew();
        using var model = GptModel.Load(spec, new LoadOptions { Quantization = quantization });
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
